import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Reaps a `kiln-shim` this process spawned once it exits (it exits when its container does),
/// so no zombie is left while a long-lived kiln (the gateway, a test run) goes on.
package enum ChildReaper {
    package static func reap(_ pid: Int32, timeout: Duration = .seconds(5)) {
        let deadline = ContinuousClock.now + timeout
        var status: Int32 = 0
        while ContinuousClock.now < deadline {
            let result = waitpid(pid, &status, WNOHANG)
            if result == pid || (result < 0 && errno == ECHILD) { return }
            usleep(5_000)
        }
    }
}
