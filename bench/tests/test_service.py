"""The benchmark's service (the Spring Boot 3 sample, extracted as Spring Boot advises), kiln's phases
from `kiln run --json`, CRIU's restore statistics, and `kiln run` against bare `criu restore`.

Run:  python3 -m unittest discover -s bench/tests
No root, no JVM: the jar tests build a small Spring Boot-shaped jar with zipfile (and read the real
sample's jar when it is built); the phases and statistics tests read files recorded on this machine.
"""

import copy
import json
import os
import sys
import tempfile
import unittest
import zipfile

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)

from kilnbench import methods, proc, report  # noqa: E402
from test_report import load_sample  # noqa: E402

FIXTURES = os.path.join(BENCH, "tests", "fixtures")


def boot_jar(path, libs, start_class="com.example.App", index=True):
    """A jar laid out like a Spring Boot executable jar: loader classes at the root, the app under
    BOOT-INF/classes/, libraries under BOOT-INF/lib/ (stored), classpath.idx naming them in order."""
    manifest = ["Manifest-Version: 1.0", "Main-Class: org.springframework.boot.loader.launch.JarLauncher",
                f"Start-Class: {start_class}", "Spring-Boot-Version: 3.5.16", "Spring-Boot-Classes: BOOT-INF/classes/",
                "Spring-Boot-Lib: BOOT-INF/lib/", "Implementation-Title: sample"]
    if index:
        manifest.append("Spring-Boot-Classpath-Index: BOOT-INF/classpath.idx")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("META-INF/MANIFEST.MF", "\r\n".join(manifest) + "\r\n\r\n")
        z.writestr("org/springframework/boot/loader/launch/JarLauncher.class", b"\xca\xfe\xba\xbeloader")
        z.writestr("BOOT-INF/", b"")
        z.writestr("BOOT-INF/classes/", b"")
        z.writestr("BOOT-INF/classes/com/", b"")
        z.writestr("BOOT-INF/classes/com/example/", b"")
        z.writestr("BOOT-INF/classes/com/example/App.class", b"\xca\xfe\xba\xbeapp")
        z.writestr("BOOT-INF/classes/application.properties", b"server.port=8080\n")
        for name, content in libs:
            z.writestr(zipfile.ZipInfo(f"BOOT-INF/lib/{name}"), content)
        if index:
            z.writestr("BOOT-INF/classpath.idx", "".join(f'- "BOOT-INF/lib/{name}"\n' for name, _ in libs))


class ExtractedJarTests(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)

    def test_spring_boots_extracted_layout(self):
        # Deliberately not in alphabetical order: classpath.idx decides the order of Class-Path.
        libs = [(f"zeta-library-with-a-long-name-{i}.jar", f"jar {i}".encode()) for i in range(12)] + [("alpha.jar", b"a")]
        jar = os.path.join(self.tmp.name, "app.jar")
        boot_jar(jar, libs)
        out = os.path.join(self.tmp.name, "extracted")
        self.assertEqual(methods.extract_boot_jar(jar, out), len(libs))
        for name, content in libs:
            with open(os.path.join(out, "lib", name), "rb") as f:
                self.assertEqual(f.read(), content)  # copied unmodified
        with zipfile.ZipFile(os.path.join(out, "app.jar")) as app:
            names = app.namelist()
            raw = app.read("META-INF/MANIFEST.MF")
            self.assertEqual(app.read("com/example/App.class"), b"\xca\xfe\xba\xbeapp")
            self.assertIn("application.properties", names)
        self.assertEqual(names[0], "META-INF/")  # java -jar finds the manifest first, as jar writes it
        self.assertFalse(any(n.startswith(("BOOT-INF", "org/springframework/boot/loader")) for n in names), names)
        for line in raw.split(b"\r\n"):
            self.assertLessEqual(len(line), 72, line)  # the jar specification's line length
        manifest = methods.parse_manifest(raw.decode())
        self.assertEqual(manifest["Main-Class"], "com.example.App")
        self.assertEqual(manifest["Class-Path"].split(" "), [f"lib/{name}" for name, _ in libs])
        self.assertNotIn("Start-Class", manifest)
        self.assertNotIn("Spring-Boot-Lib", manifest)

    def test_without_an_index_the_libraries_in_name_order(self):
        jar = os.path.join(self.tmp.name, "app.jar")
        boot_jar(jar, [("b.jar", b"b"), ("a.jar", b"a")], index=False)
        out = os.path.join(self.tmp.name, "extracted")
        methods.extract_boot_jar(jar, out)
        with zipfile.ZipFile(os.path.join(out, "app.jar")) as app:
            manifest = methods.parse_manifest(app.read("META-INF/MANIFEST.MF").decode())
        self.assertEqual(manifest["Class-Path"], "lib/a.jar lib/b.jar")

    def test_a_plain_jar_is_refused(self):
        jar = os.path.join(self.tmp.name, "plain.jar")
        with zipfile.ZipFile(jar, "w") as z:
            z.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\r\nMain-Class: x.Y\r\n\r\n")
        with self.assertRaisesRegex(RuntimeError, "no Start-Class"):
            methods.extract_boot_jar(jar, os.path.join(self.tmp.name, "out"))

    @unittest.skipUnless(os.path.isfile(os.path.join(REPO, methods.SAMPLE_JAR)), "the sample is not built (make samples)")
    def test_the_real_sample(self):
        source = os.path.join(REPO, methods.SAMPLE_JAR)
        out = os.path.join(self.tmp.name, "extracted")
        count = methods.extract_boot_jar(source, out)
        with zipfile.ZipFile(source) as boot:
            index = boot.read("BOOT-INF/classpath.idx").decode().split()
            start = methods.parse_manifest(boot.read("META-INF/MANIFEST.MF").decode())["Start-Class"]
        self.assertEqual(count, len([e for e in index if e != "-"]))
        with zipfile.ZipFile(os.path.join(out, "app.jar")) as app:
            manifest = methods.parse_manifest(app.read("META-INF/MANIFEST.MF").decode())
            self.assertIn(start.replace(".", "/") + ".class", app.namelist())
        self.assertEqual(manifest["Main-Class"], start)
        for entry in manifest["Class-Path"].split():
            self.assertTrue(os.path.isfile(os.path.join(out, entry)), entry)
        self.assertTrue(any("crac-1.5.0.jar" in e for e in manifest["Class-Path"].split()))

    def test_every_method_runs_the_extracted_jar_with_the_same_flags(self):
        ctx = methods.Context(REPO, self.tmp.name, self.tmp.name, lambda message: None)
        command = ctx.command()
        self.assertEqual(command[-2:], ["-jar", os.path.join(self.tmp.name, "app", "extracted", "app.jar")])
        self.assertEqual(command[1:4], methods.Context.COMMON_FLAGS)
        shipped = ctx.executable_command(ctx.java25, ["-Xshare:on"])
        self.assertEqual(shipped[0], ctx.java25)
        self.assertEqual(shipped[-3:], ["-Xshare:on", "-jar", os.path.join(self.tmp.name, "app", "boot-petclinic.jar")])


class KilnPhasesTests(unittest.TestCase):
    """`kiln run petclinic --json` of the benchmark's QUICK run on this machine (kiln with phases)."""

    def setUp(self):
        with open(os.path.join(FIXTURES, "kiln-run-petclinic.json")) as f:
            self.document = json.load(f)
        self.record = self.document["instances"][0]

    def test_slices_add_up_to_the_restore_and_criu_is_taken_out_of_runc(self):
        phases = methods.kiln_phases(self.document, self.record)
        raw = self.record["phases"]
        self.assertEqual(list(phases)[0], methods.KILN_VERIFY)
        self.assertAlmostEqual(phases[methods.KILN_VERIFY], self.document["verifyMs"])
        self.assertAlmostEqual(phases["CRIU restore"], raw["criuRestoreMs"])
        self.assertAlmostEqual(phases["runc restore (without CRIU)"], raw["runtimeMs"] - raw["criuRestoreMs"])
        # Up to runc's return they add up to restoreMs exactly; with the phases after it they cover
        # the copy's firstResponseMs but for small gaps between phases (2.4 ms of 583 in this run),
        # which the harness's "rest of the command" slice takes.
        until_runc = phases["prepare (dir, netns, network, bundle)"] + raw["runtimeMs"]
        self.assertAlmostEqual(until_runc, self.record["restoreMs"], delta=0.01)
        restore = sum(v for k, v in phases.items() if k != methods.KILN_VERIFY)
        self.assertLessEqual(restore, self.record["firstResponseMs"] + 0.01)
        self.assertGreater(restore, 0.98 * self.record["firstResponseMs"])
        self.assertIn("afterRestore (agent)", phases)  # baked with kiln's agent, as make demo does

    def test_a_kiln_without_phases_gives_none(self):
        record = {k: v for k, v in self.record.items() if k != "phases"}
        self.assertIsNone(methods.kiln_phases(self.document, record))


class CRIUStatisticsTests(unittest.TestCase):
    def test_a_real_stats_restore(self):
        stats = proc.criu_restore_stats(os.path.join(FIXTURES, "criu-stats-restore"))
        self.assertIsNotNone(stats)
        self.assertGreater(stats["restore_ms"], 1)
        self.assertLess(stats["restore_ms"], 60_000)
        self.assertGreater(stats["pages_restored"], 1000)  # a Spring Boot JVM: tens of thousands of pages
        self.assertLess(stats["forking_ms"], stats["restore_ms"])

    def test_anything_else_is_none(self):
        with open(os.path.join(FIXTURES, "criu-stats-restore"), "rb") as f:
            data = f.read()
        with tempfile.TemporaryDirectory() as tmp:
            for name, content in (("truncated", data[:14]), ("magic", b"\0" * 4 + data[4:]), ("empty", b"")):
                path = os.path.join(tmp, name)
                with open(path, "wb") as f:
                    f.write(content)
                self.assertIsNone(proc.criu_restore_stats(path), name)
        self.assertIsNone(proc.criu_restore_stats("/nonexistent/stats-restore"))


class ConnectionSocketsTests(unittest.TestCase):
    """On this process's own sockets: a listener and a unix socket do not count, an accepted
    connection does until the server closes it, also after the peer has closed its end."""

    def test_accepted_connection_counts_until_closed(self):
        import socket
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        unix_a, unix_b = socket.socketpair()
        self.addCleanup(listener.close)
        self.addCleanup(unix_a.close)
        self.addCleanup(unix_b.close)
        before = set(proc.connection_sockets(os.getpid()))
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
        try:
            inode = str(os.fstat(accepted.fileno()).st_ino)
            self.assertIn(inode, proc.connection_sockets(os.getpid()))
            client.close()  # the peer is gone; the server still holds its descriptor
            self.assertIn(inode, proc.connection_sockets(os.getpid()))
            waited, left = proc.wait_connections_closed(os.getpid(), timeout_s=0.2)
            self.assertIn(inode, left)
            self.assertGreaterEqual(waited, 200)
        finally:
            accepted.close()
        self.assertEqual(set(proc.connection_sockets(os.getpid())) - before, set())
        self.assertNotIn(str(os.fstat(listener.fileno()).st_ino), proc.connection_sockets(os.getpid()))
        self.assertNotIn(str(os.fstat(unix_a.fileno()).st_ino), proc.connection_sockets(os.getpid()))


class KilnAgainstBareCRIUTests(unittest.TestCase):
    def results(self, pairs):
        results = copy.deepcopy(load_sample())
        results["startup"] = []
        for rnd, (kiln, criu) in enumerate(pairs, start=1):
            results["startup"].append({"method": "kiln", "round": rnd, "ttfr_ms": kiln})
            results["startup"].append({"method": "criu-bare", "round": rnd, "ttfr_ms": criu})
        return results

    def test_ratio_paired_by_round(self):
        # Round 1: 400/200 = 2; round 2: 150/300 = 0.5; round 3: 300/200 = 1.5. Median 1.5, not 300/200.
        versus = report.kiln_vs_criu(self.results([(400, 200), (150, 300), (300, 200)]))
        self.assertAlmostEqual(versus["ratio"]["median"], 1.5)
        self.assertEqual(versus["pairs"], 3)
        text = report.kiln_vs_criu_markdown(self.results([(400, 200), (150, 300), (300, 200)]))
        self.assertIn("kiln run / criu restore = **1.50**", text)
        self.assertIn("its median misses the target: kiln takes 1.50× as long", text)
        # Three rounds this far apart (0.5 to 2) decide nothing.
        self.assertIn("95% interval of that median 0.50–2.00, resampling the rounds: the run does not decide the target", text)

    def test_met_when_kiln_is_faster(self):
        text = report.kiln_vs_criu_markdown(self.results([(100, 200), (90, 180)]))
        self.assertIn("its median meets the target: kiln is 2.00× as fast", text)
        self.assertIn("the run shows the target met", text)

    def test_a_run_at_par_does_not_decide_the_target_though_its_median_meets_it(self):
        # bench/latest's rounds at stop 28: a median of 0.99, from 0.83 to 1.12.
        rounds = [(83, 100), (92, 100), (94, 100), (94, 100), (97, 100), (101, 100), (107, 100), (109, 100), (109, 100), (112, 100)]
        text = report.kiln_vs_criu_markdown(self.results(rounds))
        self.assertIn("its median meets the target", text)
        self.assertIn("resampling the rounds: the run does not decide the target", text)

    def test_a_run_clearly_over_bare_criu_shows_the_target_missed(self):
        text = report.kiln_vs_criu_markdown(self.results([(130, 100), (128, 99), (131, 101), (135, 100)]))
        self.assertIn("its median misses the target", text)
        self.assertIn("the run shows the target missed", text)

    def test_absent_without_both_methods(self):
        results = self.results([(100, 200)])
        results["startup"] = [s for s in results["startup"] if s["method"] == "kiln"]
        self.assertIsNone(report.kiln_vs_criu(results))
        self.assertEqual(report.kiln_vs_criu_markdown(results), "")

    def test_in_the_report_right_after_the_startup_table(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "results.json")
            with open(path, "w") as f:
                json.dump(load_sample(), f)
            text, _ = report.generate(path, tmp, plots=False)
        section = text.split("## Time to first response", 1)[1].split("## Methods", 1)[0]
        self.assertIn("### `kiln run` against bare `criu restore` of the same service", section)
        self.assertRegex(section, r"kiln run / criu restore = \*\*\d+\.\d+\*\*")


if __name__ == "__main__":
    unittest.main()
