import Foundation
import KilnSystem
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// SIGINT (Ctrl-C) and SIGTERM during a command.
///
/// Killed outright, a `kiln bake` or `kiln run` would leave what it had started where it was:
/// the service's container and its processes, cgroups, the network namespace, the address and
/// veth on kiln's bridge, the bake's scratch directory, for `kiln gc` to find. Instead the
/// first signal cancels the command's task: every step of kiln's fails on cancellation the way it
/// fails on any error, and each failure path removes what its step had started (the sandbox's
/// `tearDown`, the bake's scratch and staging directories), so the command ends with nothing
/// left and an `interrupted` error (exit status 130). Some steps cannot be cut short (a CRIU
/// dump, a subprocess kiln waits for): the command stops after them. A second signal exits at
/// once, leaving what is left to `kiln gc`. What a command had finished stays (the copies
/// `kiln run --count N` had restored: they are instances like any other).
enum StopSignals {
    /// Runs `body` in a task that the first SIGINT or SIGTERM cancels, and throws an
    /// ``KilnError/Code/interrupted`` error when one came and the body failed (the body's error
    /// as its cause, unless it was the cancellation itself). The signals' default actions are
    /// back when this returns.
    static func cancelling(what command: String, removesFinished: Bool, _ body: @escaping @Sendable () async throws -> Void) async throws {
        let received = ReceivedSignal()
        let work = Task { try await body() }
        let signals = [SIGINT, SIGTERM]
        let sources = signals.map { number in
            // Ignored, so that the dispatch source (not the default action) sees it.
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                let first = received.number.withLock { seen in
                    defer { seen = seen ?? number }
                    return seen == nil
                }
                guard first else {
                    say("\(name(of: number)) again: exiting now; 'kiln gc' removes what \(command) left")
                    _exit(128 + number)
                }
                say("\(name(of: number)): stopping \(command); what it has half done is undone (send it again to exit at once)")
                work.cancel()
            }
            source.resume()
            return source
        }
        defer {
            for source in sources { source.cancel() }
            for number in signals { signal(number, SIG_DFL) }
        }
        do {
            try await work.value
        } catch {
            guard let number = received.number.withLock({ $0 }) else { throw error }
            throw KilnError(
                .interrupted, "\(command) was stopped by \(name(of: number))", hint: hint(removesFinished: removesFinished),
                cause: error is CancellationError ? nil : error)
        }
    }

    /// What the `interrupted` error tells the user is left: nothing of a command that
    /// ``OwnsWhatItStarts``; another command's finished instances.
    static func hint(removesFinished: Bool) -> String {
        removesFinished
            ? "what it had started for the measurement was stopped and removed; 'kiln gc' removes what a second signal left behind"
            : "what it had half done was undone; instances it had finished keep running ('kiln ps'); 'kiln gc' removes what a second signal left behind"
    }

    /// The first stop signal that came, shared with the signal handlers.
    private final class ReceivedSignal: Sendable {
        let number = Mutex<Int32?>(nil)
    }

    private static func name(of number: Int32) -> String {
        number == SIGINT ? "SIGINT" : number == SIGTERM ? "SIGTERM" : "signal \(number)"
    }

    private static func say(_ line: String) {
        FileHandle.standardError.write(Data("kiln: \(line)\n".utf8))
    }
}
