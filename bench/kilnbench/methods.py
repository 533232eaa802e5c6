"""The start-up methods, one class each.

Every method runs the same service (examples/boot-petclinic, the Spring Boot 3 sample, in the
extracted form Spring Boot advises for CDS and AOT caches, see Context.build_app) with the same JVM
flags, answers on a port the one client can reach, and is judged by the same readiness check
(GET /health -> 200).

A method's life: check() raises NotAvailable if it cannot run here; prepare() builds what it needs
(archive, checkpoint, image) and returns its figures; start(slot) spawns the start command and
returns an Instance at once (the clock starts just before the spawn); the harness polls the
instance's endpoint; stop(instance) removes it; cleanup() removes everything the method made.
"""

import glob
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
import zipfile

from . import client, proc

SAMPLE = "examples/boot-petclinic"
SAMPLE_JAR = f"{SAMPLE}/build/app.jar"
SERVICE = ("`examples/boot-petclinic`: Spring Boot 3.5 / Spring Framework 6.2 on embedded Tomcat 10.1, "
           "JSON endpoints over JDBC (HikariCP 6 to H2 in memory, 3,000 owners generated at start), "
           "actuator, org.crac 1.5.0 resources; built into a Spring Boot executable jar")
# What every checkpoint and archive is trained with, before it is taken: the sample's JSON
# endpoints (ClinicController: a search by last name, one owner with pets and visits, the vets),
# its greeting, and the actuator's health with the database component.
WARMUP = [(100, "/greet?name=warmup"), (100, "/owners?lastName=Da"), (100, "/owners/1"), (50, "/vets"),
          (20, "/actuator/health")]


class NotAvailable(Exception):
    """The method cannot run on this machine: reason (one line) and the error that proves it."""

    def __init__(self, reason, error=""):
        super().__init__(reason)
        self.reason, self.error = reason, error


class Instance:
    def __init__(self, method, slot, start_ns, endpoint_fn, alive_fn=lambda: True):
        self.method, self.slot, self.start_ns = method, slot, start_ns
        self.endpoint_fn, self.alive_fn = endpoint_fn, alive_fn
        self.pid = None  # the JVM's host pid, once known
        self.popen = None  # the start command, if it is a child process
        self.name = None  # container / instance name
        self.extra = {}  # method-specific figures (e.g. kiln's own restore timings)
        self.endpoint = None  # resolved once ready


class Context:
    """Paths, binaries and the service's command line, shared by all methods."""

    def __init__(self, repo, work, logs, log, quick=False):
        self.repo, self.work, self.logs, self.log, self.quick = repo, work, logs, log, quick
        self.java17 = os.environ.get("BENCH_JAVA17", "/usr/lib/jvm/java-17-openjdk-amd64/bin/java")
        self.java25 = os.environ.get("BENCH_JAVA25", "/usr/lib/jvm/temurin-25-jdk-amd64/bin/java")
        self.criu = os.environ.get("BENCH_CRIU", "/usr/local/sbin/criu")
        self.runc = shutil.which("runc") or "/usr/sbin/runc"
        self.kiln = os.environ.get("KILN", os.path.join(repo, ".build/debug/kiln"))
        self.app_dir = os.path.join(work, "app")
        # The executable jar as users ship it (`java -jar boot-petclinic.jar`, Spring Boot's loader
        # reading the nested jars), and its extracted form (what every method runs, see build_app).
        self.executable_jar = os.path.join(self.app_dir, "boot-petclinic.jar")
        self.extracted = os.path.join(self.app_dir, "extracted")
        self.jar = os.path.join(self.extracted, "app.jar")
        self.extraction = None  # how the jar was extracted (reported)
        # The environment of every host JVM and of every runtime we drive: CRIU 4.2.1 first on
        # PATH, so runc (under podman and docker too) finds it rather than any other criu.
        self.path = f"{os.path.dirname(self.criu)}:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        self.env = {"PATH": self.path, "HOME": "/root", "LANG": "C.UTF-8"}
        self.own_pids = set()

    # The JVM flags every method gets: the JVM configuration of a 1 GiB container (kiln's default
    # sandbox --memory 1024; podman and docker get --memory 1g), pinned so that the host JVMs get
    # it too. In a 1 GiB container HotSpot's ergonomics pick SerialGC (less than ~1.8 GB: not a
    # "server class machine") and a 256 MiB max heap; on this 24 GiB host they would pick G1 and
    # 6 GiB. MaxRAM=1g sets the heap sizing, UseSerialGC the collector (MaxRAM alone leaves G1).
    # -XX:-UsePerfData is also what the sample's launcher (bin/boot-petclinic) adds.
    COMMON_FLAGS = ["-XX:MaxRAM=1g", "-XX:+UseSerialGC", "-XX:-UsePerfData"]

    def command(self, java=None, extra_flags=()):
        """`java FLAGS -jar extracted/app.jar`: the command line of every method."""
        java = java or self.java17
        return [java, *self.COMMON_FLAGS, *extra_flags, "-jar", self.jar]

    def executable_command(self, java=None, extra_flags=()):
        """`java FLAGS -jar boot-petclinic.jar`: the executable jar as shipped (method 1b only)."""
        java = java or self.java17
        return [java, *self.COMMON_FLAGS, *extra_flags, "-jar", self.executable_jar]

    def host_env(self, port):
        return {**self.env, "PORT": str(port)}

    def build_app(self):
        """Copies the sample's executable jar into the scratch directory and extracts it the way
        Spring Boot advises before a CDS or AOT training run: `java -Djarmode=tools -jar app.jar
        extract --destination DIR`. The Spring Boot jars this machine has (see
        scripts/spring-boot-jars.sh) lack spring-boot-jarmode-tools, so when the jar answers
        "Unsupported jarmode 'tools'" the same layout is written here (extract_boot_jar)."""
        source = os.path.join(self.repo, SAMPLE_JAR)
        if not os.path.isfile(source):
            raise RuntimeError(f"{source} is missing: run {SAMPLE}/build.sh (make samples)")
        os.makedirs(self.app_dir, exist_ok=True)
        shutil.copyfile(source, self.executable_jar + ".tmp")
        os.replace(self.executable_jar + ".tmp", self.executable_jar)
        shutil.rmtree(self.extracted, ignore_errors=True)
        rc, out = proc.run([self.java17, "-Djarmode=tools", "-jar", self.executable_jar, "extract", "--destination",
                            self.extracted], check=False, log=self.log)
        if rc == 0 and os.path.isfile(self.jar):
            self.extraction = "java -Djarmode=tools -jar boot-petclinic.jar extract (Spring Boot's own tool)"
            return
        shutil.rmtree(self.extracted, ignore_errors=True)
        libs = extract_boot_jar(self.executable_jar, self.extracted)
        self.extraction = (f"the layout of Spring Boot's `java -Djarmode=tools -jar app.jar extract` written by the "
                           f"benchmark (the jar has no spring-boot-jarmode-tools: {out.strip().splitlines()[-1] if out.strip() else rc}): "
                           f"app.jar with BOOT-INF/classes at its root, Main-Class = the Start-Class, Class-Path "
                           f"naming lib/*.jar ({libs} jars, copied unmodified, in classpath.idx order)")


def extract_boot_jar(executable_jar, destination):
    """Spring Boot's extracted layout (what `-Djarmode=tools extract` writes, its default mode):
    DESTINATION/app.jar holding BOOT-INF/classes/ at its root and a manifest whose Main-Class is
    the Start-Class and whose Class-Path lists lib/NAME.jar in the order of BOOT-INF/classpath.idx;
    DESTINATION/lib/ the nested jars, unmodified. Returns the number of library jars."""
    lib_dir = os.path.join(destination, "lib")
    os.makedirs(lib_dir)
    with zipfile.ZipFile(executable_jar) as boot:
        manifest = parse_manifest(boot.read("META-INF/MANIFEST.MF").decode())
        classes = manifest.get("Spring-Boot-Classes", "BOOT-INF/classes/")
        lib_prefix = manifest.get("Spring-Boot-Lib", "BOOT-INF/lib/")
        start_class = manifest.get("Start-Class")
        if not start_class:
            raise RuntimeError(f"{executable_jar} has no Start-Class: not a Spring Boot executable jar")
        names = boot.namelist()
        index = manifest.get("Spring-Boot-Classpath-Index")
        if index and index in names:
            libs = [line.strip()[3:-1] for line in boot.read(index).decode().splitlines() if line.strip().startswith("- ")]
        else:
            libs = sorted(n for n in names if n.startswith(lib_prefix) and n.endswith(".jar"))
        for entry in libs:
            with boot.open(entry) as src, open(os.path.join(lib_dir, os.path.basename(entry)), "wb") as dst:
                shutil.copyfileobj(src, dst)
        attributes = [("Manifest-Version", "1.0"), ("Main-Class", start_class),
                      ("Class-Path", " ".join(f"lib/{os.path.basename(e)}" for e in libs))]
        for key in ("Implementation-Title", "Implementation-Version", "Spring-Boot-Version"):
            if manifest.get(key):
                attributes.append((key, manifest[key]))
        tmp = os.path.join(destination, "app.jar.tmp")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as app:
            app.writestr("META-INF/", b"")
            app.writestr("META-INF/MANIFEST.MF", format_manifest(attributes))
            for info in boot.infolist():
                if info.filename.startswith(classes) and info.filename != classes:
                    name = info.filename[len(classes):]
                    if info.is_dir():
                        app.writestr(name, b"")
                    else:
                        app.writestr(name, boot.read(info.filename))
        os.replace(tmp, os.path.join(destination, "app.jar"))
    return len(libs)


def parse_manifest(text):
    """A jar manifest's main section: {name: value}, continuation lines (leading space) joined."""
    lines = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.startswith(" ") and lines:
            lines[-1] += line[1:]
        elif line:
            lines.append(line)
        else:
            break
    return dict(line.split(": ", 1) for line in lines if ": " in line)


def format_manifest(attributes):
    """Manifest text: each line at most 72 bytes, longer values continued on lines starting with
    a space (the jar specification's rule)."""
    out = []
    for key, value in attributes:
        line = f"{key}: {value}".encode()
        out.append(line[:72])
        line = line[72:]
        while line:
            out.append(b" " + line[:71])
            line = line[71:]
    return b"\r\n".join(out) + b"\r\n\r\n"


def warm_up(endpoint):
    """Replays WARMUP; returns (requests, ms)."""
    start = time.perf_counter_ns()
    count = 0
    for repeat, path in WARMUP:
        for _ in range(repeat):
            response = client.request(endpoint, path)
            if response.status != 200:
                raise RuntimeError(f"warmup GET {path} answered {response.status}: {response.body[:200]!r}")
            count += 1
    return count, (time.perf_counter_ns() - start) / 1e6


def wait_port_free(port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if client.request(client.Endpoint(port), "/", timeout=0.5).status == 0:
            return
        time.sleep(0.1)
    raise RuntimeError(f"port {port} is still answering after {timeout} s: something else uses it")


class Method:
    id = "?"
    label = "?"
    family = "?"  # cold | archive | checkpoint | gateway
    description = ""
    max_instances = None  # None: can run N side by side
    max_instances_reason = None

    def __init__(self, ctx):
        self.ctx = ctx
        self.prep = {}

    def check(self):
        pass

    def prepare(self):
        return {}

    def start(self, slot=0):
        raise NotImplementedError

    def after_ready(self, instance):
        """Called once the instance answered; fills instance.pid."""

    def stop(self, instance):
        raise NotImplementedError

    def start_many(self, n):
        """Starts n instances side by side (all start commands at once) and returns them; the
        harness waits for each to be ready."""
        return [self.start(slot) for slot in range(n)]

    def cleanup(self):
        pass

    def log(self, message):
        self.ctx.log(f"[{self.id}] {message}")


# --------------------------------------------------------------------------------------------
# Host JVMs: cold starts and archives


class HostJVM(Method):
    base_port = 28100
    java_attr = "java17"
    flags = ()

    def java(self):
        return getattr(self.ctx, self.java_attr)

    def check(self):
        if not os.access(self.java(), os.X_OK):
            raise NotAvailable(f"{self.java()} is not installed", f"{self.java()}: No such file or directory")

    def port(self, slot):
        return self.base_port + slot

    def argv(self):
        return self.ctx.command(self.java(), self.flags)

    def start(self, slot=0):
        port = self.port(slot)
        wait_port_free(port)
        argv = self.argv()
        logfile = open(os.path.join(self.ctx.logs, f"{self.id}-{slot}.log"), "ab")
        start_ns = time.perf_counter_ns()
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logfile, stderr=subprocess.STDOUT, env=self.ctx.host_env(port))
        logfile.close()
        instance = Instance(self, slot, start_ns, lambda: client.Endpoint(port), lambda: popen.poll() is None)
        instance.popen, instance.pid = popen, popen.pid
        self.ctx.own_pids.add(popen.pid)
        return instance

    def stop(self, instance):
        instance.popen.kill()
        instance.popen.wait()
        self.ctx.own_pids.discard(instance.pid)


class ColdJDK17(HostJVM):
    id, label, family = "cold-jdk17", "Cold start, JDK 17", "cold"
    description = "`java` (Debian OpenJDK 17) on the host, JDK's default CDS archive only"


class ColdJDK17Jar(HostJVM):
    id, label, family = "cold-jdk17-jar", "Cold start, JDK 17, executable jar", "cold"
    description = ("`java -jar boot-petclinic.jar`, the executable jar as shipped (Spring Boot's launcher "
                   "reading the nested jars), Debian OpenJDK 17; every other method runs the extracted form")
    base_port = 28120

    def argv(self):
        return self.ctx.executable_command(self.java(), self.flags)


class ColdJDK25(HostJVM):
    id, label, family = "cold-jdk25", "Cold start, JDK 25", "cold"
    description = "Temurin 25 on the host, JDK's default CDS archive only"
    java_attr = "java25"


def train(ctx, method_id, argv, port):
    """A training run: start, wait ready, replay WARMUP, then SIGTERM (a normal JVM exit, which
    writes the archive). Returns (ms from start to the end of the JVM, its output)."""
    wait_port_free(port)
    logpath = os.path.join(ctx.logs, f"{method_id}-training.log")
    with open(logpath, "wb") as logfile:
        start = time.perf_counter_ns()
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logfile, stderr=subprocess.STDOUT, env=ctx.host_env(port))
    try:
        client.wait_ready(lambda: client.Endpoint(port), "/health", start, timeout_s=180, alive=lambda: popen.poll() is None)
        warm_up(client.Endpoint(port))
        popen.send_signal(signal.SIGTERM)
        popen.wait(timeout=300)
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait()
    elapsed = (time.perf_counter_ns() - start) / 1e6
    with open(logpath, errors="replace") as f:
        return elapsed, f.read()


class AOTCacheJDK25(HostJVM):
    id, label, family = "aot-jdk25", "JDK 25 AOT cache", "archive"
    description = ("Temurin 25 with `-XX:AOTCache` (JEP 483/514/515: classes loaded and linked, "
                   "method profiles) from a training run with `-XX:AOTCacheOutput`; `-XX:AOTMode=on` "
                   "so a cache that cannot be used is an error, not a silent cold start")
    java_attr = "java25"

    def cache(self):
        return os.path.join(self.ctx.work, "archives", "boot-petclinic.aot")

    def prepare(self):
        os.makedirs(os.path.dirname(self.cache()), exist_ok=True)
        for stale in glob.glob(self.cache() + "*"):
            os.unlink(stale)
        argv = self.ctx.command(self.java(), [f"-XX:AOTCacheOutput={self.cache()}"])
        ms, output = train(self.ctx, self.id, argv, self.port(0))
        if not os.path.exists(self.cache()):
            raise NotAvailable("the training run did not write an AOT cache", output[-2000:])
        self.flags = (f"-XX:AOTCache={self.cache()}", "-XX:AOTMode=on")
        return {"training_ms": ms, "archive_bytes": os.path.getsize(self.cache()),
                "archive_note": "training run (start, warmup requests, exit) plus the AOT cache assembly it forks at exit"}


class AppCDSJDK17(HostJVM):
    id, label, family = "appcds-jdk17", "AppCDS, JDK 17", "archive"
    description = ("Debian OpenJDK 17 with `-XX:SharedArchiveFile` (dynamic AppCDS archive on top "
                   "of the JDK's) from a training run with `-XX:ArchiveClassesAtExit`; `-Xshare:on` "
                   "so an archive that cannot be mapped is an error")

    def archive(self):
        return os.path.join(self.ctx.work, "archives", "boot-petclinic-17.jsa")

    def prepare(self):
        os.makedirs(os.path.dirname(self.archive()), exist_ok=True)
        if os.path.exists(self.archive()):
            os.unlink(self.archive())
        argv = self.ctx.command(self.java(), [f"-XX:ArchiveClassesAtExit={self.archive()}"])
        ms, output = train(self.ctx, self.id, argv, self.port(0))
        if not os.path.exists(self.archive()):
            raise NotAvailable("the training run did not write a CDS archive", output[-2000:])
        self.flags = (f"-XX:SharedArchiveFile={self.archive()}", "-Xshare:on")
        return {"training_ms": ms, "archive_bytes": os.path.getsize(self.archive()),
                "archive_note": "training run (start, warmup requests, exit) including the archive dump at exit"}


# --------------------------------------------------------------------------------------------
# Bare CRIU on the host (the seed experiment's method)


class BareCRIU(Method):
    id, label, family = "criu-bare", "Bare CRIU restore (host)", "checkpoint"
    description = ("the seed experiment's method: the JVM started with `setsid` on the host (host network "
                   "and file system, no container, no cgroup), warmed up, `criu dump`; then `criu restore -d` "
                   "of those images (CRIU 4.2.1). The JVM gets a PID namespace of its own (`unshare --pid "
                   "--fork`), as it had in the seed experiment's container: a restore needs every dumped "
                   "PID and thread id free, and on this shared host (pid_max 32768, other builds running) "
                   "host PIDs are reused within minutes")
    port = 28180
    max_instances = 1
    max_instances_reason = "every restored copy owns the same listening socket (127.0.0.1:28180): copies cannot be addressed one by one"

    def images(self):
        return os.path.join(self.ctx.work, "criu-images")

    def check(self):
        if not os.access(self.ctx.criu, os.X_OK):
            raise NotAvailable(f"no CRIU at {self.ctx.criu}", "run make setup")

    def prepare(self):
        images = self.images()
        shutil.rmtree(images, ignore_errors=True)
        os.makedirs(images)
        wait_port_free(self.port)
        argv = ["unshare", "--pid", "--fork", "setsid", *self.ctx.command()]
        start = time.perf_counter_ns()
        # setsid inside the new PID namespace: the JVM is its init and its own session leader, with
        # no controlling terminal (CRIU dumps it without --shell-job); stdio is /dev/null (CRIU
        # could not reconnect pipes to us).
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 env=self.ctx.host_env(self.port))
        try:
            endpoint = client.Endpoint(self.port)
            cold_ms, _ = client.wait_ready(lambda: endpoint, "/health", start, alive=lambda: popen.poll() is None)
            jvm = proc.children(popen.pid)
            if len(jvm) != 1:
                raise NotAvailable("could not find the JVM under unshare", f"children of {popen.pid}: {jvm}")
            warm_up(endpoint)
            quiet_ms, _ = proc.wait_connections_closed(jvm[0])
            dump_ms, _ = proc.run([self.ctx.criu, "dump", "-t", str(jvm[0]), "-D", images, "-o", "dump.log",
                                   "--tcp-established"], env=self.ctx.env, log=self.log)
        except proc.CommandFailed as e:
            raise NotAvailable("criu dump failed", self._log_tail("dump.log") or str(e))
        finally:
            if popen.poll() is None:
                popen.kill()
            popen.wait()
        return {"cold_start_ms": cold_ms, "checkpoint_ms": dump_ms, "connections_closed_after_ms": quiet_ms,
                "snapshot_bytes": proc.du_bytes(images) - self._logs_size(),
                "snapshot_note": "the CRIU images (uncompressed)"}

    def _logs_size(self):
        return sum(os.path.getsize(p) for p in glob.glob(os.path.join(self.images(), "*.log")))

    def _log_tail(self, name, lines=15):
        try:
            with open(os.path.join(self.images(), name), errors="replace") as f:
                text = f.read().splitlines()
            # CRIU cannot raise its own RLIMIT_NOFILE here (no CAP_SYS_RESOURCE): harmless, skipped.
            errors = [l for l in text if "Error" in l and "RLIMIT_NOFILE" not in l]
            return "\n".join((errors or text)[-lines:])
        except OSError:
            return None

    def start(self, slot=0):
        pidfile = os.path.join(self.ctx.work, f"criu-restore-{slot}.pid")
        # A previous restore's statistics must not pass for this one's.
        for stale in (pidfile, os.path.join(self.images(), "stats-restore")):
            if os.path.exists(stale):
                os.unlink(stale)
        argv = [self.ctx.criu, "restore", "-D", self.images(), "-d", "--tcp-established", "--pidfile", pidfile,
                "-o", f"restore-{slot}.log"]
        start_ns = time.perf_counter_ns()
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.ctx.env)
        instance = Instance(self, slot, start_ns, lambda: client.Endpoint(self.port),
                            lambda: popen.poll() in (None, 0))
        instance.popen = popen
        instance.extra["pidfile"] = pidfile
        return instance

    def after_ready(self, instance):
        rc = instance.popen.wait()
        if rc != 0:
            raise RuntimeError(f"criu restore exited with {rc}: {self._log_tail(f'restore-{instance.slot}.log')}")
        with open(instance.extra["pidfile"]) as f:
            instance.pid = int(f.read().strip())
        self.ctx.own_pids.add(instance.pid)
        # CRIU's own account (stats-restore, written into the images directory, its work directory):
        # the same figure kiln reports as its CRIU phase, so the two stacked bars compare.
        stats = proc.criu_restore_stats(os.path.join(self.images(), "stats-restore"))
        if stats:
            shutil.copyfile(os.path.join(self.images(), "stats-restore"),
                            os.path.join(self.ctx.logs, f"criu-bare-stats-restore-{instance.slot}"))
            instance.extra["criu_stats"] = stats
            instance.extra["phases"] = {"CRIU restore": stats["restore_ms"]}

    def stop(self, instance):
        if instance.popen.poll() is None:
            instance.popen.wait(timeout=60)
        if instance.pid is None and os.path.exists(instance.extra["pidfile"]):
            with open(instance.extra["pidfile"]) as f:
                instance.pid = int(f.read().strip())
        if instance.pid:
            proc.kill_and_wait(instance.pid)
            self.ctx.own_pids.discard(instance.pid)

    def prove_single_instance(self):
        """Restores a second copy while the first runs and shows what becomes of the port.
        Returns the evidence (text)."""
        first = self.start(0)
        second = None
        try:
            client.wait_ready(first.endpoint_fn, "/health", first.start_ns, timeout_s=60, alive=first.alive_fn)
            self.after_ready(first)
            second = self.start(1)
            rc = second.popen.wait(timeout=60)
            if rc != 0:
                return f"second `criu restore` while the first copy runs: exit {rc}\n" + (self._log_tail(f"restore-{second.slot}.log", lines=6) or "")
            self.after_ready(second)
            _, ss = proc.run(["ss", "-Htlnp", f"sport = :{self.port}"], check=False)
            return (f"a second `criu restore` succeeded (pids {first.pid} and {second.pid}), and both listen on the "
                    f"same port (CRIU rebinds the socket in TCP repair mode), so a client reaches one of them only:\n{ss.strip()}")
        finally:
            if second is not None:
                self.stop(second)
            self.stop(first)

    def cleanup(self):
        shutil.rmtree(self.images(), ignore_errors=True)


# --------------------------------------------------------------------------------------------
# podman and docker: same image trick (a ~1 MB root whose /usr is the host's, bound read-only,
# as kiln's default sandbox), same JVM command, published on 127.0.0.1.


def container_run_args(ctx, port):
    return [
        "--memory", "1g",
        # This VM's root lacks CAP_SYS_RESOURCE, so the runtimes' default RLIMIT_NOFILE/NPROC
        # (above the host's hard limits) cannot be set: pass limits below them.
        "--ulimit", "nofile=16384:16384", "--ulimit", "nproc=16384:16384",
        "-p", f"127.0.0.1:{port}:8080", "-e", "PORT=8080",
        "-v", "/usr:/usr:ro", "-v", f"{ctx.app_dir}:{ctx.app_dir}:ro",
    ]


def make_rootfs_tar(ctx):
    """A minimal root: /bin, /lib, ... as symlinks into /usr (bound from the host at run time),
    the /etc entries a JVM reads, passwd/group. ~1 MB."""
    tar = os.path.join(ctx.work, "rootfs.tar")
    root = os.path.join(ctx.work, "rootfs")
    shutil.rmtree(root, ignore_errors=True)
    for d in ("usr", "etc", "tmp", "proc", "sys", "dev", "run", "var/tmp"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    os.chmod(os.path.join(root, "tmp"), 0o1777)
    os.chmod(os.path.join(root, "var/tmp"), 0o1777)
    for name in ("bin", "sbin", "lib", "lib64"):
        if os.path.islink(f"/{name}"):
            os.symlink(os.readlink(f"/{name}"), os.path.join(root, name))
    for entry in ["alternatives"] + sorted(e for e in os.listdir("/etc") if e.startswith("java-")):
        if os.path.isdir(f"/etc/{entry}"):
            shutil.copytree(f"/etc/{entry}", os.path.join(root, "etc", entry), symlinks=True)
    with open(os.path.join(root, "etc/passwd"), "w") as f:
        f.write("root:x:0:0:root:/tmp:/bin/sh\n")
    with open(os.path.join(root, "etc/group"), "w") as f:
        f.write("root:x:0:\n")
    for name in ("hosts", "resolv.conf", "hostname"):
        open(os.path.join(root, "etc", name), "w").close()
    proc.run(["tar", "-C", root, "-cf", tar, "."])
    return tar


def _ip_links():
    try:
        return set(os.listdir("/sys/class/net"))
    except OSError:
        return set()


def remove_iptables_rules(markers, log):
    """Deletes the rules and chains a container runtime added (those naming one of `markers`).
    Only what carries the runtime's own names is touched."""
    for table in ("filter", "nat"):
        try:
            _, rules = proc.run(["iptables", "-t", table, "-S"], check=False)
        except proc.CommandFailed:
            continue
        chains = []
        for line in rules.splitlines():
            try:
                parts = shlex.split(line)
            except ValueError:
                continue
            if not parts:
                continue
            if parts[0] == "-N" and any(parts[1].startswith(m) for m in markers):
                chains.append(parts[1])
            elif parts[0] == "-A" and any(m in line for m in markers) and not any(parts[1].startswith(m) for m in markers):
                proc.run(["iptables", "-t", table, "-D", *parts[1:]], check=False)
        for chain in chains:
            proc.run(["iptables", "-t", table, "-F", chain], check=False)
        for chain in chains:
            proc.run(["iptables", "-t", table, "-X", chain], check=False)
    log(f"removed iptables rules/chains named {', '.join(markers)}")


class Podman(Method):
    id, label, family = "podman", "Podman checkpoint/restore", "checkpoint"
    description = ("Debian's podman 4.3 (runc, CRIU 4.2.1): `podman container checkpoint --export`, then "
                   "`podman container restore --import` (a new container from the archive), bridge "
                   "network, port published on 127.0.0.1")
    base_port = 28200

    def __init__(self, ctx):
        super().__init__(ctx)
        self.root = os.path.join(ctx.work, "podman", "root")
        self.runroot = "/run/kiln-bench/podman"
        self.export = os.path.join(ctx.work, "podman", "checkpoint.tar.gz")
        self.sequence = 0
        self.links_before = _ip_links()

    def podman(self, *args):
        return ["podman", "--root", self.root, "--runroot", self.runroot, "--cgroup-manager", "cgroupfs",
                "--events-backend", "file", "--runtime", self.ctx.runc, *args]

    def check(self):
        if not shutil.which("podman"):
            raise NotAvailable("podman is not installed", "podman: command not found (bench/setup.sh installs it)")

    def prepare(self):
        self.cleanup_containers()
        os.makedirs(os.path.dirname(self.export), exist_ok=True)
        tar = make_rootfs_tar(self.ctx)
        proc.run(self.podman("import", tar, "localhost/kiln-bench:latest"), env=self.ctx.env, log=self.log)
        port = self.base_port
        wait_port_free(port)
        start = time.perf_counter_ns()
        proc.run(self.podman("run", "-d", "--name", "kb-podman-src", *container_run_args(self.ctx, port),
                             "localhost/kiln-bench:latest", *self.ctx.command()), env=self.ctx.env, log=self.log)
        endpoint = client.Endpoint(port)
        cold_ms, _ = client.wait_ready(lambda: endpoint, "/health", start)
        warm_up(endpoint)
        pid = int(proc.run(self.podman("inspect", "--format", "{{.State.Pid}}", "kb-podman-src"), env=self.ctx.env)[1].strip())
        quiet_ms, left = proc.wait_connections_closed(pid)
        self.log(f"the JVM's last connection closed {quiet_ms:.0f} ms after the warmup (still open: {left})")
        if os.path.exists(self.export):
            os.unlink(self.export)
        try:
            ms, _ = proc.run(self.podman("container", "checkpoint", "--export", self.export, "kb-podman-src"), env=self.ctx.env, log=self.log)
        except proc.CommandFailed as e:
            raise NotAvailable("podman container checkpoint failed", e.output[-2000:])
        proc.run(self.podman("rm", "-f", "kb-podman-src"), env=self.ctx.env, check=False)
        return {"cold_start_ms": cold_ms, "checkpoint_ms": ms, "connections_closed_after_ms": quiet_ms,
                "snapshot_bytes": os.path.getsize(self.export),
                "snapshot_note": "the exported archive (CRIU images + container config, compressed by podman)"}

    def start(self, slot=0):
        self.sequence += 1
        name = f"kb-podman-{slot}-{self.sequence}"
        port = self.base_port + slot
        argv = self.podman("container", "restore", "--import", self.export, "--name", name,
                           "--ignore-static-ip", "--ignore-static-mac", "-p", f"127.0.0.1:{port}:8080")
        logpath = os.path.join(self.ctx.logs, f"podman-restore-{name}.log")
        logfile = open(logpath, "wb")
        start_ns = time.perf_counter_ns()
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logfile, stderr=subprocess.STDOUT, env=self.ctx.env)
        logfile.close()
        instance = Instance(self, slot, start_ns, lambda: client.Endpoint(port), lambda: popen.poll() in (None, 0))
        instance.popen, instance.name = popen, name
        instance.extra["log"] = logpath
        return instance

    def after_ready(self, instance):
        rc = instance.popen.wait()
        if rc != 0:
            with open(instance.extra["log"], errors="replace") as f:
                raise RuntimeError(f"podman restore exited with {rc}: {f.read()[-1500:]}")
        _, out = proc.run(self.podman("inspect", "--format", "{{.State.Pid}}", instance.name), env=self.ctx.env)
        instance.pid = int(out.strip())

    def stop(self, instance):
        if instance.popen.poll() is None:
            instance.popen.wait(timeout=120)
        proc.run(self.podman("rm", "-f", "-t", "0", instance.name), env=self.ctx.env, check=False, timeout=120)

    def cleanup_containers(self):
        if os.path.isdir(self.root):
            proc.run(self.podman("rm", "-af", "-t", "0"), env=self.ctx.env, check=False, timeout=300)

    def cleanup(self):
        if os.path.isdir(self.root):
            self.cleanup_containers()
            proc.run(self.podman("system", "reset", "-f"), env=self.ctx.env, check=False, timeout=300)
        # podman's overlay storage can leave mounts behind if it was killed: unmount before rm.
        _unmount_under(self.root)
        _unmount_under(self.runroot)
        shutil.rmtree(os.path.join(self.ctx.work, "podman"), ignore_errors=True)
        shutil.rmtree(self.runroot, ignore_errors=True)
        if "cni-podman0" in _ip_links() and "cni-podman0" not in self.links_before:
            proc.run(["ip", "link", "del", "cni-podman0"], check=False)
        remove_iptables_rules(["CNI-", "cni-podman0"], self.log)


def _unmount_under(path):
    try:
        with open("/proc/self/mounts") as f:
            mounts = [line.split()[1] for line in f]
    except OSError:
        return
    for target in sorted((m for m in mounts if m == path or m.startswith(path + "/")), key=len, reverse=True):
        proc.run(["umount", "-l", target], check=False)


class Docker(Method):
    id, label, family = "docker", "Docker checkpoint/restore", "checkpoint"
    description = ("Debian's docker.io 20.10 (`dockerd --experimental`, containerd, runc, CRIU 4.2.1): "
                   "`docker checkpoint create`, then `docker start --checkpoint` of that container; "
                   "bridge network, port published on 127.0.0.1 (docker-proxy)")
    base_port = 28300

    def __init__(self, ctx):
        super().__init__(ctx)
        self.data = os.path.join(ctx.work, "docker", "data")
        self.exec_root = "/run/kiln-bench/docker-exec"
        self.sock = "/run/kiln-bench/docker.sock"
        self.pidfile = "/run/kiln-bench/dockerd.pid"
        self.dockerd = None
        self.links_before = _ip_links()
        self.copies = []

    def docker(self, *args):
        return ["/usr/bin/docker", "-H", f"unix://{self.sock}", *args]

    def check(self):
        if not shutil.which("dockerd", path=self.ctx.path) or not os.path.exists("/usr/bin/docker"):
            raise NotAvailable("docker.io is not installed", "/usr/bin/dockerd: No such file or directory (bench/setup.sh installs it)")

    def start_daemon(self):
        self._stop_stale_daemon()
        os.makedirs(self.data, exist_ok=True)
        os.makedirs(os.path.dirname(self.sock), exist_ok=True)
        logfile = open(os.path.join(self.ctx.logs, "dockerd.log"), "ab")
        start = time.perf_counter_ns()
        self.dockerd = subprocess.Popen(
            [shutil.which("dockerd", path=self.ctx.path), "--experimental", "--data-root", self.data, "--exec-root", self.exec_root,
             "--pidfile", self.pidfile, "-H", f"unix://{self.sock}"],
            stdin=subprocess.DEVNULL, stdout=logfile, stderr=subprocess.STDOUT, env=self.ctx.env)
        logfile.close()
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.dockerd.poll() is not None:
                raise NotAvailable("dockerd exited at start", self._daemon_log_tail())
            _, out = proc.run(self.docker("info", "--format", "{{.ExperimentalBuild}}"), check=False, env=self.ctx.env)
            if out.strip() == "true":
                return (time.perf_counter_ns() - start) / 1e6
            time.sleep(0.2)
        raise NotAvailable("dockerd did not answer within 60 s", self._daemon_log_tail())

    def _daemon_log_tail(self):
        try:
            with open(os.path.join(self.ctx.logs, "dockerd.log"), errors="replace") as f:
                return "\n".join(f.read().splitlines()[-15:])
        except OSError:
            return ""

    def _stop_stale_daemon(self):
        """A dockerd of an interrupted earlier run (our pidfile) is stopped first."""
        try:
            with open(self.pidfile) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return
        if proc.comm(pid) == "dockerd":
            self.log(f"stopping a dockerd left by an earlier run (pid {pid})")
            proc.kill_and_wait(pid, signal.SIGTERM, timeout=60) or proc.kill_and_wait(pid)

    def prepare(self):
        daemon_ms = self.start_daemon()
        tar = os.path.join(self.ctx.work, "rootfs.tar")
        if not os.path.exists(tar):
            tar = make_rootfs_tar(self.ctx)
        proc.run(self.docker("import", tar, "kiln-bench:latest"), env=self.ctx.env, log=self.log)
        port = self.base_port
        wait_port_free(port)
        start = time.perf_counter_ns()
        proc.run(self.docker("run", "-d", "--name", "kb-docker", *container_run_args(self.ctx, port),
                             "kiln-bench:latest", *self.ctx.command()), env=self.ctx.env, log=self.log)
        endpoint = client.Endpoint(port)
        cold_ms, _ = client.wait_ready(lambda: endpoint, "/health", start)
        warm_up(endpoint)
        pid = int(proc.run(self.docker("inspect", "--format", "{{.State.Pid}}", "kb-docker"), env=self.ctx.env)[1].strip())
        quiet_ms, left = proc.wait_connections_closed(pid)
        self.log(f"the JVM's last connection closed {quiet_ms:.0f} ms after the warmup (still open: {left})")
        try:
            ms, _ = proc.run(self.docker("checkpoint", "create", "kb-docker", "cp"), env=self.ctx.env, log=self.log)
        except proc.CommandFailed as e:
            raise NotAvailable("docker checkpoint create failed", e.output[-2000:])
        self.container_id = proc.run(self.docker("inspect", "--format", "{{.Id}}", "kb-docker"), env=self.ctx.env)[1].strip()
        self.checkpoint_dir = os.path.join(self.data, "containers", self.container_id, "checkpoints", "cp")
        self._wait_exited("kb-docker")
        return {"daemon_start_ms": daemon_ms, "cold_start_ms": cold_ms, "checkpoint_ms": ms, "connections_closed_after_ms": quiet_ms,
                "snapshot_bytes": proc.du_bytes(self.checkpoint_dir),
                "snapshot_note": "the checkpoint directory (CRIU images, uncompressed)"}

    def _wait_exited(self, name, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            _, out = proc.run(self.docker("inspect", "--format", "{{.State.Status}}", name), check=False, env=self.ctx.env)
            if out.strip() in ("exited", "created"):
                return
            time.sleep(0.05)
        raise RuntimeError(f"container {name} did not stop within {timeout} s")

    def _start(self, name, slot, port):
        argv = self.docker("start", "--checkpoint", "cp", name)
        logpath = os.path.join(self.ctx.logs, f"docker-start-{name}.log")
        logfile = open(logpath, "wb")
        start_ns = time.perf_counter_ns()
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logfile, stderr=subprocess.STDOUT, env=self.ctx.env)
        logfile.close()
        instance = Instance(self, slot, start_ns, lambda: client.Endpoint(port), lambda: popen.poll() in (None, 0))
        instance.popen, instance.name = popen, name
        instance.extra["log"] = logpath
        return instance

    def start(self, slot=0):
        if slot == 0:
            return self._start("kb-docker", 0, self.base_port)
        # Copies: docker can only restore a checkpoint into the container it was taken from (a
        # custom --checkpoint-dir is refused: "custom checkpointdir is not supported"), so each
        # copy is a new container with the same configuration and a copy of the checkpoint
        # directory in its own checkpoints/ (prepared before the clock starts).
        name = f"kb-docker-copy-{slot}"
        port = self.base_port + slot
        proc.run(self.docker("rm", "-f", name), check=False, env=self.ctx.env)
        proc.run(self.docker("create", "--name", name, *container_run_args(self.ctx, port), "kiln-bench:latest",
                             *self.ctx.command()), env=self.ctx.env)
        cid = proc.run(self.docker("inspect", "--format", "{{.Id}}", name), env=self.ctx.env)[1].strip()
        target = os.path.join(self.data, "containers", cid, "checkpoints", "cp")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copytree(self.checkpoint_dir, target)
        self.copies.append(name)
        return self._start(name, slot, port)

    def start_many(self, n):
        # Create every copy first (not part of a start), then fire the starts together.
        prepared = []
        for slot in range(1, n):
            name = f"kb-docker-copy-{slot}"
            port = self.base_port + slot
            proc.run(self.docker("rm", "-f", name), check=False, env=self.ctx.env)
            proc.run(self.docker("create", "--name", name, *container_run_args(self.ctx, port), "kiln-bench:latest",
                                 *self.ctx.command()), env=self.ctx.env)
            cid = proc.run(self.docker("inspect", "--format", "{{.Id}}", name), env=self.ctx.env)[1].strip()
            target = os.path.join(self.data, "containers", cid, "checkpoints", "cp")
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copytree(self.checkpoint_dir, target)
            self.copies.append(name)
            prepared.append((name, slot, port))
        # One at a time: concurrent `docker start --checkpoint` of identical checkpoints fail in
        # containerd ("failed to upload checkpoint to containerd: commit failed: content
        # sha256:...: already exists"), so each start waits for the previous one to return.
        instances = []
        for name, slot, port in [("kb-docker", 0, self.base_port)] + prepared:
            instance = self._start(name, slot, port)
            instance.popen.wait(timeout=300)
            instances.append(instance)
        return instances

    def after_ready(self, instance):
        rc = instance.popen.wait()
        if rc != 0:
            with open(instance.extra["log"], errors="replace") as f:
                raise RuntimeError(f"docker start --checkpoint exited with {rc}: {f.read()[-1500:]}")
        _, out = proc.run(self.docker("inspect", "--format", "{{.State.Pid}}", instance.name), env=self.ctx.env)
        instance.pid = int(out.strip())

    def stop(self, instance):
        if instance.popen.poll() is None:
            instance.popen.wait(timeout=120)
        if instance.name == "kb-docker":
            proc.run(self.docker("kill", instance.name), check=False, env=self.ctx.env)
            self._wait_exited(instance.name)
        else:
            proc.run(self.docker("rm", "-f", instance.name), check=False, env=self.ctx.env)

    def cleanup(self):
        if self.dockerd is not None and self.dockerd.poll() is None:
            proc.run(self.docker("rm", "-f", "kb-docker", *self.copies), check=False, env=self.ctx.env, timeout=120)
            proc.run(self.docker("system", "prune", "-af"), check=False, env=self.ctx.env, timeout=300)
            self.dockerd.send_signal(signal.SIGTERM)
            try:
                self.dockerd.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.dockerd.kill()
                self.dockerd.wait()
        else:
            self._stop_stale_daemon()
        _unmount_under(self.data)
        _unmount_under(self.exec_root)
        shutil.rmtree(os.path.join(self.ctx.work, "docker"), ignore_errors=True)
        shutil.rmtree(self.exec_root, ignore_errors=True)
        for path in (self.sock, self.pidfile):
            if os.path.exists(path):
                os.unlink(path)
        if "docker0" in _ip_links() and "docker0" not in self.links_before:
            proc.run(["ip", "link", "del", "docker0"], check=False)
        remove_iptables_rules(["DOCKER", "docker0"], self.log)


# --------------------------------------------------------------------------------------------
# kiln


class Kiln(Method):
    id, label, family = "kiln", "kiln restore", "checkpoint"
    description = ("`kiln run petclinic`, the whole command (the snapshot's verification, a fresh sandbox on "
                   "kiln's network, runc restore with CRIU 4.2.1, the CRaC agent's afterRestore, kiln's own "
                   "readiness probe); snapshot baked as `make demo` bakes it (`kiln bake` with kiln's CRaC "
                   "agent and the default `--network kiln`), with the same warmup, plus kiln's full GC + heap "
                   "trim before the checkpoint")
    snapshot = "petclinic"

    def __init__(self, ctx):
        super().__init__(ctx)
        self.store = os.path.join(ctx.work, "kiln-store")
        self.state = "/run/kiln-bench/kiln-state"
        self.env = {**ctx.env, "KILN_STORE": self.store, "KILN_STATE": self.state}

    def kiln(self, *args):
        return [self.ctx.kiln, *args]

    def check(self):
        if not os.access(self.ctx.kiln, os.X_OK):
            raise NotAvailable(f"no kiln binary at {self.ctx.kiln}", "run swift build (make build)")

    def prepare(self):
        self.stop_all()
        warmups = []
        for repeat, path in WARMUP:
            warmups += ["--warmup", f"{repeat}:{path}"]
        try:
            _, out = proc.run(self.kiln("bake", self.snapshot, "--replace", "--json", "--port", "8080", "--ready", "/health",
                                        *warmups, "--app", self.ctx.app_dir, "--", *self.ctx.command()),
                              env=self.env, log=self.log, timeout=600, stdout_only=True)
        except proc.CommandFailed as e:
            raise NotAvailable("kiln bake failed", e.output[-2000:])
        manifest = json.loads(out)
        timings = manifest.get("timings", {})
        return {"cold_start_ms": timings.get("coldStartMs"), "warmup_ms": timings.get("warmupMs"),
                "compact_ms": timings.get("compactMs"), "checkpoint_ms": timings.get("checkpointMs"),
                "snapshot_bytes": manifest.get("sizeBytes"),
                "snapshot_note": "the snapshot's CRIU images (uncompressed), after kiln's full GC"}

    def start(self, slot=0, count=1):
        argv = self.kiln("run", self.snapshot, "--json", "--count", str(count))
        start_ns = time.perf_counter_ns()
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env)
        found = {}

        def endpoint():
            # The instance is learnt from kiln itself: `kiln run --json` prints each instance's record
            # (with its networkNamespacePath) once it has returned. Guessing it from new entries of
            # $KILN_STATE/netns once took a temporary file for the namespace (issue 17, item 7).
            if "netns" not in found:
                if popen.poll() != 0:
                    return None
                out, err = popen.communicate()
                instance.extra["kiln_run_output"] = (out, err)
                found["netns"] = instance_netns(out)
            return client.Endpoint(8080, netns=found["netns"])

        instance = Instance(self, slot, start_ns, endpoint, lambda: popen.poll() in (None, 0))
        instance.popen = popen
        return instance

    def start_many(self, n):
        """`kiln run petclinic --count n`: kiln restores the copies one after another and returns once
        every one answered; the instances are then known from its JSON."""
        start_ns = time.perf_counter_ns()
        _, out = proc.run(self.kiln("run", self.snapshot, "--json", "--count", str(n)), env=self.env, log=self.log, timeout=600,
                          stdout_only=True)
        command_ms = (time.perf_counter_ns() - start_ns) / 1e6
        report = json.loads(out)
        instances = []
        for slot, record in enumerate(report["instances"]):
            endpoint = client.Endpoint(8080, netns=record["networkNamespacePath"])
            instance = Instance(self, slot, start_ns, lambda e=endpoint: e)
            instance.name, instance.pid = record["id"], record["pid"]
            instance.extra.update({"records": [record], "phases": kiln_phases(report, record),
                                   "kiln_restore_ms": record.get("restoreMs"),
                                   "kiln_first_response_ms": record.get("firstResponseMs"),
                                   "kiln_run_command_ms": command_ms})
            instances.append(instance)
        return instances

    def after_ready(self, instance):
        if instance.popen is None:  # started by start_many: already known
            return
        out, err = instance.extra.pop("kiln_run_output", None) or instance.popen.communicate(timeout=300)
        if instance.popen.returncode != 0:
            raise RuntimeError(f"kiln run exited with {instance.popen.returncode}: {(out or err)[-1500:]}")
        report = json.loads(out)
        records = report["instances"]
        instance.extra.update({
            "phases": kiln_phases(report, records[0]),
            "kiln_run_document": report,
            "kiln_verify_ms": report.get("verifyMs"),
            "kiln_restore_ms": records[0].get("restoreMs"),
            "kiln_first_response_ms": records[0].get("firstResponseMs"),
        })
        instance.name = records[0]["id"]
        instance.pid = records[0]["pid"]
        instance.extra["records"] = records

    def stop(self, instance):
        if instance.popen is not None and instance.popen.poll() is None:
            instance.popen.wait(timeout=300)
        ids = [r["id"] for r in instance.extra.get("records", [])] or ([instance.name] if instance.name else [])
        if ids:
            proc.run(self.kiln("stop", *ids), env=self.env, check=False, timeout=120)
        else:
            self.stop_all()
        for record in instance.extra.get("records", []):
            client.forget_netns(record.get("networkNamespacePath", ""))

    def stop_all(self):
        if os.path.isdir(self.state):
            proc.run(self.kiln("stop", "--all"), env=self.env, check=False, timeout=300)

    def ps(self):
        _, out = proc.run(self.kiln("ps", "--json"), env=self.env, check=False, stdout_only=True)
        try:
            return json.loads(out)
        except ValueError:
            return None

    def cleanup(self):
        self.stop_all()
        # gc removes what the stops leave by design: the state's parent cgroups (kiln_run_...).
        if os.path.isdir(self.state):
            proc.run(self.kiln("gc"), env=self.env, check=False, timeout=120)
        shutil.rmtree(self.store, ignore_errors=True)
        shutil.rmtree(self.state, ignore_errors=True)


# kiln's RestorePhases (InstanceRecord.phases in `kiln run --json`), in the order they happen. Each is
# its own slice of the restore except criuRestoreMs, which is the part of runtimeMs CRIU itself spent
# (its stats-restore), so the runtime slice is shown without it.
KILN_PHASES = [("prepareMs", "prepare (dir, netns, network, bundle)"), ("runtimeMs", "runc restore (without CRIU)"),
               ("criuRestoreMs", "CRIU restore"), ("identityMs", "identity"), ("afterRestoreMs", "afterRestore (agent)"),
               ("firstResponseMs", "first response")]
KILN_VERIFY = "verify snapshot"
REST = "rest of the command"


def kiln_phases(document, record):
    """Where one `kiln run`'s time went, as slices that add up: the run's verification (verifyMs,
    once per command), then the instance's phases from `kiln run --json` (runc restore without
    CRIU's own share, CRIU's share separately). None when this kiln reports no phases. The harness
    adds REST (spawn to first 200 minus these: the kiln process's start and exit, reading the
    snapshot, the harness's own /health request) once it knows the time to first response."""
    raw = record.get("phases")
    if not isinstance(raw, dict):
        return None
    out = {}
    if isinstance(document.get("verifyMs"), (int, float)):
        out[KILN_VERIFY] = float(document["verifyMs"])
    criu = raw.get("criuRestoreMs")
    for key, name in KILN_PHASES:
        value = raw.get(key)
        if not isinstance(value, (int, float)):
            continue
        if key == "runtimeMs" and isinstance(criu, (int, float)):
            value = max(0.0, value - criu)
        out[name] = float(value)
    return out


def instance_netns(kiln_run_json, index=0):
    """The network namespace of instance `index` in the document `kiln run --json` printed."""
    document = json.loads(kiln_run_json)
    instances = document.get("instances") or []
    if len(instances) <= index:
        raise RuntimeError(f"kiln run --json listed {len(instances)} instance(s), wanted #{index}")
    path = instances[index].get("networkNamespacePath")
    if not path:
        raise RuntimeError(f"kiln run --json gave instance {instances[index].get('id')!r} no networkNamespacePath")
    return path


def kiln_has_serve(kiln_binary):
    try:
        _, out = proc.run([kiln_binary, "--help"], check=False)
    except proc.CommandFailed as e:
        return False, str(e)
    subcommands = out.split("SUBCOMMANDS:", 1)[-1]
    has = any(line.split()[:1] == ["serve"] for line in subcommands.splitlines())
    return has, out


class KilnServe(Method):
    id, label, family = "kiln-serve", "kiln serve, first request at zero instances", "gateway"
    description = ("`kiln serve --listen 127.0.0.1:P --admin 127.0.0.1:P2` running with no instance; "
                   "the clock starts when GET /petclinic/health is sent to the gateway, which restores an "
                   "instance and forwards the request")
    listen_port = 28400
    admin_port = 28401
    max_instances = 1
    max_instances_reason = ("the gateway decides how many instances run (it scales out under load up "
                            "to --max-instances); N copies are the kiln method's, restored the same way")

    def __init__(self, ctx, kiln_method):
        super().__init__(ctx)
        self.kiln = kiln_method
        self.server = None

    def check(self):
        self.kiln.check()
        has, out = kiln_has_serve(self.ctx.kiln)
        if not has:
            raise NotAvailable("kiln serve not available in this build",
                               f"`{self.ctx.kiln} --help` lists no serve subcommand:\n" + out.split("SUBCOMMANDS:", 1)[-1].strip())

    def prepare(self):
        # Uses the snapshot the kiln method baked (same store).
        return {"note": "uses the kiln method's snapshot"}

    def _start_server(self):
        wait_port_free(self.listen_port)
        logfile = open(os.path.join(self.ctx.logs, "kiln-serve.log"), "ab")
        self.server = subprocess.Popen(
            [self.ctx.kiln, "serve", "--listen", f"127.0.0.1:{self.listen_port}", "--admin", f"127.0.0.1:{self.admin_port}"],
            stdin=subprocess.DEVNULL, stdout=logfile, stderr=subprocess.STDOUT, env=self.kiln.env)
        logfile.close()
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.server.poll() is not None:
                raise RuntimeError(f"kiln serve exited with {self.server.returncode} (see logs/kiln-serve.log)")
            import socket
            try:
                with socket.create_connection(("127.0.0.1", self.listen_port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("kiln serve did not listen within 60 s")

    def start(self, slot=0):
        if slot != 0:
            raise RuntimeError("kiln serve is measured one request at a time")
        self._start_server()  # a fresh gateway with zero instances, not timed
        start_ns = time.perf_counter_ns()
        instance = Instance(self, slot, start_ns, lambda: client.Endpoint(self.listen_port),
                            lambda: self.server.poll() is None)
        instance.extra["path_prefix"] = f"/{Kiln.snapshot}"
        return instance

    def after_ready(self, instance):
        ps = self.kiln.ps() or {}
        rows = ps.get("instances", [])
        if rows:
            instance.pid = rows[0].get("pid")
            instance.name = rows[0].get("id")

    def stop(self, instance):
        if self.server and self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)
            try:
                self.server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()
        self.kiln.stop_all()

    def cleanup(self):
        if self.server and self.server.poll() is None:
            self.server.kill()
            self.server.wait()


def all_methods(ctx):
    kiln = Kiln(ctx)
    return [ColdJDK17(ctx), ColdJDK17Jar(ctx), ColdJDK25(ctx), AOTCacheJDK25(ctx), AppCDSJDK17(ctx), BareCRIU(ctx),
            Podman(ctx), Docker(ctx), kiln, KilnServe(ctx, kiln)]
