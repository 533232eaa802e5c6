import Foundation

/// A DAMON-based reclaimer running on the host (`/sys/kernel/mm/damon/admin`, Linux 5.18+): a
/// kdamond that is on, monitoring physical memory, with a `pageout` scheme pages out what was not
/// accessed for a while, file pages included: kiln's, runc's, CRIU's and the JDK's, and the
/// snapshot's page images, also those a frozen standby copy maps. A restore or a thaw after that
/// long reads them from disk again (here: a ready standby copy's thaw 3.5 ms after 1 s frozen,
/// 17.2 ms after 101 s; docs/restore-path.md). kiln reports it (`kiln doctor`) and does not change
/// the host's policy; `kiln serve` holds what its restores and standby copies use (the snapshots'
/// files, the JDK's, runc, CRIU, kiln-shim) and its own code against it (``PageCachePin``).
package struct IdlePageOut: Equatable, Sendable {
    /// The kdamond's directory.
    package var kdamond: String
    /// How long memory must be idle before it is paged out (the scheme's minimum age, in
    /// aggregation intervals, times the interval), when both are readable.
    package var minimumIdle: Duration?

    /// Every `pageout` scheme of a running kdamond under `root`.
    package static func current(root: String = "/sys/kernel/mm/damon/admin") -> [IdlePageOut] {
        func read(_ path: String) -> String? {
            (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        func count(_ directory: String, _ name: String) -> Int { read("\(directory)/\(name)").flatMap { Int($0) } ?? 0 }
        var found: [IdlePageOut] = []
        let kdamonds = "\(root)/kdamonds"
        for k in 0..<count(kdamonds, "nr_kdamonds") {
            let kdamond = "\(kdamonds)/\(k)"
            guard read("\(kdamond)/state") == "on" else { continue }
            let contexts = "\(kdamond)/contexts"
            for c in 0..<count(contexts, "nr_contexts") {
                let context = "\(contexts)/\(c)"
                let interval = read("\(context)/monitoring_attrs/intervals/aggr_us").flatMap { Int64($0) }
                let schemes = "\(context)/schemes"
                for s in 0..<count(schemes, "nr_schemes") where read("\(schemes)/\(s)/action") == "pageout" {
                    let age = read("\(schemes)/\(s)/access_pattern/age/min").flatMap { Int64($0) }
                    let idle: Duration? = if let age, let interval { .microseconds(age * interval) } else { nil }
                    found.append(IdlePageOut(kdamond: kdamond, minimumIdle: idle))
                }
            }
        }
        return found
    }
}
