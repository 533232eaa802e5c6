#!/usr/bin/env bash
# Smoke test of boot-petclinic on H2 (in memory): builds it if needed, starts it with the shipped
# launcher on a free port on 127.0.0.1, checks every endpoint's JSON, then runs its org.crac
# callbacks through a test-only CRaC backend (test/crac, never shipped): before a checkpoint Tomcat
# is stopped (Spring's own CRaC support) and the HikariCP pool holds no connection; after the
# restore both are back. Stops the JVM. Prints "N passed, N failed"; exits 1 if any check failed.
#   JAVA, JAVA_OPTS  pass through to the launcher (e.g. JAVA=/usr/lib/jvm/temurin-25-jdk-amd64/bin/java)
#   START_TIMEOUT    seconds to wait for /health 200 (default 180)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=test/lib.sh
. "$here/test/lib.sh"
trap 'stop_app; rm -rf "$tmp"' EXIT

owners=3000
build_all
port=$(free_port)
crac_port=$(free_port)
base="http://127.0.0.1:$port"
echo "starting boot-petclinic on 127.0.0.1:$port (H2, $owners owners)"
start=$(date +%s%N)
start_app "$port" "$crac_port" PETCLINIC_SEED_OWNERS=$owners || { fail "start: /health 200"; finish; exit 1; }
echo "first /health 200 after $(( ($(date +%s%N) - start) / 1000000 )) ms"

grep -qx ready "$app_out" && pass "prints 'ready' on stdout" || fail "prints 'ready' on stdout"
expect "GET /health" GET "$base/health" 200 'j == {"status": "UP"}'
expect "GET /greet" GET "$base/greet?name=kiln" 200 \
  "j['message'] == 'Hello, kiln!' and j['app'] == 'boot-petclinic' and j['owners'] == $owners"
expect "GET /id" GET "$base/id" 200 \
  "set(j) == {'app','hostname','pid','startedAt','uptimeMs','requests','localHost','instance'}
   and j['app'] == 'boot-petclinic' and j['pid'] == $app_pid and j['instance'] == 'test-1'
   and j['hostname'] == open('/proc/sys/kernel/hostname').read().strip()
   and j['uptimeMs'] > 0 and j['requests'] >= 3 and isinstance(j['localHost'], str)"
requests_before=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["requests"])' "$tmp/body")
expect "GET /id counts requests" GET "$base/id" 200 "j['requests'] == $requests_before + 1"
expect "GET /random" GET "$base/random" 200 \
  "len(j['uuid']) == 36 and len(j['secureRandom']) == 32 and int(j['secureRandom'], 16) >= 0 and j['algorithm']"
first_random=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["secureRandom"])' "$tmp/body")
expect "GET /random differs each call" GET "$base/random" 200 "j['secureRandom'] != '$first_random'"
expect "GET /owners?lastName=Da" GET "$base/owners?lastName=Da&size=5" 200 \
  "j['total'] > 5 and j['page'] == 0 and j['size'] == 5 and len(j['owners']) == 5
   and all(o['lastName'].startswith('Da') and o['pets'] for o in j['owners'])"
expect "GET /owners pages" GET "$base/owners?page=2&size=7" 200 "j['total'] == $owners and j['page'] == 2 and j['size'] == 7"
expect "GET /owners/1 with pets and visits" GET "$base/owners/1" 200 \
  "j['id'] == 1 and j['firstName'] and j['telephone'].isdigit() and j['pets']
   and all(isinstance(p['visits'], list) and p['type'] and p['birthDate'] for p in j['pets'])
   and all(v['petId'] == p['id'] and v['date'] and v['description'] for p in j['pets'] for v in p['visits'])"
expect "GET /owners/{unknown} is 404 JSON" GET "$base/owners/999999" 404 "j['status'] == 404 and 'not found' in j['message']"
new_owner='{"firstName":"Ada","lastName":"Lovelace","address":"12 St James Sq.","city":"London","telephone":"2071234567","pets":[{"name":"Babbage","type":"cat","birthDate":"2020-02-29"}]}'
expect "POST /owners is 201 with ids" POST "$base/owners" 201 \
  "j['id'] == $owners + 1 and j['lastName'] == 'Lovelace' and j['pets'][0]['id'] > 0 and j['pets'][0]['type'] == 'cat'" "$new_owner"
expect "the new owner reads back" GET "$base/owners/$((owners + 1))" 200 \
  "j['firstName'] == 'Ada' and j['pets'][0]['name'] == 'Babbage' and j['pets'][0]['birthDate'] == '2020-02-29'"
expect "POST /owners without a name is 400" POST "$base/owners" 400 "j['status'] == 400 and 'firstName' in j['message']" \
  '{"lastName":"X","address":"a","city":"b","telephone":"1"}'
expect "POST /owners with an unknown pet type is 400" POST "$base/owners" 400 "'unknown pet type' in j['message']" \
  '{"firstName":"A","lastName":"B","address":"a","city":"b","telephone":"1","pets":[{"name":"x","type":"dragon","birthDate":"2020-01-01"}]}'
expect "GET /vets" GET "$base/vets" 200 \
  "len(j) == 24 and all(v['lastName'] and isinstance(v['specialties'], list) for v in j) and any(v['specialties'] for v in j)"
expect "GET /actuator/health" GET "$base/actuator/health" 200 \
  "j['status'] == 'UP' and j['components']['db']['status'] == 'UP' and j['components']['db']['details']['database'] == 'H2'"

# org.crac, through the test backend: the checkpoint half, then the restore half.
answer=$(crac checkpoint "$crac_port" || true)
if [ "$(head -1 <<<"$answer")" = ok ] && grep -q PoolCheckpointResource <<<"$answer" && grep -q DefaultLifecycleProcessor <<<"$answer"; then
  pass "checkpoint: beforeCheckpoint of the pool resource and of Spring's lifecycle processor"
else
  fail "checkpoint" "$answer"
fi
grep -q 'checkpoint: pool petclinic suspended, 0 connections open' "$app_out" \
  && pass "checkpoint: the pool holds 0 connections" || fail "checkpoint: the pool holds 0 connections"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$base/health" || true)" = 000 ] \
  && pass "checkpoint: Tomcat stopped (port closed)" || fail "checkpoint: Tomcat stopped (port closed)"
answer=$(crac restore "$crac_port" || true)
[ "$(head -1 <<<"$answer")" = ok ] && pass "restore: afterRestore ran" || fail "restore" "$answer"
expect "restore: GET /owners/1 reads the database again" GET "$base/owners/1" 200 "j['id'] == 1"
expect "restore: the pool has connections again" GET "$base/actuator/health" 200 \
  "j['components']['db']['details']['totalConnections'] >= 1"

stop_app
finish
