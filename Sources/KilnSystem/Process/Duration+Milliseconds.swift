extension Duration {
    /// The duration in (fractional) milliseconds.
    public var milliseconds: Double {
        Double(components.seconds) * 1000 + Double(components.attoseconds) / 1e15
    }

    /// The duration in whole nanoseconds, held to Int64's range (NIO's timers take those).
    package var nanoseconds: Int64 {
        let (whole, overflow) = components.seconds.multipliedReportingOverflow(by: 1_000_000_000)
        guard !overflow else { return components.seconds < 0 ? .min : .max }
        let (total, overflowed) = whole.addingReportingOverflow(components.attoseconds / 1_000_000_000)
        return overflowed ? .max : total
    }
}
