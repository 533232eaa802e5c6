import CKilnShims
import Foundation
import KilnEngine
import KilnGateway
import KilnOCI
import KilnSnapshot
import KilnSystem

#if canImport(Glibc)
import Glibc
#endif

/// nginx in front of an instance, configured as kiln's gateway forwards (`/<function>/` to the
/// service's `/`, keep-alive to the instance, the same `X-Forwarded-*` fields, one worker as
/// kiln serve has one thread on 2 cores): what a user would put there instead, measured beside
/// kiln by `kiln bench serve`.
///
/// It runs inside the instance's network namespace (`nsenter --net`), so nginx and the instance
/// talk over loopback as kiln and the instance do, and wrk reaches it from there too. One
/// process (`master_process off`), so its CPU is that of its pid; its files live in a private
/// directory removed by ``stop()``.
struct ReferenceProxy: Sendable {
    let pid: pid_t
    /// Where it listens, inside the instance's network namespace.
    let port: Int
    private let directory: String

    /// nginx, or nil when it is not installed (the reference is then skipped).
    static var executable: String? { ExecutableSearch.find("nginx") }

    /// Starts nginx for `function` in front of `endpoint` (entering its network namespace with
    /// `nsenter`) and waits until it accepts connections.
    static func start(_ executable: String, nsenter: String, function: String, endpoint: ServiceEndpoint) async throws -> ReferenceProxy {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-bench-nginx-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        do {
            let port = try freePort(in: endpoint.networkNamespacePath)
            try configuration(function: function, servicePort: endpoint.port, port: port, directory: directory)
                .write(toFile: "\(directory)/nginx.conf", atomically: true, encoding: .utf8)
            let pid = try Subprocess.spawn(
                nsenter,
                [
                    "--net=\(endpoint.networkNamespacePath)", executable, "-p", directory, "-c", "\(directory)/nginx.conf", "-e",
                    "\(directory)/error.log",
                    "-g", "daemon off; master_process off;",
                ], stdout: .null, stderr: .null)
            let proxy = ReferenceProxy(pid: pid, port: port, directory: directory)
            let deadline = ContinuousClock.now + .seconds(10)
            while ContinuousClock.now < deadline {
                if let fd = try? InstanceHTTPClient.connectedSocket(
                    to: ServiceEndpoint(networkNamespacePath: endpoint.networkNamespacePath, port: port))
                {
                    close(fd)
                    return proxy
                }
                if !ProcessInspector.isAlive(pid) { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            let log = (try? String(contentsOfFile: "\(directory)/error.log", encoding: .utf8)) ?? ""
            await proxy.stop()
            throw KilnError(.runtimeFailed, "nginx did not start: \(log.suffix(500))")
        } catch {
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
    }

    /// Stops nginx (SIGTERM, then SIGKILL after 5 s), reaps it and removes its files.
    func stop() async {
        let pid = self.pid
        kill(pid, SIGTERM)
        let reaped = Task.detached { Subprocess.wait(pid) }
        let killer = Task {
            try await Task.sleep(for: .seconds(5))
            kill(pid, SIGKILL)
        }
        _ = await reaped.value
        killer.cancel()
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// A port nothing listens on in the namespace at `netns` (asked of the kernel, then freed).
    private static func freePort(in netns: String) throws -> Int {
        let fd = kiln_socket_in_netns(netns, AF_INET)
        guard fd >= 0 else { throw KilnError.systemCall("socket", errno: errno, "a free port in \(netns)") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = in_addr_t(0x7f00_0001).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw KilnError.systemCall("bind", errno: errno, "a free port in \(netns)") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    static func configuration(function: String, servicePort: Int, port: Int, directory: String) -> String {
        """
        # kiln bench serve: nginx as a reference proxy, set up as kiln serve forwards.
        worker_processes 1;
        pid \(directory)/nginx.pid;
        error_log \(directory)/error.log;
        events { worker_connections 1024; }
        http {
            access_log off;
            client_body_temp_path \(directory)/body;
            proxy_temp_path \(directory)/proxy;
            upstream instance {
                server 127.0.0.1:\(servicePort);
                keepalive 32;
            }
            server {
                listen 127.0.0.1:\(port);
                location /\(function)/ {
                    proxy_pass http://instance/;
                    proxy_http_version 1.1;
                    proxy_set_header Connection "";
                    proxy_set_header X-Forwarded-Host $host;
                    proxy_set_header X-Forwarded-Prefix /\(function);
                    proxy_set_header X-Forwarded-Proto http;
                }
            }
        }

        """
    }
}
