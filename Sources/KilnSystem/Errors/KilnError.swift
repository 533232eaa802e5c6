import Foundation

/// The one error type kiln throws: what kiln was doing, what went wrong, and what to do about it.
///
/// Every failure a user can hit maps to a ``Code`` so scripts (`--json`) and tests can tell them
/// apart, and every message is written to be read by the person at the terminal: it names the
/// thing that failed and, where there is one, the fix.
public struct KilnError: Error, CustomStringConvertible, Sendable {
    /// A stable, machine-readable kind of failure.
    public enum Code: String, Codable, Sendable {
        case notRoot = "not-root"
        case missingCapability = "missing-capability"
        case criuMissing = "criu-missing"
        case criuTooOld = "criu-too-old"
        case runtimeMissing = "runtime-missing"
        case invalidArgument = "invalid-argument"
        case commandNotFound = "command-not-found"
        case serviceExited = "service-exited"
        case serviceNeverReady = "service-never-ready"
        case portInUse = "port-in-use"
        case warmupFailed = "warmup-failed"
        case snapshotNotFound = "snapshot-not-found"
        case snapshotExists = "snapshot-exists"
        case snapshotCorrupt = "snapshot-corrupt"
        case snapshotInUse = "snapshot-in-use"
        case storeFull = "store-full"
        /// An encrypted snapshot and no key for it.
        case keyRequired = "key-required"
        /// An encrypted snapshot and only keys with other ids.
        case keyMismatch = "key-mismatch"
        case checkpointFailed = "checkpoint-failed"
        /// The preflight found what would break restored copies (open connections, files open
        /// for writing, child processes...) and the bake did not allow it (`--allow KIND`).
        case checkpointBlocked = "checkpoint-blocked"
        case restoreFailed = "restore-failed"
        case instanceNotFound = "instance-not-found"
        case runtimeFailed = "runtime-failed"
        case requestFailed = "request-failed"
        case systemCall = "system-call"
        /// `--image` names an image that is not there (no such layout, tag or stored image).
        case imageNotFound = "image-not-found"
        /// An image kiln cannot run: another architecture, a user name instead of a uid, a
        /// damaged layout.
        case imageUnsupported = "image-unsupported"
        /// A tool kiln drives for this command is not installed or not reachable (skopeo,
        /// umoci, the Docker daemon).
        case toolMissing = "tool-missing"
        /// This host differs from the one a snapshot was baked on in a way that breaks its
        /// restore (a missing CPU feature, an older CRIU, ...): see HostCheck.
        case hostMismatch = "host-mismatch"
        /// A pushed or pulled snapshot's signature is missing, or not made by a trusted key.
        case signatureInvalid = "signature-invalid"
        /// The registry refused or failed a push or pull (unreachable, unauthorized, no such tag).
        case registryFailed = "registry-failed"
        // The gateway's answers (`kiln serve`): the `code` of its JSON error responses.
        /// No function (snapshot) by the name the request path starts with.
        case functionNotFound = "function-not-found"
        /// A request path the gateway will not forward (e.g. with `..`).
        case invalidPath = "invalid-path"
        /// A request that is not valid HTTP/1.1.
        case badRequest = "bad-request"
        case bodyTooLarge = "body-too-large"
        /// The function's queue of requests waiting for an instance is full.
        case queueFull = "queue-full"
        /// No instance could take the request within the queue timeout.
        case queueTimeout = "queue-timeout"
        /// The function's snapshot failed verification and is not used.
        case snapshotUnusable = "snapshot-unusable"
        /// No instance of the function could be started (restore and cold start failed).
        case launchFailed = "launch-failed"
        case shuttingDown = "shutting-down"
        /// The instance did not answer within the request timeout.
        case instanceTimeout = "instance-timeout"
        /// The instance could not be reached, or its response broke off.
        case instanceFailed = "instance-failed"
        /// SIGINT (Ctrl-C) or SIGTERM stopped the command; what it had half done was undone.
        case interrupted = "interrupted"
        /// A failure that is not one of the above: an error from below kiln (Foundation, the
        /// standard library) that reached the command line as it was.
        case internalError = "internal"
    }

    /// The kind of failure.
    public var code: Code
    /// What kiln was doing, e.g. "baking snapshot 'hello'".
    public var action: String
    /// What went wrong, in one sentence.
    public var message: String
    /// What the user can do about it, if anything.
    public var hint: String?
    /// Supporting lines: the service's last log lines, the relevant lines of CRIU's log, ...
    public var details: [String]
    /// The full log to read for more, if there is one.
    public var logPath: String?
    /// The error this one explains, if it started as another (a failed system call, a Foundation
    /// error, a runtime's failure): kept whole, so a caller can still ask for its errno.
    public var cause: (any Error)?

    public init(
        _ code: Code, _ message: String, action: String = "", hint: String? = nil,
        details: [String] = [], logPath: String? = nil, cause: (any Error)? = nil
    ) {
        self.code = code
        self.message = message
        self.action = action
        self.hint = hint
        self.details = details
        self.logPath = logPath
        self.cause = cause
    }

    /// `error` itself when it is a ``KilnError``, else a ``KilnError`` of `code` that keeps it as
    /// its cause: the one way a foreign error becomes kiln's.
    public static func wrapping(_ error: any Error, as code: Code, _ message: String? = nil) -> KilnError {
        if let error = error as? KilnError { return error }
        return KilnError(code, message ?? "\(error)", cause: error)
    }

    /// Every error in the chain of causes, this one first.
    public var causeChain: [any Error] {
        var chain: [any Error] = [self]
        var next = cause
        while let error = next, chain.count < 16 {
            chain.append(error)
            next = (error as? KilnError)?.cause
        }
        return chain
    }

    /// The errno of the first cause that carries one: a ``KilnError/systemCall(_:errno:_:)``
    /// failure, a `POSIXError`, or a Foundation error in the POSIX domain (or with a POSIX
    /// underlying error, as FileManager reports them).
    public var errno: Int32? {
        for error in causeChain.dropFirst() {
            if let posix = error as? POSIXError { return posix.code.rawValue }
            let ns = error as NSError
            if ns.domain == NSPOSIXErrorDomain { return Int32(ns.code) }
            // On Linux the underlying error does not cast to NSError directly: go through Error.
            if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? any Error {
                let bridged = underlying as NSError
                if bridged.domain == NSPOSIXErrorDomain { return Int32(bridged.code) }
            }
            if let cocoa = error as? CocoaError, let underlying = cocoa.underlying as NSError?, underlying.domain == NSPOSIXErrorDomain {
                return Int32(underlying.code)
            }
            if ns.domain == NSCocoaErrorDomain, ns.code == CocoaError.fileWriteOutOfSpace.rawValue { return ENOSPC }
        }
        return nil
    }

    /// The same error, saying it happened while doing `action` (the innermost action wins).
    public func during(_ action: String) -> KilnError {
        guard self.action.isEmpty else { return self }
        var copy = self
        copy.action = action
        return copy
    }

    public var description: String {
        var text = action.isEmpty ? message : "\(action): \(message)"
        if !details.isEmpty {
            text += "\n" + details.map { "    \($0)" }.joined(separator: "\n")
        }
        if let cause, !(cause is KilnError) { text += "\n  cause: \(cause)" }
        if let logPath { text += "\n  full log: \(logPath)" }
        if let hint { text += "\n  hint: \(hint)" }
        return text
    }
}

extension KilnError {
    /// A failed system call, named with its errno text.
    package static func systemCall(_ call: String, errno code: Int32, _ what: String) -> KilnError {
        KilnError(
            .systemCall, "\(call) failed for \(what): \(errnoDescription(code))",
            cause: POSIXErrorCode(rawValue: code).map { POSIXError($0) })
    }
}

/// `strerror` text plus the symbolic number, e.g. "No such file or directory (errno 2)".
package func errnoDescription(_ code: Int32) -> String {
    "\(String(cString: strerror(code))) (errno \(code))"
}

#if canImport(Glibc)
import Glibc
#endif
