import Foundation
import KilnOCI
import KilnSnapshot
import KilnSystem

/// The host check's settings: where this host's facts come from (nil: measured, see
/// ``Kiln/hostFactsSource``) and the facts the user waived.
public struct HostCheckPolicy: Sendable {
    public var source: (any HostFactsSource)?
    public var ignored: Set<HostFact>

    public init(source: (any HostFactsSource)? = nil, ignored: Set<HostFact> = []) {
        self.source = source
        self.ignored = ignored
    }
}

extension Kiln {
    /// This host's facts: ``HostCheckPolicy/source`` if set, else measured (/proc, uname, the
    /// C library, `criu check --feature`, cached in the state directory), with
    /// `$KILN_HOST_FACTS` replacing any of them.
    public var hostFactsSource: any HostFactsSource {
        hostCheck.source
            ?? ProcHostFactsSource(
                criu: criu, runtime: runtime.versionDescription(), cachePath: "\(paths.state)/host-facts.json",
                overridePath: ProcessInfo.processInfo.environment["KILN_HOST_FACTS"].flatMap { $0.isEmpty ? nil : $0 })
    }

    /// The facts to record in a snapshot baked here for `sandbox`.
    public func currentHostFacts(for sandbox: SandboxSpec) throws -> HostFacts {
        try hostFactsSource.facts(for: sandbox)
    }

    /// How this host differs from the one `manifest` was baked on, after `--ignore-host-check`.
    public func hostDifferences(_ manifest: SnapshotManifest) throws -> [HostDifference] {
        let current = try hostFactsSource.facts(for: manifest.sandbox)
        return HostCheck.applying(ignored: hostCheck.ignored, to: HostCheck.compare(recorded: manifest.host, current: current))
    }

    /// Refuses `manifest` when this host differs from its bake host in a way that breaks a
    /// restore (``HostCheck``), with the table of every difference; notes are logged.
    public func checkHost(_ manifest: SnapshotManifest) throws {
        let differences = try hostDifferences(manifest)
        if let refusal = HostCheck.refusal(snapshot: manifest.name, differences: differences) { throw refusal }
        for difference in differences {
            logger.info(
                "host check: \(difference.fact) differs (\(difference.ignored ? "ignored" : "note"))",
                metadata: ["baked": "\(difference.recorded)", "here": "\(difference.current)", "why": "\(difference.why)"])
        }
    }
}
