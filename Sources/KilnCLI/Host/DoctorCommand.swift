import ArgumentParser
import KilnEngine

/// `kiln doctor`: checks that this machine can checkpoint and restore (kernel, CRIU, runc, cgroups,
/// privileges) and says what to fix; exits 3 when a check fails.
struct DoctorCommand: AsyncParsableCommand, ReportingCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor", abstract: "Check that this machine can checkpoint and restore, and say what to fix if not.")

    @OptionGroup var common: CommonOptions

    func run() async throws {
        let checks = Doctor.run()
        let failed = checks.contains { $0.status == .failed }
        if common.json {
            Output.printJSON(["ok": AnyEncodable(!failed), "checks": AnyEncodable(checks)])
        } else {
            print(
                Output.table(
                    ["CHECK", "STATUS", "DETAIL"], checks.map { [$0.name, $0.status.rawValue, $0.detail + ($0.fix.map { " -> fix: \($0)" } ?? "")] }))
            print(failed ? "\nkiln cannot run here yet: fix the failed checks above." : "\nThis machine can bake and restore.")
        }
        if failed { throw ExitCode(3) }
    }
}
