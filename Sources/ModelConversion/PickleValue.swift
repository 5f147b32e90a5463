import Tensor

// MARK: - Values

/// A value read from a pickle by `Unpickler`. Nothing in it was ever looked up or called: a class or function
/// the pickle names is a `.global`, and what the pickle would have built by calling it is an opaque `.object`.
/// The exceptions are the few constructors of plain data and tensors that `Unpickler` interprets itself.
///
/// Lists, dicts and objects are reference types because a pickle mutates them after memoizing them
/// (`EMPTY_DICT`, `BINPUT`, then `SETITEMS`): every reference to the memo entry sees the same items.
public enum PickleValue {
    case none
    case bool(Bool)
    case int(Int)
    /// An integer beyond 64 bits: little-endian two's-complement bytes, as `LONG1`/`LONG4` store it.
    case bigInt([UInt8])
    case float(Double)
    case string(String)
    case bytes([UInt8])
    case tuple([PickleValue])
    /// A list, a set or a frozenset (their difference does not matter to a checkpoint reader).
    case list(PickleList)
    /// A dict or a `collections.OrderedDict`.
    case dict(PickleDict)
    /// A reference to `module.name`, never imported.
    case global(module: String, name: String)
    /// What calling or instantiating something would have produced; never produced.
    case object(PickleObject)
    /// A torch storage, named by a persistent id: its bytes are the archive entry `data/<key>`.
    case storage(TorchStorage)
    /// A tensor rebuilt by `torch._utils._rebuild_tensor_v2` (or `_rebuild_tensor`, `_rebuild_parameter`).
    case tensor(TorchTensor)

    /// The string, if this is one.
    public var stringValue: String? { if case .string(let s) = self { return s } else { return nil } }
    /// The integer, if this is one that fits 64 bits (`bool` is not an integer here).
    public var intValue: Int? { if case .int(let i) = self { return i } else { return nil } }
    /// The dict, if this is one.
    public var dictValue: PickleDict? { if case .dict(let d) = self { return d } else { return nil } }
    /// The tensor, if this is one.
    public var tensorValue: TorchTensor? { if case .tensor(let t) = self { return t } else { return nil } }
    /// The items of a tuple or a list.
    public var sequenceValue: [PickleValue]? {
        switch self {
        case .tuple(let items): return items
        case .list(let list): return list.items
        default: return nil
        }
    }

    /// A short description for error messages: the kind of value and, for opaque objects, what built them.
    public var summary: String {
        switch self {
        case .none: return "None"
        case .bool(let b): return b ? "True" : "False"
        case .int(let i): return "the integer \(i)"
        case .bigInt(let bytes): return "an integer of \(bytes.count) bytes"
        case .float(let f): return "the float \(f)"
        case .string(let s): return s.count <= 40 ? "the string \"\(s)\"" : "a string of \(s.count) characters"
        case .bytes(let b): return "\(b.count) bytes"
        case .tuple(let t): return "a tuple of \(t.count) items"
        case .list(let l): return "a list of \(l.items.count) items"
        case .dict(let d): return "a dict of \(d.count) items"
        case .global(let module, let name): return "a reference to \(module).\(name)"
        case .object(let o): return o.summary
        case .storage(let s): return "a bare storage (\(s.typeName), key \(s.key))"
        case .tensor(let t): return "a tensor \(t.shape)"
        }
    }
}

/// A mutable list (also used for sets), shared by every reference to it.
public final class PickleList {
    public internal(set) var items: [PickleValue]
    /// Nesting depth of the deepest item plus one; bounded by `Unpickler.Limits.maxDepth`.
    var depth: Int

    init(_ items: [PickleValue] = [], depth: Int = 1) { (self.items, self.depth) = (items, depth) }
}

/// A mutable dict that keeps insertion order (as Python dicts do), shared by every reference to it.
/// A key that is set twice keeps its first position and its last value.
public final class PickleDict {
    public private(set) var items: [(key: PickleValue, value: PickleValue)] = []
    private var index: [Key: Int] = [:]
    var depth = 1

    /// String and integer keys are looked up; other keys (tuples, floats, None) are only kept in order.
    private enum Key: Hashable {
        case string(String)
        case int(Int)
    }

    init() {}

    public var count: Int { items.count }

    /// The value of string key `key`.
    public subscript(key: String) -> PickleValue? {
        index[.string(key)].map { items[$0].value }
    }

    func set(_ key: PickleValue, _ value: PickleValue) {
        let hashable: Key?
        switch key {
        case .string(let s): hashable = .string(s)
        case .int(let i): hashable = .int(i)
        case .bool(let b): hashable = .int(b ? 1 : 0)
        default: hashable = nil
        }
        if let hashable, let position = index[hashable] {
            items[position].value = value
            return
        }
        if let hashable { index[hashable] = items.count }
        items.append((key, value))
    }
}

/// Something the pickle would have built by calling a class or function (`REDUCE`, `NEWOBJ`, `INST`, `OBJ`) that
/// this reader does not interpret. It records what would have been called, with what, and any `BUILD` state;
/// nothing is ever imported or executed.
public final class PickleObject {
    /// `module.name` of the callable (or a description when the callable was itself opaque).
    public let callee: String
    public let arguments: [PickleValue]
    /// The state a `BUILD` opcode gave it, if any (the last one wins).
    public internal(set) var state: PickleValue?
    /// Why a call this reader does interpret (a tensor rebuild) still gave an opaque value: the error to report
    /// if the model needs this value.
    public let problem: ConversionError.Code?
    public let problemMessage: String?
    var depth: Int

    init(
        callee: String, arguments: [PickleValue], depth: Int, problem: ConversionError.Code? = nil,
        message: String? = nil
    ) {
        (self.callee, self.arguments, self.depth) = (callee, arguments, depth)
        (self.problem, self.problemMessage) = (problem, message)
    }

    public var summary: String {
        if let problemMessage { return "an unusable \(callee) result (\(problemMessage))" }
        return "an object built by \(callee), which is never called"
    }
}

// MARK: - Torch storages and tensors

/// A storage a checkpoint refers to by persistent id `('storage', torch.<Type>Storage, key, location, numel)`.
public struct TorchStorage: Sendable, Equatable {
    /// The archive entry `data/<key>` holds its bytes.
    public var key: String
    /// The storage class name, e.g. `FloatStorage`.
    public var typeName: String
    /// The element type, when `typeName` has a safetensors equivalent.
    public var dtype: DType?
    /// Where the tensor lived when saved (`cpu`, `cuda:0`); it does not affect the bytes.
    public var location: String
    /// Number of elements the storage holds.
    public var count: Int

    /// Storage class names and their element types.
    public static let dtypes: [String: DType] = [
        "FloatStorage": .f32, "HalfStorage": .f16, "BFloat16Storage": .bf16, "DoubleStorage": .f64,
        "LongStorage": .i64, "IntStorage": .i32, "ByteStorage": .u8, "BoolStorage": .bool,
    ]
}

/// A strided view of a storage, as `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, …)` builds it.
/// Construction checks that every element it reaches lies inside the storage's declared element count.
public struct TorchTensor: Sendable, Equatable {
    public var storage: TorchStorage
    /// Offset of the first element, in elements.
    public var offset: Int
    public var shape: [Int]
    /// Strides in elements.
    public var stride: [Int]

    /// Number of elements of the tensor.
    public var count: Int { shape.reduce(1, *) }

    /// Whether the elements lie in row-major order, one after another (dimensions of size 1 may have any stride).
    public var isContiguous: Bool {
        var expected = 1
        for (size, step) in zip(shape, stride).reversed() {
            if size != 1 && step != expected { return false }
            expected *= size
        }
        return true
    }

    /// One past the highest element index the tensor reaches (`offset` when it is empty).
    public var extent: Int {
        if count == 0 { return offset }
        return offset + zip(shape, stride).reduce(0) { $0 + ($1.0 - 1) * $1.1 } + 1
    }
}
