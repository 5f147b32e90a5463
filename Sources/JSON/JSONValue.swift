/// A JSON value: what every JSON document of the project (safetensors headers, model.json, jobs, events) parses into
/// and is written from.
///
/// Foundation's decoders do not serve: they collapse duplicate keys (one tensor name or job field silently wins) and
/// turn numbers into doubles (a 64-bit seed loses its low bits; `512` and `512.5` both read as a number). Here numbers
/// keep their literal text, objects refuse repeated names and keep their order, and nesting is bounded so hostile
/// input cannot exhaust the stack.
public enum JSONValue: Sendable {
    case null
    case bool(Bool)
    /// A number, as its literal text. It must follow RFC 8259's grammar: `parse`, `integer(_:)` and `double(_:)`
    /// make only such text.
    case number(String)
    case string(String)
    case array([JSONValue])
    case object(JSONObject)

    /// A number for an integer, exactly.
    public static func integer<T: BinaryInteger>(_ value: T) -> JSONValue { .number(String(value)) }

    /// A number for a double: integral values below 10¹⁵ without a fraction, others in Swift's shortest round-trip
    /// form; non-finite values become `null` (JSON has no NaN or infinity).
    public static func double(_ value: Double) -> JSONValue {
        guard value.isFinite else { return .null }
        if value.rounded() == value, abs(value) < 1e15 { return .number(String(Int64(value))) }
        return .number("\(value)")
    }

    /// The JSON type name, for error messages.
    public var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "boolean"
        case .number: return "number"
        case .string: return "string"
        case .array: return "array"
        case .object: return "object"
        }
    }

    /// The member named `key` of an object; nil for a missing member or a value that is not an object.
    public subscript(key: String) -> JSONValue? {
        if case .object(let members) = self { return members[key] }
        return nil
    }

    public var boolValue: Bool? { if case .bool(let b) = self { return b } else { return nil } }
    public var stringValue: String? { if case .string(let s) = self { return s } else { return nil } }
    public var arrayValue: [JSONValue]? { if case .array(let a) = self { return a } else { return nil } }
    public var objectValue: JSONObject? { if case .object(let o) = self { return o } else { return nil } }

    /// The number as a double (finite for any literal the grammar admits, except one that overflows to infinity).
    public var doubleValue: Double? { if case .number(let n) = self { return Double(n) } else { return nil } }

    /// The number as an exact integer: an integer literal in range, or a literal whose value is integral and at most
    /// 2⁵³ in magnitude (so `1e3` is 1000 but `1.5` and `1e30` are not integers).
    public var int64Value: Int64? {
        guard case .number(let n) = self else { return nil }
        if let exact = Int64(n) { return exact }
        guard let d = Double(n), d.isFinite, d.rounded() == d, abs(d) <= 9_007_199_254_740_992 else { return nil }
        return Int64(d)
    }

    /// The number as an exact `Int`, by the rules of `int64Value`.
    public var intValue: Int? { int64Value.flatMap { Int(exactly: $0) } }
}

extension JSONValue: Equatable {
    /// Numbers compare by value (`1`, `1.0` and `1e0` are equal; integers exactly, others as doubles); objects by
    /// their members in any order.
    public static func == (lhs: JSONValue, rhs: JSONValue) -> Bool {
        switch (lhs, rhs) {
        case (.null, .null): return true
        case (.bool(let a), .bool(let b)): return a == b
        case (.number(let a), .number(let b)): return sameNumber(a, b)
        case (.string(let a), .string(let b)): return a == b
        case (.array(let a), .array(let b)): return a == b
        case (.object(let a), .object(let b)): return a == b
        default: return false
        }
    }

    private static func sameNumber(_ a: String, _ b: String) -> Bool {
        if a == b { return true }
        if let x = Int64(a), let y = Int64(b) { return x == y }
        guard let x = Double(a), let y = Double(b) else { return false }
        return x == y
    }
}
