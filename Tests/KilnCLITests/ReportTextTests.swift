import Foundation
import KilnBench
import Testing

/// The benchmarks' text reports, rendered by KilnBench for the command line.
@Suite("benchmark reports as text")
struct ReportTextTests {
    @Test func tablesDurationsAndSizes() {
        #expect(ReportText.table(["A", "BB", "C"], [["xxx", "y", "last column unpadded"]]) == "A    BB  C\nxxx  y   last column unpadded")
        #expect(ReportText.ms(3.14159) == "3.1 ms")
        #expect(ReportText.ms(12.6) == "13 ms")
        #expect(ReportText.bytes(512) == "512 B")
        #expect(ReportText.bytes(1536) == "1.5 KiB")
        #expect(ReportText.bytes(3 << 30) == "3.0 GiB")
    }

    func soakReport(failedOther: Int, leaks: [String]) throws -> SoakReport {
        let resources =
            #"{"processes":2,"containers":1,"networkNamespacePins":1,"cgroups":3,"mounts":0,"instanceDirectories":1,"zombies":0,"openFileDescriptors":40,"residentBytes":1048576}"#
        let json = """
            {"snapshot":"hello",
             "cycles":{"count":10,"failures":0,"errors":[],"seconds":12.5,"firstResponse":{"count":10,"min":20,"p50":30,"p90":40,"p99":50,"max":60}},
             "load":{"seconds":60,"connections":8,"requests":5000,"ok":\(4990 - failedOther),"failedInFlightToKilled":10,"failedOther":\(failedOther),
                     "otherErrors":\(failedOther > 0 ? #"["HTTP 502 from the gateway"]"# : "[]"),"kills":12,"launches":14,"coldStartFallbacks":0},
             "atStart":\(resources),"afterCycles":\(resources),"atEnd":\(resources),"leaks":\(leaks.isEmpty ? "[]" : #"["mounts: 0 -> 1"]"#)}
            """
        return try JSONDecoder().decode(SoakReport.self, from: Data(json.utf8))
    }

    @Test func soakPassesOnlyWithoutOtherFailuresOrLeaks() throws {
        let clean = try soakReport(failedOther: 0, leaks: [])
        #expect(clean.passed)
        #expect(clean.summary.contains("cycles: 10 restore/request/stop, 0 failed"))
        #expect(clean.summary.contains("failed: 10 in flight to a killed instance, 0 other (target 0)"))
        #expect(clean.summary.contains("leaks: none"))
        #expect(clean.summary.contains("1.0 MiB"))

        let failing = try soakReport(failedOther: 1, leaks: [])
        #expect(!failing.passed)
        #expect(failing.summary.contains("  HTTP 502 from the gateway"))

        let leaking = try soakReport(failedOther: 0, leaks: ["mounts: 0 -> 1"])
        #expect(!leaking.passed)
        #expect(leaking.summary.contains("leaks: mounts: 0 -> 1"))
    }
}
