import Foundation
import Testing

@testable import KilnEngine
@testable import KilnSystem

#if canImport(Glibc)
import Glibc
#endif

@Suite("errors keep their causes")
struct ErrorCauseTests {
    @Test func aForeignErrorIsWrappedWithItsCauseAndAKilnErrorIsNot() {
        let posix = POSIXError(.EACCES)
        let wrapped = KilnError.wrapping(posix, as: .systemCall, "could not open the store")
        #expect(wrapped.code == .systemCall)
        #expect(wrapped.cause is POSIXError)
        #expect(wrapped.errno == EACCES)
        #expect(wrapped.description.contains("cause: "), "\(wrapped)")

        let kiln = KilnError(.snapshotNotFound, "no snapshot 'x'")
        let same = KilnError.wrapping(kiln, as: .systemCall)
        #expect(same.code == .snapshotNotFound && same.cause == nil)
    }

    @Test func errnoIsFoundThroughTheChainAndInFoundationErrors() {
        let inner = KilnError.systemCall("write", errno: ENOSPC, "pages-1.img")
        let outer = KilnError(.checkpointFailed, "the dump failed", cause: inner)
        #expect(inner.errno == ENOSPC)
        #expect(outer.errno == ENOSPC)
        #expect(outer.causeChain.count == 3)

        let foundation = NSError(
            domain: NSCocoaErrorDomain, code: CocoaError.fileWriteUnknown.rawValue,
            userInfo: [
                NSUnderlyingErrorKey: NSError(domain: NSPOSIXErrorDomain, code: Int(ENOSPC))
            ])
        #expect(KilnError.wrapping(foundation, as: .systemCall).errno == ENOSPC)
        #expect(KilnError.wrapping(CocoaError(.fileWriteOutOfSpace), as: .systemCall).errno == ENOSPC)
        #expect(KilnError(.runtimeFailed, "no cause").errno == nil)
    }

    @Test func aFullStoreIsRecognisedByErrnoOrByAToolsLogButNotByTheServicesOutput() {
        #expect(StoreSpace.isOutOfSpace(POSIXError(.ENOSPC)))
        #expect(StoreSpace.isOutOfSpace(KilnError.systemCall("write", errno: ENOSPC, "a file")))
        #expect(
            StoreSpace.isOutOfSpace(
                KilnError(.checkpointFailed, "criu dump failed", details: ["Error (criu/page-xfer.c:123): Can't write: No space left on device"])))
        #expect(!StoreSpace.isOutOfSpace(KilnError(.warmupFailed, "GET /x answered 500", details: ["java.io.IOException: No space left on device"])))
        #expect(!StoreSpace.isOutOfSpace(POSIXError(.EIO)))

        let explained = StoreSpace(path: "/").explain(POSIXError(.ENOSPC))
        #expect((explained as? KilnError)?.code == .storeFull)
        #expect((StoreSpace(path: "/").explain(POSIXError(.EIO)) as? POSIXError)?.code == .EIO)
    }
}

@Suite("errno of a real Foundation failure")
struct FoundationErrnoTests {
    @Test func aFileManagerFailureCarriesItsErrno() {
        do {
            try FileManager.default.createDirectory(atPath: "/proc/kiln-cannot-be-here/x", withIntermediateDirectories: true)
            Issue.record("created a directory under /proc")
        } catch {
            let errno = KilnError.wrapping(error, as: .systemCall).errno
            #expect(errno == ENOENT || errno == EACCES || errno == EPERM, "\(error) gave \(String(describing: errno))")
        }
    }
}
