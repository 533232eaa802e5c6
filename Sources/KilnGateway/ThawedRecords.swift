import KilnEngine

/// The records of thawed copies between their thaw and their save: a thawed copy's record is
/// written once its first request is over (``FunctionPoolStateMachine`` says when), and not
/// before its hand-out finished (``KilnInstanceProvider/handedOut(_:)`` unfreezes a ready copy
/// and gives the record its thaw time). Either may come first. A copy stopped meanwhile is
/// forgotten, and what arrives for it afterwards is dropped: nothing is saved into a directory
/// being removed, and nothing is kept for a copy that is gone.
///
/// A value; ``KilnInstanceProvider`` keeps it under a lock and saves what its methods return.
struct ThawedRecords {
    private enum Entry {
        /// Thawed; its hand-out is under way.
        case handingOut
        /// Handed out, its first request not over yet.
        case waiting(InstanceRecord)
        /// Its first request came back before the hand-out was done.
        case due
    }

    private var entries: [String: Entry] = [:]

    /// How many copies are between their thaw and their save.
    var count: Int { entries.count }

    /// Copy `id` was thawed; its hand-out begins.
    mutating func thawed(_ id: String) {
        entries[id] = .handingOut
    }

    /// The hand-out of `record`'s copy is done; returns the record to save now when its first
    /// request is over already, nil otherwise (also for a copy stopped meanwhile).
    mutating func handedOut(_ record: InstanceRecord) -> InstanceRecord? {
        switch entries[record.id] {
        case .handingOut:
            entries[record.id] = .waiting(record)
            return nil
        case .due:
            entries[record.id] = nil
            return record
        case .waiting, nil:
            return nil
        }
    }

    /// Copy `id`'s first request is over; returns its record to save now when its hand-out is
    /// done, nil otherwise (also for a copy stopped meanwhile).
    mutating func firstRequestOver(_ id: String) -> InstanceRecord? {
        switch entries[id] {
        case .waiting(let record):
            entries[id] = nil
            return record
        case .handingOut:
            entries[id] = .due
            return nil
        case .due, nil:
            return nil
        }
    }

    /// Copy `id` is stopped, or its hand-out failed: nothing of it is saved.
    mutating func forget(_ id: String) {
        entries[id] = nil
    }
}
