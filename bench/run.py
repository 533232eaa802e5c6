#!/usr/bin/env python3
"""kiln benchmark suite: `make bench` (or `make bench QUICK=1`) runs this as root.

  python3 bench/run.py [--quick] [--out DIR] [--only ID,ID...] [--no-report]

Writes DIR/results.json (every raw sample), then DIR/report.md and DIR/*.png (bench/report.py).
DIR defaults to bench/results/<UTC timestamp>/ (git-ignored). Method ids: cold-jdk17
cold-jdk17-jar cold-jdk25 aot-jdk25 appcds-jdk17 criu-bare podman docker kiln
kiln-serve.
"""

import argparse
import datetime
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from kilnbench import harness, report  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (3 rounds, shorter steady state and settle)")
    parser.add_argument("--out", help="output directory (default bench/results/<timestamp>)")
    parser.add_argument("--only", help="comma-separated method ids (debugging; the report says which ran)")
    parser.add_argument("--no-report", action="store_true", help="only write results.json")
    parser.add_argument("--work", default=os.environ.get("BENCH_WORK", "/var/lib/kiln-bench"),
                        help="scratch directory for archives, images and runtimes' state (default /var/lib/kiln-bench)")
    parser.add_argument("--rounds", type=int, help="override the number of measured rounds")
    parser.add_argument("--steady", type=int, nargs=2, metavar=("WARM", "TIMED"), help="override the steady-state request counts (0 0 skips it)")
    parser.add_argument("--instances", type=int, help="override N of the side-by-side memory phase (0 skips it)")
    parser.add_argument("--settle", type=float, help="override the settle time of the memory phase (s)")
    args = parser.parse_args()
    overrides = {}
    if args.rounds is not None:
        overrides["rounds"] = args.rounds
    if args.steady is not None:
        overrides["steady_warm"], overrides["steady_timed"] = args.steady
    if args.instances is not None:
        overrides["n_instances"] = args.instances
    if args.settle is not None:
        overrides["settle_s"] = args.settle

    repo = os.path.dirname(HERE)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = os.path.abspath(args.out or os.path.join(HERE, "results", stamp))
    os.makedirs(out, exist_ok=True)
    only = set(args.only.split(",")) if args.only else None

    bench = harness.Harness(repo, out, quick=args.quick, only=only, work=args.work, overrides=overrides)
    bench.run()
    if not args.no_report:
        report.generate(os.path.join(out, "results.json"), out)
        print(f"\nreport: {os.path.join(out, 'report.md')}", file=sys.stderr)
    latest = os.path.join(HERE, "results", "latest")
    if out.startswith(os.path.join(HERE, "results") + os.sep):
        try:
            if os.path.islink(latest):
                os.unlink(latest)
            os.symlink(os.path.basename(out), latest)
        except OSError:
            pass


if __name__ == "__main__":
    main()
