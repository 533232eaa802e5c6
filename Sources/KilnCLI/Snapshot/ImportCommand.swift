import ArgumentParser
import KilnEngine
import KilnSnapshot

/// `kiln import`: reads a Podman checkpoint archive (or kiln's own export) into a verified snapshot.
struct Import: AsyncParsableCommand, ReportingCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Read a Podman checkpoint archive (podman container checkpoint --export), or kiln's own, into a verified snapshot.",
        discussion: """
            kiln needs what a Podman archive does not carry: the port the service listens on (--port) and a path that \
            answers GET with 2xx once it is ready (--ready). The container must have run on a Podman network (the default \
            bridge; not --network none). CRIU restores the process only with the mounts it had: host directories bound \
            into the container must exist here at the same paths, and its root is kiln's default (an empty root with the \
            host's /usr, which fits an image made that way) or --rootfs DIR (the image's files, mode 0555).
            """)

    @Argument(help: "The archive.")
    var archive: String

    @Option(help: "Name of the new snapshot.")
    var name: String

    @Option(help: "TCP port the service listens on (required for a Podman archive).")
    var port: Int?

    @Option(help: "Readiness path: the service is up once GET <path> answers 2xx (required for a Podman archive).")
    var ready: String?

    @Option(help: "Seconds a restore waits for readiness.")
    var readyTimeout: Double = 60

    @Option(help: "The container's root file system (the image's files), instead of kiln's default root.")
    var rootfs: String?

    @Flag(help: "Replace an existing snapshot of the same name.")
    var replace = false

    @OptionGroup var common: CommonOptions

    func run() async throws {
        let kiln = try common.openKiln(toDo: "import a checkpoint archive")
        let report = try await kiln.importArchive(
            absolute(archive), name: name, port: port, readiness: ready.map { ReadinessCheck(path: $0, timeoutSeconds: readyTimeout) },
            rootfs: rootfs, replace: replace)
        if common.json {
            Output.printJSON(report)
        } else {
            print(
                "imported a \(report.source) checkpoint as snapshot '\(report.manifest.name)': \(report.manifest.files.count) image files, \(Output.bytes(report.manifest.sizeBytes)), in \(Output.ms(report.milliseconds))"
            )
            if !report.hostPaths.isEmpty {
                print("every copy sees these host paths, read-only: \(report.hostPaths.joined(separator: ", "))")
            }
            print("restore it with: kiln run \(report.manifest.name)")
        }
    }
}
