# Helpers shared by boot-petclinic's test.sh and test-postgres.sh (sourced, not run).
# Each check prints "ok"/"FAIL" and its name; finish prints "N passed, N failed" and sets the status.

passed=0
failed=0
app_pid=
app_out=
tmp=$(mktemp -d /tmp/boot-petclinic-test.XXXXXX)

pass() { passed=$((passed + 1)); echo "ok   $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1${2:+: $2}"; }

# A free TCP port on 127.0.0.1 (nothing listening on it now).
free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 20000))
    [ -z "$(ss -ltnH "sport = :$port" 2>/dev/null)" ] && { echo "$port"; return; }
  done
}

# Builds the app (if stale) and the test-only CRaC backend into build/test-crac.
build_all() {
  "$here/build.sh"
  local crac="$here/build/test-crac"
  if [ ! -d "$crac" ] || [ -n "$(find "$here/test/crac" -newer "$crac" -print -quit)" ]; then
    rm -rf "$crac" && mkdir -p "$crac"
    javac -proc:none --release 17 -d "$crac" $(find "$here/test/crac" -name '*.java')
    touch "$crac"
  fi
}

# start_app PORT CRAC_PORT [ENV=VALUE...]: the shipped launcher, with the test CRaC backend on the
# boot class path (java -jar ignores -cp) and selected for org.crac; Tomcat's work directories go
# into the test's temp directory (java.io.tmpdir), not /tmp. Waits for /health 200.
start_app() {
  local port=$1 crac_port=$2
  shift 2
  app_out="$tmp/app-$port.out"
  env "$@" PORT="$port" JAVA_OPTS="${JAVA_OPTS:-} -Djava.io.tmpdir=$tmp -Dkiln.instance=test-1 -Xbootclasspath/a:$here/build/test-crac -Dorg.crac.Core.Compat=dev.kiln.samples.boot.testcrac -Dtestcrac.port=$crac_port" \
    "$here/bin/boot-petclinic" >"$app_out" 2>&1 &
  app_pid=$!
  local deadline=$((SECONDS + ${START_TIMEOUT:-180}))
  while [ $SECONDS -lt $deadline ] && kill -0 "$app_pid" 2>/dev/null; do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health")" = 200 ]; then
      return 0
    fi
    sleep 0.1
  done
  echo "--- the app did not answer /health 200; its output:" >&2
  tail -40 "$app_out" >&2
  return 1
}

stop_app() {
  if [ -n "$app_pid" ]; then
    kill "$app_pid" 2>/dev/null || true
    wait "$app_pid" 2>/dev/null || true
    app_pid=
  fi
}

# expect NAME METHOD URL STATUS PYTHON_EXPR [JSON_BODY]: the answer has that status, and the
# Python expression holds with j = the parsed JSON body (use True for status only).
expect() {
  local name=$1 method=$2 url=$3 status=$4 expr=$5 data=${6:-}
  local args=(-s -o "$tmp/body" -w '%{http_code}' -X "$method")
  [ -z "$data" ] || args+=(-H 'Content-Type: application/json' -d "$data")
  local code
  code=$(curl "${args[@]}" "$url" || true)
  if [ "$code" != "$status" ]; then
    fail "$name" "HTTP $code, expected $status: $(head -c 300 "$tmp/body" 2>/dev/null)"
    return
  fi
  if EXPR="$expr" python3 -c '
import json, os, sys
j = json.load(open(sys.argv[1])) if os.path.getsize(sys.argv[1]) else None
sys.exit(0 if eval("(" + os.environ["EXPR"] + ")") else 1)' "$tmp/body" 2>"$tmp/err"; then
    pass "$name"
  else
    fail "$name" "$expr does not hold for $(head -c 300 "$tmp/body") $(tail -1 "$tmp/err")"
  fi
}

# crac COMMAND PORT: sends checkpoint/restore to the test CRaC backend, prints its answer.
crac() {
  local answer
  exec 3<>"/dev/tcp/127.0.0.1/$2" || return 1
  echo "$1" >&3
  answer=$(cat <&3)
  exec 3<&-
  echo "$answer"
}

finish() {
  echo "$passed passed, $failed failed"
  [ "$failed" = 0 ]
}
