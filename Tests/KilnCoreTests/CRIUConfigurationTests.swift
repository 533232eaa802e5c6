import Foundation
import Testing

@testable import KilnOCI

@Suite("CRIU configuration files")
struct CRIUConfigurationTests {
    /// Option lines only (CRIU's config parser takes one option per line; # starts a comment).
    func options(_ contents: String) -> [String] {
        contents.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty && !$0.hasPrefix("#") }
    }

    @Test func aBakeListsTmpfsInlineOnlyWithACRIUThatCan() {
        #expect(options(CRIUConfiguration.dumpContents(inlineTmpfs: false)) == ["network-lock skip"])
        #expect(options(CRIUConfiguration.dumpContents(inlineTmpfs: true)) == ["network-lock skip", "tmpfs-inline"])
        // A restore never gets the dump-only option: listings are recognised whatever the options.
        #expect(!options(CRIUConfiguration.restoreContents(mapPageImages: true)).contains("tmpfs-inline"))
    }

    @Test func onlyAStandbyCopyIsLeftStopped() {
        for mapped in [false, true] {
            let restore = options(CRIUConfiguration.restoreContents(mapPageImages: mapped))
            let standby = options(CRIUConfiguration.standbyRestoreContents(mapPageImages: mapped))
            #expect(!restore.contains("leave-stopped"))
            #expect(standby == restore + ["leave-stopped"])
            #expect(standby.contains("mmap-page-images") == mapped)
        }
    }
}
