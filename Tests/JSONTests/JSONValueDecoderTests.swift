import Testing

@testable import JSON

/// `Decodable` types read through the one parser: its rules, and `JSONDecoder`'s errors with their coding paths.
@Suite struct JSONValueDecoderTests {
    enum Kind: String, Decodable { case small, large }

    struct Inner: Decodable, Equatable {
        var values: [Int]
        var scale: Double
    }

    struct Outer: Decodable, Equatable {
        var name: String
        var enabled: Bool
        var seed: UInt64
        var offset: Int64
        var ratio: Float
        var kind: Kind
        var inner: Inner
        var table: [String: [String]]
        var optional: Int?
        var nested: [[Int8]]
    }

    let text = """
        {"name":"n","enabled":true,"seed":18446744073709551615,"offset":-9223372036854775808,"ratio":0.5,
         "kind":"large","inner":{"values":[1,2,1e2],"scale":0.0512},"table":{"a":["x","y"],"b":[]},
         "optional":null,"nested":[[1],[-128,127]],"unknown":{"ignored":[true]}}
        """

    func decodingError(_ text: String) -> DecodingError? {
        do {
            _ = try JSONValueDecoder().decode(Outer.self, from: Array(text.utf8))
            return nil
        } catch {
            return error as? DecodingError
        }
    }

    /// The coding path of `error`, dotted.
    func path(_ error: DecodingError?) -> String? {
        switch error {
        case .typeMismatch(_, let c), .valueNotFound(_, let c), .dataCorrupted(let c):
            return c.codingPath.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".")
        case .keyNotFound(let key, let c): return (c.codingPath + [key]).map(\.stringValue).joined(separator: ".")
        default: return nil
        }
    }

    @Test func decodesEveryKindOfMember() throws {
        let outer = try JSONValueDecoder().decode(Outer.self, from: Array(text.utf8))
        #expect(outer.name == "n" && outer.enabled && outer.kind == .large && outer.ratio == 0.5)
        #expect(outer.seed == UInt64.max && outer.offset == Int64.min)
        #expect(outer.inner == Inner(values: [1, 2, 100], scale: 0.0512))
        #expect(outer.table == ["a": ["x", "y"], "b": []])
        #expect(outer.optional == nil && outer.nested == [[1], [-128, 127]])
    }

    @Test func errorsNameTheField() {
        func replaced(_ old: String, _ new: String) -> String {
            let result = text.replacingOccurrences(old, new)
            #expect(result != text, "\(old) not found")
            return result
        }
        // A fraction, or an integer out of the type's range, is not an integer of that type.
        var error = decodingError(replaced("[1,2,1e2]", "[1,2.5]"))
        guard case .dataCorrupted? = error else { Issue.record("\(String(describing: error))"); return }
        #expect(path(error) == "inner.values.1")
        error = decodingError(replaced("[-128,127]", "[-128,128]"))
        guard case .dataCorrupted? = error else { Issue.record("\(String(describing: error))"); return }
        #expect(path(error) == "nested.1.1")
        // Another JSON type.
        error = decodingError(replaced(#""name":"n""#, #""name":7"#))
        guard case .typeMismatch? = error else { Issue.record("\(String(describing: error))"); return }
        #expect(path(error) == "name")
        // null where a value is needed.
        error = decodingError(replaced(#""scale":0.0512"#, #""scale":null"#))
        guard case .valueNotFound? = error else { Issue.record("\(String(describing: error))"); return }
        #expect(path(error) == "inner.scale")
        // A missing member.
        error = decodingError(replaced(#""enabled":true,"#, ""))
        guard case .keyNotFound? = error else { Issue.record("\(String(describing: error))"); return }
        #expect(path(error) == "enabled")
        // An unknown raw value.
        error = decodingError(replaced(#""large""#, #""huge""#))
        guard case .dataCorrupted? = error else { Issue.record("\(String(describing: error))"); return }
        #expect(path(error) == "kind")
    }

    @Test func duplicateMembersAreParseErrors() {
        let doubled = text.replacingOccurrences(#""scale":0.0512"#, #""scale":0.0512,"scale":1"#)
        #expect(throws: JSONParseError.self) { try JSONValueDecoder().decode(Outer.self, from: Array(doubled.utf8)) }
        do {
            _ = try JSONValueDecoder().decode(Outer.self, from: Array(doubled.utf8))
        } catch let error as JSONParseError {
            #expect(error.key == "scale" && error.path == ["inner"])
        } catch {
            Issue.record("\(error)")
        }
    }
}

extension String {
    /// Without Foundation: every occurrence of `old` replaced by `new`.
    fileprivate func replacingOccurrences(_ old: String, _ new: String) -> String {
        var result = ""
        var rest = Substring(self)
        while let range = rest.firstRange(of: old) {
            result += rest[..<range.lowerBound] + new
            rest = rest[range.upperBound...]
        }
        return result + rest
    }
}
