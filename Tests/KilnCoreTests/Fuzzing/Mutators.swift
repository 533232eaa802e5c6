import Foundation

/// Byte-level mutations, as coverage-blind fuzzers do them: each keeps most of a valid input and
/// breaks one thing, so parsers are pushed past their first check.
enum ByteMutator {
    /// Bytes that mean something to JSON, paths, URLs or HTTP.
    static let interestingBytes: [UInt8] = Array("\0\t\n\r \"%&*+,-./0123456789:;=?@[\\]_`{|}~".utf8) + [0x7F, 0x80, 0xC0, 0xC3, 0xE2, 0xFF]

    /// Applies 1 to 4 mutations; `others` are inputs to splice with, `dictionary` tokens to insert.
    static func mutate(_ input: [UInt8], others: [[UInt8]], dictionary: [String], random: inout FuzzRandom) -> [UInt8] {
        var bytes = input
        for _ in 0...random.below(4) {
            mutateOnce(&bytes, others: others, dictionary: dictionary, random: &random)
        }
        return bytes
    }

    static func mutateOnce(_ bytes: inout [UInt8], others: [[UInt8]], dictionary: [String], random: inout FuzzRandom) {
        let dictionary = dictionary.isEmpty ? ["/"] : dictionary
        let position = random.below(bytes.count + 1)
        switch random.below(10) {
        case 0 where !bytes.isEmpty:  // flip one bit
            bytes[min(position, bytes.count - 1)] ^= 1 << UInt8(random.below(8))
        case 1 where !bytes.isEmpty:  // overwrite a byte with an interesting one
            bytes[min(position, bytes.count - 1)] = random.pick(interestingBytes)
        case 2:  // insert random bytes
            bytes.insert(contentsOf: (0...random.below(8)).map { _ in UInt8(truncatingIfNeeded: random.next()) }, at: position)
        case 3 where !bytes.isEmpty:  // delete a range
            let end = min(bytes.count, position + 1 + random.below(16))
            bytes.removeSubrange(min(position, bytes.count - 1)..<end)
        case 4 where !bytes.isEmpty:  // duplicate a range somewhere else
            let start = random.below(bytes.count)
            let chunk = bytes[start..<min(bytes.count, start + 1 + random.below(32))]
            bytes.insert(contentsOf: Array(chunk), at: random.below(bytes.count + 1))
        case 5 where !others.isEmpty:  // splice: our head, another input's tail
            let other = random.pick(others)
            bytes = Array(bytes[..<position]) + other[random.below(other.count + 1)...]
        case 6, 7:  // insert a token
            bytes.insert(contentsOf: Array(random.pick(dictionary).utf8), at: position)
        case 8:  // replace a range with a token
            let end = min(bytes.count, position + random.below(12))
            bytes.replaceSubrange(min(position, bytes.count)..<end, with: Array(random.pick(dictionary).utf8))
        default:  // truncate
            bytes.removeSubrange(position...)
        }
    }
}

/// Edge values to put where a parser expects something ordinary.
enum EdgeValues {
    /// Number literals as JSON text: limits of Int32/Int64, signs, exponents beyond Double, and
    /// things JSON does not allow at all.
    static let numbers = [
        "0", "-0", "1", "-1", "2", "7", "60", "255", "256", "257", "1023", "1024", "65535", "65536", "-65536", "1000000", "1000001",
        "2147483647", "2147483648", "-2147483649", "4294967296", "9007199254740993", "9223372036854775807",
        "9223372036854775808", "-9223372036854775808", "-9223372036854775809", "18446744073709551616",
        "1.5", "-0.0", "0.000001", "1e-400", "1e2", "1E2", "1e21", "-1e21", "1e300", "1e308", "1.7976931348623157e308", "1e309",
        "31536000", "31536001", "1e100000", "NaN", "Infinity", "-Infinity", "0x10", "01", "+1", ".5", "1.", "--1",
    ]

    /// Strings: empty, dots, absolute and climbing paths, injected syntax, Unicode traps, long.
    static let strings = [
        "", " ", ".", "..", "...", "/", "//", "/.", "/..", "../../etc/passwd", "a/../../b", "./x", "a//b", "/etc/shadow", "/tmp/../root",
        "%2e%2e", "..%2f..", "..;x", "\\..\\x", "C:\\Windows", "hello", "Hello", "-x", "_x", "9lives", "a b", "a\tb", "a\u{0}b", "a\nb",
        "\r\nX-Injected: 1", "\"", "\\", "{}", "[]", "null", "true", "é", "ｅ", "\u{212A}iln", "İ", "\u{202E}txt.exe", "😀", "e\u{301}",
        "\u{FEFF}", "\u{FFFD}", "zstd", "gzip", "ZSTD", "1.1", "00", "-1",
        String(repeating: "a", count: 64), String(repeating: "a", count: 65), String(repeating: "a", count: 4096),
        String(repeating: "../", count: 200), String(repeating: "é", count: 1000),
        String(repeating: "0", count: 64), String(repeating: "A", count: 64), String(repeating: "g", count: 64),
        String(repeating: "ａ", count: 64), String(repeating: "0", count: 63), String(repeating: "f", count: 65),
    ]

    /// Doubles as the CLI would pass them (Swift's `Double(String)` reads "nan" and "inf").
    static let doubles: [Double] = [
        0, -0.0, 1, -1, 0.5, 60, 30, 86_400, 31_536_000, 31_536_001, 1e9, 1e18, 1e20, 1e21, 1e300, .greatestFiniteMagnitude,
        .leastNonzeroMagnitude, -.leastNonzeroMagnitude, .infinity, -.infinity, .nan, -.nan, .signalingNaN, 9.2e15, -1e21,
    ]

    static let integers: [Int] = [0, 1, -1, 2, 4, 8, 255, 256, 257, 10_000, 10_001, 65_535, 65_536, .max, .min, .max / 2, Int(Int32.max) + 1]
}

/// A JSON document as a tree that keeps what a mutator needs and `JSONSerialization` loses: the
/// order and duplicates of keys, and numbers as their exact text (`1e309`, `-0`, `NaN`).
indirect enum JSONValue {
    case null
    case bool(Bool)
    case number(String)
    case string(String)
    case array([JSONValue])
    case object([(key: String, value: JSONValue)])

    // MARK: Text

    var text: String {
        var out = ""
        write(to: &out)
        return out
    }

    func write(to out: inout String) {
        switch self {
        case .null: out += "null"
        case .bool(let value): out += value ? "true" : "false"
        case .number(let text): out += text
        case .string(let value): Self.writeString(value, to: &out)
        case .array(let values):
            out += "["
            for (index, value) in values.enumerated() {
                if index > 0 { out += "," }
                value.write(to: &out)
            }
            out += "]"
        case .object(let members):
            out += "{"
            for (index, member) in members.enumerated() {
                if index > 0 { out += "," }
                Self.writeString(member.key, to: &out)
                out += ":"
                member.value.write(to: &out)
            }
            out += "}"
        }
    }

    static func writeString(_ value: String, to out: inout String) {
        out += "\""
        // Most strings need no escape: append them whole (a debug build pays per character).
        if !value.utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) {
            out += value
            out += "\""
            return
        }
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case _ where scalar.value < 0x20: out += "\\u00" + String(scalar.value >> 4) + String(scalar.value & 0xF, radix: 16)
            default: out.unicodeScalars.append(scalar)
            }
        }
        out += "\""
    }

    /// Parses JSON text; nil if it is not JSON (or nests deeper than `maxDepth`).
    static func parse(_ text: String, maxDepth: Int = 64) -> JSONValue? {
        var parser = Parser(bytes: Array(text.utf8), maxDepth: maxDepth)
        guard let value = parser.value(depth: 0) else { return nil }
        parser.skipSpace()
        return parser.index == parser.bytes.count ? value : nil
    }

    private struct Parser {
        let bytes: [UInt8]
        let maxDepth: Int
        var index = 0

        init(bytes: [UInt8], maxDepth: Int) {
            self.bytes = bytes
            self.maxDepth = maxDepth
        }

        mutating func skipSpace() {
            while index < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[index]) { index += 1 }
        }

        mutating func literal(_ word: String) -> Bool {
            let expected = Array(word.utf8)
            guard bytes[index...].starts(with: expected) else { return false }
            index += expected.count
            return true
        }

        mutating func value(depth: Int) -> JSONValue? {
            skipSpace()
            guard index < bytes.count, depth < maxDepth else { return nil }
            switch bytes[index] {
            case UInt8(ascii: "n"): return literal("null") ? .null : nil
            case UInt8(ascii: "t"): return literal("true") ? .bool(true) : nil
            case UInt8(ascii: "f"): return literal("false") ? .bool(false) : nil
            case UInt8(ascii: "\""): return string().map(JSONValue.string)
            case UInt8(ascii: "["):
                index += 1
                var values: [JSONValue] = []
                skipSpace()
                if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
                    index += 1
                    return .array(values)
                }
                while true {
                    guard let element = value(depth: depth + 1) else { return nil }
                    values.append(element)
                    skipSpace()
                    guard index < bytes.count else { return nil }
                    index += 1
                    if bytes[index - 1] == UInt8(ascii: "]") { return .array(values) }
                    guard bytes[index - 1] == UInt8(ascii: ",") else { return nil }
                }
            case UInt8(ascii: "{"):
                index += 1
                var members: [(key: String, value: JSONValue)] = []
                skipSpace()
                if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
                    index += 1
                    return .object(members)
                }
                while true {
                    skipSpace()
                    guard index < bytes.count, bytes[index] == UInt8(ascii: "\""), let key = string() else { return nil }
                    skipSpace()
                    guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { return nil }
                    index += 1
                    guard let member = value(depth: depth + 1) else { return nil }
                    members.append((key, member))
                    skipSpace()
                    guard index < bytes.count else { return nil }
                    index += 1
                    if bytes[index - 1] == UInt8(ascii: "}") { return .object(members) }
                    guard bytes[index - 1] == UInt8(ascii: ",") else { return nil }
                }
            default:
                let start = index
                while index < bytes.count, "+-.0123456789eE".utf8.contains(bytes[index]) { index += 1 }
                return index > start ? .number(String(decoding: bytes[start..<index], as: UTF8.self)) : nil
            }
        }

        /// A string literal; escapes are decoded (surrogate pairs included) by Foundation, which
        /// reads the literal on its own.
        mutating func string() -> String? {
            let start = index
            index += 1
            while index < bytes.count, bytes[index] != UInt8(ascii: "\"") {
                index += bytes[index] == UInt8(ascii: "\\") ? 2 : 1
            }
            guard index < bytes.count else { return nil }
            index += 1
            let literal = Data(bytes[start..<index])
            return try? JSONSerialization.jsonObject(with: literal, options: .fragmentsAllowed) as? String
        }
    }

    // MARK: Mutation

    /// The paths (indices into arrays and objects) of every node, the root included.
    func nodePaths(prefix: [Int] = []) -> [[Int]] {
        var paths = [prefix]
        switch self {
        case .array(let values):
            for (index, value) in values.enumerated() { paths += value.nodePaths(prefix: prefix + [index]) }
        case .object(let members):
            for (index, member) in members.enumerated() { paths += member.value.nodePaths(prefix: prefix + [index]) }
        default: break
        }
        return paths
    }

    subscript(path: [Int]) -> JSONValue {
        get {
            guard let first = path.first else { return self }
            switch self {
            case .array(let values): return values[first][Array(path.dropFirst())]
            case .object(let members): return members[first].value[Array(path.dropFirst())]
            default: return self
            }
        }
        set {
            guard let first = path.first else {
                self = newValue
                return
            }
            switch self {
            case .array(var values):
                values[first][Array(path.dropFirst())] = newValue
                self = .array(values)
            case .object(var members):
                members[first].value[Array(path.dropFirst())] = newValue
                self = .object(members)
            default: break
            }
        }
    }

    /// One structure-aware mutation of a random node: another type, an edge value, a key or
    /// element removed, added, duplicated or renamed, deep nesting.
    static func mutate(_ document: JSONValue, random: inout FuzzRandom) -> JSONValue {
        var document = document
        let path = random.pick(document.nodePaths())
        let node = document[path]
        switch random.below(12) {
        case 0, 1: document[path] = .number(random.pick(EdgeValues.numbers))
        case 2, 3: document[path] = .string(random.pick(EdgeValues.strings))
        case 4: document[path] = random.pick([.null, .bool(random.oneIn(2)), .array([]), .object([]), .array([node]), .object([("_0", node)])])
        case 5:  // nest deeper than any decoder allows, or just deep
            let depth = random.pick([2, 16, 511, 513, 5_000])
            document[path] = .number(String(repeating: "[", count: depth) + String(repeating: "]", count: depth))
        case 6:  // a long string, or a long array (of a small node: the document stays under ~1 MB)
            let small = node.text.utf8.count <= 256 ? node : .number("1")
            document[path] =
                random.oneIn(2)
                ? .string(String(repeating: random.pick(["a", "/", "é", "\u{0}", ".."]), count: random.pick([100, 4_096, 65_536])))
                : .array(Array(repeating: small, count: random.pick([2, 100, 1_000])))
        case 7, 8:  // drop, duplicate or rename a member or element
            guard case .object(var members) = node, !members.isEmpty else {
                if case .array(var values) = node, !values.isEmpty {
                    let index = random.below(values.count)
                    if random.oneIn(2) { values.remove(at: index) } else { values.insert(values[index], at: random.below(values.count + 1)) }
                    document[path] = .array(values)
                }
                break
            }
            let index = random.below(members.count)
            switch random.below(4) {
            case 0: members.remove(at: index)
            case 1: members.append(members[index])  // duplicate key: the later one wins or the decoder refuses
            case 2: members[index].key = random.pick([members[index].key.uppercased(), "", members[index].key + " ", "__proto__", "\u{0}"])
            default:
                members.append((random.pick(["extra", "format", "files", "path", "id", "pid"]), random.pick([.null, .number("1"), .string("x")])))
            }
            document[path] = .object(members)
        case 9:  // swap with another node of the document
            document[path] = document[random.pick(document.nodePaths())]
        case 10:  // a number nudged by one, or a string by one character
            switch node {
            case .number(let text): document[path] = .number(Int(text).map { String($0 &+ (random.oneIn(2) ? 1 : -1)) } ?? text + "0")
            case .string(let text):
                document[path] = .string(random.oneIn(2) ? String(text.dropLast()) : text + random.pick(["/", ".", "..", "\u{0}", "A"]))
            default: document[path] = .null
            }
        default:  // empty it
            switch node {
            case .array: document[path] = .array([])
            case .object: document[path] = .object([])
            case .string: document[path] = .string("")
            default: document[path] = .number("0")
            }
        }
        return document
    }
}

/// A fuzz target's seed inputs and how to vary them.
struct StringFuzzInputs {
    var seeds: [String]
    var dictionary: [String]

    /// A mutated seed (most of the time), a seed as it is, or one built from dictionary tokens.
    func next(_ random: inout FuzzRandom) -> String {
        switch random.below(10) {
        case 0: return random.pick(seeds)
        case 1, 2: return (0...random.below(6)).map { _ in random.pick(dictionary + EdgeValues.strings) }.joined()
        default:
            let bytes = ByteMutator.mutate(
                Array(random.pick(seeds).utf8), others: seeds.map { Array($0.utf8) }, dictionary: dictionary, random: &random)
            return String(decoding: bytes, as: UTF8.self)
        }
    }
}

/// JSON documents: corpus files mutated as bytes or as trees, or generated.
struct JSONFuzzInputs {
    var seeds: [[UInt8]]
    var trees: [JSONValue]
    var dictionary: [String]
    var generate: ((inout FuzzRandom) -> JSONValue)?

    init(seeds: [[UInt8]], dictionary: [String], generate: ((inout FuzzRandom) -> JSONValue)? = nil) {
        self.seeds = seeds
        self.trees = seeds.compactMap { JSONValue.parse(String(decoding: $0, as: UTF8.self)) }
        self.dictionary = dictionary
        self.generate = generate
    }

    func next(_ random: inout FuzzRandom) -> [UInt8] {
        switch random.below(10) {
        case 0: return random.pick(seeds)
        case 1, 2, 3:
            return ByteMutator.mutate(
                random.pick(seeds), others: seeds, dictionary: dictionary + ["{", "}", "[", "]", ",", ":", "\"", "null"], random: &random)
        default:
            var tree = generate.map { random.oneIn(2) ? $0(&random) : random.pick(trees) } ?? random.pick(trees)
            for _ in 0..<random.below(4) { tree = JSONValue.mutate(tree, random: &random) }
            return Array(tree.text.utf8)
        }
    }
}
