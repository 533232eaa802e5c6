import Foundation
import Testing

@testable import KilnSystem

/// `kiln doctor`'s "idle page-out": DAMON's admin tree read as the kernel lays it out.
@Suite struct IdlePageOutTests {
    let root = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-damon-\(UUID().uuidString)").path

    func write(_ value: String, _ path: String) throws {
        let file = "\(root)/\(path)"
        try FileManager.default.createDirectory(atPath: (file as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try "\(value)\n".write(toFile: file, atomically: false, encoding: .utf8)
    }

    /// A kdamond with one context whose schemes have the given actions (minimum age 12, 5 s intervals).
    func kdamond(_ index: Int, state: String, actions: [String]) throws {
        let base = "kdamonds/\(index)"
        try write(state, "\(base)/state")
        try write("1", "\(base)/contexts/nr_contexts")
        try write("5000000", "\(base)/contexts/0/monitoring_attrs/intervals/aggr_us")
        try write("\(actions.count)", "\(base)/contexts/0/schemes/nr_schemes")
        for (i, action) in actions.enumerated() {
            try write(action, "\(base)/contexts/0/schemes/\(i)/action")
            try write("12", "\(base)/contexts/0/schemes/\(i)/access_pattern/age/min")
        }
    }

    @Test func aRunningPageOutSchemeIsFoundWithItsMinimumIdleTime() throws {
        defer { try? FileManager.default.removeItem(atPath: root) }
        try write("3", "kdamonds/nr_kdamonds")
        try kdamond(0, state: "off", actions: ["pageout"])
        try kdamond(1, state: "on", actions: ["stat", "pageout"])
        try kdamond(2, state: "on", actions: ["lru_prio"])
        let found = IdlePageOut.current(root: root)
        #expect(found == [IdlePageOut(kdamond: "\(root)/kdamonds/1", minimumIdle: .seconds(60))])
    }

    @Test func noDamonMeansNothingFound() throws {
        defer { try? FileManager.default.removeItem(atPath: root) }
        #expect(IdlePageOut.current(root: root).isEmpty)
        try write("0", "kdamonds/nr_kdamonds")
        #expect(IdlePageOut.current(root: root).isEmpty)
    }
}
