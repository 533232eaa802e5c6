extension Sequence<UInt8> {
    /// Two lowercase hex digits per byte: how kiln writes digests, key ids, keys and random ids.
    /// Not with `String(format:)`, whose first use in a process cost `kiln run` ~0.4 ms of Swift's
    /// runtime looking up `CVarArg` conformances (it hashes a manifest before every restore).
    package var hexDigits: String {
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        for byte in self {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: text, as: UTF8.self)
    }
}

extension FixedWidthInteger {
    /// Every byte of the integer as two hex digits, most significant first: what `%08x` prints
    /// for a `UInt32` and `%016llx` for a `UInt64`.
    package var hexDigits: String { withUnsafeBytes(of: bigEndian) { $0.hexDigits } }
}
