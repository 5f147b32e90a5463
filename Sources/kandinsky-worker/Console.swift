import Foundation
import JSON

/// Where a command's lines go. With `--json`, stdout holds exactly one JSON document (so `| jq` works) and the human
/// lines (headers, progress, per-case figures) go to stderr; without it everything is on stdout.
struct Console {
    var json: Bool

    /// A human line: stdout, or stderr in JSON mode.
    func line(_ text: String) {
        if json {
            FileHandle.standardError.write(Data((text + "\n").utf8))
        } else {
            print(text)
        }
    }

    /// The one JSON document, keys sorted, on stdout.
    func document(_ value: JSONValue) {
        print(value.serialized)
    }

    /// The one JSON document from the dictionaries, arrays, strings, numbers, booleans and `NSNull`s the bench
    /// commands collect their figures in.
    func document(_ object: Any) throws {
        document(try Self.jsonValue(object))
    }

    static func jsonValue(_ object: Any) throws -> JSONValue {
        switch object {
        case let value as JSONValue: return value
        case is NSNull: return .null
        case let b as Bool: return .bool(b)
        case let s as String: return .string(s)
        case let i as Int: return .integer(i)
        case let i as Int64: return .integer(i)
        case let i as UInt64: return .integer(i)
        case let d as Double: return .double(d)
        case let f as Float: return .double(Double(f))
        case let dictionary as [String: Any]:
            return .object(JSONObject(try dictionary.map { (key: $0.key, value: try jsonValue($0.value)) }))
        case let array as [Any]: return .array(try array.map(jsonValue))
        default:
            throw EncodingError.invalidValue(
                object, .init(codingPath: [], debugDescription: "\(type(of: object)) has no JSON form"))
        }
    }
}
