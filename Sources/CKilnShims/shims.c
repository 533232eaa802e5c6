#define _GNU_SOURCE
#include "CKilnShims.h"

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <arpa/inet.h>
#include <linux/capability.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <unistd.h>

#ifndef PR_SET_MEMORY_MERGE
#define PR_SET_MEMORY_MERGE 67
#endif

/* Enters the namespace at `path`, returning an fd for the one the thread was in (to go back). */
static int enter_ns(const char *path, int nstype, const char *self_path) {
    int self = open(self_path, O_RDONLY | O_CLOEXEC);
    if (self < 0) return -1;
    int target = open(path, O_RDONLY | O_CLOEXEC);
    if (target < 0) { int e = errno; close(self); errno = e; return -1; }
    if (setns(target, nstype) != 0) { int e = errno; close(target); close(self); errno = e; return -1; }
    close(target);
    return self;
}

/* Returns to the namespace saved by enter_ns. Failing here would leave a pooled thread in a
 * foreign namespace, which is worse than crashing: abort loudly instead. */
static void leave_ns(int self, int nstype) {
    int e = errno;
    if (setns(self, nstype) != 0) abort();
    close(self);
    errno = e;
}

static int lo_up_here(void) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
    int rc = ioctl(fd, SIOCGIFFLAGS, &ifr);
    if (rc == 0 && !(ifr.ifr_flags & IFF_UP)) {
        ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
        rc = ioctl(fd, SIOCSIFFLAGS, &ifr);
    }
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

int kiln_socket_in_netns(const char *netns_path, int domain) {
    int self = enter_ns(netns_path, CLONE_NEWNET, "/proc/thread-self/ns/net");
    if (self < 0) return -1;
    int fd = socket(domain, SOCK_STREAM | SOCK_CLOEXEC, 0);
    leave_ns(self, CLONE_NEWNET);
    return fd;
}

int kiln_create_netns(const char *pin_path) {
    int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (self < 0) return -1;
    int rc = unshare(CLONE_NEWNET);
    if (rc == 0) {
        rc = lo_up_here();
        if (rc == 0) rc = mount("/proc/thread-self/ns/net", pin_path, "none", MS_BIND, NULL);
        leave_ns(self, CLONE_NEWNET);
    } else {
        int e = errno; close(self); errno = e;
    }
    return rc;
}

int kiln_netns_lo_up(const char *netns_path) {
    int self = enter_ns(netns_path, CLONE_NEWNET, "/proc/thread-self/ns/net");
    if (self < 0) return -1;
    int rc = lo_up_here();
    leave_ns(self, CLONE_NEWNET);
    return rc;
}

int kiln_set_hostname_in(const char *uts_path, const char *hostname) {
    int self = enter_ns(uts_path, CLONE_NEWUTS, "/proc/thread-self/ns/uts");
    if (self < 0) return -1;
    int rc = sethostname(hostname, strlen(hostname));
    leave_ns(self, CLONE_NEWUTS);
    return rc;
}

int kiln_set_child_subreaper(int on) { return prctl(PR_SET_CHILD_SUBREAPER, on ? 1 : 0, 0, 0, 0); }

int kiln_set_memory_merge(int on) { return prctl(PR_SET_MEMORY_MERGE, on ? 1 : 0, 0, 0, 0); }

short kiln_posix_spawn_setsid_flag(void) { return POSIX_SPAWN_SETSID; }

int kiln_posix_spawn_addclosefrom(void *actions, int from) {
    return posix_spawn_file_actions_addclosefrom_np((posix_spawn_file_actions_t *)actions, from);
}

int kiln_effective_caps(unsigned long long *mask) {
    struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    if (syscall(SYS_capget, &hdr, data) != 0) return -1;
    *mask = ((unsigned long long)data[1].effective << 32) | data[0].effective;
    return 0;
}

int kiln_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

/* pidfd descriptors are always close-on-exec. */
int kiln_pidfd_open(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

int kiln_is_nsfs(const char *path) {
    struct statfs info;
    if (statfs(path, &info) != 0) return -1;
    return info.f_type == 0x6e736673 /* NSFS_MAGIC */;
}

int kiln_mlock_on_fault(void *addr, unsigned long len) {
    // glibc 2.36 has mlock2, but its header hides it from Swift's importer; 1 is MLOCK_ONFAULT.
    return (int)syscall(SYS_mlock2, addr, len, 1);
}

int kiln_is_in_memory(const char *path) {
    struct statfs info;
    if (statfs(path, &info) != 0) return -1;
    return info.f_type == 0x01021994 /* TMPFS_MAGIC */ || info.f_type == (typeof(info.f_type))0x858458f6 /* RAMFS_MAGIC */;
}

int kiln_get_thread_cpus(pid_t tid, unsigned char *mask, size_t mask_bytes) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(tid, sizeof(set), &set) != 0) return -1;
    memset(mask, 0, mask_bytes);
    for (size_t core = 0; core < mask_bytes * 8 && core < CPU_SETSIZE; core++) {
        if (CPU_ISSET(core, &set)) mask[core / 8] |= (unsigned char)(1u << (core % 8));
    }
    return 0;
}

int kiln_set_thread_cpus(pid_t tid, const unsigned char *mask, size_t mask_bytes) {
    cpu_set_t set;
    CPU_ZERO(&set);
    for (size_t core = 0; core < mask_bytes * 8 && core < CPU_SETSIZE; core++) {
        if (mask[core / 8] & (1u << (core % 8))) CPU_SET(core, &set);
    }
    return sched_setaffinity(tid, sizeof(set), &set);
}

/* Sends one inet_diag dump request for `family` (LISTEN only) and collects the answers. */
static int dump_listeners(int fd, int family, struct kiln_tcp_listener *out, int max, int count) {
    struct {
        struct nlmsghdr header;
        struct inet_diag_req_v2 request;
    } message;
    memset(&message, 0, sizeof message);
    message.header.nlmsg_len = sizeof message;
    message.header.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    message.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    message.request.sdiag_family = (unsigned char)family;
    message.request.sdiag_protocol = IPPROTO_TCP;
    message.request.idiag_states = 1u << 10; /* TCP_LISTEN */
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    if (sendto(fd, &message, sizeof message, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0) return -1;
    char buffer[16384];
    for (;;) {
        ssize_t length = recv(fd, buffer, sizeof buffer, 0);
        if (length < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        for (struct nlmsghdr *header = (struct nlmsghdr *)buffer; NLMSG_OK(header, (size_t)length);
             header = NLMSG_NEXT(header, length)) {
            if (header->nlmsg_type == NLMSG_DONE) return count;
            if (header->nlmsg_type == NLMSG_ERROR) {
                struct nlmsgerr *error = NLMSG_DATA(header);
                errno = error->error ? -error->error : EPROTO;
                return -1;
            }
            if (header->nlmsg_type != SOCK_DIAG_BY_FAMILY) continue;
            struct inet_diag_msg *socket_info = NLMSG_DATA(header);
            if (count < max) {
                out[count].family = socket_info->idiag_family;
                memcpy(out[count].address, socket_info->id.idiag_src, 16);
                out[count].port = ntohs(socket_info->id.idiag_sport);
            }
            count++;
        }
    }
}

int kiln_tcp_listeners(const char *netns_path, struct kiln_tcp_listener *out, int max) {
    int self = enter_ns(netns_path, CLONE_NEWNET, "/proc/thread-self/ns/net");
    if (self < 0) return -1;
    int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    leave_ns(self, CLONE_NEWNET);
    if (fd < 0) return -1;
    int count = dump_listeners(fd, AF_INET, out, max, 0);
    if (count >= 0) count = dump_listeners(fd, AF_INET6, out, max, count);
    int e = errno;
    close(fd);
    errno = e;
    return count;
}
