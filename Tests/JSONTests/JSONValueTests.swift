import Testing

@testable import JSON

/// The one JSON module: RFC 8259 text in, literal numbers, document order and unique names kept, bounded nesting,
/// compact text out.
@Suite struct JSONValueTests {
    func parseError(_ text: String, maxDepth: Int = 32) -> JSONParseError? {
        do {
            _ = try JSONValue.parse(text, maxDepth: maxDepth)
            return nil
        } catch {
            return error
        }
    }

    // MARK: - Grammar

    @Test func escapesAndNumbersParse() throws {
        let text = #"{"a":"\u00e9\ud83d\ude00\n","b":[1,-2.5e3,true,null],"c":{}}"#
        let value = try JSONValue.parse(text)
        #expect(value["a"]?.stringValue == "é😀\n")
        #expect(value["b"]?.arrayValue?.count == 4)
        #expect(value["b"]?.arrayValue?[1].doubleValue == -2500)
        #expect(value["c"] == .object([:]))
        #expect(try JSONValue.parse(#""\ud83d\ude00 \u00e9\n""#) == .string("😀 é\n"))
        #expect(try JSONValue.parse(#""\"\\\/\b\f\n\r\t""#) == .string("\"\\/\u{8}\u{C}\n\r\t"))
        #expect(try JSONValue.parse("-0.5e+3").doubleValue == -500)
        #expect(try JSONValue.parse(" \t\r\n[ ] ") == .array([]))
    }

    @Test func garbageIsRefused() {
        for bad in [
            #"{"a":}"#, #"{"a":1,}"#, "[1 2]", "[1,]", "01", "01x", "1.", ".5", "-", "+1", "1e", "0x10", "NaN",
            "Infinity", #"{"a":"\x"}"#, "nul", "tru", "", " ", #"{"a" 1}"#, #"{1:2}"#, "[", #""abc"#, "'a'",
        ] {
            #expect(parseError(bad)?.code == .syntax, "\(bad)")
        }
    }

    @Test func trailingDataIsRefused() {
        for bad in ["{} {}", "1 2", #""a" x"#, "null,", "[]]"] {
            let error = parseError(bad)
            #expect(error?.message == "unexpected data after the JSON value", "\(bad)")
        }
        #expect(parseError("{} x")?.offset == 3)
        #expect(parseError("{} x")?.description == "unexpected data after the JSON value at byte 3")
    }

    @Test func controlCharactersInStringsAreRefused() {
        #expect(parseError("\"a\u{1}\"")?.code == .invalidString)
        #expect(parseError("\"a\nb\"")?.code == .invalidString)
    }

    @Test func loneSurrogatesAreRefused() throws {
        for bad in [#""\ud83d""#, #""\ud83d x""#, #""\ude00""#, #""\ud83d\u0041""#, #""\ud83d\ud83d""#] {
            #expect(parseError(bad)?.code == .invalidString, "\(bad)")
            #expect(parseError(bad)?.message == "lone surrogate escape", "\(bad)")
        }
        #expect(parseError(#""ab\ude00""#)?.offset == 3)
        #expect(parseError(#""\u12""#)?.message == "invalid \\u escape")
        #expect(try JSONValue.parse(#""\uD83D\uDE00""#) == .string("😀"))
    }

    @Test func invalidUTF8IsRefusedOrReplaced() throws {
        let bad: [UInt8] = Array(#"{"a":"x"#.utf8) + [0xC3, 0x28] + Array(#""}"#.utf8)
        #expect(throws: JSONParseError(.invalidString, "invalid UTF-8 in a string", offset: 7, path: ["a"])) {
            try JSONValue.parse(bad)
        }
        #expect(try JSONValue.parse(bad, invalidUTF8: .replace)["a"] == .string("x\u{FFFD}("))
        // Overlong forms, encoded surrogates, values past U+10FFFF and truncated sequences are not UTF-8.
        for sequence: [UInt8] in [
            [0xC0, 0xAF], [0xE0, 0x80, 0xAF], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xE2, 0x82],
        ] {
            #expect(throws: JSONParseError.self, "\(sequence)") { try JSONValue.parse([0x22] + sequence + [0x22]) }
        }
        // Two-, three- and four-byte sequences at the edges of their ranges are.
        let good = "\u{80}\u{7FF}\u{800}\u{D7FF}\u{E000}\u{FFFF}\u{10000}\u{10FFFF}"
        #expect(try JSONValue.parse("\"\(good)\"") == .string(good))
    }

    // MARK: - Numbers

    @Test func numbersKeepTheirLiteralText() throws {
        let seed = try JSONValue.parse(#"{"seed":9223372036854775807}"#)
        #expect(seed["seed"] == .number("9223372036854775807"))
        #expect(seed["seed"]?.int64Value == Int64.max)
        #expect(seed.serialized == #"{"seed":9223372036854775807}"#)
        #expect(JSONValue.integer(Int64.max).serialized == "9223372036854775807")
        #expect(JSONValue.integer(UInt64.max).serialized == "18446744073709551615")
        // 512 and 512.5 stay apart: only one of them is an integer.
        #expect(try JSONValue.parse("512").intValue == 512)
        #expect(try JSONValue.parse("512.5").intValue == nil)
        #expect(try JSONValue.parse("512.5").doubleValue == 512.5)
        #expect(try JSONValue.parse("1e3").int64Value == 1000)
        #expect(try JSONValue.parse("-7").intValue == -7)
        #expect(try JSONValue.parse("1e30").int64Value == nil)
        #expect(try JSONValue.parse("9223372036854775808").int64Value == nil)
        #expect(try JSONValue.parse("1.0E-5").serialized == "1.0E-5")
    }

    @Test func numbersCompareByValue() throws {
        #expect(JSONValue.number("1") == .number("1.0"))
        #expect(JSONValue.number("1000") == .number("1e3"))
        #expect(JSONValue.number("9223372036854775807") != .number("9223372036854775806"))
        #expect(JSONValue.number("0.5") != .number("0.25"))
        #expect(JSONValue.number("1") != .string("1"))
    }

    @Test func doublesAreWrittenShortest() {
        #expect(JSONValue.double(7).serialized == "7")
        #expect(JSONValue.double(-0.5).serialized == "-0.5")
        #expect(JSONValue.double(0.0512).serialized == "0.0512")
        #expect(JSONValue.double(1e-12).serialized == "1e-12")
        #expect(JSONValue.double(1e20).serialized == "1e+20")
        #expect(JSONValue.double(.nan) == .null && JSONValue.double(.infinity) == .null)
    }

    // MARK: - Objects

    @Test func duplicateKeysAreRefusedNamingTheKey() {
        let error = parseError(#"{"a":1,"b":{"c":2,"c":3}}"#)
        #expect(error?.code == .duplicateKey)
        #expect(error?.key == "c")
        #expect(error?.path == ["b"])
        #expect(error?.offset == 18)
        #expect(error?.description == #"duplicate key "c" at byte 18"#)
        // Also in objects large enough to be indexed, and through escapes.
        let many = (0..<100).map { #""k\#($0)":\#($0)"# }.joined(separator: ",")
        #expect(parseError("{\(many),\"k42\":0}")?.key == "k42")
        #expect(parseError(#"{"a":1,"\u0061":2}"#)?.key == "a")
        #expect(parseError(#"[0,{"x":[{"y":1,"y":1}]}]"#)?.path == ["1", "x", "0"])
    }

    @Test func membersKeepDocumentOrder() throws {
        let text = #"{"z":1,"a":{"y":true,"b":null},"m":[3,2,1]}"#
        let value = try JSONValue.parse(text)
        #expect(value.objectValue?.keys == ["z", "a", "m"])
        #expect(value.serialized(memberOrder: .document) == text)
        #expect(value.serialized == #"{"a":{"b":null,"y":true},"m":[3,2,1],"z":1}"#)
        // Literals keep the order they are written in.
        let built: JSONValue = .object(["z": .null, "a": .null])
        #expect(built.serialized(memberOrder: .document) == #"{"z":null,"a":null}"#)
        #expect(built == .object(["a": .null, "z": .null]))
    }

    @Test func largeObjectsLookUpEveryMember() throws {
        let count = 1000
        let text = "{" + (0..<count).map { #""t\#($0)":{"i":\#($0)}"# }.joined(separator: ",") + "}"
        let object = try #require(try JSONValue.parse(text).objectValue)
        #expect(object.count == count)
        for i in 0..<count { #expect(object["t\(i)"]?["i"]?.intValue == i) }
        #expect(object["t1000"] == nil)
    }

    @Test func objectsCanBeEdited() throws {
        var object: JSONObject = ["a": .integer(1)]
        for i in 0..<20 { object["k\(i)"] = .integer(i) }
        object["a"] = .string("first")
        object["k3"] = nil
        object["k3"] = .bool(true)
        #expect(object.count == 21)
        #expect(object.keys.first == "a" && object.keys.last == "k3")
        #expect(object["a"] == .string("first") && object["k19"] == .integer(19) && object["k3"] == .bool(true))
        for _ in 0..<18 { object[object.keys.last!] = nil }
        #expect(object.keys == ["a", "k0", "k1"])
        #expect(object["k1"] == .integer(1) && object["k2"] == nil)
        let members: [JSONObject.Member] = [("x", .null), ("y", .integer(2))]
        #expect(JSONObject(members).keys == ["x", "y"])
    }

    // MARK: - Depth

    @Test func nestingIsBounded() throws {
        func nested(_ levels: Int) -> String {
            String(repeating: "[", count: levels) + String(repeating: "]", count: levels)
        }
        // The top-level value is at depth 0, so 32 levels of arrays hold an empty one at depth 32.
        #expect(throws: Never.self) { try JSONValue.parse(nested(33)) }
        #expect(parseError(nested(34))?.code == .tooDeep)
        #expect(parseError(String(repeating: "[", count: 100))?.message == "nesting deeper than 32 levels")
        #expect(parseError(nested(3), maxDepth: 1)?.code == .tooDeep)
        #expect(throws: Never.self) { try JSONValue.parse(nested(65), maxDepth: 64) }
        #expect(
            parseError(String(repeating: #"{"a":"#, count: 40) + "1" + String(repeating: "}", count: 40))?.code
                == .tooDeep)
    }

    // MARK: - Output

    @Test func serializationEscapesWhatJSONRequires() throws {
        let text = JSONValue.object(["b": .string("q\"\\\u{1}"), "a": .array([.null, .bool(true)])]).serialized
        #expect(text == #"{"a":[null,true],"b":"q\"\\\u0001"}"#)
        #expect(try JSONValue.parse(text)["b"] == .string("q\"\\\u{1}"))
        let controls = String(String.UnicodeScalarView((0..<0x20).map { Unicode.Scalar(UInt8($0)) }))
        let written = JSONValue.string(controls + "\u{7F}\u{2028}\u{2029}/é😀").serialized
        #expect(
            written
                == #""\u0000\u0001\u0002\u0003\u0004\u0005\u0006\u0007\u0008\t\n\u000b\u000c\r\u000e\u000f"#
                + #"\u0010\u0011\u0012\u0013\u0014\u0015\u0016\u0017\u0018\u0019\u001a\u001b\u001c\u001d\u001e\u001f"#
                + #"\u007f\u2028\u2029/é😀""#)
        #expect(try JSONValue.parse(written) == .string(controls + "\u{7F}\u{2028}\u{2029}/é😀"))
    }

    @Test func everyValueRoundTrips() throws {
        let value: JSONValue = .object([
            "id": .string("j-1"), "seed": .integer(UInt64(Int64.max)), "scale": .double(7.5), "none": .null,
            "list": .array([.bool(false), .object([:]), .array([]), .string("")]),
            "nested": .object(["z": .integer(-1), "a": .string("\u{0}")]),
        ])
        #expect(try JSONValue.parse(value.serialized) == value)
        #expect(try JSONValue.parse(value.serialized(memberOrder: .document)) == value)
        #expect(
            try JSONValue.parse(value.serialized(memberOrder: .document)).objectValue?.keys == value.objectValue?.keys)
    }
}
