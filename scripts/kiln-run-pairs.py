#!/usr/bin/env python3
"""Two arms of one-shot `kiln run SNAPSHOT --json`, interleaved, compared pair by pair.

An arm is a kiln binary, optionally followed by VAR=VALUE settings for its environment and then
options of its own for `kiln run` (`/tmp/old/kiln`, `.build/release/kiln GOGC=off`,
`.build/release/kiln --network none`); a binary copied elsewhere needs its kiln-shim beside it.
Options after `--` go to both arms. Each round runs every arm once (the order alternating), stops the copy and waits a
second; the first round is discarded. Prints each arm's medians of the `phases` kiln reports, the
restore to first response and the command's wall time, then the paired differences (first arm
minus second) with 95% intervals of their median (a percentile bootstrap resampling the pairs).

    scripts/kiln-run-pairs.py hello 20 /tmp/old/kiln .build/release/kiln
    scripts/kiln-run-pairs.py hello 16 .build/release/kiln ".build/release/kiln GOGC=off" -- --network none
    scripts/kiln-run-pairs.py hello 10 ".build/release/kiln --network none" ".build/release/kiln --network kiln"

How stop 38 measured its network change and runc with GOGC=off (docs/restore-path.md).
"""
import json
import os
import random
import statistics
import subprocess
import sys
import time


def run_once(arm, snapshot, extra):
    binary, *rest = arm.split()
    options = next((index for index, word in enumerate(rest) if word.startswith("-")), len(rest))
    env = dict(os.environ, **dict(setting.split("=", 1) for setting in rest[:options]))
    start = time.monotonic()
    done = subprocess.run([binary, "run", snapshot, "--json", *rest[options:], *extra], capture_output=True, text=True, env=env)
    wall = (time.monotonic() - start) * 1000
    if done.returncode != 0:
        sys.exit(f"{arm}: kiln run failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    instance = json.loads(done.stdout)["instances"][0]
    phases = {key: value or 0 for key, value in instance["phases"].items()}
    phases["runcOwnMs"] = phases["runtimeMs"] - phases.get("criuRestoreMs", 0)
    phases["restoreToFirstResponseMs"] = instance["firstResponseMs"]
    phases["wallMs"] = wall
    subprocess.run([binary, "stop", instance["id"]], capture_output=True, env=env, check=True)
    return phases


def interval(differences, resamples=2000):
    medians = sorted(statistics.median(random.choices(differences, k=len(differences))) for _ in range(resamples))
    return medians[int(resamples * 0.025)], medians[int(resamples * 0.975) - 1]


def main():
    args = sys.argv[1:]
    extra = args[args.index("--") + 1:] if "--" in args else []
    args = args[:args.index("--")] if "--" in args else args
    if len(args) != 4 or not args[1].isdigit():
        sys.exit(__doc__)
    snapshot, rounds, arms = args[0], int(args[1]), args[2:]
    samples = {arm: [] for arm in arms}
    for round_number in range(rounds + 1):
        for arm in arms if round_number % 2 == 0 else reversed(arms):
            phases = run_once(arm, snapshot, extra)
            if round_number > 0:
                samples[arm].append(phases)
            time.sleep(1)
    for arm in arms:
        keys = samples[arm][0].keys()
        print(f"{arm}:", ", ".join(f"{key} {statistics.median(s[key] for s in samples[arm]):.1f}" for key in keys))
    for key in ("prepareMs", "runtimeMs", "criuRestoreMs", "runcOwnMs", "restoreToFirstResponseMs", "wallMs"):
        differences = [a[key] - b[key] for a, b in zip(samples[arms[0]], samples[arms[1]])]
        low, high = interval(differences)
        print(f"{key}: first - second, median {statistics.median(differences):.1f} ms, 95% interval {low:.1f} to {high:.1f}")


if __name__ == "__main__":
    main()
