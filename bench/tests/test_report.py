"""The report generator, on recorded sample data (bench/sample/results.json, a real QUICK run).

Run:  python3 -m unittest discover -s bench/tests      (any python3; plots checked when matplotlib is there)
  or: python3 -m pytest bench/tests
No root, no JVM, no network: pure file in, files out.
"""

import copy
import json
import os
import sys
import tempfile
import unittest

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, BENCH)

from kilnbench import report, stats  # noqa: E402

SAMPLE = os.path.join(BENCH, "sample", "results.json")

try:
    import matplotlib  # noqa: F401
    HAVE_MATPLOTLIB = True
except ImportError:
    HAVE_MATPLOTLIB = False


def load_sample():
    with open(SAMPLE) as f:
        return json.load(f)


def write(results, directory):
    path = os.path.join(directory, "results.json")
    with open(path, "w") as f:
        json.dump(results, f)
    return path


def table_row(markdown, label):
    for line in markdown.splitlines():
        if line.startswith("|") and f"| {label} |" in line:
            return [cell.strip() for cell in line.strip("|").split("|")]
    raise AssertionError(f"no table row for {label!r}")


class SampleReportTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.results = load_sample()
        cls.text, cls.made = report.generate(SAMPLE, cls.tmp.name, plots=HAVE_MATPLOTLIB)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_report_written_with_every_section(self):
        with open(os.path.join(self.tmp.name, "report.md")) as f:
            self.assertEqual(f.read(), self.text)
        for heading in ("## Time to first response", "## Methods and measurements not run",
                        "## The first requests after start", "## Memory", "## Checkpoints and archives", "## Noise"):
            self.assertIn(heading, self.text)
        self.assertIn("Machine: Debian GNU/Linux 12 (bookworm), Linux 6.18", self.text)

    def test_every_method_has_a_row_run_or_not(self):
        for method in self.results["methods"]:
            row = table_row(self.text, method["label"])
            if method["status"] == "not-run":
                self.assertTrue(row[2].startswith("not run: "), row)
            else:
                self.assertRegex(row[2], r"^\d+")

    def test_startup_figures_match_the_raw_samples(self):
        for method in self.results["methods"]:
            if method["status"] == "not-run":
                continue
            samples = [s["ttfr_ms"] for s in self.results["startup"]
                       if s["method"] == method["id"] and not s.get("discarded") and "error" not in s]
            row = table_row(self.text, method["label"])
            self.assertEqual(row[2].split()[0], str(len(samples)))
            self.assertEqual(row[4], f"**{report.fmt_ms(stats.median(samples))}**")
            self.assertEqual(row[3], report.fmt_ms(min(samples)))
            self.assertEqual(row[6], report.fmt_ms(max(samples)))

    def test_baseline_and_paired_ratio_columns(self):
        row = table_row(self.text, "Cold start, JDK 17")
        self.assertEqual(row[7], "1 (baseline)")
        kiln = table_row(self.text, "kiln restore")
        self.assertRegex(kiln[7], r"^0\.\d+ \[0\.\d+–0\.\d+\]$")
        self.assertRegex(kiln[8], r"^\d+(\.\d)?×$")

    def test_not_run_reasons_carry_their_proof(self):
        section = self.text.split("## Methods and measurements not run", 1)[1].split("##", 1)[0]
        for entry in self.results["memory_n"]:
            if entry.get("status") == "not-run":
                self.assertIn(entry["reason"], section)
                if entry.get("error"):
                    self.assertIn(entry["error"].strip().splitlines()[-1].strip(), section)

    def test_memory_table_has_one_instance_and_n_instances(self):
        n = self.results["profile"]["n_instances"]
        self.assertIn(f"total PSS of {n}", self.text)
        kiln = table_row(self.text.split("## Memory", 1)[1], "kiln restore")
        self.assertRegex(kiln[2], r"^\d+ MiB$")  # RSS of one instance
        self.assertRegex(kiln[6], r"^\d+ MiB$")  # total PSS of N

    @unittest.skipUnless(HAVE_MATPLOTLIB, "matplotlib not importable by this python (use /usr/bin/python3)")
    def test_plots_are_pngs_referenced_by_the_report(self):
        for key in ("startup", "first_requests", "memory", "memory_settle"):
            name = self.made[key]
            with open(os.path.join(self.tmp.name, name), "rb") as f:
                self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
            self.assertIn(f"]({name})", self.text)


class SyntheticReportTests(unittest.TestCase):
    """Small hand-made results, to pin the rules down."""

    def base(self):
        results = load_sample()
        results = copy.deepcopy(results)
        return results

    def test_ratio_is_computed_pair_by_pair(self):
        results = self.base()
        results["startup"] = []
        # Round 1: baseline 1000, method 100 (0.1); round 2: baseline 4000, method 200 (0.05).
        # Pairwise median: 0.075; median/median would give 150/2500 = 0.06.
        for rnd, (base, kiln) in enumerate([(1000, 100), (4000, 200)], start=1):
            results["startup"].append({"method": "cold-jdk17", "round": rnd, "ttfr_ms": base, "first_requests_ms": [1.0]})
            results["startup"].append({"method": "kiln", "round": rnd, "ttfr_ms": kiln, "first_requests_ms": [1.0]})
        rows = {r["id"]: r for r in report.startup_table_rows(results)}
        self.assertAlmostEqual(rows["kiln"]["ratio"]["median"], 0.075)
        self.assertAlmostEqual(rows["kiln"]["ratio"]["min"], 0.05)
        self.assertAlmostEqual(rows["kiln"]["ratio"]["max"], 0.1)

    def test_discarded_and_failed_runs_do_not_count(self):
        results = self.base()
        results["startup"] = [
            {"method": "kiln", "round": 0, "discarded": True, "ttfr_ms": 9999.0},
            {"method": "kiln", "round": 1, "ttfr_ms": 300.0},
            {"method": "kiln", "round": 2, "error": "boom"},
        ]
        rows = {r["id"]: r for r in report.startup_table_rows(results)}
        self.assertEqual(rows["kiln"]["summary"]["count"], 1)
        self.assertEqual(rows["kiln"]["summary"]["max"], 300.0)
        self.assertEqual(rows["kiln"]["failed_runs"], 1)

    def test_a_method_that_could_not_run_is_reported_not_dropped(self):
        results = self.base()
        docker = next(m for m in results["methods"] if m["id"] == "docker")
        docker.update(status="not-run", reason="dockerd exited at start", error="failed to start daemon: boom")
        results["startup"] = [s for s in results["startup"] if s["method"] != "docker"]
        with tempfile.TemporaryDirectory() as tmp:
            text, _ = report.generate(write(results, tmp), tmp, plots=False)
        self.assertIn("| 7 | Docker checkpoint/restore | not run: dockerd exited at start |", text)
        self.assertIn("failed to start daemon: boom", text)

    def test_an_interrupted_run_still_renders(self):
        results = self.base()
        results["memory_n"] = []
        results["steady"] = []
        results["finished_at"] = None
        results["notes"] = ["interrupted: figures are what was measured before the interruption"]
        with tempfile.TemporaryDirectory() as tmp:
            text, _ = report.generate(write(results, tmp), tmp, plots=HAVE_MATPLOTLIB)
        self.assertIn("interrupted", text)
        self.assertIn("## Time to first response", text)


class StatsTests(unittest.TestCase):
    def test_summary_uses_kilns_rules(self):
        s = stats.summary([5, 1, 4, 2, 3, 6, 7, 8, 9, 10])
        self.assertEqual((s["count"], s["min"], s["max"]), (10, 1, 10))
        self.assertEqual(s["median"], 5.5)  # mean of the middle two
        self.assertEqual(s["p90"], 9)  # nearest rank: ceil(0.9 * 10) = 9th value
        self.assertEqual(stats.summary([])["median"], None)
        self.assertEqual(stats.summary([None, 3])["count"], 1)

    def test_paired_ratios_skip_rounds_without_a_baseline(self):
        self.assertEqual(stats.paired_ratios({1: 10, 2: 20, 3: 30}, {1: 100, 3: 60}), [0.1, 0.5])

    def test_median_interval_is_seeded_and_holds_the_median(self):
        samples = [0.83, 0.92, 0.94, 0.94, 0.97, 1.01, 1.07, 1.09, 1.09, 1.12]
        low, high = stats.median_interval(samples)
        self.assertEqual((low, high), stats.median_interval(samples))
        self.assertLess(low, stats.median(samples))
        self.assertLess(stats.median(samples), high)
        self.assertEqual(stats.median_interval([2.0, 2.0, 2.0]), (2.0, 2.0))
        self.assertEqual(stats.median_interval([]), (None, None))


if __name__ == "__main__":
    unittest.main()
