import Foundation

/// Looks an executable name up along a PATH-style list.
package enum ExecutableSearch {
    /// `name` on this process's PATH, then in the system's bin and sbin directories (a root
    /// shell's PATH may lack /usr/sbin, where Debian puts nginx).
    package static func find(_ name: String) -> String? {
        find(name, in: (ProcessInfo.processInfo.environment["PATH"] ?? "") + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    }

    package static func find(_ name: String, in searchPath: String) -> String? {
        if name.contains("/") { return FileManager.default.isExecutableFile(atPath: name) ? name : nil }
        for directory in searchPath.split(separator: ":") where !directory.isEmpty {
            let candidate = "\(directory)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }
}
