import Foundation
import Testing

@testable import KilnOCI

@Suite("CRIU configuration files")
struct CRIUConfigurationTests {
    /// Option lines only (CRIU's config parser takes one option per line; # starts a comment).
    func options(_ contents: String) -> [String] {
        contents.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty && !$0.hasPrefix("#") }
    }

    /// A CRIU with the given patches' options (`criu --help` decides these in ``CRIU/locate(environment:probes:)``).
    func criu(mapsPageImages: Bool = false, inlinesTmpfs: Bool = false, avoidsBreakpoints: Bool = false) -> CRIU {
        CRIU(
            path: "/usr/local/sbin/criu", version: SemanticVersion(4, 2, 1), mapsPageImages: mapsPageImages, inlinesTmpfs: inlinesTmpfs,
            avoidsBreakpoints: avoidsBreakpoints)
    }

    @Test func aBakeListsTmpfsInlineOnlyWithACRIUThatCan() {
        #expect(options(CRIUConfiguration.dumpContents(for: criu())) == ["network-lock skip"])
        #expect(options(CRIUConfiguration.dumpContents(for: criu(inlinesTmpfs: true))) == ["network-lock skip", "tmpfs-inline"])
        // A restore never gets the dump-only option: listings are recognised whatever the options.
        #expect(!options(CRIUConfiguration.restoreContents(for: criu(mapsPageImages: true, inlinesTmpfs: true))).contains("tmpfs-inline"))
    }

    @Test func everyDumpAndRestoreAvoidsBreakpointsOnlyWithACRIUThatCan() {
        for avoids in [false, true] {
            let criu = criu(mapsPageImages: true, inlinesTmpfs: true, avoidsBreakpoints: avoids)
            for contents in [
                CRIUConfiguration.dumpContents(for: criu), CRIUConfiguration.restoreContents(for: criu),
                CRIUConfiguration.standbyRestoreContents(for: criu),
            ] {
                #expect(options(contents).contains("no-breakpoints") == avoids)
            }
        }
    }

    @Test func theDoctorNamesEachPatchOptionNotInUse() {
        #expect(criu(mapsPageImages: true, inlinesTmpfs: true, avoidsBreakpoints: true).optionsNotInUse.isEmpty)
        #expect(criu().optionsNotInUse.map(\.option) == ["mmap-page-images", "tmpfs-inline", "no-breakpoints"])
        let missing = criu(mapsPageImages: true, inlinesTmpfs: true).optionsNotInUse
        #expect(missing.map(\.option) == ["no-breakpoints"])
        #expect(missing.first?.cost.contains("KILN_NO_BREAKPOINTS") == true)
    }

    @Test func onlyAStandbyCopyIsLeftStopped() {
        for mapped in [false, true] {
            let criu = criu(mapsPageImages: mapped, avoidsBreakpoints: true)
            let restore = options(CRIUConfiguration.restoreContents(for: criu))
            let standby = options(CRIUConfiguration.standbyRestoreContents(for: criu))
            #expect(!restore.contains("leave-stopped"))
            #expect(standby == restore + ["leave-stopped"])
            #expect(standby.contains("mmap-page-images") == mapped)
        }
    }
}
