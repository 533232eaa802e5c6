import Foundation
import KilnBench
import KilnEngine
import KilnGateway
import KilnOCI
import KilnSnapshot
import KilnSystem
import Testing

#if canImport(Glibc)
import Glibc
#endif

let hostileSample = "\(packageRoot)/examples/hostile"

extension Integration {
    /// A function that tries to break out, restored from a snapshot: every attempt is refused.
    @Suite("a hostile function stays confined", .serialized)
    struct ConfinementTests {
        /// The probe's account of each attempt (examples/hostile/src/main/c/probe.c).
        struct Attempt: Decodable {
            var refused: Bool
            var errno: String
            var detail: String
        }

        @Test func everyEscapeAttemptFromARestoredCopyIsRefused() async throws {
            try await withTestHost { host in
                let manifest = try await host.kiln.bake(
                    BakeRequest(
                        name: "hostile", sandbox: host.sandbox(["\(hostileSample)/bin/hostile"], app: hostileSample),
                        readiness: ReadinessCheck(path: "/health"), compact: false))
                let record = try await host.kiln.restoreOne(manifest)

                let reply = try await host.kiln.request(record, path: "/attack")
                #expect(reply.status == 200)
                let attempts = try JSONDecoder().decode([String: Attempt].self, from: Data(reply.body))

                // Each attempt and how the kernel must refuse it: no capability, the seccomp
                // filter, or a read-only mount.
                let expected: [String: Set<String>] = [
                    "mount": ["EPERM"], "mount_proc_again": ["EPERM"],
                    "init_module": ["EPERM"], "finit_module": ["EPERM"], "kexec_load": ["EPERM"], "reboot": ["EPERM"],
                    "raise_rlimit": ["EPERM"], "raise_memory_cgroup": ["EROFS", "EACCES"], "raise_pids_cgroup": ["EROFS", "EACCES"],
                    "write_proc_sys": ["EROFS", "EACCES"],
                    // Only the seccomp filter stops these two: an unprivileged process may create a
                    // user namespace (and be root in it) on this kernel.
                    "unshare_user": ["EPERM"], "clone_newuser": ["EPERM"],
                    "setns": ["EPERM"], "chroot": ["EPERM"], "mknod_block_device": ["EPERM"], "raw_socket": ["EPERM"],
                    "ptrace_pid1": ["EPERM"], "write_root": ["EROFS"], "write_usr": ["EROFS"], "sethostname": ["EPERM"],
                    "bpf": ["EPERM"], "keyctl": ["EPERM"], "perf_event_open": ["EPERM", "EACCES"], "setuid": ["EPERM"],
                    "fork_bomb": ["EAGAIN"],
                ]
                for (name, errnos) in expected.sorted(by: { $0.key < $1.key }) {
                    let attempt = try #require(attempts[name], "the probe did not report '\(name)'")
                    #expect(attempt.refused, "'\(name)' (\(attempt.detail)) was allowed")
                    #expect(errnos.contains(attempt.errno), "'\(name)' refused with \(attempt.errno), expected one of \(errnos)")
                }

                // The host's pid 1 is out of sight: pid 1 in here is the function's own JVM.
                let hostInit = try String(contentsOfFile: "/proc/1/cmdline", encoding: .utf8).split(separator: "\0").first.map(String.init) ?? "?"
                let pid1 = try #require(attempts["see_host_pid1"]).detail
                #expect(pid1.contains("pid 1 is: java") && !pid1.contains(hostInit), "\(pid1)")
                let visible = Int(pid1.split(separator: ";")[1].split(separator: " ").first ?? "") ?? 999
                #expect(visible < 20, "the function sees \(visible) processes: \(pid1)")
                let peek = try await host.kiln.request(record, path: "/peek")
                #expect(String(decoding: peek.body, as: UTF8.self).contains("\"pid1\":\"java"))

                #expect(attempts["network_interfaces"]?.detail == "lo", "no host network: \(attempts["network_interfaces"]?.detail ?? "")")
                // CAP_AUDIT_WRITE, CAP_KILL and CAP_NET_BIND_SERVICE only; no new privileges; a seccomp filter.
                #expect(attempts["privileges"]?.detail == "CapEff=0000000020000420 NoNewPrivs=1 Seccomp=2")
                let forked = Int(attempts["fork_bomb"]?.detail.split(separator: " ").first ?? "") ?? .max
                #expect(forked < 1024, "the pids limit (1024) should stop the fork bomb: \(forked) forked")

                // Limits enforced from the host's side of the copy's cgroups.
                let memoryLimit = try String(contentsOfFile: "/sys/fs/cgroup/memory\(record.cgroupPath)/memory.limit_in_bytes", encoding: .utf8)
                #expect(Int64(memoryLimit.trimmingCharacters(in: .whitespacesAndNewlines)) == 512 << 20)
                let pidsLimit = try String(contentsOfFile: "/sys/fs/cgroup/pids\(record.cgroupPath)/pids.max", encoding: .utf8)
                #expect(pidsLimit.trimmingCharacters(in: .whitespacesAndNewlines) == "1024")

                // Taking more memory than the limit gets the taker killed, and only it.
                let hog = try await host.kiln.request(record, path: "/hog?mib=700")
                #expect(
                    String(decoding: hog.body, as: UTF8.self).contains("\"exit\":137"),
                    "the memory hog should be killed: \(String(decoding: hog.body, as: UTF8.self))")
                #expect(try await host.kiln.request(record, path: "/health").status == 200, "the function survives its child's OOM kill")
                #expect(!FileManager.default.fileExists(atPath: "/usr/bin/hostile-was-here"))

                try await host.kiln.stop(record)
                try await expectNoLeftovers(host)
            }
        }
    }
}
