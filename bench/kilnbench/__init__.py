"""kiln benchmark suite: kiln against the alternatives a user would pick, measured side by side.

Modules:
  stats    summaries (min/median/p90/max, the same nearest-rank rule as `kiln bench startup`)
  client   the one HTTP client every method is measured with (optionally inside a netns)
  proc     processes, memory (smaps_rollup), reaping, host facts
  methods  one class per start-up method (cold JVMs, AOT/CDS archives, CRIU, podman, docker, kiln)
  harness  the phases: prepare, interleaved start-up rounds, steady state, N instances, clean-up
  report   results.json -> report.md + PNG plots (matplotlib)
"""

SCHEMA_VERSION = 1
