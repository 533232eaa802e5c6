#!/usr/bin/env bash
# Measures --mmap-page-images (patches/criu/0001) on the hello-spring sample, bare (no runc):
#
#   patches/criu/bench.sh [CRIU] [RUNS]     as root; CRIU defaults to `criu` on PATH, RUNS to 10
#
# Starts examples/hello-spring (built with its build.sh) on 127.0.0.1:$PORT (default 18931), warms
# it up (350 requests), dumps it once, then:
#  1. RUNS restores each way, interleaved (read, mmap, read, ...): `criu restore -d` wall time,
#     CRIU's own "Restore time" (--display-stats), and restore start -> first HTTP 200 on /greet;
#  2. 4 copies restored side by side, each in its own pid and network namespace
#     (unshare -fpn --mount-proc), one request each: RSS, PSS and anonymous PSS of the 4 JVMs.
# Prints medians and totals; leaves nothing running.
set -uo pipefail

criu=${1:-$(command -v criu || true)}
runs=${2:-10}
port=${PORT:-18931}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
app=$repo/examples/hello-spring
export JAVA=${JAVA:-/usr/lib/jvm/java-17-openjdk-amd64/bin/java}
work=$(mktemp -d /tmp/kiln-criu-mmap-bench.XXXXXX)
pids=()

cleanup() {
  local p
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  sleep 0.3
  rm -rf "$work"
}
trap cleanup EXIT
die() { echo "bench.sh: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"
[ -x "$criu" ] || die "no criu binary"
"$criu" --help 2>&1 | grep -q -- --mmap-page-images || die "$criu has no --mmap-page-images"
[ -f "$app/build/classes/dev/kiln/samples/petclinic/Application.class" ] || "$app/build.sh" >/dev/null || die "build hello-spring"

ms() { echo $(( $(date +%s%N) / 1000000 )); }
median() { sort -n | awk '{a[NR]=$1} END {if (NR) print (NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2); else print "-"}'; }
gone() { local i; for ((i = 0; i < 400; i++)); do [ -e "/proc/$1" ] || return 0; sleep 0.05; done; return 1; }

echo "starting hello-spring on 127.0.0.1:$port ..."
(PORT=$port PETCLINIC_SEED_OWNERS=3000 setsid "$app/bin/hello-spring" </dev/null >"$work/app.out" 2>&1 &)
for ((i = 0; i < 1200; i++)); do
  curl -sf -o /dev/null "http://127.0.0.1:$port/greet" && break
  sleep 0.1
done
pid=$(pgrep -f "dev.kiln.samples.petclinic.Application" | head -1)
[ -n "$pid" ] || die "hello-spring did not start: $(tail -3 "$work/app.out")"
pids+=("$pid")
for ((i = 0; i < 200; i++)); do curl -sf -o /dev/null "http://127.0.0.1:$port/greet"; done
for ((i = 0; i < 100; i++)); do curl -sf -o /dev/null "http://127.0.0.1:$port/owners/1"; done
for ((i = 0; i < 50; i++)); do curl -sf -o /dev/null "http://127.0.0.1:$port/vets"; done
sleep 1
img=$work/img
mkdir -p "$img"
"$criu" dump -t "$pid" -D "$img" --shell-job -o dump.log || die "dump failed: $(grep Error "$img/dump.log" | tail -3)"
gone "$pid"
echo "dumped pid $pid: pages $(du -cm "$img"/pages-*.img | tail -1 | cut -f1) MiB"

: >"$work/times"
for ((r = 1; r <= runs; r++)); do
  for mode in read mmap; do
    opt=()
    [ "$mode" = mmap ] && opt=(--mmap-page-images)
    t0=$(ms)
    out=$("$criu" restore -D "$img" --shell-job -d --display-stats -o "restore-$mode.log" "${opt[@]}" 2>&1) \
      || die "restore ($mode) failed: $(grep Error "$img/restore-$mode.log" | tail -3)"
    t1=$(ms)
    pids+=("$pid")
    until curl -sf -o /dev/null "http://127.0.0.1:$port/greet"; do
      [ $(( $(ms) - t0 )) -lt 20000 ] || die "no answer after restore ($mode)"
      sleep 0.002
    done
    t2=$(ms)
    criu_us=$(sed -n 's/^Restore time: \([0-9]*\) us/\1/p' <<<"$out")
    echo "$mode $((t1 - t0)) $((criu_us / 1000)) $((t2 - t0))" >>"$work/times"
    kill -9 "$pid"
    gone "$pid" || die "pid $pid did not go"
  done
done
echo
echo "restore of the same dump, $runs runs each, interleaved (median ms):"
printf '%-6s %14s %20s %22s\n' mode "criu restore -d" "CRIU 'Restore time'" "start -> first 200"
for mode in read mmap; do
  printf '%-6s %14s %20s %22s\n' "$mode" \
    "$(awk -v m=$mode '$1 == m {print $2}' "$work/times" | median)" \
    "$(awk -v m=$mode '$1 == m {print $3}' "$work/times" | median)" \
    "$(awk -v m=$mode '$1 == m {print $4}' "$work/times" | median)"
done

echo
echo "4 copies side by side, each in its own pid + net namespace, one request each (kB, sum of 4):"
printf '%-6s %10s %10s %10s %10s\n' mode RSS PSS Pss_Anon Pss_File
for mode in read mmap; do
  opt=()
  [ "$mode" = mmap ] && opt=(--mmap-page-images)
  javas=()
  for c in 1 2 3 4; do
    # lo up before CRIU starts: its kernel-feature probe connects over loopback.
    (setsid unshare -fpn --mount-proc sh -c 'ip link set lo up && exec "$@"' sh \
      "$criu" restore -D "$img" --shell-job -o "copy-$mode-$c.log" "${opt[@]}" \
      </dev/null >"$work/copy-$mode-$c.out" 2>&1 &)
    for ((i = 0; i < 400; i++)); do
      j=$(for u in $(pgrep -x unshare); do
            for k in $(pgrep -P "$u"); do pgrep -P "$k"; done
          done | while read -r p; do
            [ "$(readlink "/proc/$p/exe" 2>/dev/null)" = "$(readlink -f "$JAVA")" ] && echo "$p"
          done | grep -vxF -f <(printf '%s\n' "${javas[@]:-none}") | head -1)
      [ -n "$j" ] && break
      sleep 0.05
    done
    [ -n "$j" ] || die "copy $c ($mode) did not come up: $(grep Error "$img/copy-$mode-$c.log" | tail -3)"
    javas+=("$j")
    pids+=("$j")
    for ((i = 0; i < 400; i++)); do
      nsenter -t "$j" -n curl -sf -o /dev/null "http://127.0.0.1:$port/greet" && break
      sleep 0.02
    done
  done
  sleep 1
  for j in "${javas[@]}"; do cat "/proc/$j/smaps_rollup"; done | awk -v m=$mode '
    /^Rss:/ {rss += $2} /^Pss:/ {pss += $2} /^Pss_Anon:/ {anon += $2} /^Pss_File:/ {file += $2}
    END {printf "%-6s %10d %10d %10d %10d\n", m, rss, pss, anon, file}'
  for j in "${javas[@]}"; do kill -9 "$j"; done
  for j in "${javas[@]}"; do gone "$j"; done
done
