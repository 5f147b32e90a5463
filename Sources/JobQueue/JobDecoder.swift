import Foundation

/// What a queue payload turned out to be.
public enum JobDecoding: Equatable, Sendable {
    /// A valid job of schema version 1.
    case valid(GenerationRequest)
    /// A job with a usable id that breaks a rule: it fails at once, with this error in its hash and its event.
    case invalid(id: String, JobError)
    /// A payload with no usable id (not JSON, not an object, no valid `id`): it goes to `kd:dead` with its error.
    case unidentifiable(JobError)

    public var error: JobError? {
        switch self {
        case .valid: return nil
        case .invalid(_, let e), .unidentifiable(let e): return e
        }
    }
}

/// Parses and validates job JSON (DESIGN §3). Never traps: every rejection is a `JobError` naming the field and the
/// rule it breaks. One error is reported: payload rules first (size, UTF-8, JSON, object, id), then unknown fields,
/// then `prompt`, then the other fields in name order, then rules across fields.
public struct JobDecoder: Sendable {
    public var limits: JobLimits

    public init(limits: JobLimits = JobLimits()) { self.limits = limits }

    /// Largest payload parsed only to recover the id of an oversized job for its error report.
    private static let recoveryParseLimit = 4 * 1024 * 1024

    public static let fields: Set<String> = [
        "id", "prompt", "negative_prompt", "width", "height", "num_images", "steps", "guidance_scale", "sampler", "eta",
        "dynamic_threshold", "seed", "init_image", "strength", "mask_image", "metadata", "deadline",
    ]

    public func decode(_ payload: [UInt8]) -> JobDecoding {
        // Payload-level rules first; a job id is still recovered where the text allows, so the error lands in the
        // job's own hash and event.
        var payloadError: JobError?
        if payload.count > limits.maxPayloadBytes {
            payloadError = JobError(
                .payloadTooLarge, "the payload is \(payload.count) bytes; at most \(limits.maxPayloadBytes) are allowed"
            )
        } else if String(validating: payload, as: UTF8.self) == nil {
            let offset = Self.firstInvalidUTF8(payload) ?? 0
            payloadError = JobError(.invalidUTF8, "the payload is not valid UTF-8 (byte \(offset))")
        }
        if let payloadError, payload.count > Self.recoveryParseLimit {
            return Self.underReadableId(payload, payloadError)
        }

        let root: JSONValue
        do {
            // Invalid UTF-8 is already reported above; read as U+FFFD, it still lets the id be found.
            root = try JSONValue.parse(payload, invalidUTF8: .replace)
        } catch {
            return Self.underReadableId(
                payload, payloadError ?? JobError(.invalidJSON, "the payload is not JSON: \(error)"))
        }
        guard case .object(let members) = root else {
            return .unidentifiable(
                payloadError ?? JobError(.notAnObject, "the payload is a JSON \(root.typeName), not an object"))
        }
        let id: String
        switch idOf(members) {
        case .failure(let e): return .unidentifiable(payloadError ?? e)
        case .success(let value): id = value
        }
        if var payloadError {
            payloadError.jobId = id
            return .invalid(id: id, payloadError)
        }
        do {
            return .valid(try request(id: id, members))
        } catch {
            var e = error
            e.jobId = id
            return .invalid(id: id, e)
        }
    }

    /// A payload that does not parse fails under its id when one can be read (DESIGN §3: producers waiting for
    /// that id's event learn why), else it is unidentifiable.
    private static func underReadableId(_ payload: [UInt8], _ error: JobError) -> JobDecoding {
        guard let id = readableId(payload) else { return .unidentifiable(error) }
        var e = error
        e.jobId = id
        return .invalid(id: id, e)
    }

    /// The id of a payload that is not valid JSON as a whole: the top-level object's members are read in order
    /// (other members' values skipped by their brackets and quotes, so a bad number such as `NaN` does not hide an
    /// id after it) until the structure breaks, and the `id` member's string is taken where it is a valid id,
    /// written without escapes, and the only `id` member seen (two leave the job's identity ambiguous). So
    /// `{"id":"j1","steps":NaN}`, `{"id":"j1","prompt":"a","prompt":"b"}`, trailing garbage, a truncated payload
    /// and an oversized one whose id comes first all fail under `j1`.
    static func readableId(_ payload: [UInt8]) -> String? {
        var scanner = MemberScanner(bytes: payload)
        guard scanner.skipSpace(), scanner.take(UInt8(ascii: "{")) else { return nil }
        var found: String?
        while scanner.skipSpace(), let key = scanner.rawString() {
            guard scanner.skipSpace(), scanner.take(UInt8(ascii: ":")), scanner.skipSpace() else { break }
            if key == Array("id".utf8) {
                guard found == nil, let value = scanner.rawString() else { return nil }
                let id = String(decoding: value, as: UTF8.self)
                guard isValidId(id) else { return nil }
                found = id
            } else if !scanner.skipValue() {
                break
            }
            guard scanner.skipSpace(), scanner.take(UInt8(ascii: ",")) else { break }
        }
        return found
    }

    private func idOf(_ members: JSONObject) -> Result<String, JobError> {
        guard let node = members["id"] else { return .failure(JobError(.missingField, "id is required", field: "id")) }
        guard case .string(let id) = node else {
            return .failure(JobError(.wrongType, "id must be a string, not a \(node.typeName)", field: "id"))
        }
        guard Self.isValidId(id) else {
            return .failure(
                JobError(.invalidValue, "id must match [A-Za-z0-9._-]{1,128}", field: "id"))
        }
        return .success(id)
    }

    /// Whether `id` matches `[A-Za-z0-9._-]{1,128}` (so it is safe as a Redis key part and a directory name,
    /// except the names `.` and `..`, which are refused too).
    public static func isValidId(_ id: String) -> Bool {
        let bytes = Array(id.utf8)
        guard (1...128).contains(bytes.count), id != ".", id != ".." else { return false }
        return bytes.allSatisfy { b in
            (0x30...0x39).contains(b) || (0x41...0x5A).contains(b) || (0x61...0x7A).contains(b) || b == 0x2E
                || b == 0x5F || b == 0x2D
        }
    }

    // MARK: - Fields

    private func request(id: String, _ m: JSONObject) throws(JobError) -> GenerationRequest {
        if let unknown = m.keys.filter({ !Self.fields.contains($0) }).sorted().first {
            throw JobError(.unknownField, "unknown field \"\(unknown)\" (schema version 1)", field: unknown)
        }
        guard let promptNode = m["prompt"] else {
            throw JobError(.missingField, "prompt is required", field: "prompt")
        }
        var r = GenerationRequest(id: id, prompt: try text(promptNode, "prompt"))
        // Checked in field-name order, so the reported error does not depend on dictionary order.
        if let n = m["deadline"] {
            let d = try number(n, "deadline")
            guard d > 0 else { throw JobError(.outOfRange, "deadline must be epoch seconds > 0", field: "deadline") }
            r.deadline = d
        }
        if let n = m["dynamic_threshold"] {
            if n == .null {
                r.dynamicThreshold = .disabled
            } else {
                let p = try number(n, "dynamic_threshold")
                guard p > 0, p <= 100 else {
                    throw JobError(
                        .outOfRange, "dynamic_threshold must be a percentile in (0, 100] or null",
                        field: "dynamic_threshold")
                }
                r.dynamicThreshold = .percentile(p)
            }
        }
        if let n = m["eta"] { r.eta = try number(n, "eta", in: 0...1) }
        if let n = m["guidance_scale"] { r.guidanceScale = try number(n, "guidance_scale", in: limits.guidanceScale) }
        if let n = m["height"] { r.height = try size(n, "height") }
        if let n = m["init_image"] { r.initImage = try path(n, "init_image") }
        if let n = m["mask_image"] { r.maskImage = try path(n, "mask_image") }
        if let n = m["metadata"] { r.metadata = n }
        if let n = m["negative_prompt"] { r.negativePrompt = try text(n, "negative_prompt") }
        if let n = m["num_images"] { r.numImages = try integer(n, "num_images", in: limits.numImages) }
        if let n = m["sampler"] {
            guard case .string(let s) = n else { throw wrongType("sampler", "a string", n) }
            guard let sampler = Sampler(rawValue: s) else {
                let names = Sampler.allCases.map(\.rawValue).joined(separator: ", ")
                throw JobError(.invalidValue, "sampler must be one of \(names)", field: "sampler")
            }
            r.sampler = sampler
        }
        if let n = m["seed"] {
            guard case .number = n, let s = n.int64Value, s >= 0, limits.seed.contains(UInt64(s)) else {
                if case .number = n {
                    let range = "\(limits.seed.lowerBound)...\(limits.seed.upperBound)"
                    throw JobError(.outOfRange, "seed must be an integer in \(range)", field: "seed")
                }
                throw wrongType("seed", "an integer", n)
            }
            r.seed = UInt64(s)
        }
        if let n = m["steps"] { r.steps = try integer(n, "steps", in: limits.steps) }
        if let n = m["strength"] {
            let s = try number(n, "strength")
            guard s > 0, s <= 1 else { throw JobError(.outOfRange, "strength must be in (0, 1]", field: "strength") }
            r.strength = s
        }
        if let n = m["width"] { r.width = try size(n, "width") }
        // Rules across fields.
        if r.strength != nil, r.initImage == nil {
            throw JobError(.invalidValue, "strength is given without init_image", field: "strength")
        }
        if r.maskImage != nil, r.initImage == nil {
            throw JobError(.invalidValue, "mask_image is given without init_image", field: "mask_image")
        }
        return r
    }

    private func wrongType(_ field: String, _ expected: String, _ node: JSONValue) -> JobError {
        JobError(.wrongType, "\(field) must be \(expected), not a \(node.typeName)", field: field)
    }

    private func text(_ node: JSONValue, _ field: String) throws(JobError) -> String {
        guard case .string(let s) = node else { throw wrongType(field, "a string", node) }
        guard s.utf8.count <= limits.maxPromptBytes else {
            throw JobError(.outOfRange, "\(field) is longer than \(limits.maxPromptBytes) bytes", field: field)
        }
        guard !s.unicodeScalars.contains("\u{0}") else {
            throw JobError(.invalidValue, "\(field) contains a NUL character", field: field)
        }
        return s
    }

    private func number(
        _ node: JSONValue, _ field: String, in range: ClosedRange<Double>? = nil
    ) throws(JobError)
        -> Double
    {
        guard case .number = node, let d = node.doubleValue else { throw wrongType(field, "a number", node) }
        guard d.isFinite else { throw JobError(.outOfRange, "\(field) must be a finite number", field: field) }
        if let range, !range.contains(d) {
            throw JobError(
                .outOfRange, "\(field) must be in \(range.lowerBound)...\(range.upperBound)", field: field)
        }
        return d
    }

    private func integer(_ node: JSONValue, _ field: String, in range: ClosedRange<Int>) throws(JobError) -> Int {
        guard case .number = node else { throw wrongType(field, "an integer", node) }
        guard let v = node.int64Value else {
            throw JobError(.wrongType, "\(field) must be an integer", field: field)
        }
        guard v >= Int64(range.lowerBound), v <= Int64(range.upperBound) else {
            throw JobError(.outOfRange, "\(field) must be in \(range.lowerBound)...\(range.upperBound)", field: field)
        }
        return Int(v)
    }

    private func size(_ node: JSONValue, _ field: String) throws(JobError) -> Int {
        let v = try integer(node, field, in: limits.size)
        guard v % limits.sizeMultiple == 0 else {
            throw JobError(.invalidValue, "\(field) must be a multiple of \(limits.sizeMultiple)", field: field)
        }
        return v
    }

    private func path(_ node: JSONValue, _ field: String) throws(JobError) -> String {
        guard case .string(let p) = node else { throw wrongType(field, "a string (a relative path)", node) }
        if let problem = InputPath.problem(p, maxBytes: limits.maxPathBytes) {
            throw JobError(problem.code, "\(field) \(problem.message)", field: field)
        }
        return p
    }

    private static func firstInvalidUTF8(_ bytes: [UInt8]) -> Int? {
        var decoder = UTF8()
        var iterator = bytes.makeIterator()
        var offset = 0
        while true {
            switch decoder.decode(&iterator) {
            case .scalarValue(let s): offset += UTF8.width(s)
            case .emptyInput: return nil
            case .error: return offset
            }
        }
    }
}

/// Image paths in jobs: relative to the configured input root, never leaving it.
public enum InputPath {
    /// Why `path` is not an acceptable relative path, or nil when it is.
    public static func problem(_ path: String, maxBytes: Int = 1024) -> (code: JobError.Code, message: String)? {
        if path.isEmpty { return (.invalidValue, "is empty") }
        if path.utf8.count > maxBytes { return (.outOfRange, "is longer than \(maxBytes) bytes") }
        if path.unicodeScalars.contains("\u{0}") { return (.invalidValue, "contains a NUL character") }
        if path.hasPrefix("/") || path.hasPrefix("~") {
            return (.pathTraversal, "must be relative to the input root, not absolute")
        }
        if path.split(separator: "/", omittingEmptySubsequences: false).contains("..") {
            return (.pathTraversal, "must not contain '..'")
        }
        if path.contains("\\") { return (.pathTraversal, "must not contain '\\'") }
        return nil
    }

    /// The absolute path of `relative` below `root`, following symlinks, refused when it leaves the root or does
    /// not exist.
    public static func resolve(_ relative: String, root: String, field: String = "path") throws(JobError) -> String {
        if let problem = problem(relative) {
            throw JobError(problem.code, "\(field) \(problem.message)", field: field)
        }
        guard let realRoot = realpath(root, nil) else {
            throw JobError(.invalidValue, "the input root does not exist", field: field, key: root)
        }
        defer { free(realRoot) }
        let rootPath = String(cString: realRoot)
        let joined = rootPath + "/" + relative
        guard let realFile = realpath(joined, nil) else {
            throw JobError(.invalidValue, "\(field) \(relative) does not exist below the input root", field: field)
        }
        defer { free(realFile) }
        let filePath = String(cString: realFile)
        guard filePath.hasPrefix(rootPath == "/" ? "/" : rootPath + "/") else {
            throw JobError(.pathTraversal, "\(field) \(relative) leads out of the input root", field: field)
        }
        return filePath
    }
}

/// A forgiving reader of a JSON object's members, for recovering the id of a payload that does not parse: strings
/// are taken raw (no escapes decoded: a valid id needs none), values are skipped by their brackets and quotes.
private struct MemberScanner {
    let bytes: [UInt8]
    var index = 0

    init(bytes: [UInt8]) { self.bytes = bytes }

    /// Skips white space; false at the end of the bytes.
    mutating func skipSpace() -> Bool {
        while index < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[index]) { index += 1 }
        return index < bytes.count
    }

    mutating func take(_ byte: UInt8) -> Bool {
        guard index < bytes.count, bytes[index] == byte else { return false }
        index += 1
        return true
    }

    /// A string's bytes between its quotes; nil unless a string starts here and ends without an escape in it.
    mutating func rawString() -> [UInt8]? {
        guard take(UInt8(ascii: "\"")) else { return nil }
        let start = index
        while index < bytes.count {
            switch bytes[index] {
            case UInt8(ascii: "\""):
                index += 1
                return Array(bytes[start..<index - 1])
            case UInt8(ascii: "\\"): return nil
            default: index += 1
            }
        }
        return nil
    }

    /// Skips one value (a string with escapes, or anything up to the `,` or `}` that ends it outside brackets and
    /// quotes); false at the end of the bytes.
    mutating func skipValue() -> Bool {
        var depth = 0
        var inString = false
        while index < bytes.count {
            let b = bytes[index]
            if inString {
                if b == UInt8(ascii: "\\") {
                    index += 1
                } else if b == UInt8(ascii: "\"") {
                    inString = false
                }
            } else {
                switch b {
                case UInt8(ascii: "\""): inString = true
                case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
                case UInt8(ascii: "}"), UInt8(ascii: "]"):
                    if depth == 0 { return true }
                    depth -= 1
                case UInt8(ascii: ","): if depth == 0 { return true }
                default: break
                }
            }
            index += 1
        }
        return false
    }
}
