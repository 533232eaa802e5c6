#ifndef CKILN_SHIMS_H
#define CKILN_SHIMS_H

#include <sys/types.h>

/// Creates a TCP socket that lives in the network namespace at `netns_path` (e.g. /proc/PID/ns/net),
/// leaving the calling thread in the namespace it started in. setns(2) on CLONE_NEWNET affects
/// only the calling thread, and socket(2) binds the new socket to the caller's namespace for life,
/// so the socket can then be connected and used from any thread. Returns the fd, or -1 with errno.
int kiln_socket_in_netns(const char *netns_path, int domain);

/// Creates a new network namespace with `lo` up and pins it by bind-mounting it on `pin_path`
/// (an existing empty file), like `ip netns add`. The calling thread returns to its own namespace.
/// Returns 0, or -1 with errno.
int kiln_create_netns(const char *pin_path);

/// Brings `lo` up inside the network namespace at `netns_path`. Returns 0, or -1 with errno.
int kiln_netns_lo_up(const char *netns_path);

/// Sets the hostname inside the UTS namespace at `uts_path` (e.g. /proc/PID/ns/uts).
/// Returns 0, or -1 with errno.
int kiln_set_hostname_in(const char *uts_path, const char *hostname);

/// prctl(PR_SET_CHILD_SUBREAPER, on). Returns 0, or -1 with errno.
int kiln_set_child_subreaper(int on);

/// prctl(PR_SET_MEMORY_MERGE, on): KSM for every mapping of this process and, from Linux 6.7,
/// of what it forks and execs. Returns 0, or -1 with errno.
int kiln_set_memory_merge(int on);

/// The POSIX_SPAWN_SETSID flag (a glibc extension the Glibc module does not import).
short kiln_posix_spawn_setsid_flag(void);

/// posix_spawn_file_actions_addclosefrom_np (glibc 2.34+, not imported by the Glibc module):
/// the child closes every descriptor from `from` on. `actions` is a posix_spawn_file_actions_t.
int kiln_posix_spawn_addclosefrom(void *actions, int from);

/// The effective capability mask of the calling process (from capget(2)), lower and upper words.
int kiln_effective_caps(unsigned long long *mask);

/// pipe2(fds, O_CLOEXEC). Returns 0, or -1 with errno.
int kiln_pipe_cloexec(int fds[2]);

/// pidfd_open(2) with close-on-exec (glibc has no wrapper Swift can import): a descriptor that
/// polls readable when the process `pid` has ended. Returns the fd, or -1 with errno.
int kiln_pidfd_open(pid_t pid);

/// Whether `path` is a pinned namespace (an nsfs mount). Returns 1, 0, or -1 with errno.
int kiln_is_nsfs(const char *path);

/// mlock2(addr, len, MLOCK_ONFAULT): the pages of the range already mapped are locked, and
/// every page faulted into it later. Returns 0, or -1 with errno.
int kiln_mlock_on_fault(void *addr, unsigned long len);

/// Whether `path` is on tmpfs or ramfs, i.e. in memory, never written to a disk (statfs(2)).
/// Returns 1, 0, or -1 with errno.
int kiln_is_in_memory(const char *path);

/// sched_getaffinity(tid, ...) (a glibc extension the Glibc module does not import): the cores
/// thread `tid` (0: the caller) may run on, one bit per core in `mask` (`mask_bytes` long, core 0
/// the lowest bit of byte 0). Returns 0, or -1 with errno.
int kiln_get_thread_cpus(pid_t tid, unsigned char *mask, size_t mask_bytes);

/// sched_setaffinity(tid, ...), with `mask` as for kiln_get_thread_cpus. Returns 0, or -1 with errno.
int kiln_set_thread_cpus(pid_t tid, const unsigned char *mask, size_t mask_bytes);

/// One listening TCP socket, as the kernel's sock_diag reports it.
struct kiln_tcp_listener {
    /// AF_INET or AF_INET6.
    int family;
    /// The local address, network byte order (4 bytes used for AF_INET).
    unsigned char address[16];
    /// The local port, host byte order.
    int port;
};

/// The listening TCP sockets (IPv4 and IPv6) of the network namespace at `netns_path`, through a
/// NETLINK_SOCK_DIAG dump filtered to the LISTEN state by the kernel: it walks only the listening
/// hash, where reading /proc/PID/net/tcp walks every bucket of the host's established hash
/// (milliseconds on a machine with a large one). At most `max` are written to `out`. Returns how
/// many there are (possibly more than `max`), or -1 with errno.
int kiln_tcp_listeners(const char *netns_path, struct kiln_tcp_listener *out, int max);

#endif
