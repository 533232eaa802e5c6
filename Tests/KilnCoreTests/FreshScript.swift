import Foundation
import KilnSystem

/// Waits until a script a test has just written can be executed. Other tests spawn processes
/// meanwhile: a child forked while the script was open for writing holds that descriptor until it
/// execs, and exec of the script fails with ETXTBSY until then (a spawn error, or exit status 126
/// when a shell or runner reports it). Runs it with `arguments` and `environment` until a run
/// starts it, for at most a second; the script must treat such a run as harmless.
func waitUntilExecutable(_ path: String, _ arguments: [String] = [], environment: [String: String]? = nil) {
    for _ in 0..<200 {
        if let ran = try? Subprocess.run(path, arguments, environment: environment), ran.status != .exited(126) { return }
        usleep(5000)
    }
}
