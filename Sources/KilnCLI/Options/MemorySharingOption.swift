import ArgumentParser

/// How copies of one snapshot share memory, as `--share-memory` names it.
///
/// `mapped` (the default) is what the restore does anyway with kiln's CRIU: every copy maps the
/// snapshot's page images copy-on-write, so the pages no copy wrote stay one page-cache copy, and
/// only copies of the same snapshot share them. `ksm` adds kernel same-page merging on top:
/// pages the copies wrote identically fold too, at the price of ksmd's CPU and of a timing side
/// channel between everything merged (a write to a merged page is measurably slower, which tells a
/// process that another holds the same bytes).
enum MemorySharingMode: String, CaseIterable, ExpressibleByArgument {
    case mapped
    case ksm

    /// Whether copies are marked for KSM, what the snapshot manifest and the engine store.
    var mergesPages: Bool { self == .ksm }

    static let help: ArgumentHelp = """
        How copies share memory: 'mapped' (copies map the snapshot's pages copy-on-write and share \
        those nobody wrote) or 'ksm' (also merge identical written pages through KSM: more sharing, \
        ksmd's CPU, and a timing side channel between copies).
        """
}
