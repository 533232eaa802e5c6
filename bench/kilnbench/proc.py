"""Processes, memory accounting and host facts."""

import ctypes
import ctypes.util
import os
import platform
import re
import shutil
import signal
import subprocess
import time

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
PR_SET_CHILD_SUBREAPER = 36


class CommandFailed(Exception):
    def __init__(self, argv, returncode, output):
        self.argv, self.returncode, self.output = argv, returncode, output
        tail = "\n".join(output.strip().splitlines()[-12:])
        super().__init__(f"`{' '.join(argv)}` exited with {returncode}:\n{tail}")


def run(argv, check=True, timeout=600, env=None, log=None, input_text=None, stdout_only=False):
    """Runs a command to completion; returns (elapsed ms, output). The output is stdout and stderr
    merged, or with stdout_only (JSON on stdout, progress on stderr) stdout alone; an error
    carries both."""
    start = time.perf_counter_ns()
    try:
        proc = subprocess.run(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE if stdout_only else subprocess.STDOUT, text=True,
            timeout=timeout, env=env, input=input_text, errors="replace")
    except FileNotFoundError as e:
        raise CommandFailed(argv, 127, str(e))
    except subprocess.TimeoutExpired as e:
        out = e.stdout or ""
        if isinstance(out, bytes):
            out = out.decode(errors="replace")
        raise CommandFailed(argv, -1, out + f"\n(timed out after {timeout} s)")
    elapsed = (time.perf_counter_ns() - start) / 1e6
    if log:
        log(f"$ {' '.join(argv)}  [{proc.returncode}, {elapsed:.0f} ms]")
    if check and proc.returncode != 0:
        raise CommandFailed(argv, proc.returncode, proc.stdout + (proc.stderr or "" if stdout_only else ""))
    return elapsed, proc.stdout


def become_subreaper():
    """Orphans of what we start (criu restore -d's tree, conmon, ...) get reparented to us, so
    nothing is left to init and we can reap everything we started."""
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def reap():
    """Collects exited children (non-blocking)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def kill_and_wait(pid, sig=signal.SIGKILL, timeout=20.0):
    """Signals pid and waits until it is gone (reaping it if it is our child)."""
    if not pid:
        return True
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return True
    deadline = time.time() + timeout
    while time.time() < deadline:
        reap()
        if not alive(pid):
            return True
        time.sleep(0.01)
    return False


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


def parent(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, IndexError, ValueError):
        return None


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def smaps_rollup(pid):
    """RSS, PSS, shared (bytes) of one process, plus KSM-merged bytes when the kernel says."""
    usage = {"rss": 0, "pss": 0, "shared": 0, "ksm_merged": 0}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 2:
                    continue
                key, value = fields[0], fields[1]
                if not value.isdigit():
                    continue
                if key == "Rss:":
                    usage["rss"] = int(value) * 1024
                elif key == "Pss:":
                    usage["pss"] = int(value) * 1024
                elif key in ("Shared_Clean:", "Shared_Dirty:"):
                    usage["shared"] += int(value) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    try:
        with open(f"/proc/{pid}/ksm_merging_pages") as f:
            usage["ksm_merged"] = int(f.read().strip()) * os.sysconf("SC_PAGE_SIZE")
    except (FileNotFoundError, ValueError, OSError):
        pass
    return usage


SUPERVISORS = ("conmon", "containerd-shim", "containerd-shim-runc-v2", "kiln-shim")


def instance_memory(pid):
    """Memory of one instance: its JVM (pid) and, separately, the per-instance supervisor process
    (conmon, containerd-shim, kiln-shim) when it has one."""
    jvm = smaps_rollup(pid)
    if jvm is None:
        return None
    result = {"pid": pid, **jvm, "supervisor": None}
    ppid = parent(pid)
    name = comm(ppid) if ppid else None
    if name and any(name.startswith(s[:15]) for s in SUPERVISORS):
        sup = smaps_rollup(ppid)
        if sup:
            result["supervisor"] = {"name": name, "pid": ppid, **sup}
    return result


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError):
        return None


def cpu_busy_fraction(previous=None):
    """(busy, total) jiffies of the whole machine; with a previous sample, the busy fraction since."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    sample = (total - idle, total)
    if previous is None:
        return sample, None
    busy = sample[0] - previous[0]
    span = sample[1] - previous[1]
    return sample, (busy / span if span else None)


def _stat_fields(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def own_cpu_jiffies():
    """CPU time (jiffies) used by this process and everything it started: itself, its live
    descendants, and (through cutime/cstime) the ones already reaped. Orphans of what we start
    are reparented to us (we are a subreaper), so containers' processes count too."""
    me = os.getpid()
    parents, fields = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        f = _stat_fields(int(entry))
        if f:
            parents[int(entry)] = int(f[1])
            fields[int(entry)] = f
    total = 0
    for pid, f in fields.items():
        p, hops = pid, 0
        while p and p != me and hops < 64:
            p, hops = parents.get(p), hops + 1
        if p == me:
            # fields after the comm: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
            total += sum(int(x) for x in f[11:15])
    return total


def machine_busy_jiffies():
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields[:8]) - idle


def foreign_java_processes(own_pids):
    """JVMs on the machine that this benchmark did not start (other users' builds and tests)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if pid in own_pids:
            continue
        if comm(pid) == "java":
            found.append(pid)
    return found


def ksm_stats():
    base = "/sys/kernel/mm/ksm"
    stats = {}
    for name in ("run", "pages_shared", "pages_sharing", "full_scans", "general_profit", "pages_to_scan", "sleep_millisecs"):
        try:
            with open(f"{base}/{name}") as f:
                stats[name] = int(f.read().strip())
        except (OSError, ValueError):
            pass
    return stats


def first_line(argv):
    try:
        _, out = run(argv, check=False, timeout=30)
        return out.strip().splitlines()[0] if out.strip() else None
    except CommandFailed:
        return None


def machine_facts(java17, java25, criu, runc):
    facts = {
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "os": None,
        "mem_total_bytes": None,
        "cpu_model": None,
        "cgroup": "v2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "v1",
        "java17": first_line([java17, "-version"]),
        "java25": first_line([java25, "-version"]),
        "criu": first_line([criu, "--version"]),
        "criu_path": criu,
        "runc": first_line([runc, "--version"]),
        "podman": first_line(["podman", "--version"]) if shutil.which("podman") else None,
        "docker": first_line(["/usr/bin/docker", "--version"]) if os.path.exists("/usr/bin/docker") else None,
        "ksm": ksm_stats(),
    }
    try:
        with open("/etc/os-release") as f:
            m = re.search(r'^PRETTY_NAME="?([^"\n]*)', f.read(), re.M)
            facts["os"] = m.group(1) if m else None
        with open("/proc/meminfo") as f:
            m = re.search(r"^MemTotal:\s+(\d+)", f.read(), re.M)
            facts["mem_total_bytes"] = int(m.group(1)) * 1024 if m else None
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.*)$", f.read(), re.M)
            facts["cpu_model"] = m.group(1) if m else None
    except OSError:
        pass
    # Java prints its version on stderr; run() merges stderr into the output.
    return facts


def du_bytes(path):
    """Apparent size of a file or a directory tree (bytes)."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


# CRIU's stats-restore: a "service" image (magics 0x55105940, 0x57093306), a 32-bit little-endian
# length, one protobuf stats_entry whose field 2 is restore_stats_entry (criu/images/stats.proto:
# 1 pages_compared, 2 pages_skipped_cow, 3 forking_time, 4 restore_time (µs), 5 pages_restored).
CRIU_SERVICE_MAGIC, CRIU_STATS_MAGIC = 0x55105940, 0x57093306


def _varint(data, offset):
    value, shift = 0, 0
    while True:
        if offset >= len(data) or shift > 63:
            raise ValueError(f"truncated varint at byte {offset}")
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset
        shift += 7


def _fields(data):
    """(field number, wire type, value) of a protobuf message; value: int for varints, bytes otherwise."""
    offset = 0
    while offset < len(data):
        key, offset = _varint(data, offset)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, offset = _varint(data, offset)
        elif wire == 2:
            length, offset = _varint(data, offset)
            value, offset = data[offset:offset + length], offset + length
            if offset > len(data):
                raise ValueError("length-delimited field runs past the end")
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, offset = data[offset:offset + size], offset + size
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield field, wire, value


def criu_restore_stats(path):
    """{"restore_ms", "forking_ms", "pages_restored"} from a stats-restore file CRIU wrote, or None
    when there is none or it cannot be read."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    try:
        if len(data) < 12 or int.from_bytes(data[0:4], "little") != CRIU_SERVICE_MAGIC \
                or int.from_bytes(data[4:8], "little") != CRIU_STATS_MAGIC:
            return None
        length = int.from_bytes(data[8:12], "little")
        entry = data[12:12 + length]
        restore = next((v for f, w, v in _fields(entry) if f == 2 and w == 2), None)
        if restore is None:
            return None
        values = {f: v for f, w, v in _fields(restore) if w == 0}
        if 4 not in values:
            return None
        return {"restore_ms": values[4] / 1000, "forking_ms": values.get(3, 0) / 1000, "pages_restored": values.get(5)}
    except ValueError:
        return None


def _socket_inodes(pid):
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def connection_sockets(pid):
    """Inodes of the sockets process `pid` holds that are neither unix sockets nor TCP listeners (as
    its own network namespace lists them): accepted connections, including ones already closed by
    the peer whose descriptor the server has not closed yet (those are in no ss listing)."""
    mine = _socket_inodes(pid)
    known = set()
    for table in ("unix", "tcp", "tcp6", "udp", "udp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if table == "unix":
                        if len(fields) >= 7:
                            known.add(fields[6])
                    elif len(fields) >= 10 and (fields[3] == "0A" or table.startswith("udp")):
                        known.add(fields[9])  # LISTEN (0A), or a UDP socket (not a connection)
        except OSError:
            pass
    return sorted(mine - known)


def wait_connections_closed(pid, timeout_s=30.0):
    """Waits until `pid` holds no connection socket (connection_sockets). A server closes an accepted
    connection a moment after its last response (Tomcat's poller thread does it); CRIU refuses to
    restore a connected TCP socket without --tcp-established, which docker cannot pass, so every
    checkpoint but kiln's (whose agent stops the connector) waits for this first. Returns
    (ms waited, inodes still open at the end)."""
    start = time.perf_counter()
    while True:
        left = connection_sockets(pid)
        if not left or time.perf_counter() - start >= timeout_s:
            return (time.perf_counter() - start) * 1000, left
        time.sleep(0.05)
