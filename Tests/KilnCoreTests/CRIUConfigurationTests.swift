import Foundation
import Testing

@testable import KilnOCI

@Suite("CRIU configuration files")
struct CRIUConfigurationTests {
    /// Option lines only (CRIU's config parser takes one option per line; # starts a comment).
    func options(_ contents: String) -> [String] {
        contents.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty && !$0.hasPrefix("#") }
    }

    @Test func aBakeSkipsEmptyTmpfsOnlyWithACRIUThatCan() {
        #expect(options(CRIUConfiguration.dumpContents(skipEmptyTmpfs: false)) == ["network-lock skip"])
        #expect(options(CRIUConfiguration.dumpContents(skipEmptyTmpfs: true)) == ["network-lock skip", "tmpfs-skip-empty"])
        // A restore never gets the dump-only option: markers are recognised whatever the options.
        #expect(!options(CRIUConfiguration.restoreContents(mapPageImages: true)).contains("tmpfs-skip-empty"))
    }
}
