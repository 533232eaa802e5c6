"""Where a start's time goes: the report's stacked bar of each run's `phases`, and how the harness
learns a kiln instance (from `kiln run --json`, never from a directory listing).

Run:  python3 -m unittest discover -s bench/tests
"""

import copy
import json
import os
import sys
import tempfile
import unittest

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, BENCH)

from kilnbench import report  # noqa: E402
from test_report import HAVE_MATPLOTLIB, load_sample  # noqa: E402

FIXTURES = os.path.join(BENCH, "tests", "fixtures")


def fixture(name):
    with open(os.path.join(FIXTURES, name)) as f:
        return f.read()


def without_phases(results):
    """The recorded sample run with no phases in any run (as a kiln without phases would leave it)."""
    results = copy.deepcopy(results)
    for sample in results.get("startup", []):
        sample.pop("phases", None)
        (sample.get("extra") or {}).pop("phases", None)
    return results


def with_phases(results):
    """The recorded sample run, its kiln runs given the fixture's phases the way the harness keeps them
    (extra["phases"], from the first instance of each `kiln run --json` document), no other method's."""
    runs = json.loads(fixture("kiln-run-phases.json"))["runs"]
    results = without_phases(results)
    kiln = [s for s in report.measured(results) if s["method"] == "kiln"]
    assert len(kiln) >= len(runs), "the sample has fewer kiln runs than the fixture"
    for sample, run in zip(kiln, runs):
        sample.setdefault("extra", {})["phases"] = run["instances"][0]["phases"]
    return results


class PhasesReportTests(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)

    def generate(self, results):
        path = os.path.join(self.tmp.name, "results.json")
        with open(path, "w") as f:
            json.dump(results, f)
        return report.generate(path, self.tmp.name, plots=HAVE_MATPLOTLIB)

    def test_medians_per_phase_in_the_reported_order(self):
        table = report.phases_by_method(with_phases(load_sample()))
        self.assertEqual(list(table), ["kiln"])
        row = table["kiln"]
        self.assertEqual(row["phases"], ["prepare", "verify", "runtime", "criuRestore", "identity", "firstResponse"])
        self.assertEqual(row["runs"], 2)
        self.assertAlmostEqual(row["median_ms"]["criuRestore"], 92.0)
        self.assertAlmostEqual(row["median_ms"]["runtime"], 20.0)

    def test_report_has_the_table_and_the_stacked_bar(self):
        text, made = self.generate(with_phases(load_sample()))
        self.assertIn("### Where a start's time goes", text)
        section = text.split("### Where a start's time goes", 1)[1]
        row = next(line for line in section.splitlines() if line.startswith("| 8 | kiln restore |"))
        self.assertIn("| 2 |", row)
        self.assertIn("| 92 ms |", row)  # criuRestore's median, as fmt_ms writes it
        if HAVE_MATPLOTLIB:
            self.assertEqual(made.get("phases"), "phases.png")
            self.assertGreater(os.path.getsize(os.path.join(self.tmp.name, "phases.png")), 5000)
            self.assertIn("![where a start's time goes](phases.png)", text)

    def test_the_recorded_run_has_kiln_and_criu_bare_phases_adding_up(self):
        results = load_sample()
        table = report.phases_by_method(results)
        self.assertEqual(list(table), ["criu-bare", "kiln"])
        self.assertEqual(report.phase_names(table)[0], "verify snapshot")  # kiln's order, which includes criu-bare's
        for s in report.measured(results):
            phases = report.run_phases(s)
            if s["method"] in ("kiln", "criu-bare"):
                # Slices that add up to the whole command (the harness's "rest of the command" closes it).
                self.assertAlmostEqual(sum(phases.values()), s["ttfr_ms"], delta=0.01)
            else:
                self.assertIsNone(phases)

    def test_no_phases_no_section_no_plot(self):
        text, made = self.generate(without_phases(load_sample()))
        self.assertNotIn("Where a start's time goes", text)
        self.assertNotIn("phases", made)
        self.assertFalse(os.path.exists(os.path.join(self.tmp.name, "phases.png")))

    def test_a_run_without_a_phase_counts_zero_and_junk_is_ignored(self):
        results = with_phases(load_sample())
        kiln = [s for s in report.measured(results) if s["method"] == "kiln"]
        kiln[0]["extra"]["phases"] = {"prepare": 7.1, "gc": "n/a", "flag": True, "negative": -3}
        row = report.phases_by_method(results)["kiln"]
        self.assertNotIn("gc", row["phases"])
        self.assertNotIn("flag", row["phases"])
        self.assertNotIn("negative", row["phases"])
        self.assertAlmostEqual(row["median_ms"]["prepare"], (7.1 + 6.3) / 2)
        self.assertAlmostEqual(row["median_ms"]["criuRestore"], (0 + 88.5) / 2)  # missing in run 1: 0 ms there


class KilnInstanceFromItsJSONTests(unittest.TestCase):
    def test_the_namespace_comes_from_kiln_run_json(self):
        from kilnbench import methods
        document = fixture("kiln-run.json")  # a real `kiln run hello --json`
        self.assertEqual(methods.instance_netns(document), json.loads(document)["instances"][0]["networkNamespacePath"])
        self.assertTrue(methods.instance_netns(document).startswith("/run/"))

    def test_no_instance_or_no_path_is_an_error(self):
        from kilnbench import methods
        with self.assertRaises(RuntimeError):
            methods.instance_netns('{"instances": []}')
        with self.assertRaises(RuntimeError):
            methods.instance_netns('{"instances": [{"id": "x"}]}')

    def test_the_harness_no_longer_lists_the_netns_directory(self):
        with open(os.path.join(BENCH, "kilnbench", "methods.py")) as f:
            source = f.read()
        self.assertNotIn("os.listdir(self._netns_dir())", source)
        self.assertNotIn("_netns_entries", source)


if __name__ == "__main__":
    unittest.main()
