import CKilnShims
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// How a child process ended.
public enum TerminationStatus: Equatable, Sendable, CustomStringConvertible {
    case exited(Int32)
    case signaled(Int32)

    /// Decodes a `waitpid` status word (the W* macros are not imported into Swift).
    package init(waitStatus: Int32) {
        if waitStatus & 0x7f == 0 {
            self = .exited((waitStatus >> 8) & 0xff)
        } else {
            self = .signaled(waitStatus & 0x7f)
        }
    }

    public var isSuccess: Bool { self == .exited(0) }

    public var description: String {
        switch self {
        case .exited(let code): "exited with status \(code)"
        case .signaled(let signal): "was killed by signal \(signal)"
        }
    }
}

/// What a finished command printed and how it ended.
public struct CommandOutput: Sendable {
    public var status: TerminationStatus
    public var stdout: String
    public var stderr: String
    /// Whether the command ran past its time limit and was killed (``Subprocess/run(_:_:environment:stdin:timeLimit:)``).
    public var timedOut = false
}

/// Spawning and reaping child processes with `posix_spawn`.
///
/// kiln needs exact control of a child's file descriptors (runc hands its stdio to the container,
/// and CRIU later insists those are pipes), so it does not use Foundation's `Process`. Only the
/// descriptors mapped onto 0, 1 and 2 (and `extraDescriptors`) reach a child: every other one is
/// closed in the child, close-on-exec or not.
public enum Subprocess {
    /// Where a child's standard stream comes from.
    public enum Stream: Sendable {
        case inherit
        case null
        case descriptor(Int32)
    }

    /// Starts `executable` and returns its pid without waiting for it.
    public static func spawn(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil,
        stdin: Stream = .null, stdout: Stream = .inherit, stderr: Stream = .inherit,
        extraDescriptors: [(source: Int32, target: Int32)] = [], newSession: Bool = false, newProcessGroup: Bool = false
    ) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for (target, stream) in [(Int32(0), stdin), (1, stdout), (2, stderr)] {
            switch stream {
            case .inherit: break
            case .null: posix_spawn_file_actions_addopen(&actions, target, "/dev/null", target == 0 ? O_RDONLY : O_WRONLY, 0)
            case .descriptor(let fd): posix_spawn_file_actions_adddup2(&actions, fd, target)
            }
        }
        for (source, target) in extraDescriptors {
            posix_spawn_file_actions_adddup2(&actions, source, target)
        }
        // Nothing else reaches the child, whether kiln opened it close-on-exec or not: SwiftNIO
        // accepts connections without FD_CLOEXEC, and a gateway client's socket inherited by a
        // `kiln-shim` (which lives as long as its instance) would stay open after the gateway
        // closed it, the client never seeing the end of its response.
        kiln_posix_spawn_addclosefrom(&actions, (extraDescriptors.map(\.target) + [2]).max()! + 1)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // A child must not inherit kiln's signal mask, a SIGPIPE disposition set by NIO, or
        // SIGINT and SIGTERM ignored while a command waits for them (`StopSignals` in KilnCLI):
        // an ignored signal stays ignored across exec, and a service would not stop on SIGTERM.
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for number in [SIGPIPE, SIGINT, SIGTERM] { sigaddset(&defaults, number) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        var flags = Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF)
        if newSession { flags |= kiln_posix_spawn_setsid_flag() }
        if newProcessGroup {
            posix_spawnattr_setpgroup(&attributes, 0)
            flags |= Int16(POSIX_SPAWN_SETPGROUP)
        }
        posix_spawnattr_setflags(&attributes, flags)

        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let env = (environment ?? ProcessInfo.processInfo.environment).map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { env.forEach { free($0) } }

        var pid = pid_t()
        let rc = posix_spawnp(&pid, executable, &actions, &attributes, argv, env)
        guard rc == 0 else {
            if rc == ENOENT {
                throw KilnError(.commandNotFound, "'\(executable)' was not found on PATH")
            }
            throw KilnError.systemCall("posix_spawn", errno: rc, "'\(executable)'")
        }
        return pid
    }

    /// Waits for `pid` to end, blocking the calling thread.
    public static func wait(_ pid: pid_t) -> TerminationStatus {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            if errno != EINTR { return .exited(-1) }
        }
        return TerminationStatus(waitStatus: status)
    }

    /// Runs a command to completion, collecting what it prints on both streams.
    ///
    /// Both pipes are drained while the child runs, so a chatty child cannot block on a full pipe.
    /// Never use this for a command that leaves a process behind holding its stdout (runc
    /// `run -d`): the read would wait for that process to end.
    ///
    /// With a `timeLimit`, the child runs in a process group of its own, which gets SIGTERM when
    /// the limit passes and SIGKILL two seconds later (what coreutils' `timeout --kill-after=2`
    /// does, without a `timeout` process started for every command); the output says
    /// ``CommandOutput/timedOut``.
    public static func run(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil,
        stdin: Stream = .null, timeLimit: Duration? = nil
    ) throws -> CommandOutput {
        let out = try ClosingPipe.make()
        let err = try ClosingPipe.make()
        let pid: pid_t
        do {
            pid = try spawn(
                executable, arguments, environment: environment, stdin: stdin,
                stdout: .descriptor(out.write), stderr: .descriptor(err.write), newProcessGroup: timeLimit != nil)
        } catch {
            out.closeBoth()
            err.closeBoth()
            throw error
        }
        close(out.write)
        close(err.write)
        var deadline = timeLimit.map { TimeLimit(group: pid, limit: $0) }
        let (stdout, stderr) = drain(out.read, err.read, deadline: &deadline)
        close(out.read)
        close(err.read)
        if var limit = deadline {
            // A child that closed its output may still run: the limit holds until it exits.
            limit.awaitExit(of: pid)
            deadline = limit
        }
        let status = wait(pid)
        return CommandOutput(status: status, stdout: stdout, stderr: stderr, timedOut: deadline?.fired ?? false)
    }

    /// A child's time limit: SIGTERM to its process group when it passes, SIGKILL after a grace.
    struct TimeLimit {
        let group: pid_t
        private var nextSignal: (at: ContinuousClock.Instant, signal: Int32)?
        private(set) var fired = false
        static let grace = Duration.seconds(2)

        init(group: pid_t, limit: Duration) {
            self.group = group
            nextSignal = (.now + limit, SIGTERM)
        }

        /// How long `poll` may wait before the next signal is due, in milliseconds (-1: no limit).
        var pollTimeout: Int32 {
            guard let nextSignal else { return -1 }
            let left = ContinuousClock.now.duration(to: nextSignal.at)
            return left > .zero ? left.pollMilliseconds : 0
        }

        /// Returns once `pid` has ended (not reaped), signalling it as its limit falls due.
        mutating func awaitExit(of pid: pid_t) {
            let pidfd = kiln_pidfd_open(pid)
            guard pidfd >= 0 else { return }  // it is already gone or reaped: waitpid decides
            defer { close(pidfd) }
            var exited = [pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)]
            while true {
                let ready = poll(&exited, 1, pollTimeout)
                if ready > 0 || (ready < 0 && errno != EINTR) { return }
                if ready == 0 { signalIfDue() }
            }
        }

        /// Sends the signal that is due, if one is.
        mutating func signalIfDue() {
            guard let due = nextSignal, ContinuousClock.now >= due.at else { return }
            fired = true
            kill(-group, due.signal)
            nextSignal = due.signal == SIGTERM ? (.now + Self.grace, SIGKILL) : nil
        }
    }

    /// ``run(_:_:environment:stdin:timeLimit:)`` on a dedicated thread, so an async caller never blocks
    /// one of the few cooperative threads (there are 2 on a 2-core machine).
    public static func run(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil, input: String? = nil, timeLimit: Duration? = nil
    ) async throws -> CommandOutput {
        try await onDedicatedThread {
            guard let input else { return try run(executable, arguments, environment: environment, stdin: .null, timeLimit: timeLimit) }
            // Small inputs only: the whole text must fit the pipe buffer (64 KiB) before the child reads.
            let pipe = try ClosingPipe.make()
            defer { close(pipe.read) }
            _ = input.utf8CString.withUnsafeBufferPointer { write(pipe.write, $0.baseAddress, $0.count - 1) }
            close(pipe.write)
            return try run(executable, arguments, environment: environment, stdin: .descriptor(pipe.read), timeLimit: timeLimit)
        }
    }

    /// Reads two descriptors to end-of-file at once, signalling the child when its time limit is due.
    private static func drain(_ first: Int32, _ second: Int32, deadline: inout TimeLimit?) -> (String, String) {
        var buffers = [Data(), Data()]
        var fds = [pollfd(fd: first, events: Int16(POLLIN), revents: 0), pollfd(fd: second, events: Int16(POLLIN), revents: 0)]
        var chunk = [UInt8](repeating: 0, count: 65536)
        while fds.contains(where: { $0.fd >= 0 }) {
            let ready = poll(&fds, nfds_t(fds.count), deadline?.pollTimeout ?? -1)
            if ready < 0 {
                if errno == EINTR { continue }
                break
            }
            if ready == 0 {
                deadline?.signalIfDue()
                continue
            }
            for index in fds.indices where fds[index].fd >= 0 && fds[index].revents != 0 {
                let count = read(fds[index].fd, &chunk, chunk.count)
                if count > 0 {
                    buffers[index].append(contentsOf: chunk[0..<count])
                } else if count == 0 || errno != EINTR {
                    fds[index].fd = -1
                }
            }
        }
        return (String(decoding: buffers[0], as: UTF8.self), String(decoding: buffers[1], as: UTF8.self))
    }
}

/// A close-on-exec pipe of two raw descriptors (not Foundation's `Pipe`, which owns FileHandles).
public struct ClosingPipe: Sendable {
    public let read: Int32
    public let write: Int32

    public static func make() throws -> ClosingPipe {
        var fds: [Int32] = [-1, -1]
        guard kiln_pipe_cloexec(&fds) == 0 else { throw KilnError.systemCall("pipe2", errno: errno, "a pipe") }
        return ClosingPipe(read: fds[0], write: fds[1])
    }

    public func closeBoth() {
        close(read)
        close(write)
    }
}

/// Runs blocking work (waitpid, a long read) on its own thread and resumes the caller with its
/// result, keeping Swift concurrency's small thread pool free.
public func onDedicatedThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread {
            continuation.resume(with: Result { try body() })
        }
        thread.stackSize = 1 << 20
        thread.start()
    }
}
