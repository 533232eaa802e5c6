/// Checks shared by the parsers of what users, the admin API and files on disk give kiln, so
/// that a value one parser accepts is never one another part of kiln cannot handle.
package enum InputValidation {
    /// The longest wait kiln accepts (keep-alive, queue, request and readiness timeouts): a year.
    /// Far beyond any sensible setting, and far below where `Duration.seconds(_:)` and
    /// `Int(seconds * 1000)` overflow, which trap instead of failing.
    package static let maximumSeconds: Double = 365 * 86_400

    /// The ports a service can listen on (0, "any free port", is a listener's choice only).
    package static let servicePorts = 1...65_535

    /// Whether `port` is one a service can listen on.
    package static func isServicePort(_ port: Int) -> Bool { servicePorts.contains(port) }

    /// Whether `seconds` is a usable wait: finite, positive (or zero when `allowZero`), at most
    /// ``maximumSeconds``. NaN fails every comparison, so it is refused too.
    package static func isSeconds(_ seconds: Double, allowZero: Bool = false) -> Bool {
        (allowZero ? seconds >= 0 : seconds > 0) && seconds <= maximumSeconds
    }

    /// Whether `path` can go on an HTTP request line as it is: it starts with `/` and has no
    /// whitespace or control character (which would end the request line or inject a header).
    package static func isRequestPath(_ path: String) -> Bool {
        path.hasPrefix("/") && !path.utf8.contains(where: isSpaceOrControl)
    }

    /// Whether `path` names a file below a directory: relative, and each `/`-separated segment
    /// non-empty, not `.` or `..`, and free of control characters. (Snapshot image files are
    /// listed this way, and a listed path is joined to the image directory.)
    package static func isContainedRelativePath(_ path: String) -> Bool {
        !path.isEmpty && !path.utf8.contains(where: isControl)
            && path.split(separator: "/", omittingEmptySubsequences: false).allSatisfy { !$0.isEmpty && $0 != "." && $0 != ".." }
    }

    /// Whether `path` is a host path with no `.` or `..` segment and no control character: kiln
    /// joins, removes and mounts such paths as root, so they must mean what they say.
    package static func isCleanPath(_ path: String) -> Bool {
        !path.isEmpty && !path.utf8.contains(where: isControl) && !path.split(separator: "/").contains { $0 == "." || $0 == ".." }
    }

    /// ``isCleanPath(_:)`` and absolute.
    package static func isCleanAbsolutePath(_ path: String) -> Bool {
        path.hasPrefix("/") && isCleanPath(path)
    }

    /// Whether `name` is 1 to `maxLength` lowercase ASCII letters, digits, `-` and `_`, starting
    /// with a letter or digit: the shape of snapshot names and of the instance ids made from them.
    package static func isIdentifier(_ name: String, maxLength: Int) -> Bool {
        guard let first = name.utf8.first, isLowercaseAlphanumeric(first), name.utf8.count <= maxLength else { return false }
        return name.utf8.allSatisfy { isLowercaseAlphanumeric($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") }
    }

    /// Whether `name` is 1 to `maxLength` ASCII letters (either case), digits and bytes of
    /// `punctuation`; with `alphanumericFirst`, starting with a letter or digit. The shape of CNI
    /// network names and container ids (`_.-`) and of Linux interface names (`_-`, at most 15).
    /// (A loop over the bytes, not a regular expression: ICU's first use costs milliseconds, and
    /// this check runs before every restore on a network.)
    package static func isASCIIName(_ name: String, punctuation: String, alphanumericFirst: Bool = false, maxLength: Int = .max) -> Bool {
        func isAlphanumeric(_ byte: UInt8) -> Bool { isLowercaseAlphanumeric(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte) }
        guard let first = name.utf8.first, name.utf8.count <= maxLength, !alphanumericFirst || isAlphanumeric(first) else { return false }
        return name.utf8.allSatisfy { isAlphanumeric($0) || punctuation.utf8.contains($0) }
    }

    static func isLowercaseAlphanumeric(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
    }

    static func isControl(_ byte: UInt8) -> Bool { byte < 0x20 || byte == 0x7F }
    package static func isSpaceOrControl(_ byte: UInt8) -> Bool { byte <= 0x20 || byte == 0x7F }
}
