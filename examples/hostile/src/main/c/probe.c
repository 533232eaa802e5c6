// The hostile sample's probe: tries, from inside its sandbox, what a malicious function would try
// to break out of it or to take more than it was given, and prints one JSON object describing how
// each attempt ended. It never undoes anything it manages to do: an attempt that succeeds is a
// confinement failure, and the caller reports it.
//
//   probe           all attempts below, as JSON
//   probe hog MIB   allocate and touch MIB MiB (the memory limit should kill it)
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/reboot.h>
#include <net/ethernet.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

static int first = 1;

// Prints one attempt: refused when the call failed; errno names why.
static void report(const char *name, long rc, int err, const char *detail) {
    printf("%s\n  \"%s\": {\"refused\": %s, \"errno\": \"%s\", \"detail\": \"", first ? "{" : ",", name,
           rc < 0 ? "true" : "false", rc < 0 ? strerrorname_np(err) : "");
    for (const char *c = detail ? detail : ""; *c; c++) {
        if (*c == '"' || *c == '\\') putchar('\\');
        putchar((unsigned char)*c < 0x20 ? ' ' : *c);
    }
    printf("\"}");
    first = 0;
}

#define TRY(name, call, detail) do { errno = 0; long rc_ = (long)(call); report(name, rc_, errno, detail); } while (0)

static void read_file(const char *path, char *buffer, size_t size) {
    buffer[0] = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) { snprintf(buffer, size, "open failed: %s", strerrorname_np(errno)); return; }
    ssize_t n = read(fd, buffer, size - 1);
    close(fd);
    if (n < 0) n = 0;
    buffer[n] = 0;
    for (ssize_t i = 0; i < n; i++) if (buffer[i] == 0) buffer[i] = ' ';
}

static long write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return -1;
    long rc = write(fd, text, strlen(text));
    int saved = errno;
    close(fd);
    errno = saved;
    return rc < 0 ? -1 : 0;
}

// A line of /proc/self/status, e.g. "CapEff".
static void status_field(const char *field, char *out, size_t size) {
    char status[8192];
    read_file("/proc/self/status", status, sizeof status);
    out[0] = 0;
    char key[64];
    snprintf(key, sizeof key, "\n%s:", field);
    char *at = strstr(status, key);
    if (!at) return;
    at += strlen(key);
    while (*at == '\t' || *at == ' ') at++;
    size_t n = strcspn(at, "\n");
    snprintf(out, size, "%.*s", (int)(n < size ? n : size - 1), at);
}

static int hog(long mib) {
    for (long i = 0; i < mib; i++) {
        char *block = malloc(1 << 20);
        if (!block) { printf("{\"allocatedMiB\": %ld, \"result\": \"malloc failed\"}\n", i); return 0; }
        memset(block, (int)i, 1 << 20);
    }
    printf("{\"allocatedMiB\": %ld, \"result\": \"not stopped\"}\n", mib);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "hog") == 0) return hog(atol(argv[2]));
    char detail[4096];

    mkdir("/tmp/hostile-mnt", 0700);
    TRY("mount", mount("none", "/tmp/hostile-mnt", "tmpfs", 0, NULL), "tmpfs on /tmp/hostile-mnt");
    TRY("mount_proc_again", mount("proc", "/tmp/hostile-mnt", "proc", 0, NULL), "a fresh procfs");
    static char module[64];
    TRY("init_module", syscall(SYS_init_module, module, sizeof module, ""), "a kernel module from memory");
    int null = open("/dev/null", O_RDONLY);
    TRY("finit_module", syscall(SYS_finit_module, null, "", 0), "a kernel module from a file");
    TRY("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0), "load a new kernel");
    TRY("reboot", syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_CAD_OFF, NULL), "reboot(2)");

    // What pid 1 is from in here: the host's init must not be visible.
    char cmdline[1024];
    read_file("/proc/1/cmdline", cmdline, sizeof cmdline);
    char environ_[4096];
    read_file("/proc/1/environ", environ_, sizeof environ_);
    int pids = 0;
    DIR *proc = opendir("/proc");
    for (struct dirent *entry; proc && (entry = readdir(proc));) if (entry->d_name[0] >= '1' && entry->d_name[0] <= '9') pids++;
    if (proc) closedir(proc);
    snprintf(detail, sizeof detail, "pid 1 is: %.300s; %d processes visible; environ %zu bytes", cmdline, pids, strlen(environ_));
    report("see_host_pid1", 0, 0, detail);

    struct rlimit limit;
    getrlimit(RLIMIT_NOFILE, &limit);
    struct rlimit raised = {limit.rlim_max + 1, limit.rlim_max + 1};
    snprintf(detail, sizeof detail, "RLIMIT_NOFILE hard %llu -> %llu", (unsigned long long)limit.rlim_max, (unsigned long long)raised.rlim_max);
    TRY("raise_rlimit", setrlimit(RLIMIT_NOFILE, &raised), detail);
    TRY("raise_memory_cgroup", write_file("/sys/fs/cgroup/memory/memory.limit_in_bytes", "-1"), "write -1 to memory.limit_in_bytes");
    TRY("raise_pids_cgroup", write_file("/sys/fs/cgroup/pids/pids.max", "max"), "write max to pids.max");
    TRY("write_proc_sys", write_file("/proc/sys/kernel/hostname", "evil"), "write /proc/sys/kernel/hostname");

    TRY("unshare_user", unshare(CLONE_NEWUSER), "a user namespace, to be root in it");
    long child = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, NULL, NULL, 0);
    if (child == 0) _exit(0);
    int clone_errno = errno;
    if (child > 0) waitpid((pid_t)child, NULL, 0);
    report("clone_newuser", child, clone_errno, "clone(CLONE_NEWUSER)");
    int netns = open("/proc/self/ns/net", O_RDONLY);
    TRY("setns", setns(netns, 0), "join a namespace");
    TRY("chroot", chroot("/tmp"), "chroot /tmp");
    TRY("mknod_block_device", mknod("/tmp/hostile-sda", S_IFBLK | 0600, makedev(8, 0)), "/dev/sda's block device");
    TRY("raw_socket", socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL)), "AF_PACKET raw socket");
    TRY("ptrace_pid1", ptrace(PTRACE_ATTACH, 1, NULL, NULL), "attach to pid 1");
    TRY("write_root", write_file("/hostile-was-here", "x"), "create /hostile-was-here");
    TRY("write_usr", write_file("/usr/bin/hostile-was-here", "x"), "create /usr/bin/hostile-was-here");
    TRY("sethostname", sethostname("evil", 4), "sethostname");
    TRY("bpf", syscall(SYS_bpf, 0, NULL, 0), "bpf(BPF_MAP_CREATE)");
    TRY("keyctl", syscall(SYS_keyctl, 1 /* KEYCTL_JOIN_SESSION_KEYRING */, "hostile"), "join a session keyring");
    TRY("perf_event_open", syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0), "perf_event_open");
    TRY("setuid", setuid(1234), "setuid(1234)");

    // Network: interfaces of this namespace; no host network means loopback only.
    char dev[4096];
    read_file("/proc/net/dev", dev, sizeof dev);
    char interfaces[512] = "";
    for (char *line = strchr(dev, '\n'); line && (line = strchr(line + 1, '\n'));) {
        char *name = line + 1;
        while (*name == ' ') name++;
        size_t n = strcspn(name, ":");
        if (!name[n] || n == 0) break;
        snprintf(interfaces + strlen(interfaces), sizeof interfaces - strlen(interfaces), "%s%.*s", interfaces[0] ? "," : "", (int)n, name);
    }
    report("network_interfaces", 0, 0, interfaces);

    char caps[64], nnp[16], seccomp[16];
    status_field("CapEff", caps, sizeof caps);
    status_field("NoNewPrivs", nnp, sizeof nnp);
    status_field("Seccomp", seccomp, sizeof seccomp);
    snprintf(detail, sizeof detail, "CapEff=%s NoNewPrivs=%s Seccomp=%s", caps, nnp, seccomp);
    report("privileges", 0, 0, detail);

    // A fork bomb, stopped by the pids limit: children wait to be killed.
    pid_t children[8192];
    int forked = 0, fork_errno = 0;
    while (forked < 8192) {
        pid_t pid = fork();
        if (pid == 0) { pause(); _exit(0); }
        if (pid < 0) { fork_errno = errno; break; }
        children[forked++] = pid;
    }
    for (int i = 0; i < forked; i++) kill(children[i], SIGKILL);
    for (int i = 0; i < forked; i++) waitpid(children[i], NULL, 0);
    snprintf(detail, sizeof detail, "%d processes forked before the limit", forked);
    report("fork_bomb", fork_errno ? -1 : 0, fork_errno, detail);

    printf("\n}\n");
    return 0;
}
