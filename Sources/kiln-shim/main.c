/*
 * kiln-shim: the per-container supervisor, in the role conmon plays for Podman.
 *
 *   kiln-shim [--merge] LOGFILE RUNC [RUNC-ARGS...]   (fd 3: a pipe to kiln for runc's exit status)
 *
 * A detached container outlives the kiln command that started it, yet CRIU insists its stdio are
 * pipes, and somebody must reap it when it dies. The shim, in its own session:
 *   1. becomes a child subreaper, so the container's init (orphaned when runc exits) is its child;
 *   2. runs runc (`run -d` or `restore -d`) with stdin = a pipe at end-of-file and
 *      stdout = stderr = a pipe it drains into LOGFILE;
 *   3. writes "<status>\n" (runc's wait status) to fd 3 and closes it: kiln goes on from there;
 *   4. copies the container's output to LOGFILE until every writer is gone, reaps what is left,
 *      and exits.
 * With --merge it first sets PR_SET_MEMORY_MERGE, which Linux 6.7+ passes on through fork and
 * exec to runc, CRIU and the restored process: every anonymous page of the copy is a candidate
 * for KSM, so copies of one snapshot end up sharing their identical pages.
 * It is C, not Swift, because it is on the restore path and must start in well under a millisecond.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

static void report(int status) {
    char line[32];
    int n = snprintf(line, sizeof line, "%d\n", status);
    if (write(3, line, (size_t)n) < 0) { /* kiln is gone; the container still runs */ }
    close(3);
}

#ifndef PR_SET_MEMORY_MERGE
#define PR_SET_MEMORY_MERGE 67
#endif

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--merge") == 0) {
        if (prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0) != 0) perror("kiln-shim: PR_SET_MEMORY_MERGE");
        argv++;
        argc--;
    }
    if (argc < 3) {
        fprintf(stderr, "usage: kiln-shim LOGFILE RUNC [ARGS...] (started by kiln, not by hand)\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    setsid();
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);

    int log = open(argv[1], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    int in[2], out[2];
    if (log < 0 || pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) {
        perror("kiln-shim: setting up stdio");
        report(255 << 8);
        return 1;
    }
    /* SIGCHLD arrives through a signalfd polled beside the output pipe: runc's exit is seen at
     * once, with no polling interval on the restore path. */
    sigset_t chld, old;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, &old);
    int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    pid_t runc = fork();
    if (runc == 0) {
        sigprocmask(SIG_SETMASK, &old, NULL);
        dup2(in[0], 0);
        dup2(out[1], 1);
        dup2(out[1], 2);
        close(3);
        signal(SIGPIPE, SIG_DFL);
        execvp(argv[2], argv + 2);
        perror("kiln-shim: exec runc");
        _exit(127);
    }
    close(in[0]);
    close(in[1]); /* the service reads end-of-file on stdin */
    close(out[1]);
    if (runc < 0) {
        report(255 << 8);
        return 1;
    }

    int runc_done = 0;
    char buffer[65536];
    struct pollfd fds[2] = { { .fd = out[0], .events = POLLIN }, { .fd = sfd, .events = POLLIN } };
    for (;;) {
        int ready = poll(fds, 2, -1);
        if (ready > 0 && fds[1].revents) {
            struct signalfd_siginfo info;
            while (read(sfd, &info, sizeof info) > 0) {}
        }
        if (ready > 0 && fds[0].revents) {
            ssize_t n = read(out[0], buffer, sizeof buffer);
            if (n > 0) {
                if (write(log, buffer, (size_t)n) < 0) { /* disk full: keep draining */ }
            } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
                break; /* every writer (runc and the container) is gone */
            }
        }
        int status;
        pid_t pid;
        while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
            if (pid == runc && !runc_done) {
                runc_done = 1;
                report(status);
            }
        }
    }
    if (!runc_done) {
        int status = 0;
        waitpid(runc, &status, 0);
        report(status);
    }
    while (waitpid(-1, NULL, 0) > 0 || errno == EINTR) {}
    return 0;
}
