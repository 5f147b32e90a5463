import Foundation
import TestSupport
import Testing

@testable import JobQueue
@testable import Redis

/// Job schema v1: every rejection names the field and the rule; nothing traps on hostile input.
@Suite struct JobSchemaTests {
    let decoder = JobDecoder()

    func decode(_ text: String) -> JobDecoding { decoder.decode(Array(text.utf8)) }

    @Test func fullValidJobParses() throws {
        let job = """
            {"id":"job-1.a_B","prompt":"красная машина","negative_prompt":"blurry","width":512,"height":768,
             "num_images":4,"steps":50,"guidance_scale":7.5,"sampler":"dpmpp_2m","eta":0.5,"dynamic_threshold":99.5,
             "seed":18446744073,"init_image":"in/cat.png","strength":0.6,"mask_image":"in/mask.png",
             "metadata":{"user":[1,2,{"x":null}]},"deadline":1900000000.5}
            """
        guard case .valid(let r) = decode(job) else {
            Issue.record("not valid: \(decode(job))")
            return
        }
        #expect(r.id == "job-1.a_B" && r.prompt == "красная машина" && r.negativePrompt == "blurry")
        #expect(r.width == 512 && r.height == 768 && r.numImages == 4 && r.steps == 50)
        #expect(r.guidanceScale == 7.5 && r.sampler == .dpmpp2M && r.eta == 0.5)
        #expect(r.dynamicThreshold == .percentile(99.5) && r.seed == 18_446_744_073)
        #expect(r.initImage == "in/cat.png" && r.strength == 0.6 && r.maskImage == "in/mask.png")
        #expect(r.metadata?["user"] == .array([.number("1"), .number("2"), .object(["x": .null])]))
        #expect(r.deadline == 1_900_000_000.5)
        // Canonical JSON parses back to the same request.
        guard case .valid(let again) = decoder.decode(Array(r.json.serialized.utf8)) else {
            Issue.record("canonical JSON does not validate: \(r.json.serialized)")
            return
        }
        #expect(again == r)
    }

    @Test func defaultsApplyOnlyToAbsentFields() throws {
        guard case .valid(let r) = decode(#"{"id":"a","prompt":"p","dynamic_threshold":null,"steps":20}"#) else {
            Issue.record("not valid")
            return
        }
        #expect(r.width == nil && r.dynamicThreshold == .disabled)
        let p = r.resolved(defaults: GenerationDefaults()) { 41 }
        #expect(p.width == 512 && p.steps == 20 && p.dynamicThreshold == nil && p.seed == 41)
        #expect(p.seed(ofImage: 3) == 44)
        #expect(p.strength == nil)
    }

    /// `strength` is img2img's: an inpainting job (init and mask image) resolves to none, so the pipeline, the PNG
    /// text and `job.json` do not report a value that played no part; img2img takes the default.
    @Test func strengthResolvesForImageToImageOnly() throws {
        let img2img = #"{"id":"a","prompt":"p","init_image":"in/a.png"}"#
        let inpaint = #"{"id":"a","prompt":"p","init_image":"in/a.png","mask_image":"in/m.png","strength":0.4}"#
        guard case .valid(let a) = decode(img2img), case .valid(let b) = decode(inpaint) else {
            Issue.record("not valid")
            return
        }
        #expect(a.resolved(defaults: GenerationDefaults()) { 1 }.strength == GenerationDefaults().strength)
        #expect(b.resolved(defaults: GenerationDefaults()) { 1 }.strength == nil)
    }

    /// The seed range is the one table's (`JobLimits.seed`): every signed 64-bit value, nothing above.
    @Test func seedRangeComesFromTheLimitsTable() {
        #expect(JobLimits().seed == 0...UInt64(Int64.max))
        guard case .valid(let r) = decode(#"{"id":"a","prompt":"p","seed":9223372036854775807}"#) else {
            Issue.record("Int64.max refused")
            return
        }
        #expect(r.seed == UInt64(Int64.max))
        guard case .invalid(_, let e) = decode(#"{"id":"a","prompt":"p","seed":9223372036854775808}"#) else {
            Issue.record("2⁶³ accepted")
            return
        }
        #expect(e.field == "seed" && e.message.contains("9223372036854775807"), "\(e.message)")
    }

    /// (payload, expected code, expected field): one row per rule.
    static let rejections: [(String, JobError.Code, String?)] = [
        (#"{"id":"a","prompt":"p","colour":"red"}"#, .unknownField, "colour"),
        (#"{"id":"a"}"#, .missingField, "prompt"),
        (#"{"id":"a","prompt":5}"#, .wrongType, "prompt"),
        (#"{"id":"a","prompt":"p","width":"512"}"#, .wrongType, "width"),
        (#"{"id":"a","prompt":"p","width":512.5}"#, .wrongType, "width"),
        (#"{"id":"a","prompt":"p","width":2048}"#, .outOfRange, "width"),
        (#"{"id":"a","prompt":"p","height":32}"#, .outOfRange, "height"),
        (#"{"id":"a","prompt":"p","height":100}"#, .invalidValue, "height"),
        (#"{"id":"a","prompt":"p","num_images":0}"#, .outOfRange, "num_images"),
        (#"{"id":"a","prompt":"p","num_images":17}"#, .outOfRange, "num_images"),
        (#"{"id":"a","prompt":"p","steps":1001}"#, .outOfRange, "steps"),
        (#"{"id":"a","prompt":"p","steps":true}"#, .wrongType, "steps"),
        (#"{"id":"a","prompt":"p","guidance_scale":-1}"#, .outOfRange, "guidance_scale"),
        (#"{"id":"a","prompt":"p","guidance_scale":1e400}"#, .outOfRange, "guidance_scale"),
        (#"{"id":"a","prompt":"p","eta":1.5}"#, .outOfRange, "eta"),
        (#"{"id":"a","prompt":"p","sampler":"euler"}"#, .invalidValue, "sampler"),
        (#"{"id":"a","prompt":"p","dynamic_threshold":0}"#, .outOfRange, "dynamic_threshold"),
        (#"{"id":"a","prompt":"p","dynamic_threshold":"99"}"#, .wrongType, "dynamic_threshold"),
        (#"{"id":"a","prompt":"p","seed":-1}"#, .outOfRange, "seed"),
        (#"{"id":"a","prompt":"p","seed":1.5}"#, .outOfRange, "seed"),
        (#"{"id":"a","prompt":"p","seed":"1"}"#, .wrongType, "seed"),
        (#"{"id":"a","prompt":"p","init_image":"../etc/passwd"}"#, .pathTraversal, "init_image"),
        (#"{"id":"a","prompt":"p","init_image":"a/../../b.png"}"#, .pathTraversal, "init_image"),
        (#"{"id":"a","prompt":"p","init_image":"/etc/passwd"}"#, .pathTraversal, "init_image"),
        (#"{"id":"a","prompt":"p","init_image":"x.png","mask_image":"../m.png"}"#, .pathTraversal, "mask_image"),
        (#"{"id":"a","prompt":"p","init_image":""}"#, .invalidValue, "init_image"),
        (#"{"id":"a","prompt":"p","strength":0.5}"#, .invalidValue, "strength"),
        (#"{"id":"a","prompt":"p","init_image":"x.png","strength":0}"#, .outOfRange, "strength"),
        (#"{"id":"a","prompt":"p","init_image":"x.png","strength":1.01}"#, .outOfRange, "strength"),
        (#"{"id":"a","prompt":"p","mask_image":"m.png"}"#, .invalidValue, "mask_image"),
        (#"{"id":"a","prompt":"p","deadline":-5}"#, .outOfRange, "deadline"),
        (#"{"id":"a","prompt":"p\u0000"}"#, .invalidValue, "prompt"),
    ]

    @Test func eachRuleIsReportedWithItsField() {
        for (payload, code, field) in Self.rejections {
            guard case .invalid(let id, let error) = decode(payload) else {
                Issue.record("\(payload) was not rejected as invalid: \(decode(payload))")
                continue
            }
            #expect(id == "a")
            #expect(error.code == code, "\(payload): \(error)")
            #expect(error.field == field, "\(payload): \(error)")
            #expect(error.jobId == "a")
            if let field { #expect(error.message.contains(field), "\(error.message) does not name \(field)") }
        }
    }

    @Test func payloadLevelRejections() {
        // No usable id: unidentifiable (goes to the dead list).
        for (payload, code) in [
            ("not json", JobError.Code.invalidJSON), ("[1,2]", .notAnObject), ("\"s\"", .notAnObject),
            (#"{"prompt":"p"}"#, .missingField), (#"{"id":7,"prompt":"p"}"#, .wrongType),
            (#"{"id":"a/b","prompt":"p"}"#, .invalidValue), (#"{"id":"..","prompt":"p"}"#, .invalidValue),
            (#"{"id":"a","id":"b","prompt":"p"}"#, .invalidJSON), (#"{"id":"a","id":"a","prompt":"p"}"#, .invalidJSON),
            (#"{"id":"a\u0062","prompt":NaN}"#, .invalidJSON), (#"{"prompt":"p" "id":"a","x":NaN}"#, .invalidJSON),
            (#"{"id":"a/b","prompt":NaN}"#, .invalidJSON), (#"[{"id":"a"}, x]"#, .invalidJSON),
        ] {
            guard case .unidentifiable(let error) = decode(payload) else {
                Issue.record("\(payload): \(decode(payload))")
                continue
            }
            #expect(error.code == code, "\(payload): \(error)")
        }
        // A payload that is not JSON as a whole but whose id can be read fails under that id (one final event, so a
        // producer waiting for it learns why): NaN, a duplicate key other than id, trailing garbage, truncation.
        for (payload, code) in [
            (#"{"id":"r1","prompt":"p","steps":NaN}"#, JobError.Code.invalidJSON),
            (#"{"id":"r1","prompt":"a","prompt":"b"}"#, .invalidJSON), (#"{"id":"r1","prompt":"p"} x"#, .invalidJSON),
            (#"{"prompt":NaN,"id":"r1"}"#, .invalidJSON),
            (#" { "metadata" : {"id":"x","k":[1,"}"]}, "id" : "r1", "prompt": "unterminated"#, .invalidJSON),
            (#"{"prompt":"\"id\":\"x\"","id":"r1","width":Infinity}"#, .invalidJSON),
        ] {
            guard case .invalid(let id, let error) = decode(payload) else {
                Issue.record("\(payload): \(decode(payload))")
                continue
            }
            #expect(id == "r1" && error.jobId == "r1", "\(payload): \(error)")
            #expect(error.code == code, "\(payload): \(error)")
        }
        // An oversized payload beyond what is parsed at all (4 MiB) whose id comes first keeps it too.
        let huge =
            Array(#"{"id":"huge","prompt":""#.utf8) + Array(repeating: UInt8(ascii: "a"), count: 5 << 20)
            + Array(#""}"#.utf8)
        #expect(decoder.decode(huge) == .invalid(id: "huge", decoder.decode(huge).error!))
        #expect(decoder.decode(huge).error?.code == .payloadTooLarge)
        // Invalid UTF-8 and oversized payloads keep their id, so the error lands in the job's own hash.
        var bytes = Array(#"{"id":"u1","prompt":"x"#.utf8) + [0xC3, 0x28] + Array(#""}"#.utf8)
        #expect(decoder.decode(bytes) == .invalid(id: "u1", decoder.decode(bytes).error!))
        #expect(decoder.decode(bytes).error?.code == .invalidUTF8)
        bytes =
            Array(#"{"id":"big","prompt":""#.utf8) + Array(repeating: UInt8(ascii: "a"), count: 70_000)
            + Array(#""}"#.utf8)
        guard case .invalid(let id, let error) = decoder.decode(bytes) else {
            Issue.record("oversized payload not refused")
            return
        }
        #expect(id == "big" && error.code == .payloadTooLarge && error.message.contains("65536"))
        // Configurable limit.
        var small = JobLimits()
        small.maxPayloadBytes = 20
        #expect(
            JobDecoder(limits: small).decode(Array(#"{"id":"a","prompt":"ppppp"}"#.utf8)).error?.code
                == .payloadTooLarge)
    }

    /// Property: random bytes, and random mutations of a valid job, never trap, and every rejection carries a code
    /// and (when it is about one field) a field that is in the schema or in the payload.
    @Test func randomMalformedInputIsRejectedCleanly() {
        var random = SeededGenerator(seed: 0x5EED)
        let valid = Array(
            #"{"id":"r1","prompt":"a cat","width":512,"height":512,"steps":30,"seed":7,"metadata":{"k":[1,"v"]}}"#.utf8)
        let alphabet = Array(#"{}[]":,.-+eE0123456789 truefalsnul\"#.utf8) + [0x00, 0xFF, 0xC3, 0x80, 0x0A]
        var seen: [JobError.Code: Int] = [:]
        for round in 0..<4000 {
            var bytes: [UInt8]
            if round % 2 == 0 {
                bytes = (0..<Int.random(in: 0...64, using: &random)).map { _ in
                    alphabet.randomElement(using: &random)!
                }
            } else {
                bytes = valid
                for _ in 0..<Int.random(in: 1...4, using: &random) {
                    let i = Int.random(in: 0..<bytes.count, using: &random)
                    switch Int.random(in: 0..<3, using: &random) {
                    case 0: bytes[i] = alphabet.randomElement(using: &random)!
                    case 1: bytes.remove(at: i)
                    default: bytes.insert(alphabet.randomElement(using: &random)!, at: i)
                    }
                    if bytes.isEmpty { bytes = [0x7B] }
                }
            }
            let result = decoder.decode(bytes)
            switch result {
            case .valid(let r):
                // Whatever passed must satisfy every rule.
                #expect(JobDecoder.isValidId(r.id))
                if let w = r.width { #expect((64...1024).contains(w) && w % 8 == 0) }
                if let s = r.steps { #expect((1...1000).contains(s)) }
            case .invalid(let id, let error):
                #expect(JobDecoder.isValidId(id))
                #expect(!error.message.isEmpty)
                if let field = error.field {
                    #expect(JobDecoder.fields.contains(field) || String(decoding: bytes, as: UTF8.self).contains(field))
                }
                seen[error.code, default: 0] += 1
            case .unidentifiable(let error):
                #expect(!error.message.isEmpty)
                seen[error.code, default: 0] += 1
            }
        }
        // The generator must actually reach several different rules, or this test proves little.
        #expect(seen.count >= 5, "codes reached: \(seen)")
    }

    @Test func inputPathResolutionRefusesSymlinksOutOfTheRoot() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let root = dir.file("inputs")
        try FileManager.default.createDirectory(atPath: root + "/sub", withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: root + "/sub/ok.png", contents: Data([1]))
        _ = FileManager.default.createFile(atPath: dir.file("secret.png"), contents: Data([2]))
        try FileManager.default.createSymbolicLink(
            atPath: root + "/escape.png", withDestinationPath: dir.file("secret.png"))
        #expect(try InputPath.resolve("sub/ok.png", root: root).hasSuffix("/inputs/sub/ok.png"))
        #expect(throws: JobError.self) { try InputPath.resolve("escape.png", root: root) }
        do {
            _ = try InputPath.resolve("escape.png", root: root, field: "init_image")
        } catch {
            #expect(error.code == .pathTraversal && error.field == "init_image")
        }
        #expect(throws: JobError.self) { try InputPath.resolve("../secret.png", root: root) }
        #expect(throws: JobError.self) { try InputPath.resolve("missing.png", root: root) }
    }
}
