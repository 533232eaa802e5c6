#!/usr/bin/env bash
# boot-petclinic through a real checkpoint and restore with bare CRIU (no container), the way a
# CRaC backend drives it: the test CRaC backend (test/crac) runs every beforeCheckpoint (Spring
# stops Tomcat, the pool closes its connections), `criu dump` takes the JVM, `criu restore -d`
# brings it back, the backend runs every afterRestore (pool resumed, Tomcat started again), and the
# restored process answers with the state it had (startedAt, pid, request count, database).
# Needs root and CRIU 4.2+ (`make setup`). Prints "N passed, N failed"; exits 1 if any failed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=test/lib.sh
. "$here/test/lib.sh"
CRIU=${CRIU:-criu}
command -v "$CRIU" >/dev/null || { echo "test-criu: no criu on PATH: run 'make setup'" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "test-criu: run as root (criu needs it)" >&2; exit 1; }

jvm=
cleanup() {
  if [ -n "$jvm" ]; then
    kill -9 "$jvm" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

build_all
port=$(free_port)
crac_port=$(free_port)
base="http://127.0.0.1:$port"
mkdir -p "$tmp/img"
# Its own session (setsid), stdin from /dev/null, output to a file: all things CRIU can restore.
setsid env PORT="$port" PETCLINIC_SEED_OWNERS=1000 \
  JAVA_OPTS="${JAVA_OPTS:-} -Djava.io.tmpdir=$tmp -Xbootclasspath/a:$here/build/test-crac -Dorg.crac.Core.Compat=dev.kiln.samples.boot.testcrac -Dtestcrac.port=$crac_port" \
  "$here/bin/boot-petclinic" </dev/null >"$tmp/app.out" 2>&1 &
disown  # criu dump kills it: no "Killed" report from this shell
deadline=$((SECONDS + ${START_TIMEOUT:-180}))
until [ "$(curl -s -o /dev/null -w '%{http_code}' "$base/health")" = 200 ]; do
  [ $SECONDS -lt $deadline ] || { tail -20 "$tmp/app.out" >&2; fail "start"; finish; exit 1; }
  sleep 0.1
done
jvm=$(pgrep -f -- "-Dtestcrac.port=$crac_port" | head -1)
for i in $(seq 1 100); do curl -s -o /dev/null "$base/owners/$i"; done
expect "before: GET /id" GET "$base/id" 200 "j['pid'] == $jvm"
read -r started requests < <(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(j["startedAt"], j["requests"])' "$tmp/body")

answer=$(crac checkpoint "$crac_port" || true)
[ "$(head -1 <<<"$answer")" = ok ] && pass "beforeCheckpoint callbacks" || fail "beforeCheckpoint callbacks" "$answer"
start=$(date +%s%N)
if "$CRIU" dump -t "$jvm" -D "$tmp/img" -o dump.log --shell-job; then
  pass "criu dump ($(ms_since "$start") ms, $(du -sh "$tmp/img" | cut -f1) of images)"
else
  fail "criu dump" "$(grep -m3 Error "$tmp/img/dump.log")"; finish; exit 1
fi
kill -0 "$jvm" 2>/dev/null && fail "the dumped JVM is gone" || pass "the dumped JVM is gone"

start=$(date +%s%N)
if "$CRIU" restore -d -D "$tmp/img" -o restore.log --shell-job; then
  pass "criu restore -d ($(ms_since "$start") ms)"
else
  fail "criu restore" "$(grep -m3 Error "$tmp/img/restore.log")"; finish; exit 1
fi
answer=$(crac restore "$crac_port" || true)
[ "$(head -1 <<<"$answer")" = ok ] && pass "afterRestore callbacks" || fail "afterRestore callbacks" "$answer"
until [ "$(curl -s -o /dev/null -w '%{http_code}' "$base/owners/1")" = 200 ]; do
  [ "$(ms_since "$start")" -lt 10000 ] || break
  sleep 0.01
done
echo "first GET /owners/1 200 after $(ms_since "$start") ms from the start of the restore"
expect "restored: same process state" GET "$base/id" 200 \
  "j['pid'] == $jvm and j['startedAt'] == '$started' and j['requests'] > $requests"
expect "restored: the database answers" GET "$base/owners/1" 200 "j['id'] == 1 and j['pets']"
expect "restored: the database takes writes" POST "$base/owners" 201 "j['id'] == 1001" \
  '{"firstName":"Alan","lastName":"Turing","address":"Bletchley Park","city":"Milton Keynes","telephone":"1908640404"}'
grep -q 'restore: pool petclinic resumed' "$tmp/app.out" && pass "restored: pool resumed" || fail "restored: pool resumed"
finish
