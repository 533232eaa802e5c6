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
