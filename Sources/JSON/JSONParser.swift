// MARK: - Parsing

extension JSONValue {
    /// What to do with bytes that are not UTF-8 inside a string.
    public enum InvalidUTF8: Sendable {
        /// Refuse the document (the default: a file or a job must be text).
        case refuse
        /// Read them as U+FFFD, for callers that already reported the payload as invalid and only want what they
        /// can still read from it (a job's id and metadata).
        case replace
    }

    /// Parses one JSON document (RFC 8259). Refuses a repeated member name, nesting deeper than `maxDepth` (the
    /// top-level value is at depth 0), lone surrogate escapes, invalid UTF-8 (unless `invalidUTF8` is `.replace`)
    /// and anything after the value but white space.
    public static func parse(
        _ bytes: UnsafeRawBufferPointer, maxDepth: Int = 32, invalidUTF8: InvalidUTF8 = .refuse
    ) throws(JSONParseError) -> JSONValue {
        var parser = Parser(bytes: bytes, maxDepth: maxDepth, replaceInvalidUTF8: invalidUTF8 == .replace)
        return try parser.document()
    }

    /// Parses one JSON document; see `parse(_:maxDepth:invalidUTF8:)` for the rules.
    public static func parse(
        _ bytes: [UInt8], maxDepth: Int = 32, invalidUTF8: InvalidUTF8 = .refuse
    ) throws(JSONParseError) -> JSONValue {
        // `withUnsafeBytes` rethrows untyped errors; a `Result` carries the typed one through.
        try bytes.withUnsafeBytes { raw in
            Result { () throws(JSONParseError) in try parse(raw, maxDepth: maxDepth, invalidUTF8: invalidUTF8) }
        }.get()
    }

    /// Parses one JSON document from text; see `parse(_:maxDepth:invalidUTF8:)` for the rules.
    public static func parse(_ text: String, maxDepth: Int = 32) throws(JSONParseError) -> JSONValue {
        try parse(Array(text.utf8), maxDepth: maxDepth)
    }
}

/// Why a JSON text was refused: what, at which byte, and where in the document.
public struct JSONParseError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable {
        /// Not JSON's grammar (a stray character, a bad number or escape, the end too early, trailing data).
        case syntax
        /// A string that is not Unicode text: invalid UTF-8, a control character, a lone surrogate escape.
        case invalidString
        /// An object names a member twice.
        case duplicateKey
        /// Nested deeper than the caller allows.
        case tooDeep
    }

    public var code: Code
    public var message: String
    /// Offset of the offending byte from the start of the text.
    public var offset: Int
    /// Member names and array indices from the top-level value down to the value being read when parsing stopped
    /// (for a repeated name, the object that repeats it), so a caller can name the field.
    public var path: [String]
    /// The repeated name, for `.duplicateKey`.
    public var key: String?

    public init(_ code: Code, _ message: String, offset: Int, path: [String] = [], key: String? = nil) {
        (self.code, self.message, self.offset, self.path, self.key) = (code, message, offset, path, key)
    }

    public var description: String { "\(message) at byte \(offset)" }
}

private struct Parser {
    let bytes: UnsafeRawBufferPointer
    let maxDepth: Int
    let replaceInvalidUTF8: Bool
    var index = 0

    init(bytes: UnsafeRawBufferPointer, maxDepth: Int, replaceInvalidUTF8: Bool) {
        (self.bytes, self.maxDepth, self.replaceInvalidUTF8) = (bytes, maxDepth, replaceInvalidUTF8)
    }

    func fail(_ message: String) -> JSONParseError { fail(.syntax, message) }

    func fail(_ code: JSONParseError.Code, _ message: String) -> JSONParseError {
        JSONParseError(code, message, offset: index)
    }

    mutating func document() throws(JSONParseError) -> JSONValue {
        skipWhitespace()
        let value = try value(depth: 0)
        skipWhitespace()
        guard index == bytes.count else { throw fail("unexpected data after the JSON value") }
        return value
    }

    mutating func skipWhitespace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x09, 0x0A, 0x0D: index += 1
            default: return
            }
        }
    }

    mutating func value(depth: Int) throws(JSONParseError) -> JSONValue {
        guard depth <= maxDepth else { throw fail(.tooDeep, "nesting deeper than \(maxDepth) levels") }
        guard index < bytes.count else { throw fail("unexpected end of input") }
        switch bytes[index] {
        case UInt8(ascii: "{"): return try object(depth: depth)
        case UInt8(ascii: "["): return try array(depth: depth)
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"):
            try literal("true")
            return .bool(true)
        case UInt8(ascii: "f"):
            try literal("false")
            return .bool(false)
        case UInt8(ascii: "n"):
            try literal("null")
            return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
        default: throw fail("unexpected character")
        }
    }

    mutating func literal(_ word: StaticString) throws(JSONParseError) {
        let count = word.utf8CodeUnitCount
        guard index + count <= bytes.count,
            (0..<count).allSatisfy({ bytes[index + $0] == word.utf8Start[$0] })
        else { throw fail("invalid literal") }
        index += count
    }

    mutating func object(depth: Int) throws(JSONParseError) -> JSONValue {
        index += 1
        var members: [JSONObject.Member] = []
        var positions: [String: Int]?
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
            index += 1
            return .object(JSONObject())
        }
        while true {
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { throw fail("expected a key") }
            let keyOffset = index
            let key = try string()
            // Small objects are scanned; larger ones get their index built once and kept by the object.
            let repeated: Bool
            if positions != nil {
                repeated = positions!.updateValue(members.count, forKey: key) != nil
            } else {
                repeated = members.contains { $0.key == key }
                if !repeated, members.count + 1 > JSONObject.indexThreshold {
                    var all: [String: Int] = [:]
                    for (i, member) in members.enumerated() { all[member.key] = i }
                    all[key] = members.count
                    positions = all
                }
            }
            if repeated {
                throw JSONParseError(.duplicateKey, "duplicate key \"\(key)\"", offset: keyOffset, key: key)
            }
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { throw fail("expected ':'") }
            index += 1
            skipWhitespace()
            do {
                members.append((key, try value(depth: depth + 1)))
            } catch {
                throw error.within(key)
            }
            skipWhitespace()
            guard index < bytes.count else { throw fail("unexpected end of input") }
            if bytes[index] == UInt8(ascii: ",") {
                index += 1
                continue
            }
            guard bytes[index] == UInt8(ascii: "}") else { throw fail("expected ',' or '}'") }
            index += 1
            return .object(JSONObject(checked: members, index: positions))
        }
    }

    mutating func array(depth: Int) throws(JSONParseError) -> JSONValue {
        index += 1
        var items: [JSONValue] = []
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
            index += 1
            return .array(items)
        }
        while true {
            skipWhitespace()
            do {
                items.append(try value(depth: depth + 1))
            } catch {
                throw error.within(String(items.count))
            }
            skipWhitespace()
            guard index < bytes.count else { throw fail("unexpected end of input") }
            if bytes[index] == UInt8(ascii: ",") {
                index += 1
                continue
            }
            guard bytes[index] == UInt8(ascii: "]") else { throw fail("expected ',' or ']'") }
            index += 1
            return .array(items)
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`, kept as its text.
    mutating func number() throws(JSONParseError) -> JSONValue {
        let start = index
        if bytes[index] == UInt8(ascii: "-") { index += 1 }
        guard index < bytes.count else { throw fail("invalid number") }
        if bytes[index] == UInt8(ascii: "0") {
            index += 1
        } else if digits() == 0 {
            throw fail("invalid number")
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            index += 1
            if digits() == 0 { throw fail("invalid number") }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            index += 1
            if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") {
                index += 1
            }
            if digits() == 0 { throw fail("invalid number") }
        }
        return .number(String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self))
    }

    /// Skips decimal digits; how many.
    mutating func digits() -> Int {
        let start = index
        while index < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index]) { index += 1 }
        return index - start
    }

    /// A string starting at the opening quote. Runs without escapes are copied whole once checked to be UTF-8.
    mutating func string() throws(JSONParseError) -> String {
        index += 1
        var result = ""
        var runStart = index
        while true {
            guard index < bytes.count else { throw fail("unterminated string") }
            let b = bytes[index]
            if b == UInt8(ascii: "\"") {
                appendRun(from: runStart, to: &result)
                index += 1
                return result
            }
            if b < 0x20 { throw fail(.invalidString, "control character in a string") }
            if b >= 0x80 {
                try skipUTF8Sequence()
                continue
            }
            if b != UInt8(ascii: "\\") {
                index += 1
                continue
            }
            appendRun(from: runStart, to: &result)
            index += 1
            guard index < bytes.count else { throw fail("unterminated string") }
            let e = bytes[index]
            index += 1
            switch e {
            case UInt8(ascii: "\""): result.unicodeScalars.append("\"")
            case UInt8(ascii: "\\"): result.unicodeScalars.append("\\")
            case UInt8(ascii: "/"): result.unicodeScalars.append("/")
            case UInt8(ascii: "b"): result.unicodeScalars.append("\u{8}")
            case UInt8(ascii: "f"): result.unicodeScalars.append("\u{C}")
            case UInt8(ascii: "n"): result.unicodeScalars.append("\n")
            case UInt8(ascii: "r"): result.unicodeScalars.append("\r")
            case UInt8(ascii: "t"): result.unicodeScalars.append("\t")
            case UInt8(ascii: "u"): result.unicodeScalars.append(try unicodeEscape())
            default:
                index -= 1
                throw fail("invalid escape")
            }
            runStart = index
        }
    }

    private func appendRun(from start: Int, to result: inout String) {
        guard start < index else { return }
        // Checked by `skipUTF8Sequence`, or invalid bytes to be replaced by U+FFFD.
        result += String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
    }

    /// The scalar of a `\uXXXX` escape (the `\u` already read), joining a surrogate pair.
    mutating func unicodeEscape() throws(JSONParseError) -> Unicode.Scalar {
        let escapeStart = index - 2
        var code = try hex4()
        if (0xD800...0xDBFF).contains(code) {
            guard index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u")
            else { throw JSONParseError(.invalidString, "lone surrogate escape", offset: escapeStart) }
            index += 2
            let low = try hex4()
            guard (0xDC00...0xDFFF).contains(low) else {
                throw JSONParseError(.invalidString, "lone surrogate escape", offset: escapeStart)
            }
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
        } else if (0xDC00...0xDFFF).contains(code) {
            throw JSONParseError(.invalidString, "lone surrogate escape", offset: escapeStart)
        }
        // Every value left is a scalar: surrogates were joined or refused above.
        return Unicode.Scalar(code)!
    }

    mutating func hex4() throws(JSONParseError) -> UInt32 {
        guard index + 4 <= bytes.count else { throw fail("invalid \\u escape") }
        var value: UInt32 = 0
        for i in index..<index + 4 {
            let b = bytes[i]
            let digit: UInt8
            switch b {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = b - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = b - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = b - UInt8(ascii: "A") + 10
            default: throw fail("invalid \\u escape")
            }
            value = value << 4 | UInt32(digit)
        }
        index += 4
        return value
    }

    /// Skips one multi-byte UTF-8 sequence, refusing what the Unicode standard calls ill-formed (overlong forms,
    /// surrogates, values above U+10FFFF, truncated sequences); in replacing mode, skips the bad byte instead.
    mutating func skipUTF8Sequence() throws(JSONParseError) {
        let lead = bytes[index]
        let length: Int
        var lower: UInt8 = 0x80
        var upper: UInt8 = 0xBF
        switch lead {
        case 0xC2...0xDF: length = 2
        case 0xE0: (length, lower) = (3, 0xA0)
        case 0xE1...0xEC, 0xEE...0xEF: length = 3
        case 0xED: (length, upper) = (3, 0x9F)
        case 0xF0: (length, lower) = (4, 0x90)
        case 0xF1...0xF3: length = 4
        case 0xF4: (length, upper) = (4, 0x8F)
        default: length = 0
        }
        var valid = length > 0 && index + length <= bytes.count
        if valid {
            let second = bytes[index + 1]
            valid = second >= lower && second <= upper
            for i in 2..<max(2, length) where valid { valid = bytes[index + i] & 0xC0 == 0x80 }
        }
        if valid {
            index += length
        } else if replaceInvalidUTF8 {
            index += 1
        } else {
            throw fail(.invalidString, "invalid UTF-8 in a string")
        }
    }
}

extension JSONParseError {
    /// The error as seen from the enclosing object member or array element `component`.
    fileprivate func within(_ component: String) -> JSONParseError {
        var e = self
        e.path.insert(component, at: 0)
        return e
    }
}
