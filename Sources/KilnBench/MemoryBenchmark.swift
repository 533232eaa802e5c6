import Foundation
import KilnEngine
import KilnGateway
import KilnOCI
import KilnSnapshot
import KilnSystem

/// What `kiln bench memory` measures: how much memory copies of one snapshot take together, how
/// fast KSM folds them, what that costs, and what compaction does to the snapshot.
public struct MemoryBenchmarkReport: Codable, Sendable {
    /// One reading of the restored copies' total memory.
    public struct Sample: Codable, Sendable {
        public var seconds: Double
        public var pssBytes: Int64
        public var mergedBytes: Int64
    }

    /// A snapshot of the same service baked with or without compaction.
    public struct SnapshotVariant: Codable, Sendable {
        public var name: String
        public var compacted: Bool
        public var compressed: Bool
        public var sizeBytes: Int64
        public var checkpointMs: Double
        /// Restore to first response, per run (ms); for a compressed snapshot the first run
        /// includes decompressing it into the tmpfs cache.
        public var restoreMs: [Double]
        public var restore: SampleSummary
    }

    public var snapshot: String
    public var copies: Int
    /// One cold-started instance after the same warmup, settled (no KSM: it has no twin).
    public var coldInstance: MemoryUsage
    /// All copies together right after the last restore, and once merging has settled.
    public var restoredAtStart: MemoryUsage
    public var restoredSettled: MemoryUsage
    public var samples: [Sample]
    /// Seconds from the last restore until total PSS stopped falling (within 1% over 3 s, after
    /// ksmd's second full scan).
    public var convergenceSeconds: Double
    /// CPU time ksmd used from the first restore until convergence.
    public var ksmdCPUSeconds: Double
    public var ksmTuning: String
    /// Total PSS of the copies over the PSS of one cold instance (target: at most 2).
    public var pssOverOneCold: Double
    /// Total PSS of the copies over `copies` cold instances.
    public var pssOverAllCold: Double
    public var variants: [SnapshotVariant]
    /// Without KSM, sharing only the pages mapped from the snapshot: one copy alone, then
    /// ``copies`` copies together, each read right after the last restore.
    public var mappedOneCopy: MemoryUsage?
    public var mappedCopies: MemoryUsage?
    /// ``mappedCopies`` over ``mappedOneCopy`` (PSS; target: at most 2).
    public var mappedCopiesOverOne: Double?
}

extension Kiln {
    /// Runs the memory benchmark for a baked snapshot. Re-bakes its service twice (plain and
    /// compacted, as `<name>-mem-plain` / `<name>-mem-compact`, removed afterwards) to compare
    /// snapshot sizes and restore times.
    public func benchmarkMemory(
        _ manifest: SnapshotManifest, copies: Int, restoreRuns: Int = 3, progress: @Sendable (String) -> Void = { _ in }
    ) async throws -> MemoryBenchmarkReport {
        guard (1...64).contains(copies) else {
            throw KilnError(.invalidArgument, "cannot restore \(copies) copies", hint: "pass --copies between 1 and 64")
        }
        try PageMerging.enable()

        progress("cold-starting one instance for the baseline...")
        let cold = try await measureColdInstance(manifest)
        progress("one cold instance: PSS \(cold.pssBytes >> 20) MiB, RSS \(cold.rssBytes >> 20) MiB")

        // Mapped sharing alone (no KSM): one copy, then all of them, each read right after the
        // last restore, before any merging could begin.
        progress("restoring 1 copy, then \(copies) copies, sharing only the pages mapped from the snapshot (no KSM)...")
        let mappedOne = try await measureRestoredCopies(manifest, count: 1)
        let mappedAll = try await measureRestoredCopies(manifest, count: copies)
        progress(
            String(
                format: "no KSM: 1 copy PSS %d MiB, %d copies PSS %d MiB (%.2fx)", mappedOne.pssBytes >> 20, copies, mappedAll.pssBytes >> 20,
                Double(mappedAll.pssBytes) / Double(max(mappedOne.pssBytes, 1))))

        progress("restoring \(copies) copies with page sharing...")
        let ksmdBefore = Self.ksmdCPUSeconds()
        let records = try await restoreCopies(manifest, count: copies, shareMemory: true)
        let pids = { records.flatMap { ProcessInspector.pids(inCgroup: $0.cgroupPath) } }
        let start = ContinuousClock.now
        let atStart = MemoryUsage.of(pids: pids())
        var samples = [MemoryBenchmarkReport.Sample(seconds: 0, pssBytes: atStart.pssBytes, mergedBytes: atStart.mergedBytes)]
        var convergence = 0.0
        // ksmd needs two passes over a page to merge it (one to see it unchanged, one to merge):
        // only a reading after two more full scans can be "settled".
        let scansAtStart = PageMerging.stats().fullScans
        // The copies are the benchmark's: stopped whether it goes on or is stopped (Ctrl-C ends
        // the sleep below with an error).
        do {
            while start.duration(to: .now) < .seconds(180) {
                try await Task.sleep(for: .seconds(1))
                let usage = MemoryUsage.of(pids: pids())
                let seconds = start.duration(to: .now).milliseconds / 1000
                samples.append(.init(seconds: seconds, pssBytes: usage.pssBytes, mergedBytes: usage.mergedBytes))
                // Settled: the last 3 readings within 1% of each other, after merging began.
                let recent = samples.suffix(4).map(\.pssBytes)
                if PageMerging.stats().fullScans >= scansAtStart + 2, samples.count >= 4, let high = recent.max(), let low = recent.min(),
                    Double(high - low) < 0.01 * Double(high)
                {
                    convergence = samples[samples.count - 4].seconds
                    break
                }
            }
        } catch {
            for record in records { try? await stop(record) }
            throw error
        }
        let settled = MemoryUsage.of(pids: pids())
        let ksmdSeconds = Self.ksmdCPUSeconds() - ksmdBefore
        progress(
            String(
                format: "%d copies: PSS %d MiB at start, %d MiB after %.0f s of merging (ksmd used %.1f s of CPU)",
                copies, atStart.pssBytes >> 20, settled.pssBytes >> 20, convergence, ksmdSeconds))
        for record in records { try await stop(record) }

        var variants: [MemoryBenchmarkReport.SnapshotVariant] = []
        // The variants hold the same process memory as the snapshot: encrypt them as it is.
        let key = try keys.key(for: manifest)
        for (compact, compress) in [(false, false), (true, false), (true, true)] {
            let name = String("\(manifest.name)-mem-\(compact ? "compact" : "plain")\(compress ? "-zst" : "")".prefix(40))
            progress("baking \(name)...")
            let variant = try await bake(
                BakeRequest(
                    name: name, sandbox: manifest.sandbox, readiness: manifest.readiness, warmup: manifest.warmup, compact: compact,
                    replace: true, shareMemory: manifest.shareMemory, compress: compress, encryptionKey: key))
            var restoreTimes: [Double] = []
            do {
                for _ in 0..<restoreRuns {
                    let record = try await restoreOne(variant, pollInterval: .milliseconds(5))
                    restoreTimes.append(record.firstResponseMs)
                    try await stop(record)
                }
            } catch {
                // A variant is the benchmark's own snapshot: it does not outlive a failed run.
                try? removeSnapshot(name)
                throw error
            }
            try? removeSnapshot(name)
            variants.append(
                .init(
                    name: name, compacted: compact, compressed: compress, sizeBytes: variant.sizeBytes, checkpointMs: variant.timings.checkpointMs,
                    restoreMs: restoreTimes, restore: SampleSummary(restoreTimes)))
            progress("\(name): \(variant.sizeBytes >> 20) MiB, restore median \(Int(SampleSummary(restoreTimes).median)) ms")
        }
        return MemoryBenchmarkReport(
            snapshot: manifest.name, copies: copies, coldInstance: cold, restoredAtStart: atStart, restoredSettled: settled,
            samples: samples, convergenceSeconds: convergence, ksmdCPUSeconds: ksmdSeconds,
            ksmTuning: "pages_to_scan=\(PageMerging.read("pages_to_scan") ?? 0) sleep_millisecs=\(PageMerging.read("sleep_millisecs") ?? 0)",
            pssOverOneCold: Double(settled.pssBytes) / Double(max(cold.pssBytes, 1)),
            pssOverAllCold: Double(settled.pssBytes) / Double(max(cold.pssBytes * Int64(copies), 1)),
            variants: variants, mappedOneCopy: mappedOne, mappedCopies: mappedAll,
            mappedCopiesOverOne: Double(mappedAll.pssBytes) / Double(max(mappedOne.pssBytes, 1)))
    }

    /// Restores `count` copies one after the other (`standby`: frozen standby copies); if one
    /// fails, those restored are stopped.
    func restoreCopies(_ manifest: SnapshotManifest, count: Int, shareMemory: Bool, standby: StandbyMode? = nil) async throws -> [InstanceRecord] {
        var records: [InstanceRecord] = []
        do {
            for _ in 0..<count { records.append(try await restoreOne(manifest, shareMemory: shareMemory, standby: standby)) }
        } catch {
            for record in records { try? await stop(record) }
            throw error
        }
        return records
    }

    /// Restores `count` copies without KSM, reads their memory together right after the last
    /// restore, and stops them.
    func measureRestoredCopies(_ manifest: SnapshotManifest, count: Int) async throws -> MemoryUsage {
        let records = try await restoreCopies(manifest, count: count, shareMemory: false)
        let usage = MemoryUsage.of(pids: records.flatMap { ProcessInspector.pids(inCgroup: $0.cgroupPath) })
        for record in records { try await stop(record) }
        return usage
    }

    /// PSS of one cold-started instance after the snapshot's warmup, read after 3 s of rest.
    func measureColdInstance(_ manifest: SnapshotManifest) async throws -> MemoryUsage {
        try await withColdInstance(manifest) { cold, _ in
            _ = try await warmUp(cold.endpoint, function: manifest.name, steps: manifest.warmup, logPath: cold.logPath, keptLogPath: cold.logPath)
            try await Task.sleep(for: .seconds(3))
            return MemoryUsage.of(pids: ProcessInspector.pids(inCgroup: cold.cgroupPath))
        }
    }

    /// utime + stime of the ksmd kernel thread, in seconds.
    static func ksmdCPUSeconds() -> Double {
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(entry), (try? String(contentsOfFile: "/proc/\(entry)/comm", encoding: .utf8))?.hasPrefix("ksmd") == true else {
                continue
            }
            return ProcessInspector.cpuSeconds(of: pid) ?? 0
        }
        return 0
    }
}
