/// Decodes `Decodable` types from JSON through `JSONValue.parse`, so typed documents (model.json) get the same rules
/// as the rest: a repeated name is an error, not a silent choice, and a number meant as an integer must be one.
///
/// Errors are the standard library's `DecodingError`s with the coding path of the field; members the type does not
/// declare are ignored, as `JSONDecoder` does.
public struct JSONValueDecoder: Sendable {
    public init() {}

    /// Decodes `type` from an already parsed value.
    public func decode<T: Decodable>(_ type: T.Type, from value: JSONValue) throws -> T {
        try T(from: ValueDecoder(value: value, codingPath: []))
    }

    /// Parses `bytes` (throwing `JSONParseError`) and decodes `type` from them (throwing `DecodingError`).
    public func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8], maxDepth: Int = 32) throws -> T {
        try decode(type, from: try JSONValue.parse(bytes, maxDepth: maxDepth))
    }
}

/// An array position in a coding path.
private struct IndexKey: CodingKey {
    var intValue: Int?
    var stringValue: String { String(intValue!) }
    init(intValue: Int) { self.intValue = intValue }
    init?(stringValue: String) { nil }
}

private struct ValueDecoder: Decoder {
    let value: JSONValue
    let codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard case .object(let object) = value else { throw mismatch(value, [String: Any].self, codingPath) }
        return KeyedDecodingContainer(KeyedContainer<Key>(object: object, codingPath: codingPath))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        guard case .array(let items) = value else { throw mismatch(value, [Any].self, codingPath) }
        return UnkeyedContainer(items: items, codingPath: codingPath)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer {
        SingleValueContainer(value: value, codingPath: codingPath)
    }
}

// MARK: - Scalars

/// `null` where a value is needed is `valueNotFound`, another JSON type `typeMismatch`, as `JSONDecoder` reports.
private func mismatch(_ value: JSONValue, _ type: Any.Type, _ path: [any CodingKey]) -> DecodingError {
    if value == .null {
        return .valueNotFound(type, .init(codingPath: path, debugDescription: "expected \(type), found null"))
    }
    return .typeMismatch(type, .init(codingPath: path, debugDescription: "expected \(type), found a \(value.typeName)"))
}

private func decodeBool(_ value: JSONValue, _ path: [any CodingKey]) throws -> Bool {
    guard case .bool(let b) = value else { throw mismatch(value, Bool.self, path) }
    return b
}

private func decodeString(_ value: JSONValue, _ path: [any CodingKey]) throws -> String {
    guard case .string(let s) = value else { throw mismatch(value, String.self, path) }
    return s
}

private func decodeDouble(_ value: JSONValue, _ path: [any CodingKey]) throws -> Double {
    guard case .number(let text) = value, let d = value.doubleValue else { throw mismatch(value, Double.self, path) }
    guard d.isFinite else {
        throw DecodingError.dataCorrupted(.init(codingPath: path, debugDescription: "number \(text) is out of range"))
    }
    return d
}

private func decodeInteger<T: FixedWidthInteger>(_ value: JSONValue, _ path: [any CodingKey]) throws -> T {
    guard case .number(let text) = value else { throw mismatch(value, T.self, path) }
    if let exact = T(text) { return exact }
    guard let i = value.int64Value, let exact = T(exactly: i) else {
        throw DecodingError.dataCorrupted(
            .init(codingPath: path, debugDescription: "number \(text) is not an integer that fits \(T.self)"))
    }
    return exact
}

/// Decodes any `Decodable` from `value`, with `path` for its errors.
private func decodeAny<T: Decodable>(_ type: T.Type, _ value: JSONValue, _ path: [any CodingKey]) throws -> T {
    try T(from: ValueDecoder(value: value, codingPath: path))
}

// MARK: - Containers

private struct SingleValueContainer: SingleValueDecodingContainer {
    let value: JSONValue
    let codingPath: [any CodingKey]

    func decodeNil() -> Bool { value == .null }
    func decode(_ type: Bool.Type) throws -> Bool { try decodeBool(value, codingPath) }
    func decode(_ type: String.Type) throws -> String { try decodeString(value, codingPath) }
    func decode(_ type: Double.Type) throws -> Double { try decodeDouble(value, codingPath) }
    func decode(_ type: Float.Type) throws -> Float { Float(try decodeDouble(value, codingPath)) }
    func decode(_ type: Int.Type) throws -> Int { try decodeInteger(value, codingPath) }
    func decode(_ type: Int8.Type) throws -> Int8 { try decodeInteger(value, codingPath) }
    func decode(_ type: Int16.Type) throws -> Int16 { try decodeInteger(value, codingPath) }
    func decode(_ type: Int32.Type) throws -> Int32 { try decodeInteger(value, codingPath) }
    func decode(_ type: Int64.Type) throws -> Int64 { try decodeInteger(value, codingPath) }
    func decode(_ type: UInt.Type) throws -> UInt { try decodeInteger(value, codingPath) }
    func decode(_ type: UInt8.Type) throws -> UInt8 { try decodeInteger(value, codingPath) }
    func decode(_ type: UInt16.Type) throws -> UInt16 { try decodeInteger(value, codingPath) }
    func decode(_ type: UInt32.Type) throws -> UInt32 { try decodeInteger(value, codingPath) }
    func decode(_ type: UInt64.Type) throws -> UInt64 { try decodeInteger(value, codingPath) }
    func decode<T: Decodable>(_ type: T.Type) throws -> T { try decodeAny(type, value, codingPath) }
}

private struct KeyedContainer<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let object: JSONObject
    let codingPath: [any CodingKey]

    var allKeys: [Key] { object.keys.compactMap { Key(stringValue: $0) } }
    func contains(_ key: Key) -> Bool { object[key.stringValue] != nil }

    private func value(_ key: Key) throws -> JSONValue {
        guard let value = object[key.stringValue] else {
            throw DecodingError.keyNotFound(
                key, .init(codingPath: codingPath, debugDescription: "no member \"\(key.stringValue)\""))
        }
        return value
    }

    func decodeNil(forKey key: Key) throws -> Bool { try value(key) == .null }
    func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool {
        try decodeBool(try value(key), codingPath + [key])
    }
    func decode(_ type: String.Type, forKey key: Key) throws -> String {
        try decodeString(try value(key), codingPath + [key])
    }
    func decode(_ type: Double.Type, forKey key: Key) throws -> Double {
        try decodeDouble(try value(key), codingPath + [key])
    }
    func decode(_ type: Float.Type, forKey key: Key) throws -> Float {
        Float(try decodeDouble(try value(key), codingPath + [key]))
    }
    func decode(_ type: Int.Type, forKey key: Key) throws -> Int {
        try decodeInteger(try value(key), codingPath + [key])
    }
    func decode(_ type: Int8.Type, forKey key: Key) throws -> Int8 {
        try decodeInteger(try value(key), codingPath + [key])
    }
    func decode(_ type: Int16.Type, forKey key: Key) throws -> Int16 {
        try decodeInteger(try value(key), codingPath + [key])
    }
    func decode(_ type: Int32.Type, forKey key: Key) throws -> Int32 {
        try decodeInteger(try value(key), codingPath + [key])
    }
    func decode(_ type: Int64.Type, forKey key: Key) throws -> Int64 {
        try decodeInteger(try value(key), codingPath + [key])
    }
    func decode(_ type: UInt.Type, forKey key: Key) throws -> UInt {
        try decodeInteger(try value(key), codingPath + [key])
    }
    func decode(_ type: UInt8.Type, forKey key: Key) throws -> UInt8 {
        try decodeInteger(try value(key), codingPath + [key])
    }
    func decode(_ type: UInt16.Type, forKey key: Key) throws -> UInt16 {
        try decodeInteger(try value(key), codingPath + [key])
    }
    func decode(_ type: UInt32.Type, forKey key: Key) throws -> UInt32 {
        try decodeInteger(try value(key), codingPath + [key])
    }
    func decode(_ type: UInt64.Type, forKey key: Key) throws -> UInt64 {
        try decodeInteger(try value(key), codingPath + [key])
    }
    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
        try decodeAny(type, try value(key), codingPath + [key])
    }

    func nestedContainer<NestedKey: CodingKey>(
        keyedBy type: NestedKey.Type, forKey key: Key
    ) throws -> KeyedDecodingContainer<NestedKey> {
        try ValueDecoder(value: try value(key), codingPath: codingPath + [key]).container(keyedBy: type)
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        try ValueDecoder(value: try value(key), codingPath: codingPath + [key]).unkeyedContainer()
    }

    func superDecoder() throws -> any Decoder {
        ValueDecoder(value: .object(object), codingPath: codingPath)
    }

    func superDecoder(forKey key: Key) throws -> any Decoder {
        ValueDecoder(value: object[key.stringValue] ?? .null, codingPath: codingPath + [key])
    }
}

private struct UnkeyedContainer: UnkeyedDecodingContainer {
    let items: [JSONValue]
    let codingPath: [any CodingKey]
    var currentIndex = 0

    init(items: [JSONValue], codingPath: [any CodingKey]) {
        (self.items, self.codingPath) = (items, codingPath)
    }

    var count: Int? { items.count }
    var isAtEnd: Bool { currentIndex >= items.count }

    /// The next element and its coding path, moving past it.
    private mutating func next(_ type: Any.Type) throws -> (JSONValue, [any CodingKey]) {
        let path = codingPath + [IndexKey(intValue: currentIndex)]
        guard !isAtEnd else {
            throw DecodingError.valueNotFound(
                type, .init(codingPath: path, debugDescription: "the array has only \(items.count) elements"))
        }
        defer { currentIndex += 1 }
        return (items[currentIndex], path)
    }

    mutating func decodeNil() throws -> Bool {
        guard !isAtEnd, items[currentIndex] == .null else { return false }
        currentIndex += 1
        return true
    }

    mutating func decode(_ type: Bool.Type) throws -> Bool {
        let (v, p) = try next(type)
        return try decodeBool(v, p)
    }
    mutating func decode(_ type: String.Type) throws -> String {
        let (v, p) = try next(type)
        return try decodeString(v, p)
    }
    mutating func decode(_ type: Double.Type) throws -> Double {
        let (v, p) = try next(type)
        return try decodeDouble(v, p)
    }
    mutating func decode(_ type: Float.Type) throws -> Float {
        let (v, p) = try next(type)
        return Float(try decodeDouble(v, p))
    }
    mutating func decode(_ type: Int.Type) throws -> Int { try integer() }
    mutating func decode(_ type: Int8.Type) throws -> Int8 { try integer() }
    mutating func decode(_ type: Int16.Type) throws -> Int16 { try integer() }
    mutating func decode(_ type: Int32.Type) throws -> Int32 { try integer() }
    mutating func decode(_ type: Int64.Type) throws -> Int64 { try integer() }
    mutating func decode(_ type: UInt.Type) throws -> UInt { try integer() }
    mutating func decode(_ type: UInt8.Type) throws -> UInt8 { try integer() }
    mutating func decode(_ type: UInt16.Type) throws -> UInt16 { try integer() }
    mutating func decode(_ type: UInt32.Type) throws -> UInt32 { try integer() }
    mutating func decode(_ type: UInt64.Type) throws -> UInt64 { try integer() }
    mutating func decode<T: Decodable>(_ type: T.Type) throws -> T {
        let (v, p) = try next(type)
        return try decodeAny(type, v, p)
    }

    private mutating func integer<T: FixedWidthInteger>() throws -> T {
        let (v, p) = try next(T.self)
        return try decodeInteger(v, p)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(
        keyedBy type: NestedKey.Type
    ) throws -> KeyedDecodingContainer<NestedKey> {
        let (v, p) = try next([String: Any].self)
        return try ValueDecoder(value: v, codingPath: p).container(keyedBy: type)
    }

    mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
        let (v, p) = try next([Any].self)
        return try ValueDecoder(value: v, codingPath: p).unkeyedContainer()
    }

    mutating func superDecoder() throws -> any Decoder {
        let (v, p) = try next(Any.self)
        return ValueDecoder(value: v, codingPath: p)
    }
}
