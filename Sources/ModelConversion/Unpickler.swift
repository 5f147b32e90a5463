import Tensor

/// Reads a pickle (protocols 0–5 as `torch.save` and Python write them) into `PickleValue`s **without executing
/// anything**: a `GLOBAL` is only a name, and `REDUCE`/`NEWOBJ`/`BUILD` on a name it does not know give an opaque
/// `.object`. Only these callables are interpreted, each as the pure data constructor it is:
///
/// - `torch._utils._rebuild_tensor_v2` / `_rebuild_tensor` over a persistent storage → `.tensor` (bounds-checked
///   against the storage's declared size; a malformed call gives an opaque value carrying the problem);
/// - `torch._utils._rebuild_parameter` / `_rebuild_parameter_with_state` → the tensor they wrap;
/// - `collections.OrderedDict` → `.dict` (a `BUILD` on a dict sets Python attributes such as `_metadata`, not
///   items, and is ignored);
/// - `_codecs.encode(text, "latin1")` → `.bytes` (how protocol 2 stores `bytes` from Python 3).
///
/// Persistent ids `('storage', torch.<Type>Storage, key, location, numel)` become `.storage`.
///
/// Every length is checked against the bytes left, and memo size, stack size and nesting depth are bounded, so
/// a hostile file gives an error, never a crash or runaway memory.
public struct Unpickler {
    /// Bounds on what a pickle may ask for.
    public struct Limits: Sendable {
        /// Largest pickle accepted (`data.pkl` of the real 1.2B-parameter UNet is about 100 KB).
        public var maxBytes = 256 << 20
        /// Most values on the stack at once.
        public var maxStack = 1 << 22
        /// Most memo entries.
        public var maxMemo = 1 << 22
        /// Deepest nesting of containers (a checkpoint nests about 6 deep).
        public var maxDepth = 200
        /// Most tensor dimensions.
        public var maxRank = 64

        public init() {}
    }

    /// One value on the stack or in the memo, with the nesting depth of immutable values (mutable containers
    /// keep theirs, since it grows as items are added).
    private struct Slot {
        var value: PickleValue
        var depth: Int
    }

    private let bytes: [UInt8]
    private let file: String?
    private let limits: Limits
    private var position = 0
    private var stack: [Slot] = []
    private var marks: [Int] = []
    private var memo: [Int: Slot] = [:]
    private var opcodeStart = 0

    /// Parses `bytes`, a whole pickle; `file` names it in errors.
    public static func load(
        _ bytes: [UInt8], file: String? = nil, limits: Limits = Limits()
    )
        throws(ConversionError) -> PickleValue
    {
        guard bytes.count <= limits.maxBytes else {
            throw ConversionError(
                .limitExceeded, "pickle of \(bytes.count) bytes exceeds the \(limits.maxBytes)-byte limit", file: file)
        }
        var unpickler = Unpickler(bytes: bytes, file: file, limits: limits)
        return try unpickler.run()
    }

    private init(bytes: [UInt8], file: String?, limits: Limits) {
        (self.bytes, self.file, self.limits) = (bytes, file, limits)
    }

    // MARK: - Errors and input

    private func error(_ code: ConversionError.Code, _ message: String) -> ConversionError {
        ConversionError(code, "pickle byte \(opcodeStart): \(message)", file: file)
    }

    private mutating func take(_ count: Int) throws(ConversionError) -> ArraySlice<UInt8> {
        guard count >= 0, count <= bytes.count - position else {
            throw error(
                .truncated, "needs \(count) bytes but only \(bytes.count - position) remain (truncated or corrupt)")
        }
        defer { position += count }
        return bytes[position..<(position + count)]
    }

    private mutating func byte() throws(ConversionError) -> UInt8 { try take(1).first! }

    private mutating func littleEndian(_ count: Int) throws(ConversionError) -> UInt64 {
        var value: UInt64 = 0
        for (i, b) in try take(count).enumerated() { value |= UInt64(b) << (8 * UInt64(i)) }
        return value
    }

    /// A length field: non-negative and no larger than the bytes left, so nothing is allocated for a lie.
    private mutating func length(_ width: Int) throws(ConversionError) -> Int {
        let raw = try littleEndian(width)
        guard raw <= UInt64(bytes.count - position) else {
            throw error(
                .truncated, "declares \(raw) bytes but only \(bytes.count - position) remain (truncated or corrupt)")
        }
        return Int(raw)
    }

    /// A text line (protocol 0 arguments, `GLOBAL` names), without its newline.
    private mutating func line() throws(ConversionError) -> String {
        let window = bytes[position..<min(bytes.count, position + 4097)]
        guard let end = window.firstIndex(of: 0x0A) else {
            if window.count == 4097 { throw error(.limitExceeded, "a text argument is longer than 4096 bytes") }
            throw error(.truncated, "a text argument has no terminating newline")
        }
        let text = bytes[position..<end]
        position = end + 1
        return try utf8(text)
    }

    private func utf8(_ slice: ArraySlice<UInt8>) throws(ConversionError) -> String {
        guard let s = String(validating: slice, as: UTF8.self) else {
            throw error(.malformedPickle, "a string is not valid UTF-8")
        }
        return s
    }

    // MARK: - Stack

    private func depth(of slot: Slot) -> Int {
        switch slot.value {
        case .list(let l): return l.depth
        case .dict(let d): return d.depth
        case .object(let o): return o.depth
        default: return slot.depth
        }
    }

    private func containerDepth(_ items: some Sequence<Slot>) throws(ConversionError) -> Int {
        let d = 1 + items.reduce(0) { max($0, depth(of: $1)) }
        guard d <= limits.maxDepth else {
            throw error(.limitExceeded, "values nest more than \(limits.maxDepth) deep")
        }
        return d
    }

    private mutating func push(_ value: PickleValue, depth: Int = 0) throws(ConversionError) {
        guard stack.count < limits.maxStack else {
            throw error(.limitExceeded, "more than \(limits.maxStack) values on the stack")
        }
        stack.append(Slot(value: value, depth: depth))
    }

    private mutating func pop() throws(ConversionError) -> Slot {
        guard let top = stack.popLast() else { throw error(.malformedPickle, "stack underflow") }
        if let mark = marks.last, stack.count < mark {
            throw error(.malformedPickle, "an opcode reached below the current MARK")
        }
        return top
    }

    private func top() throws(ConversionError) -> Slot {
        guard let top = stack.last else { throw error(.malformedPickle, "stack underflow") }
        return top
    }

    /// Pops everything above the last MARK, and the mark.
    private mutating func popMark() throws(ConversionError) -> [Slot] {
        guard let mark = marks.popLast() else { throw error(.malformedPickle, "no MARK to pop to") }
        let items = Array(stack[mark...])
        stack.removeSubrange(mark...)
        return items
    }

    private mutating func memoize(_ index: Int) throws(ConversionError) {
        let slot = try top()
        guard memo[index] != nil || memo.count < limits.maxMemo else {
            throw error(.limitExceeded, "more than \(limits.maxMemo) memo entries")
        }
        memo[index] = slot
    }

    private mutating func recall(_ index: Int) throws(ConversionError) {
        guard let slot = memo[index] else { throw error(.malformedPickle, "memo entry \(index) was never stored") }
        try push(slot.value, depth: slot.depth)
    }

    private mutating func pushTuple(_ items: [Slot]) throws(ConversionError) {
        try push(.tuple(items.map(\.value)), depth: try containerDepth(items))
    }

    // MARK: - The loop

    private mutating func run() throws(ConversionError) -> PickleValue {
        while true {
            opcodeStart = position
            let op = try byte()
            switch op {
            case 0x80:  // PROTO
                let version = try byte()
                guard version <= 5 else { throw error(.unsupportedPickle, "pickle protocol \(version) (at most 5)") }
            case 0x95:  // FRAME: a hint for buffered readers; the whole pickle is in memory already.
                _ = try length(8)
            case 0x2E:  // STOP
                let result = try pop()
                return result.value
            case 0x28:  // MARK
                guard marks.count < limits.maxDepth else {
                    throw error(.limitExceeded, "MARKs nest more than \(limits.maxDepth) deep")
                }
                marks.append(stack.count)
            case 0x30:  // POP
                if marks.last == stack.count {
                    marks.removeLast()
                } else {
                    _ = try pop()
                }
            case 0x31:  // POP_MARK
                _ = try popMark()
            case 0x32:  // DUP
                let slot = try top()
                try push(slot.value, depth: slot.depth)

            // Scalars
            case 0x4E: try push(.none)  // NONE
            case 0x88: try push(.bool(true))  // NEWTRUE
            case 0x89: try push(.bool(false))  // NEWFALSE
            case 0x4B: try push(.int(Int(try byte())))  // BININT1
            case 0x4D: try push(.int(Int(try littleEndian(2))))  // BININT2
            case 0x4A: try push(.int(Int(Int32(truncatingIfNeeded: try littleEndian(4)))))  // BININT
            case 0x8A: try pushLong(try length(1))  // LONG1
            case 0x8B: try pushLong(try length(4))  // LONG4
            case 0x47:  // BINFLOAT, big-endian
                var bits: UInt64 = 0
                for b in try take(8) { bits = bits << 8 | UInt64(b) }
                try push(.float(Double(bitPattern: bits)))
            case 0x49:  // INT (text; "01"/"00" are True/False)
                let text = try line()
                if text == "01" || text == "00" {
                    try push(.bool(text == "01"))
                } else {
                    guard let i = Int(text) else { throw error(.malformedPickle, "INT argument \"\(text)\"") }
                    try push(.int(i))
                }
            case 0x4C:  // LONG (text, with an L suffix)
                let text = try line()
                guard let i = Int(text.hasSuffix("L") ? String(text.dropLast()) : text) else {
                    throw error(.unsupportedPickle, "LONG argument \"\(text.prefix(40))\" beyond 64 bits")
                }
                try push(.int(i))
            case 0x46:  // FLOAT (text)
                let text = try line()
                guard let f = Double(text) else { throw error(.malformedPickle, "FLOAT argument \"\(text)\"") }
                try push(.float(f))

            // Strings and bytes
            case 0x58: try push(.string(try utf8(try take(try length(4)))))  // BINUNICODE
            case 0x8C: try push(.string(try utf8(try take(try length(1)))))  // SHORT_BINUNICODE
            case 0x8D: try push(.string(try utf8(try take(try length(8)))))  // BINUNICODE8
            case 0x42: try push(.bytes(Array(try take(try length(4)))))  // BINBYTES
            case 0x43: try push(.bytes(Array(try take(try length(1)))))  // SHORT_BINBYTES
            case 0x8E, 0x96: try push(.bytes(Array(try take(try length(8)))))  // BINBYTES8, BYTEARRAY8
            case 0x54, 0x55:  // BINSTRING, SHORT_BINSTRING: Python 2 str; text when it is UTF-8
                let raw = try take(try length(op == 0x54 ? 4 : 1))
                if let s = String(validating: raw, as: UTF8.self) {
                    try push(.string(s))
                } else {
                    try push(.bytes(Array(raw)))
                }

            // Containers
            case 0x29: try push(.tuple([]))  // EMPTY_TUPLE
            case 0x85, 0x86, 0x87:  // TUPLE1, TUPLE2, TUPLE3
                var items: [Slot] = []
                for _ in 0...(Int(op) - 0x85) { items.insert(try pop(), at: 0) }
                try pushTuple(items)
            case 0x74: try pushTuple(try popMark())  // TUPLE
            case 0x5D: try push(.list(PickleList()))  // EMPTY_LIST
            case 0x8F: try push(.list(PickleList()))  // EMPTY_SET
            case 0x6C:  // LIST
                let items = try popMark()
                try push(.list(PickleList(items.map(\.value), depth: try containerDepth(items))))
            case 0x91:  // FROZENSET
                try pushTuple(try popMark())
            case 0x7D: try push(.dict(PickleDict()))  // EMPTY_DICT
            case 0x64:  // DICT
                let items = try popMark()
                let dict = PickleDict()
                try fill(dict, with: items)
                try push(.dict(dict))
            case 0x61:  // APPEND
                let item = try pop()
                try append([item], to: try top())
            case 0x65, 0x90:  // APPENDS, ADDITEMS
                let items = try popMark()
                try append(items, to: try top())
            case 0x73:  // SETITEM
                let value = try pop()
                let key = try pop()
                try setItems([key, value], in: try top())
            case 0x75:  // SETITEMS
                let items = try popMark()
                try setItems(items, in: try top())

            // Memo
            case 0x71: try memoize(Int(try byte()))  // BINPUT
            case 0x72: try memoize(Int(try littleEndian(4)))  // LONG_BINPUT
            case 0x94: try memoize(memo.count)  // MEMOIZE
            case 0x70:  // PUT (text)
                let text = try line()
                guard let i = Int(text), i >= 0 else { throw error(.malformedPickle, "PUT argument \"\(text)\"") }
                try memoize(i)
            case 0x68: try recall(Int(try byte()))  // BINGET
            case 0x6A: try recall(Int(try littleEndian(4)))  // LONG_BINGET
            case 0x67:  // GET (text)
                let text = try line()
                guard let i = Int(text) else { throw error(.malformedPickle, "GET argument \"\(text)\"") }
                try recall(i)

            // Names, calls and objects: never looked up, never called.
            case 0x63:  // GLOBAL
                let module = try line()
                let name = try line()
                try push(.global(module: module, name: name))
            case 0x93:  // STACK_GLOBAL
                let name = try pop()
                let module = try pop()
                guard let m = module.value.stringValue, let n = name.value.stringValue else {
                    throw error(.malformedPickle, "STACK_GLOBAL needs two strings")
                }
                try push(.global(module: m, name: n))
            case 0x52:  // REDUCE
                let args = try pop()
                let callable = try pop()
                guard let arguments = args.value.sequenceValue else {
                    throw error(.malformedPickle, "REDUCE arguments are \(args.value.summary), not a tuple")
                }
                try push(try call(callable.value, arguments, argumentDepth: depth(of: args)))
            case 0x81:  // NEWOBJ
                let args = try pop()
                let cls = try pop()
                guard let arguments = args.value.sequenceValue else {
                    throw error(.malformedPickle, "NEWOBJ arguments are \(args.value.summary), not a tuple")
                }
                try push(try call(cls.value, arguments, argumentDepth: depth(of: args)))
            case 0x92:  // NEWOBJ_EX (keyword arguments are kept with the opaque object)
                let kwargs = try pop()
                let args = try pop()
                let cls = try pop()
                guard let arguments = args.value.sequenceValue else {
                    throw error(.malformedPickle, "NEWOBJ_EX arguments are \(args.value.summary), not a tuple")
                }
                let d = max(depth(of: args), depth(of: kwargs))
                try push(try call(cls.value, arguments + [kwargs.value], argumentDepth: d))
            case 0x69:  // INST: class named inline, arguments above the mark
                let module = try line()
                let name = try line()
                let items = try popMark()
                try push(
                    try call(
                        .global(module: module, name: name), items.map(\.value), argumentDepth: containerDepth(items))
                )
            case 0x6F:  // OBJ: class and arguments above the mark
                var items = try popMark()
                guard !items.isEmpty else { throw error(.malformedPickle, "OBJ with nothing above the MARK") }
                let cls = items.removeFirst()
                try push(try call(cls.value, items.map(\.value), argumentDepth: containerDepth(items)))
            case 0x62:  // BUILD
                let state = try pop()
                try build(try top(), state: state)
            case 0x51:  // BINPERSID
                let pid = try pop()
                try push(persistent(pid.value), depth: depth(of: pid))
            case 0x50:  // PERSID (text id)
                try push(persistent(.string(try line())))
            case 0x82, 0x83, 0x84:
                throw error(.unsupportedPickle, "extension-registry opcode EXT (0x\(String(op, radix: 16)))")
            case 0x97, 0x98:
                throw error(.unsupportedPickle, "out-of-band buffer opcode (0x\(String(op, radix: 16)))")
            case 0x53, 0x56:
                throw error(.unsupportedPickle, "protocol-0 quoted string opcode (0x\(String(op, radix: 16)))")
            default:
                throw error(.unsupportedPickle, "unknown opcode 0x\(String(op, radix: 16))")
            }
        }
    }

    private mutating func pushLong(_ count: Int) throws(ConversionError) {
        let raw = Array(try take(count))
        if count == 0 { return try push(.int(0)) }
        if count > 8 { return try push(.bigInt(raw)) }
        var value: UInt64 = 0
        for (i, b) in raw.enumerated() { value |= UInt64(b) << (8 * UInt64(i)) }
        if count < 8, raw[count - 1] & 0x80 != 0 { value |= ~0 << (8 * UInt64(count)) }  // sign-extend
        try push(.int(Int(Int64(bitPattern: value))))
    }

    // MARK: - Container mutation

    private func append(_ items: [Slot], to target: Slot) throws(ConversionError) {
        guard case .list(let list) = target.value else {
            throw error(.malformedPickle, "APPEND to \(target.value.summary), not a list")
        }
        list.depth = max(list.depth, try containerDepth(items))
        list.items += items.map(\.value)
    }

    private func setItems(_ items: [Slot], in target: Slot) throws(ConversionError) {
        guard case .dict(let dict) = target.value else {
            throw error(.malformedPickle, "SETITEM on \(target.value.summary), not a dict")
        }
        try fill(dict, with: items)
    }

    private func fill(_ dict: PickleDict, with items: [Slot]) throws(ConversionError) {
        guard items.count % 2 == 0 else { throw error(.malformedPickle, "an odd number of items for a dict") }
        dict.depth = max(dict.depth, try containerDepth(items))
        var i = 0
        while i < items.count {
            dict.set(items[i].value, items[i + 1].value)
            i += 2
        }
    }

    private func build(_ target: Slot, state: Slot) throws(ConversionError) {
        switch target.value {
        case .object(let object):
            object.depth = max(object.depth, try containerDepth([state]))
            object.state = state.value
        default:
            // A BUILD on a dict sets attributes (`OrderedDict._metadata` of a state dict), on a tensor its Python
            // state: neither is part of the data, and nothing is called to apply them.
            _ = try containerDepth([state])
        }
    }

    // MARK: - Calls this reader interprets

    private func call(
        _ callable: PickleValue, _ args: [PickleValue], argumentDepth: Int
    ) throws(ConversionError)
        -> PickleValue
    {
        let depth = argumentDepth + 1
        guard depth <= limits.maxDepth else {
            throw error(.limitExceeded, "values nest more than \(limits.maxDepth) deep")
        }
        let callee: String
        switch callable {
        case .global(let module, let name):
            callee = "\(module).\(name)"
            switch (module, name) {
            case ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor"):
                return rebuildTensor(args, callee: callee, depth: depth)
            case ("torch._utils", "_rebuild_parameter"), ("torch._utils", "_rebuild_parameter_with_state"):
                if case .tensor = args.first { return args[0] }
            case ("collections", "OrderedDict"):
                if args.isEmpty { return .dict(PickleDict()) }
            case ("_codecs", "encode"):
                if args.count == 2, let text = args[0].stringValue,
                    let encoding = args[1].stringValue, encoding == "latin1" || encoding == "latin-1"
                {
                    let scalars = text.unicodeScalars
                    if scalars.allSatisfy({ $0.value < 256 }) { return .bytes(scalars.map { UInt8($0.value) }) }
                }
            default: break
            }
        case .object(let object):
            callee = "the result of \(object.callee)"
        default:
            throw error(.malformedPickle, "calls \(callable.summary), which is not callable")
        }
        return .object(PickleObject(callee: callee, arguments: args, depth: depth))
    }

    /// `('storage', torch.<Type>Storage, key, location, numel)` → `.storage`; any other id stays opaque.
    private func persistent(_ pid: PickleValue) -> PickleValue {
        let opaque = PickleValue.object(PickleObject(callee: "persistent_load", arguments: [pid], depth: 2))
        guard case .tuple(let items) = pid, items.count == 5, items[0].stringValue == "storage",
            case .global(_, let typeName) = items[1], let key = items[2].stringValue,
            let location = items[3].stringValue, let count = items[4].intValue, count >= 0
        else { return opaque }
        return .storage(
            TorchStorage(
                key: key, typeName: typeName, dtype: TorchStorage.dtypes[typeName], location: location, count: count))
    }

    /// `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])`.
    private func rebuildTensor(_ args: [PickleValue], callee: String, depth: Int) -> PickleValue {
        func unusable(_ code: ConversionError.Code, _ message: String) -> PickleValue {
            .object(PickleObject(callee: callee, arguments: [], depth: depth, problem: code, message: message))
        }
        guard args.count >= 4 else { return unusable(.malformedPickle, "\(args.count) arguments, expected 6") }
        guard case .storage(let storage) = args[0] else {
            return unusable(.notATensor, "its storage is \(args[0].summary)")
        }
        guard let offset = args[1].intValue, offset >= 0 else {
            return unusable(.malformedPickle, "storage offset is \(args[1].summary)")
        }
        guard let size = args[2].sequenceValue?.compactMap(\.intValue), size.count == args[2].sequenceValue?.count,
            size.allSatisfy({ $0 >= 0 }), size.count <= limits.maxRank
        else { return unusable(.malformedPickle, "size is not a tuple of at most \(limits.maxRank) naturals") }
        guard let stride = args[3].sequenceValue?.compactMap(\.intValue), stride.count == size.count,
            args[3].sequenceValue?.count == size.count, stride.allSatisfy({ $0 >= 0 })
        else { return unusable(.malformedPickle, "stride is not a tuple of \(size.count) naturals") }
        // Elements and the highest index reached, without overflow.
        var count = 1
        var reach = offset
        for (n, s) in zip(size, stride) {
            let (c, o1) = count.multipliedReportingOverflow(by: n)
            let (span, o2) = max(n - 1, 0).multipliedReportingOverflow(by: s)
            let (r, o3) = reach.addingReportingOverflow(span)
            guard !o1, !o2, !o3 else { return unusable(.limitExceeded, "size \(size) overflows") }
            (count, reach) = (c, r)
        }
        guard count <= storage.count else {
            return unusable(
                .storageOutOfRange,
                "its \(count) elements outnumber the storage's \(storage.count): a broadcast (stride-0) view, "
                    + "which no weight is")
        }
        guard count == 0 || reach < storage.count else {
            return unusable(
                .storageOutOfRange,
                "size \(size), stride \(stride) at offset \(offset) reach element \(reach) of a storage of \(storage.count)"
            )
        }
        return .tensor(TorchTensor(storage: storage, offset: offset, shape: size, stride: stride))
    }
}
