#!/usr/bin/env bash
# Bakes the Spring Boot 3 sample (examples/boot-petclinic, run as `java -jar app.jar`) as snapshot
# "hello", the demo's and the benchmarks' subject, replacing an older one.
set -euo pipefail
cd "$(dirname "$0")/.."
kiln=${KILN:-.build/debug/kiln}
$kiln bake hello --replace --port 8080 --ready /health \
  --warmup 200:/greet --warmup 100:/owners/1 --warmup 50:/vets \
  -- examples/boot-petclinic/bin/boot-petclinic
