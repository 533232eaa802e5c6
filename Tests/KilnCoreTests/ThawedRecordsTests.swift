import Foundation
import Testing

@testable import KilnEngine
@testable import KilnGateway

/// When a thawed copy's record is saved: after its hand-out and its first request, in either
/// order, and never for a copy stopped meanwhile (nothing kept for it either).
@Suite struct ThawedRecordsTests {
    func record(_ id: String, thawMs: Double? = nil) -> InstanceRecord {
        var record = InstanceRecord(
            id: id, snapshot: "boot", pid: 4242, shimPid: 4240, port: 8080, createdAt: Date(timeIntervalSince1970: 1_795_000_000),
            networkNamespacePath: "/run/kiln/netns/\(id)", cgroupPath: "/kiln/\(id)", logPath: "/run/kiln/instances/\(id)/console.log",
            restoreMs: 60, firstResponseMs: 64, sharesMemory: false)
        record.thawMs = thawMs
        return record
    }

    @Test func savedWhenTheRequestEndsAfterTheHandOut() {
        var table = ThawedRecords()
        table.thawed("boot-1")
        #expect(table.handedOut(record("boot-1", thawMs: 2.4)) == nil)
        #expect(table.firstRequestOver("boot-1")?.thawMs == 2.4, "the record the hand-out gave, with its thaw time")
        #expect(table.firstRequestOver("boot-1") == nil, "saved once")
        #expect(table.count == 0)
    }

    @Test func savedWhenTheRequestEndsBeforeTheHandOut() {
        var table = ThawedRecords()
        table.thawed("boot-1")
        #expect(table.firstRequestOver("boot-1") == nil)
        #expect(table.handedOut(record("boot-1", thawMs: 2.4))?.thawMs == 2.4)
        #expect(table.count == 0)
    }

    @Test func nothingIsSavedOrKeptForACopyStoppedOnTheWay() {
        var table = ThawedRecords()
        // Stopped before its first request came back: the request's end is dropped.
        table.thawed("boot-1")
        #expect(table.handedOut(record("boot-1")) == nil)
        table.forget("boot-1")
        #expect(table.firstRequestOver("boot-1") == nil)
        // Stopped before its hand-out finished (its request already over): the hand-out saves nothing.
        table.thawed("boot-2")
        #expect(table.firstRequestOver("boot-2") == nil)
        table.forget("boot-2")
        #expect(table.handedOut(record("boot-2")) == nil)
        // Stopped between its thaw and both.
        table.thawed("boot-3")
        table.forget("boot-3")
        #expect(table.firstRequestOver("boot-3") == nil)
        #expect(table.handedOut(record("boot-3")) == nil)
        #expect(table.count == 0, "no entry left for a copy that is gone")
    }

    @Test func aRequestEndForACopyNeverThawedIsIgnored() {
        var table = ThawedRecords()
        #expect(table.firstRequestOver("restored-1") == nil)
        #expect(table.handedOut(record("restored-1")) == nil)
        #expect(table.count == 0)
    }
}
