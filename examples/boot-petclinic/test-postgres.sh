#!/usr/bin/env bash
# boot-petclinic against a real PostgreSQL 15: starts a throwaway server (initdb + pg_ctl in a temp
# directory, as the 'postgres' user, on a free port on 127.0.0.1, password authentication over
# TCP), runs the sample on it and checks that it creates and seeds the schema, reads and writes
# through it, closes every connection at a checkpoint (seen from PostgreSQL's pg_stat_activity and
# from the JVM's sockets) and reconnects after the restore, and that a second start does not seed
# again. Stops and deletes the server. Needs root (to run the server as 'postgres') and Debian's
# postgresql-15. Prints "N passed, N failed"; exits 1 if any check failed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=test/lib.sh
. "$here/test/lib.sh"

pgbin=/usr/lib/postgresql/15/bin
[ -x "$pgbin/initdb" ] || { echo "test-postgres: $pgbin/initdb missing (Debian package postgresql-15)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "test-postgres: run as root (the server runs as 'postgres')" >&2; exit 1; }
id postgres >/dev/null 2>&1 || { echo "test-postgres: no 'postgres' user" >&2; exit 1; }

pgdir="$tmp/pg"
pg_port=$(free_port)
as_pg() { runuser -u postgres -- "$@"; }
cleanup() {
  stop_app
  if [ -f "$pgdir/data/postmaster.pid" ]; then
    as_pg "$pgbin/pg_ctl" -D "$pgdir/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

mkdir -p "$pgdir" && chown postgres: "$pgdir" && chmod 0711 "$tmp"
as_pg "$pgbin/initdb" -D "$pgdir/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 -E UTF8 >"$pgdir/initdb.log"
as_pg "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/server.log" -w \
  -o "-c listen_addresses=127.0.0.1 -c port=$pg_port -c unix_socket_directories=$pgdir" start >/dev/null
psql_su() { as_pg psql -h "$pgdir" -p "$pg_port" -U postgres -v ON_ERROR_STOP=1 -qAt "$@"; }
psql_su -c "CREATE USER petclinic PASSWORD 'petclinic-secret'" -c "CREATE DATABASE petclinic OWNER petclinic"
psql_app() { PGPASSWORD=petclinic-secret psql -h 127.0.0.1 -p "$pg_port" -U petclinic -d petclinic -qAt -c "$1"; }
echo "PostgreSQL $(psql_su -c 'SHOW server_version') on 127.0.0.1:$pg_port"

build_all
owners=500
port=$(free_port)
crac_port=$(free_port)
base="http://127.0.0.1:$port"
db_env=(SPRING_DATASOURCE_URL="jdbc:postgresql://127.0.0.1:$pg_port/petclinic"
        SPRING_DATASOURCE_USERNAME=petclinic SPRING_DATASOURCE_PASSWORD=petclinic-secret
        PETCLINIC_SEED_OWNERS=$owners)
app_connections() { psql_app "SELECT count(*) FROM pg_stat_activity WHERE usename = 'petclinic' AND pid <> pg_backend_pid()"; }
jvm_sockets() { ss -tnpH state established "( dport = :$pg_port )" | grep -c "pid=$app_pid," || true; }

start_app "$port" "$crac_port" "${db_env[@]}" || { fail "start on PostgreSQL"; finish; exit 1; }
expect "actuator health: db is PostgreSQL" GET "$base/actuator/health" 200 \
  "j['components']['db']['status'] == 'UP' and j['components']['db']['details']['database'] == 'PostgreSQL'"
[ "$(psql_app 'SELECT count(*) FROM owners')" = "$owners" ] && pass "seeded $owners owners into PostgreSQL" \
  || fail "seeded $owners owners into PostgreSQL" "$(psql_app 'SELECT count(*) FROM owners')"
expect "GET /owners/1 from PostgreSQL" GET "$base/owners/1" 200 \
  "j['lastName'] == '$(psql_app 'SELECT last_name FROM owners WHERE id = 1')' and j['pets']"
expect "POST /owners into PostgreSQL" POST "$base/owners" 201 "j['id'] == $owners + 1" \
  '{"firstName":"Grace","lastName":"Hopper","address":"1 Navy Way","city":"Arlington","telephone":"7031234567","pets":[{"name":"Cobol","type":"dog","birthDate":"2019-05-05"}]}'
[ "$(psql_app "SELECT o.first_name || '/' || p.name FROM owners o JOIN pets p ON p.owner_id = o.id WHERE o.last_name = 'Hopper'")" = Grace/Cobol ] \
  && pass "the new owner and pet are rows in PostgreSQL" || fail "the new owner and pet are rows in PostgreSQL"

before=$(app_connections)
[ "$before" -ge 1 ] && pass "before checkpoint: $before connections open" || fail "before checkpoint: connections open" "$before"
answer=$(crac checkpoint "$crac_port" || true)
[ "$(head -1 <<<"$answer")" = ok ] && pass "checkpoint callbacks ran" || fail "checkpoint callbacks ran" "$answer"
[ "$(app_connections)" = 0 ] && pass "checkpoint: PostgreSQL sees 0 connections of the app" \
  || fail "checkpoint: PostgreSQL sees 0 connections of the app" "$(app_connections)"
[ "$(jvm_sockets)" = 0 ] && pass "checkpoint: the JVM holds no socket to PostgreSQL" \
  || fail "checkpoint: the JVM holds no socket to PostgreSQL" "$(jvm_sockets)"
answer=$(crac restore "$crac_port" || true)
[ "$(head -1 <<<"$answer")" = ok ] && pass "restore callbacks ran" || fail "restore callbacks ran" "$answer"
expect "restore: reads through new connections" GET "$base/owners?lastName=Hopper" 200 "j['total'] == 1"
[ "$(app_connections)" -ge 1 ] && pass "restore: connections open again" || fail "restore: connections open again"
stop_app

start_app "$port" "$crac_port" "${db_env[@]}" || { fail "second start on PostgreSQL"; finish; exit 1; }
expect "second start keeps the data, seeds nothing" GET "$base/greet" 200 "j['owners'] == $owners + 1"
stop_app
finish
