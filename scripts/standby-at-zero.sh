#!/usr/bin/env bash
# Requests at zero through `kiln serve` with one ready standby copy, against requests to the warm
# instance, timed by curl (a client in a process of its own): the loop behind the curl figures of
# docs/restore-path.md, "Held pages within a budget; ...; the benchmark's client" (stop 34).
#
#   scripts/standby-at-zero.sh [FUNCTION] [ROUNDS] [PATH]   (defaults: boot 24 /greet; root; ~8 s a round)
#
# Starts a gateway on 127.0.0.1:18080 (admin 18081) with --standby FUNCTION=1 --standby-mode ready
# --keep-alive 3600 --network none. Each round: drain the function, wait for "no instance, one
# ready standby copy", sleep 0.5 s, one request at zero; once the replacement standby copy is
# ready and 1 s later, three requests back to back ("warm") and one after 0.5 s idle. Prints the
# medians and the ratios. KILN picks the binary (default .build/release/kiln).
set -euo pipefail
cd "$(dirname "$0")/.."
kiln=${KILN:-.build/release/kiln}
function=${1:-boot}
rounds=${2:-24}
path=${3:-/greet}
times=$(mktemp)
"$kiln" serve --listen 127.0.0.1:18080 --admin 127.0.0.1:18081 --standby "$function=1" --standby-mode ready \
  --keep-alive 3600 --network none >/dev/null 2>&1 &
gateway=$!
trap 'kill -TERM $gateway 2>/dev/null; wait $gateway 2>/dev/null; rm -f "$times"' EXIT
for _ in $(seq 150); do curl -s -o /dev/null http://127.0.0.1:18081/functions && break; sleep 0.2; done

# zero: no instance and one ready standby copy; replaced: an instance and a ready replacement.
# One python3 per wait, polling the admin API every 50 ms (a python3 per poll started an
# interpreter every 50 ms beside the gateway restoring the replacement).
wait_for() {
  /usr/bin/python3 - "$1" "$function" <<'PY' || exit 1
import json, sys, time, urllib.request
wanted, function = sys.argv[1], sys.argv[2]
for _ in range(1200):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:18081/functions/{function}", timeout=5) as reply:
            d = json.load(reply)
    except OSError:  # the admin API busy or restarting: ask again
        time.sleep(0.05)
        continue
    s = d["standby"]
    settled = s["ready"] == 1 and s["starting"] == 0 and d["starting"] == 0 and d["stopping"] == 0
    if ("zero" if settled and not d["instances"] else "replaced" if settled else "busy") == wanted:
        sys.exit(0)
    time.sleep(0.05)
print(f"no '{wanted}' state within 60 s", file=sys.stderr)
sys.exit(1)
PY
}
timed() { echo "$1 $(curl -s -o /dev/null -w '%{time_total}' "http://127.0.0.1:18080/$function$path")" >>"$times"; }

for round in $(seq "$rounds"); do
  curl -s -X POST "http://127.0.0.1:18081/functions/$function/drain" >/dev/null
  wait_for zero
  sleep 0.5
  timed zero
  wait_for replaced
  sleep 1
  timed warm; timed warm; timed warm
  sleep 0.5
  timed idle
  echo "round $round/$rounds done" >&2
done
/usr/bin/python3 - "$times" <<'PY'
import statistics, sys
samples = {}
for line in open(sys.argv[1]):
    kind, seconds = line.split()
    samples.setdefault(kind, []).append(float(seconds) * 1000)
median = {kind: statistics.median(values) for kind, values in samples.items()}
for kind in ("zero", "warm", "idle"):
    print(f"{kind:5} n={len(samples[kind]):3}  median {median[kind]:.2f} ms")
print(f"at zero / warm {median['zero'] / median['warm']:.2f}x; at zero / warm after 0.5 s idle {median['zero'] / median['idle']:.2f}x")
PY
