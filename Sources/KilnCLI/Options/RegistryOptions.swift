import ArgumentParser
import Foundation
import KilnEngine

/// How to reach a registry: `--creds`, `--authfile`, `--cert-dir`, `--insecure` (push and pull).
struct RegistryOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Basic auth for the registry (default: $KILN_REGISTRY_CREDS).", valueName: "USER:PASSWORD"))
    var creds: String?

    @Option(help: "A containers auth file (auth.json, as podman login writes it) instead of --creds.")
    var authfile: String?

    @Option(help: "Directory with the registry's CA certificate (ca.crt), for a registry whose certificate the system does not trust.")
    var certDir: String?

    @Flag(help: "Do not verify the registry's TLS certificate (only for a registry on loopback: 127.0.0.0/8, ::1, localhost).")
    var insecure = false

    var access: RegistryAccess {
        let environment = ProcessInfo.processInfo.environment["KILN_REGISTRY_CREDS"].flatMap { $0.isEmpty ? nil : $0 }
        return RegistryAccess(
            credentials: creds ?? (authfile == nil ? environment : nil), authFile: authfile, certificateDirectory: certDir, insecure: insecure)
    }
}
