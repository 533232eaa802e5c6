#!/usr/bin/env bash
# The main job: bake the Spring Boot 3 sample service, restore copies of it, and print the comparison
# of cold start against restore. Run through `make demo` (which installs and builds first).
set -euo pipefail
cd "$(dirname "$0")/.."
kiln=${KILN:-.build/debug/kiln}
runs=${RUNS:-5}

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "kiln doctor"
$kiln doctor

step "kiln bake hello (cold start, warm up, full GC, checkpoint)"
./scripts/bake-sample.sh

step "kiln run hello --count 3 (three copies side by side)"
$kiln run hello --count 3
$kiln ps
for id in $($kiln ps --json | python3 -c 'import json,sys; print(" ".join(i["id"] for i in json.load(sys.stdin)["instances"] if i["snapshot"] == "hello"))'); do
  printf '%s /id -> ' "$id"; $kiln request "$id" /id
done
$kiln stop --all

step "cold start vs restore, $runs runs each, interleaved"
$kiln bench startup hello --runs "$runs"
