/// Why a job (or one attempt of it) did not succeed: a code for programs, a message for people, and the context an
/// operator needs (job id, field, Redis key). Serialized into the job hash, the final event and `kd:dead`.
public struct JobError: Error, Equatable, Sendable, CustomStringConvertible {
    public struct Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        // The payload as a whole.
        public static let payloadTooLarge = Code(rawValue: "payload_too_large")
        public static let invalidUTF8 = Code(rawValue: "invalid_utf8")
        public static let invalidJSON = Code(rawValue: "invalid_json")
        public static let notAnObject = Code(rawValue: "not_an_object")
        // One field.
        public static let missingField = Code(rawValue: "missing_field")
        public static let unknownField = Code(rawValue: "unknown_field")
        public static let wrongType = Code(rawValue: "wrong_type")
        public static let outOfRange = Code(rawValue: "out_of_range")
        public static let invalidValue = Code(rawValue: "invalid_value")
        public static let pathTraversal = Code(rawValue: "path_traversal")
        // Running it.
        public static let deadlineExceeded = Code(rawValue: "deadline_exceeded")
        public static let cancelled = Code(rawValue: "cancelled")
        public static let generationFailed = Code(rawValue: "generation_failed")
        public static let storeFailed = Code(rawValue: "store_failed")
        public static let attemptsExhausted = Code(rawValue: "attempts_exhausted")
    }

    public var code: Code
    public var message: String
    /// The job field at fault, for validation errors (`width`, `metadata`, …).
    public var field: String?
    public var jobId: String?
    /// A Redis key or file path involved, when there is one.
    public var key: String?

    public init(_ code: Code, _ message: String, field: String? = nil, jobId: String? = nil, key: String? = nil) {
        (self.code, self.message, self.field, self.jobId, self.key) = (code, message, field, jobId, key)
    }

    public var description: String {
        var parts = ["\(code): \(message)"]
        if let jobId { parts.append("job \(jobId)") }
        if let key { parts.append("at \(key)") }
        return parts.joined(separator: ", ")
    }

    /// The error as event JSON: `{code, message}` plus `field` and `key` when known.
    public var json: JSONValue {
        var members: JSONObject = ["code": .string(code.rawValue), "message": .string(message)]
        if let field { members["field"] = .string(field) }
        if let key { members["key"] = .string(key) }
        return .object(members)
    }
}
