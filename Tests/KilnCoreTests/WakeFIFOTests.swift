import Foundation
import Testing

@testable import KilnEngine

#if canImport(Glibc)
import Glibc
#endif

/// How kiln wakes the CRaC agent: a byte into the control directory's `wake` FIFO when the JVM
/// holds it open, never blocking; otherwise (false) the caller signals.
@Suite("agent wake FIFO")
struct WakeFIFOTests {
    let directory: String

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-wake-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    @Test func aByteReachesTheReaderThatHoldsTheFIFO() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let fifo = "\(directory)/wake"
        #expect(mkfifo(fifo, 0o600) == 0)
        // As the agent holds it: read-write, so the open waits for no writer.
        let reader = open(fifo, O_RDWR | O_NONBLOCK)
        #expect(reader >= 0)
        defer { close(reader) }
        #expect(LinuxSandboxHost.write(toReadFIFO: fifo))
        #expect(LinuxSandboxHost.write(toReadFIFO: fifo))
        var bytes = [UInt8](repeating: 0, count: 8)
        #expect(read(reader, &bytes, bytes.count) == 2, "one byte per wake")
    }

    @Test func noReaderNoFIFOOrAPlainFileMeanSignalInstead() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let fifo = "\(directory)/wake"
        #expect(!LinuxSandboxHost.write(toReadFIFO: fifo), "no FIFO: an agent older than it, or a cold-started JVM of an old kiln")
        #expect(mkfifo(fifo, 0o600) == 0)
        #expect(!LinuxSandboxHost.write(toReadFIFO: fifo), "nobody reads it: the open fails at once (ENXIO), it does not block")
        let file = "\(directory)/plain"
        #expect(FileManager.default.createFile(atPath: file, contents: nil))
        #expect(!LinuxSandboxHost.write(toReadFIFO: file), "a regular file is no wake channel")
        #expect((try? FileManager.default.attributesOfItem(atPath: file)[.size] as? Int) == 0, "and nothing was written into it")
    }
}
