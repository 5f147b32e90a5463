import Foundation
import JSON

/// Why a benchmark could not give its figures (never that they were slow: figures are printed, not judged).
public struct BenchError: Error, CustomStringConvertible, Sendable {
    public enum Code: String, Sendable {
        /// The private replica was not online within the deadline.
        case replicaDidNotSync = "replica_did_not_sync"
        /// The jobs were not all finished within the deadline.
        case jobsDidNotFinish = "jobs_did_not_finish"
    }

    public var code: Code
    public var message: String
    /// The benchmark that failed, as its command names it (`bench queue`).
    public var benchmark: String

    public init(_ code: Code, _ message: String, benchmark: String) {
        (self.code, self.message, self.benchmark) = (code, message, benchmark)
    }

    public var description: String { "\(benchmark): \(message)" }
}

/// The JSON report documents: what `--json` prints, and what `Ops/bench-report` and `docs/perf/*.json` read.
enum BenchJSON {
    /// One document, keys sorted, on one line.
    static func document(_ object: [String: Any]) throws -> String {
        try value(object).serialized
    }

    /// The JSON form of the dictionaries, arrays, strings, numbers, booleans and `NSNull`s reports collect their
    /// figures in.
    static func value(_ object: Any) throws -> JSONValue {
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
            return .object(JSONObject(try dictionary.map { (key: $0.key, value: try value($0.value)) }))
        case let array as [Any]: return .array(try array.map(value))
        default:
            throw EncodingError.invalidValue(
                object, .init(codingPath: [], debugDescription: "\(type(of: object)) has no JSON form"))
        }
    }

    /// `value` rounded to `places` decimals (the documents carry no more digits than the measurement holds).
    static func rounded(_ value: Double, places: Int) -> Double {
        let scale = pow(10, Double(places))
        return (value * scale).rounded() / scale
    }
}
