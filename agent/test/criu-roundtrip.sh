#!/usr/bin/env bash
# One real CRIU round trip of a JVM running kiln's agent, driven through the control directory as
# kiln does: checkpoint.request + SIGWINCH -> checkpoint.ready, criu dump, 5 s later criu restore
# (twice, one copy after the other, each with a fresh control directory at the same path),
# restore.request + SIGWINCH -> restore.done. Checks afterRestore ran in the restored process
# with the copy's identity, that the copies draw different random numbers, and reports what the
# fixed-rate 1 s timer did across the gap. Usage: criu-roundtrip.sh CLASSES APP_CLASSPATH WORKDIR
#   WAKE=fifo  wake the agent as kiln does when it can: a byte into the control directory's `wake`
#              FIFO (made before the JVM starts, and again in each copy's fresh directory before
#              its restore), no signal at all
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
classes=$1; cp_app=$2; w=$3
CRIU=${CRIU:-/usr/local/sbin/criu}
JAVA=${JAVA:-/usr/lib/jvm/java-17-openjdk-amd64/bin/java}
pass=0; fail=0
check() { if [ "$2" = 0 ]; then pass=$((pass + 1)); echo "PASS $tag: $1"; else fail=$((fail + 1)); echo "FAIL $tag: $1 ${3:-}"; fi; }
waitfile() { for _ in $(seq 1 1000); do [ -e "$1" ] && return 0; sleep 0.01; done; return 1; }
WAKE=${WAKE:-signal}
tag="criu ($WAKE)"
wake() { # how kiln tells the agent to look at its directory
  if [ "$WAKE" = fifo ]; then printf x >"$w/ctl/wake"; else kill -WINCH "$pid"; fi
}
pid=""
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; true; }
trap cleanup EXIT

rm -rf "$w"; mkdir -p "$w/ctl" "$w/img"
[ "$WAKE" = fifo ] && mkfifo -m 600 "$w/ctl/wake"
# A session of its own, stdio on /dev/null, no perf-data mmap: nothing CRIU cannot take along.
setsid "$JAVA" -XX:-UsePerfData -XX:+UseSerialGC -Xmx64m -Xshare:off \
  ${AGENT_OPTS:-} -javaagent:"$here/build/kiln-crac-agent.jar" -Dkiln.agent.dir="$w/ctl" -Dtest.events="$w/events" \
  -cp "$cp_app" TestApp timer </dev/null >/dev/null 2>"${STDERR_LOG:-/dev/null}" &
disown
waitfile "$w/ctl/agent.ready"; check "agent.ready" $?
pid=$(sed -n 's/^pid=//p' "$w/ctl/agent.ready")
sleep 2.5   # a few timer ticks
: >"$w/ctl/checkpoint.request"; wake
waitfile "$w/ctl/checkpoint.ready"; check "checkpoint.ready" $?
ls -l "/proc/$pid/fd" | grep -v -E 'jar$|/dev/null|urandom|random$|pipe|total|modules$|/ctl/wake$' | grep -q "$w" \
  && check "no file of the control dir but the wake FIFO open at the dump" 1 "$(ls -l /proc/$pid/fd)" \
  || check "no file of the control dir but the wake FIFO open at the dump" 0
if [ "$WAKE" = fifo ]; then
  ls -l "/proc/$pid/fd" | grep -q "$w/ctl/wake\$"; check "the JVM holds the wake FIFO open" $? "$(ls -l /proc/$pid/fd)"
fi
t0=$(date +%s%N)
"$CRIU" dump -t "$pid" -D "$w/img" --shell-job -o dump.log -v2; rc=$?
t1=$(date +%s%N)
check "criu dump ($(( (t1 - t0) / 1000000 )) ms, $(du -sm "$w/img" | cut -f1) MB)" $rc "$(tail -5 "$w/img/dump.log")"
kill -0 "$pid" 2>/dev/null; check "the original is gone after the dump" $(( $? == 0 ))
grep -c '^tick' "$w/events" >"$w/ticks-before"
sleep 5     # "restored much later"

restore_copy() { # NAME: a fresh control dir at the same path, restore, request, signal
  local name=$1
  rm -rf "$w/ctl"; mkdir -p "$w/ctl"
  [ "$WAKE" = fifo ] && mkfifo -m 600 "$w/ctl/wake"
  echo "== copy $name restored at wall=$(date +%s%3N)" >>"$w/events"
  printf 'instance=%s\nhostname=%s\n' "$name" "$(hostname)" >"$w/ctl/.restore.request.tmp"
  mv "$w/ctl/.restore.request.tmp" "$w/ctl/restore.request"
  local r0 r1 r2
  r0=$(date +%s%N)
  "$CRIU" restore -D "$w/img" --shell-job -d -o "restore-$name.log" -v2; local rc=$?
  r1=$(date +%s%N)
  check "criu restore of $name ($(( (r1 - r0) / 1000000 )) ms)" $rc "$(tail -5 "$w/img/restore-$name.log")"
  wake
  waitfile "$w/ctl/restore.done"; local rc2=$?
  r2=$(date +%s%N)
  check "restore.done in $name ($(( (r2 - r1) / 1000 )) us from the wake to restore.done, agent: $(sed -n 's/^elapsed_us=//p' "$w/ctl/restore.done" 2>/dev/null) us, of which identity refresh $(sed -n 's/^identity_us=//p' "$w/ctl/restore.done" 2>/dev/null) us)" $rc2
  grep -q "^restored .* thread=kiln-crac-coordinator instance=$name\$" "$w/events"; check "afterRestore ran in the restored $name on the coordinator thread, with its identity" $? "$(tail -3 "$w/events")"
  sleep 3.2   # ticks after the restore: the third comes ~2.5 s after it (1 s rhythm from the dump)
  kill -9 "$pid" 2>/dev/null
  for _ in $(seq 1 500); do [ -e "/proc/$pid" ] || break; sleep 0.01; done
}
restore_copy criu-copy-1
restore_copy criu-copy-2
pid=""

r1=$(grep '^random' "$w/events" | sed -n 1p); r2=$(grep '^random' "$w/events" | sed -n 2p)
for k in native sha1 drbg uuid; do
  a=$(echo "$r1" | tr ' ' '\n' | sed -n "s/^$k=//p"); b=$(echo "$r2" | tr ' ' '\n' | sed -n "s/^$k=//p")
  [ -n "$a" ] && [ "$a" != "$b" ]; check "copies draw different $k random values ($a vs $b)" $?
done

# The timer across the gap: ticks before the dump, the restore, and the next ticks.
awk '/^== copy/ {if (!c) print "  last tick before the dump: " lt; c=1; split($6,a,"="); cw=a[2]; print "  " $2 " " $3 " (criu restore started at wall=" cw ", " int((cw-lw)/1000) " s after the last tick)"; n=0; next}
     /^tick/ && !c {lt=$2 " " $3; split($2,a,"="); lw=a[2]; next}
     /^restored/ {split($2,a,"="); print "  afterRestore: +" a[2]-cw " ms wall, " $3; next}
     /^tick/ {split($2,a,"="); split($3,m,"="); n++; if (n<=4) print "  tick " n " after restore: +" a[2]-cw " ms wall, " $3;
             if (n>=2 && n<=3 && (m[2] % 1000) > 400) print "  OFF-RHYTHM tick " n;
             if (n>1 && m[2]-pm < 500) print "  BURST tick " n; pm=m[2]}' "$w/events" | tee "$w/timer.txt"
grep -q 'tick 3 after restore' "$w/timer.txt"; check "the fixed-rate task runs again after the restore" $?
! grep -q -E 'OFF-RHYTHM|BURST' "$w/timer.txt"; check "it keeps its 1 s rhythm (monotonic clock continues from the dump) and does not catch up the gap" $?
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
