import Foundation
import Testing

@testable import KilnSystem

#if canImport(Glibc)
import Glibc
#endif

/// Namespace pins are created in place (issue 17, item 7): a reader listing the pin directory never
/// sees a temporary name, and a path that already exists is refused instead of replaced.
@Suite("network namespace pins")
struct NetworkNamespacePinTests {
    @Test(.enabled(if: geteuid() == 0, "creating a network namespace needs root"))
    func theDirectoryOnlyEverHoldsPinNames() async throws {
        let directory = "/tmp/kiln-unit-netns-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let names = (0..<40).map { "pin-\($0)" }
        let done = ManagedAtomicFlag()
        let watcher = Task.detached { () -> Set<String> in
            var seen = Set<String>()
            while !done.isSet {
                for entry in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] { seen.insert(entry) }
            }
            return seen
        }
        for name in names {
            try NetworkNamespace.create(at: "\(directory)/\(name)")
            #expect(NetworkNamespace.isPinned("\(directory)/\(name)"))
        }
        done.set()
        let seen = await watcher.value
        for name in names { NetworkNamespace.remove(at: "\(directory)/\(name)") }
        #expect(seen.subtracting(names).isEmpty, "entries other than pins were listed: \(seen.subtracting(names).sorted())")
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).isEmpty)
    }

    @Test(.enabled(if: geteuid() == 0, "creating a network namespace needs root"))
    func anExistingPathIsNotReplaced() throws {
        let directory = "/tmp/kiln-unit-netns-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = "\(directory)/taken"
        try Data("someone else's".utf8).write(to: URL(fileURLWithPath: path))
        #expect(throws: KilnError.self) { try NetworkNamespace.create(at: path) }
        #expect(!NetworkNamespace.isPinned(path))
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "someone else's")
    }
}

/// A flag set once by one thread and polled by another.
private final class ManagedAtomicFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    var isSet: Bool { lock.withLock { value } }
    func set() { lock.withLock { value = true } }
}
