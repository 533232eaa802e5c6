#!/usr/bin/env python3
"""Regenerates report.md and the plots from a results.json.

  python3 bench/report.py bench/results/<run>/results.json [OUT_DIR]

Plots need matplotlib (Debian's python3-matplotlib: use /usr/bin/python3).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from kilnbench import report  # noqa: E402


def main():
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    out = sys.argv[2] if len(sys.argv) == 3 else None
    _, made = report.generate(sys.argv[1], out)
    where = out or os.path.dirname(os.path.abspath(sys.argv[1]))
    print(f"wrote {os.path.join(where, 'report.md')}" + (f" and {', '.join(v for k, v in made.items() if k != 'skipped')}" if made else ""))
    if made.get("skipped"):
        print(made["skipped"], file=sys.stderr)


if __name__ == "__main__":
    main()
