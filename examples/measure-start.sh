#!/usr/bin/env bash
# Measures cold start: time from launching a sample to its first HTTP 200 on /health, N runs.
#   usage: examples/measure-start.sh hello-spring|hello-jdk [runs=3]
#   env:   PORT (default 18080), JAVA, JAVA_OPTS and the samples' own variables pass through.
# Prints each run and the median in ms. Polls every 10 ms, so figures carry ~10 ms of slack.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
sample=${1:?usage: $0 hello-spring|hello-jdk [runs]}
runs=${2:-3}
port=${PORT:-18080}
launcher="$here/$sample/bin/$sample"
[ -x "$launcher" ] || { echo "no launcher $launcher" >&2; exit 1; }
command -v curl >/dev/null || { echo "needs curl" >&2; exit 1; }
if curl -s -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null; then
  echo "port $port is already in use" >&2; exit 1
fi

pid=
cleanup() { [ -z "$pid" ] || { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }; }
trap cleanup EXIT

times=()
for run in $(seq 1 "$runs"); do
  start=$(date +%s%N)
  PORT=$port "$launcher" >/dev/null 2>&1 &
  pid=$!
  ms=
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health" 2>/dev/null)" = 200 ]; then
      ms=$(( ($(date +%s%N) - start) / 1000000 ))
      break
    fi
    sleep 0.01
  done
  [ -n "$ms" ] || { echo "run $run: $sample exited before answering /health" >&2; exit 1; }
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
  # utime + stime of the JVM so far (fields 14, 15; the comm field has no spaces for java).
  cpu=$(awk -v hz="$(getconf CLK_TCK)" '{printf "%d", ($14 + $15) * 1000 / hz}' "/proc/$pid/stat")
  echo "run $run: first /health 200 after $ms ms (CPU $cpu ms, RSS $((rss / 1024)) MB)"
  times+=("$ms")
  cleanup
  pid=
done
median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2)}')
echo "$sample: median $median ms over $runs runs (java: ${JAVA:-java})"
