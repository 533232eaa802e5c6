"""The benchmark run: prepare every method, interleaved start-up rounds, steady state, N instances.

Everything lands in results.json (raw samples, written after every phase so an interrupted run
keeps what it measured); report.py turns it into report.md and the plots.
"""

import datetime
import json
import os
import shutil
import signal
import sys
import time
import traceback

from . import SCHEMA_VERSION, client, methods, proc

FIRST_REQUESTS = [f"/owners/{i}" for i in range(1, 51)]


def steady_paths(count, offset):
    return [f"/owners/{(offset + i) % 2000 + 1}" for i in range(count)]


class Profile:
    """Full: 10 measured rounds after a discarded one, steady state after 1,050 requests, 8
    instances side by side for every method. QUICK (~5 min): 2 rounds and no discarded round
    (the preparation already read every method's files), steady state after 300 requests, the
    8-instance memory phase for kiln only."""

    def __init__(self, quick):
        self.quick = quick
        self.rounds = 2 if quick else 10
        self.warm_round = not quick
        self.steady_warm = 300 if quick else 1000
        self.steady_timed = 200 if quick else 300
        self.n_instances = 8
        self.n_methods = ["kiln"] if quick else None  # None: every method that can
        self.settle_min_s = 10  # memory of N is sampled every 2 s until it is stable (< 1 % change
        self.settle_s = 40      # over the last 4 s), at least settle_min_s, at most settle_s
        self.sample_every_s = 2
        self.overridden = []

    def as_dict(self):
        return dict(self.__dict__)


class Harness:
    def __init__(self, repo, out_dir, quick=False, only=None, work="/var/lib/kiln-bench", overrides=None):
        self.repo, self.out, self.profile, self.only = repo, out_dir, Profile(quick), only
        for key, value in (overrides or {}).items():
            setattr(self.profile, key, value)
            self.profile.overridden.append(key)
        self.logs = os.path.join(out_dir, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.logfile = open(os.path.join(self.logs, "bench.log"), "a")
        self.ctx = methods.Context(repo, work, self.logs, self.log, quick)
        self.methods = methods.all_methods(self.ctx)
        if only:
            self.methods = [m for m in self.methods if m.id in only or (m.id == "kiln" and "kiln-serve" in only)]
        self.active = []
        self.results = {
            "schema": SCHEMA_VERSION,
            "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "finished_at": None,
            "profile": self.profile.as_dict(),
            "machine": None,
            "policy": {
                "warm_cache": (("warm page cache for every method: one discarded start of every method "
                                "(round 0) before the measured rounds; no cache is dropped between runs")
                               if self.profile.warm_round else
                               ("warm page cache for every method: the preparation read every method's files "
                                "(JDKs, jars, archives, images) moments before; no discarded round (QUICK); no "
                                "cache is dropped between runs")),
                "readiness": "GET /health answering HTTP 200, polled every 5 ms from the moment the start command is spawned",
                "client": ("one Python client for every method: a new TCP connection per request, "
                           "HTTP/1.1 GET with Connection: close, read to EOF; kiln's instances are "
                           "reached from a thread inside their network namespace, the others on 127.0.0.1"),
                "interleaving": "round r runs every method once, in the same order (A B C ... A B C ...)",
                "sandbox": ("methods 1-5 run the JVM on the host (no container); podman and docker in "
                            "their containers (bridge network, port published on 127.0.0.1); kiln in its "
                            "runc sandbox (own netns)"),
                "jvm": ("the same command line everywhere: java -XX:MaxRAM=1g -XX:+UseSerialGC -XX:-UsePerfData "
                        "-jar extracted/app.jar (1b: -jar boot-petclinic.jar): the JVM configuration HotSpot picks by "
                        "itself in a 1 GiB container on 2 CPUs (SerialGC, 256 MiB max heap; kiln's default sandbox, "
                        "and podman and docker get --memory 1g), pinned so the host JVMs get it too; "
                        "-XX:-UsePerfData is also what the sample's launcher adds"),
                "jar": ("Spring Boot's advice for CDS and AOT caches is to extract the executable jar first "
                        "(`java -Djarmode=tools -jar app.jar extract --destination DIR`, then `java -jar DIR/app.jar`): "
                        "the archive methods need it (a CDS/AOT cache holds only classes from the class path, and "
                        "the executable jar's classes come from nested jars through Spring Boot's own class loader), "
                        "and every other method runs the same extracted form, so that the start mechanism is the only "
                        "difference between methods; 1b shows what the executable jar as shipped costs a cold start"),
                "network": ("kiln bakes as `make demo` does: with its CRaC agent and on kiln's network (`--network "
                            "kiln`, the default: an address of its own on the kiln0 bridge, reached from inside its "
                            "namespace); podman and docker on their bridges; the host methods on the host's loopback"),
                "warmup": [f"{n} x GET {p}" for n, p in methods.WARMUP],
                "first_requests": "GET /owners/1 .. /owners/50 right after the first /health 200",
                "steady": (f"in the last round's instance of each method, after its first 50 requests: "
                           f"{self.profile.steady_warm} more requests to /owners/{{i}} not timed, then "
                           f"{self.profile.steady_timed} timed"),
                "memory": ("RSS and PSS from /proc/PID/smaps_rollup of the JVM process; the per-instance "
                           "supervisor (conmon, containerd-shim, kiln-shim) separately; daemons (dockerd, "
                           "containerd) not counted"),
            },
            "methods": [],
            "startup": [],
            "steady": [],
            "memory_n": [],
            "notes": [],
        }

    # ---------------------------------------------------------------------------------------

    def log(self, message):
        line = f"{datetime.datetime.now().strftime('%H:%M:%S')} {message}"
        print(line, file=sys.stderr, flush=True)
        self.logfile.write(line + "\n")
        self.logfile.flush()

    def save(self):
        path = os.path.join(self.out, "results.json")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.results, f, indent=1, sort_keys=False)
        os.replace(tmp, path)

    def method_entry(self, method):
        for entry in self.results["methods"]:
            if entry["id"] == method.id:
                return entry
        entry = {"id": method.id, "label": method.label, "family": method.family,
                 "description": method.description, "status": "pending", "reason": None, "error": None,
                 "prepare": {}}
        self.results["methods"].append(entry)
        return entry

    def mark_not_run(self, method, reason, error, phase):
        entry = self.method_entry(method)
        entry.update(status="not-run", reason=reason, error=(error or "").strip()[-3000:], failed_phase=phase)
        if method in self.active:
            self.active.remove(method)
        self.log(f"{method.id}: NOT RUN ({phase}): {reason}")

    # ---------------------------------------------------------------------------------------

    def run(self):
        if os.geteuid() != 0:
            raise SystemExit("bench: must run as root (CRIU, runc, podman and dockerd need it)")
        proc.become_subreaper()

        def terminate(signum, frame):
            raise KeyboardInterrupt(f"signal {signum}")

        signal.signal(signal.SIGTERM, terminate)  # `kill` of the benchmark still cleans up
        signal.signal(signal.SIGHUP, terminate)
        os.makedirs(self.ctx.work, exist_ok=True)
        os.makedirs("/run/kiln-bench", exist_ok=True)
        started = time.time()
        self.net_before = self.host_network_settings()
        try:
            self.preflight()
            self.prepare()
            self.startup_rounds()
            self.memory_n()
        except KeyboardInterrupt:
            self.results["notes"].append("interrupted: figures are what was measured before the interruption")
            self.log("interrupted")
        finally:
            self.cleanup()
            self.results["finished_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            self.results["duration_s"] = round(time.time() - started, 1)
            self.save()
            self.log(f"results: {os.path.join(self.out, 'results.json')} ({self.results['duration_s']:.0f} s)")

    def preflight(self):
        self.log("preflight: building the app jar, host facts")
        self.ctx.build_app()
        self.results["machine"] = proc.machine_facts(self.ctx.java17, self.ctx.java25, self.ctx.criu, self.ctx.runc)
        self.results["machine"]["criu_on_path"] = shutil.which("criu", path=self.ctx.path)
        self.results["machine"]["kiln"] = self.ctx.kiln  # .build/debug/kiln unless KILN=... (a release build is faster)
        self.results["command"] = self.ctx.command()
        self.results["service"] = {"description": methods.SERVICE, "sample": methods.SAMPLE,
                                   "extraction": self.ctx.extraction,
                                   "executable_jar_command": self.ctx.executable_command()}
        self.save()

    def prepare(self):
        for method in self.methods:
            entry = self.method_entry(method)
            try:
                method.check()
            except methods.NotAvailable as e:
                self.mark_not_run(method, e.reason, e.error, "check")
                continue
            self.log(f"{method.id}: preparing")
            try:
                entry["prepare"] = method.prepare() or {}
                entry["status"] = "ok"
                self.active.append(method)
                self.log(f"{method.id}: prepared {json.dumps(entry['prepare'])}")
            except methods.NotAvailable as e:
                self.mark_not_run(method, e.reason, e.error, "prepare")
            except Exception as e:  # noqa: BLE001 - any failure makes the method "not run", with proof
                self.mark_not_run(method, f"preparation failed: {e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                                  traceback.format_exc(), "prepare")
            self.save()

    # ---------------------------------------------------------------------------------------

    def paths_for(self, instance, paths):
        prefix = instance.extra.get("path_prefix", "")
        return [prefix + p for p in paths]

    def start_and_wait(self, method, slot=0):
        instance = method.start(slot)
        prefix = instance.extra.get("path_prefix", "")
        try:
            ttfr, attempts = client.wait_ready(instance.endpoint_fn, prefix + "/health", instance.start_ns,
                                               timeout_s=180, alive=instance.alive_fn)
            instance.endpoint = instance.endpoint_fn()
            instance.extra["poll_attempts"] = attempts
            method.after_ready(instance)
        except BaseException:
            self.safe_stop(method, instance)
            raise
        return instance, ttfr

    def safe_stop(self, method, instance):
        try:
            method.stop(instance)
        except Exception as e:  # noqa: BLE001
            self.log(f"{method.id}: stop failed: {e}")

    def one_run(self, method, round_number, order, steady=False):
        load = proc.loadavg()
        foreign = len(proc.foreign_java_processes(self.ctx.own_pids))
        busy_before, own_before, t_before = proc.machine_busy_jiffies(), proc.own_cpu_jiffies(), time.time()
        sample = {"method": method.id, "round": round_number, "order": order, "discarded": round_number == 0,
                  "loadavg_1m": load, "foreign_jvms": foreign}
        instance, ttfr = self.start_and_wait(method)
        try:
            elapsed = time.time() - t_before
            others = (proc.machine_busy_jiffies() - busy_before) - (proc.own_cpu_jiffies() - own_before)
            sample["ttfr_ms"] = round(ttfr, 3)
            phases = instance.extra.get("phases")
            if phases:
                # A method's phases cover its restore; the rest of the whole command to the first
                # 200 (the kiln or criu process itself, the harness's own request) is a slice too.
                phases[methods.REST] = round(max(0.0, ttfr - sum(phases.values())), 3)
            # CPU that processes the benchmark did not start used while this method started (in
            # cores): other users' builds and tests on this shared machine.
            sample["others_cpu_cores_during_start"] = round(max(0.0, others / os.sysconf("SC_CLK_TCK") / elapsed), 3) if elapsed > 0 else None
            latencies, statuses = client.timed_requests(instance.endpoint, self.paths_for(instance, FIRST_REQUESTS))
            sample["first_requests_ms"] = latencies
            bad = [s for s in statuses if s != 200]
            if bad:
                sample["first_requests_errors"] = len(bad)
            memory = proc.instance_memory(instance.pid) if instance.pid else None
            sample["memory"] = memory
            sample["extra"] = {k: v for k, v in instance.extra.items() if k not in ("records", "log", "pidfile")}
            if steady:
                self.steady_state(method, instance, round_number)
        finally:
            self.safe_stop(method, instance)
        return sample

    def startup_rounds(self):
        rounds = self.profile.rounds
        failures = {}
        first = 0 if self.profile.warm_round else 1
        for round_number in range(first, rounds + 1):
            label = "warm-up round (discarded)" if round_number == 0 else f"round {round_number}/{rounds}"
            for order, method in enumerate(list(self.active)):
                try:
                    sample = self.one_run(method, round_number, order, steady=round_number == rounds)
                except KeyboardInterrupt:
                    raise
                except Exception as e:  # noqa: BLE001
                    failures[method.id] = failures.get(method.id, 0) + 1
                    self.results["startup"].append({"method": method.id, "round": round_number, "order": order,
                                                    "discarded": round_number == 0, "error": str(e)[-2000:]})
                    self.log(f"{label} {method.id}: FAILED: {str(e).splitlines()[0] if str(e) else e!r}")
                    if failures[method.id] >= 3:
                        self.mark_not_run(method, f"failed 3 start-ups: {str(e).splitlines()[0]}", traceback.format_exc(), "startup")
                    continue
                self.results["startup"].append(sample)
                mem = sample.get("memory") or {}
                self.log(f"{label} {method.id}: first 200 after {sample['ttfr_ms']:.0f} ms, "
                         f"first request {sample['first_requests_ms'][0]:.1f} ms, PSS {mem.get('pss', 0) / 2**20:.0f} MiB"
                         f" (load {sample['loadavg_1m']}, other JVMs {sample['foreign_jvms']})")
            self.save()

    # ---------------------------------------------------------------------------------------

    def steady_state(self, method, instance, round_number):
        """Steady-state latency and memory, in an instance that already served its first 50."""
        if not self.profile.steady_timed:
            return
        try:
            client.timed_requests(instance.endpoint, self.paths_for(instance, steady_paths(self.profile.steady_warm, 50)))
            latencies, statuses = client.timed_requests(
                instance.endpoint, self.paths_for(instance, steady_paths(self.profile.steady_timed, 50 + self.profile.steady_warm)))
        except Exception as e:  # noqa: BLE001
            self.results["steady"].append({"method": method.id, "round": round_number, "error": str(e)[-2000:]})
            return
        entry = {"method": method.id, "round": round_number, "requests_before": 50 + self.profile.steady_warm,
                 "latencies_ms": latencies, "errors": sum(1 for s in statuses if s != 200),
                 "memory": proc.instance_memory(instance.pid) if instance.pid else None}
        self.results["steady"].append(entry)
        mem = entry["memory"] or {}
        self.log(f"steady {method.id}: median {sorted(latencies)[len(latencies) // 2]:.2f} ms, "
                 f"RSS {mem.get('rss', 0) / 2**20:.0f} MiB PSS {mem.get('pss', 0) / 2**20:.0f} MiB")

    # ---------------------------------------------------------------------------------------

    def memory_n(self):
        n = self.profile.n_instances
        if not n:
            self.results["notes"].append("N-instances memory phase skipped (--instances 0)")
            return
        for method in list(self.active):
            entry = {"method": method.id, "n": n}
            if self.profile.n_methods is not None and method.id not in self.profile.n_methods:
                entry["status"] = "skipped"
                entry["reason"] = "QUICK profile measures N instances for kiln only (make bench measures every method)"
                self.results["memory_n"].append(entry)
                continue
            if method.max_instances == 1:
                entry["status"] = "not-run"
                entry["reason"] = method.max_instances_reason
                if isinstance(method, methods.BareCRIU):
                    try:
                        entry["error"] = method.prove_single_instance()
                    except Exception as e:  # noqa: BLE001
                        entry["error"] = f"(the proof itself failed: {e})"
                self.results["memory_n"].append(entry)
                self.log(f"memory x{n} {method.id}: not run: {entry['reason']}")
                self.save()
                continue
            self.log(f"memory x{n} {method.id}: starting {n} side by side")
            instances = []
            try:
                start_ns = time.perf_counter_ns()
                instances = method.start_many(n)
                ttfrs = []
                for instance in instances:
                    prefix = instance.extra.get("path_prefix", "")
                    ms, _ = client.wait_ready(instance.endpoint_fn, prefix + "/health", instance.start_ns,
                                              timeout_s=300, alive=instance.alive_fn)
                    instance.endpoint = instance.endpoint_fn()
                    method.after_ready(instance)
                    ttfrs.append(round(ms, 3))
                entry["all_ready_ms"] = round((time.perf_counter_ns() - start_ns) / 1e6, 3)
                entry["ttfr_ms"] = ttfrs
                for instance in instances:
                    client.timed_requests(instance.endpoint, self.paths_for(instance, FIRST_REQUESTS))
                entry["samples"] = self.sample_memory(method, instances)
                entry["status"] = "ok"
                if isinstance(method, methods.Kiln):
                    entry["kiln_ps"] = method.ps()
                last = entry["samples"][-1]
                self.log(f"memory x{n} {method.id}: total PSS {last['total_pss'] / 2**20:.0f} MiB, "
                         f"RSS {last['total_rss'] / 2**20:.0f} MiB after {last['t_s']:.0f} s")
            except KeyboardInterrupt:
                raise
            except Exception as e:  # noqa: BLE001
                entry["status"] = "failed"
                entry["error"] = (str(e) + "\n" + traceback.format_exc())[-3000:]
                self.log(f"memory x{n} {method.id}: FAILED: {e}")
            finally:
                for instance in instances:
                    self.safe_stop(method, instance)
            self.results["memory_n"].append(entry)
            self.save()

    def sample_memory(self, method, instances):
        """Samples the instances' memory every 2 s until the total PSS is stable: less than 1 %
        change over the last 4 s, after at least settle_min_s and at most settle_s. The same rule
        for every method; kiln's copies take 10-20 s of KSM merging to get there."""
        samples = []
        begin = time.time()
        while True:
            t = time.time() - begin
            per = [proc.instance_memory(i.pid) for i in instances]
            per = [p for p in per if p]
            samples.append({
                "t_s": round(t, 2),
                "total_rss": sum(p["rss"] for p in per),
                "total_pss": sum(p["pss"] for p in per),
                "total_supervisor_pss": sum((p["supervisor"] or {}).get("pss", 0) for p in per),
                "ksm_merged": sum(p.get("ksm_merged", 0) for p in per),
                "instances_measured": len(per),
                "ksm": proc.ksm_stats(),
                "per_instance": per,
            })
            if t >= self.profile.settle_s:
                return samples
            if t >= self.profile.settle_min_s and len(samples) >= 3:
                recent = [s["total_pss"] for s in samples[-3:]]
                if recent[-1] and (max(recent) - min(recent)) / recent[-1] < 0.01:
                    return samples
            time.sleep(self.profile.sample_every_s)

    # ---------------------------------------------------------------------------------------

    def cleanup(self):
        self.log("cleanup: every method removes what it made")
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # let clean-up finish
        try:
            for method in reversed(self.methods):
                try:
                    method.cleanup()
                except Exception as e:  # noqa: BLE001
                    self.log(f"{method.id}: cleanup failed: {e}")
                    self.results["notes"].append(f"clean-up of {method.id} failed: {e}")
            for pid in list(self.ctx.own_pids):
                proc.kill_and_wait(pid)
            proc.reap()
            leftovers = self.leftovers()
            self.results["leftovers"] = leftovers
            if leftovers:
                self.log(f"cleanup: LEFT BEHIND: {leftovers}")
            # The scratch directory is the benchmark's own (archives, images, rootfs, runtimes' state).
            shutil.rmtree(self.ctx.work, ignore_errors=True)
            shutil.rmtree("/run/kiln-bench", ignore_errors=True)
            self.restore_host_network_settings()
        finally:
            signal.signal(signal.SIGINT, previous)

    @staticmethod
    def host_network_settings():
        """dockerd turns on IP forwarding and may set the FORWARD policy to DROP: noted before,
        put back after."""
        settings = {}
        try:
            with open("/proc/sys/net/ipv4/ip_forward") as f:
                settings["ip_forward"] = f.read().strip()
        except OSError:
            pass
        try:
            _, out = proc.run(["iptables", "-S", "FORWARD"], check=False)
            for line in out.splitlines():
                if line.startswith("-P FORWARD"):
                    settings["forward_policy"] = line.split()[2]
        except proc.CommandFailed:
            pass
        return settings

    def restore_host_network_settings(self):
        now = self.host_network_settings()
        before = getattr(self, "net_before", {})
        if before.get("ip_forward") and now.get("ip_forward") != before["ip_forward"]:
            with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
                f.write(before["ip_forward"])
            self.log(f"cleanup: net.ipv4.ip_forward back to {before['ip_forward']}")
        if before.get("forward_policy") and now.get("forward_policy") != before["forward_policy"]:
            proc.run(["iptables", "-P", "FORWARD", before["forward_policy"]], check=False)
            self.log(f"cleanup: iptables FORWARD policy back to {before['forward_policy']}")

    def leftovers(self):
        """What of ours is still there after clean-up (should be nothing)."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if pid == os.getpid():
                continue
            if "kiln-bench" in cmdline or (self.ctx.app_dir in cmdline):
                found.append(f"process {pid}: {cmdline[:160]}")
        with open("/proc/self/mounts") as f:
            for line in f:
                if "kiln-bench" in line:
                    found.append(f"mount {line.split()[1]}")
        for link in ("docker0", "cni-podman0"):
            if os.path.exists(f"/sys/class/net/{link}"):
                for method in self.methods:
                    if getattr(method, "links_before", None) is not None and link not in method.links_before:
                        found.append(f"network link {link}")
                        break
        return sorted(set(found))
