/// The members of a JSON object: in document order, each name once.
///
/// Order is kept because some documents are read by people and diffed (model.json) and some readers care about it
/// (a safetensors header lists its tensors); names are unique because a repeated name is ambiguous, so the parser
/// refuses it rather than letting one value silently win. Objects larger than a few members get a dictionary index,
/// so a safetensors header of a thousand tensors parses and looks names up in linear time.
public struct JSONObject: Sendable {
    public typealias Member = (key: String, value: JSONValue)

    /// The members, in document (or insertion) order.
    public private(set) var members: [Member]
    /// Position of each name; nil while the object is small enough that a scan is cheaper than hashing.
    private var index: [String: Int]?

    /// Above this many members, lookups go through `index`.
    static let indexThreshold = 8

    /// An empty object.
    public init() {
        members = []
    }

    /// An object of `members`, which must have distinct names (a repeated name is a programming error).
    public init<S: Sequence>(_ members: S) where S.Element == Member {
        self.init()
        for (key, value) in members {
            precondition(position(of: key) == nil, "JSON object member \"\(key)\" appears twice")
            append(key, value)
        }
    }

    /// For the parser, which has already checked the names: `index` is the names' positions, or nil.
    init(checked members: [Member], index: [String: Int]?) {
        self.members = members
        self.index = index
    }

    /// The names, in order.
    public var keys: [String] { members.map(\.key) }

    /// The value of member `key`; setting nil removes the member, setting a new name appends it.
    public subscript(key: String) -> JSONValue? {
        get { position(of: key).map { members[$0].value } }
        set {
            switch (position(of: key), newValue) {
            case (let i?, let value?): members[i].value = value
            case (let i?, nil):
                members.remove(at: i)
                reindex()
            case (nil, let value?): append(key, value)
            case (nil, nil): break
            }
        }
    }

    /// Where member `key` is in `members`.
    public func position(of key: String) -> Int? {
        if let index { return index[key] }
        return members.firstIndex { $0.key == key }
    }

    private mutating func append(_ key: String, _ value: JSONValue) {
        members.append((key, value))
        if index != nil {
            index![key] = members.count - 1
        } else if members.count > Self.indexThreshold {
            reindex()
        }
    }

    private mutating func reindex() {
        guard members.count > Self.indexThreshold else {
            index = nil
            return
        }
        var positions: [String: Int] = [:]
        positions.reserveCapacity(members.count)
        for (i, member) in members.enumerated() { positions[member.key] = i }
        index = positions
    }
}

extension JSONObject: RandomAccessCollection {
    public var startIndex: Int { members.startIndex }
    public var endIndex: Int { members.endIndex }
    public subscript(position: Int) -> Member { members[position] }
}

extension JSONObject: ExpressibleByDictionaryLiteral {
    /// The members in the order written (unlike a `Dictionary` literal's).
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self.init(elements.lazy.map { (key: $0.0, value: $0.1) })
    }
}

extension JSONObject: Equatable {
    /// Equal when both have the same names with equal values, in any order: order is kept for people, and is no
    /// part of a document's meaning.
    public static func == (lhs: JSONObject, rhs: JSONObject) -> Bool {
        guard lhs.count == rhs.count else { return false }
        return lhs.members.allSatisfy { member in rhs[member.key] == member.value }
    }
}
