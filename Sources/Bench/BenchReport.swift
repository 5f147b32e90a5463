import Foundation

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
        String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
    }

    /// `value` rounded to `places` decimals (the documents carry no more digits than the measurement holds).
    static func rounded(_ value: Double, places: Int) -> Double {
        let scale = pow(10, Double(places))
        return (value * scale).rounded() / scale
    }
}
