extension Duration {
    /// The duration in (fractional) milliseconds.
    public var milliseconds: Double {
        Double(components.seconds) * 1000 + Double(components.attoseconds) / 1e15
    }

    /// The duration as a `poll(2)` timeout: whole milliseconds rounded up (a poll that ends
    /// before a deadline just goes round again), held to Int32's range.
    package var pollMilliseconds: Int32 {
        Int32(clamping: min(components.seconds, Int64(Int32.max)) * 1000 + components.attoseconds / 1_000_000_000_000_000 + 1)
    }

    /// The duration in whole nanoseconds, held to Int64's range (NIO's timers take those).
    package var nanoseconds: Int64 {
        let (whole, overflow) = components.seconds.multipliedReportingOverflow(by: 1_000_000_000)
        guard !overflow else { return components.seconds < 0 ? .min : .max }
        let (total, overflowed) = whole.addingReportingOverflow(components.attoseconds / 1_000_000_000)
        return overflowed ? .max : total
    }
}
