import KilnSystem

/// Something ``HeldPages`` can hold and let go: a ``PageCachePin``, or a test's stand-in.
package protocol HeldPagesPin: AnyObject, Sendable {
    /// Bytes the pin keeps locked in memory.
    var lockedBytes: Int { get }
    /// Lets the pages go (safe to call twice).
    func release()
}

extension PageCachePin: HeldPagesPin {}

/// The pins a gateway holds against a host's idle page-out (``KilnInstanceProvider``), within
/// a budget of locked memory: one per function (what its latest copy maps and its snapshot's
/// image files) and one for the programs every restore runs.
///
/// Locked pages cannot be reclaimed, so without a bound a gateway serving many functions would
/// lock ~270 MiB for each Spring function it ever restored, for as long as it runs, however
/// tight memory gets. When a new pin would take the total over the budget, the pins of the
/// functions least recently restored or thawed go first; a pin that does not fit alone is not
/// kept. A pin of a snapshot that was removed or baked again (``keepOnly(_:)``) holds files no
/// restore will read again, and goes too.
///
/// A value type with no clock of its own: every method that depends on time takes `now`, and
/// what to release is returned to the caller, which unmaps it outside any lock (tens of
/// milliseconds for a few hundred MiB).
package struct HeldPages<Pin: HeldPagesPin> {
    /// One function's pin: which snapshot version it holds, and when the function last needed
    /// its pages.
    package struct Entry {
        package var pin: Pin
        package var snapshotVersion: String
        package var lastUse: ContinuousClock.Instant
    }

    /// What ``keep(_:for:snapshotVersion:at:)`` did with a pin.
    package enum Outcome: Equatable {
        /// Kept; the pins named were let go to make room (least recently used first).
        case kept(evicting: [String])
        /// Not kept, and released: it alone needs more than the budget.
        case overBudget
        /// Not kept, and released: the gateway has ended.
        case ended
    }

    /// Most bytes all pins together may lock.
    package let budgetBytes: Int
    package private(set) var functions: [String: Entry] = [:]
    /// The programs every restore runs (runc, CRIU, kiln-shim), once one has run them.
    package private(set) var programs: Pin?
    /// Set at the gateway's end: a pin made after it (a delayed one) is let go at once.
    package private(set) var ended = false
    /// The snapshot version of each function whose pin did not fit the budget alone: pinning
    /// its next copies would lock and unlock the same pages again for nothing.
    private var refused: [String: String] = [:]

    package init(budgetBytes: Int) {
        self.budgetBytes = budgetBytes
    }

    /// Bytes locked by every pin held.
    package var lockedBytes: Int {
        functions.values.reduce(programs?.lockedBytes ?? 0) { $0 + $1.pin.lockedBytes }
    }

    /// Keeps `pin` as `function`'s, in place of its previous one, evicting the pins of the
    /// functions least recently used until the total fits the budget. Returns the outcome and
    /// the pins to release (the replaced one, the evicted ones, or `pin` itself).
    package mutating func keep(
        _ pin: Pin, for function: String, snapshotVersion: String, at now: ContinuousClock.Instant
    ) -> (outcome: Outcome, release: [Pin]) {
        guard !ended else { return (.ended, [pin]) }
        var release: [Pin] = []
        if let replaced = functions.removeValue(forKey: function) { release.append(replaced.pin) }
        guard pin.lockedBytes + (programs?.lockedBytes ?? 0) <= budgetBytes else {
            refused[function] = snapshotVersion
            return (.overBudget, release + [pin])
        }
        var evicted: [String] = []
        let byAge = functions.sorted { $0.value.lastUse < $1.value.lastUse }.map(\.key)
        for oldest in byAge where lockedBytes + pin.lockedBytes > budgetBytes {
            if let entry = functions.removeValue(forKey: oldest) {
                release.append(entry.pin)
                evicted.append(oldest)
            }
        }
        functions[function] = Entry(pin: pin, snapshotVersion: snapshotVersion, lastUse: now)
        return (.kept(evicting: evicted), release)
    }

    /// Keeps `pin` as the programs' pin unless they are held already, the gateway has ended or
    /// it does not fit beside the functions' pins (the programs are small: ~15 MB). Returns
    /// whether it was kept; when not, the caller releases it.
    package mutating func keep(programs pin: Pin) -> Bool {
        guard !ended, programs == nil, lockedBytes + pin.lockedBytes <= budgetBytes else { return false }
        programs = pin
        return true
    }

    /// Whether a pin of `function`'s snapshot at `snapshotVersion` was refused for its size
    /// (a new version is tried again).
    package func refuses(_ function: String, snapshotVersion: String) -> Bool {
        refused[function] == snapshotVersion
    }

    /// Notes that `function`'s pages were needed at `now` (a restore or a thaw), for the order
    /// in which pins are evicted.
    package mutating func used(_ function: String, at now: ContinuousClock.Instant) {
        functions[function]?.lastUse = now
    }

    /// Lets go of every function's pin whose snapshot is no longer the version `current` gives
    /// for it (nil: removed from the store). Returns the names and the pins to release.
    package mutating func keepOnly(_ current: (String) -> String?) -> (functions: [String], release: [Pin]) {
        let stale = functions.filter { current($0.key) != $0.value.snapshotVersion }.map(\.key).sorted()
        return (stale, stale.compactMap { functions.removeValue(forKey: $0)?.pin })
    }

    /// Every pin, for the caller to release; nothing is kept from now on.
    package mutating func releaseAll() -> [Pin] {
        defer {
            functions = [:]
            programs = nil
            ended = true
        }
        return functions.values.map(\.pin) + (programs.map { [$0] } ?? [])
    }
}
