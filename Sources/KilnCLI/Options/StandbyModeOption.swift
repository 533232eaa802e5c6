import ArgumentParser
import KilnEngine

/// `--standby-mode thaw|ready` (``StandbyMode``), for `kiln run --standby`, `kiln serve` and
/// `kiln bench standby`.
extension StandbyMode: ExpressibleByArgument {}
