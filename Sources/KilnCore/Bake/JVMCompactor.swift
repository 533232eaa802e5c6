import Foundation
import Logging

/// Shrinks a JVM before its checkpoint: a full GC leaves only live objects in the heap, so the
/// dump writes (and every restore reads) less memory.
///
/// kiln does not care what the JVM runs: it finds any `java` process in the container and asks it
/// through the JDK's own `jcmd` (`GC.run`), executed inside the container so it can attach.
struct JVMCompactor {
    var runtime: any ContainerRuntime
    var logger: Logger

    struct Result {
        var didRun: Bool
        var note: String
    }

    func compact(containerID: String, cgroupPath: String) async -> Result {
        let javaProcesses = ProcessInspector.pids(inCgroup: cgroupPath).compactMap { pid -> (Int32, String)? in
            guard let exe = ProcessInspector.executable(of: pid), (exe as NSString).lastPathComponent == "java" else { return nil }
            return (pid, exe)
        }
        guard !javaProcesses.isEmpty else { return Result(didRun: false, note: "no JVM in the sandbox; nothing to compact") }
        var notes: [String] = []
        for (pid, exe) in javaProcesses {
            let jcmd = ((exe as NSString).deletingLastPathComponent as NSString).appendingPathComponent("jcmd")
            guard FileManager.default.isExecutableFile(atPath: jcmd), let inner = ProcessInspector.namespacePid(of: pid) else {
                notes.append("no jcmd beside \(exe) (a JRE without tools?): skipped GC")
                continue
            }
            do {
                let output = try await runtime.exec(id: containerID, [jcmd, String(inner), "GC.run"])
                logger.debug("jcmd GC.run: \(output.stdout)")
                notes.append("full GC in pid \(inner)")
            } catch {
                logger.warning("full GC before checkpoint failed: \(error)")
                notes.append("full GC failed (\(error)); checkpointing as is")
            }
        }
        return Result(didRun: notes.contains { $0.hasPrefix("full GC in") }, note: notes.joined(separator: "; "))
    }
}
