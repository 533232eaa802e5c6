#!/usr/bin/env bash
# A request at zero through `kiln serve` after a short and after a long quiet spell: what a host
# that pages out idle memory (kiln doctor: "idle page-out") costs a restore, and what the
# gateway's page holding gives back (docs/restore-path.md, "A restore at zero after a quiet minute").
#
#   scripts/restore-after-quiet.sh [FUNCTION] [PATH]     (defaults: hello /greet; root; ~4 min)
#
# Starts a gateway on 127.0.0.1:18080 (admin 18081) with --keep-alive 5 --network none, restores
# FUNCTION once, then twice: 8 s quiet and a request at zero, 100 s quiet and a request at zero.
# Prints curl's time_total of each request and who answered it (X-Kiln-Served-By). KILN picks the
# binary (default .build/release/kiln, as `make release` builds it).
set -euo pipefail
cd "$(dirname "$0")/.."
kiln=${KILN:-.build/release/kiln}
function=${1:-hello}
path=${2:-/greet}
headers=$(mktemp)
"$kiln" serve --listen 127.0.0.1:18080 --admin 127.0.0.1:18081 --keep-alive 5 --network none >/dev/null 2>&1 &
gateway=$!
trap 'kill -TERM $gateway 2>/dev/null; wait $gateway 2>/dev/null; rm -f "$headers"' EXIT
for _ in $(seq 150); do curl -s -o /dev/null http://127.0.0.1:18081/functions && break; sleep 0.2; done

request() {
  local seconds
  seconds=$(curl -s -o /dev/null -D "$headers" -w '%{time_total}' "http://127.0.0.1:18080/$function$path")
  printf '%-28s %6.1f ms  served by %s\n' "$1" "$(awk -v s="$seconds" 'BEGIN { print s * 1000 }')" \
    "$(tr -d '\r' <"$headers" | awk 'tolower($1) == "x-kiln-served-by:" { print $2 }')"
}

request "first request"
for round in 1 2; do
  sleep 8
  request "round $round: after 8 s quiet"
  sleep 100
  request "round $round: after 100 s quiet"
done
