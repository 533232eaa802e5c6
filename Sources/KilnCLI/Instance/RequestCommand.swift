import ArgumentParser
import Foundation
import KilnEngine

/// `kiln request`: sends one HTTP request to an instance (inside its network namespace) and prints
/// the reply; exits 1 on an HTTP status of 400 or more. Needs neither CRIU nor runc.
struct Request: AsyncParsableCommand, ReportingCommand {
    static let configuration = CommandConfiguration(commandName: "request", abstract: "Send one HTTP request to an instance and print the reply.")

    @Argument(help: "Instance id (or a unique prefix).")
    var instance: String

    @Argument(help: "Path, e.g. /greet.")
    var path: String

    @Option(name: [.customShort("X"), .long], help: "HTTP method.")
    var method: String = "GET"

    @Option(name: [.customShort("d"), .long], help: "Request body (sent as application/json).")
    var data: String?

    @OptionGroup var common: CommonOptions

    func run() async throws {
        let kiln = try common.openStore(toDo: "send a request")
        let record = try kiln.instance(instance)
        let reply = try await kiln.request(record, method: method, path: path, body: data.map { Array($0.utf8) })
        if common.json {
            Output.printJSON(["id": AnyEncodable(record.id), "status": AnyEncodable(reply.status), "body": AnyEncodable(reply.bodyText)])
        } else {
            print(reply.bodyText)
            if !(200..<400).contains(reply.status) { FileHandle.standardError.write(Data("HTTP \(reply.status)\n".utf8)) }
        }
        if reply.status >= 400 { throw ExitCode(1) }
    }
}
