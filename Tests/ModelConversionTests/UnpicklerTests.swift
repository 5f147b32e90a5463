import Foundation
import TestSupport
import Testing

@testable import ModelConversion

/// The unpickler on small pickles. The byte strings marked "CPython" were written by CPython 3.11's `pickle.dumps`
/// for the object in the comment (so they test against the reference writer, not against our reading of it);
/// the others are assembled opcode by opcode.
@Suite struct UnpicklerTests {
    func load(_ bytes: [UInt8]) throws -> PickleValue { try Unpickler.load(bytes, file: "test.pkl") }

    func expectError(_ bytes: [UInt8], _ code: ConversionError.Code, limits: Unpickler.Limits = Unpickler.Limits()) {
        do {
            _ = try Unpickler.load(bytes, file: "test.pkl", limits: limits)
            Issue.record("expected a \(code) error")
        } catch {
            #expect(error.code == code, "\(error)")
            #expect(error.file == "test.pkl")
        }
    }

    /// CPython, protocol 2:
    /// `{'a': [1, -2, 2.5, None, True, False], 'b': ('x', 'é€'), 'c': 300, 'd': -70000, 'e': 2**40, 'f': 2**70}`.
    @Test func protocol2PlainData() throws {
        let bytes: [UInt8] = [
            0x80, 0x02, 0x7D, 0x71, 0x00, 0x28, 0x58, 0x01, 0x00, 0x00, 0x00, 0x61, 0x71, 0x01, 0x5D, 0x71, 0x02, 0x28,
            0x4B, 0x01, 0x4A, 0xFE, 0xFF, 0xFF, 0xFF, 0x47, 0x40, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x4E, 0x88,
            0x89, 0x65, 0x58, 0x01, 0x00, 0x00, 0x00, 0x62, 0x71, 0x03, 0x58, 0x01, 0x00, 0x00, 0x00, 0x78, 0x71, 0x04,
            0x58, 0x05, 0x00, 0x00, 0x00, 0xC3, 0xA9, 0xE2, 0x82, 0xAC, 0x71, 0x05, 0x86, 0x71, 0x06, 0x58, 0x01, 0x00,
            0x00, 0x00, 0x63, 0x71, 0x07, 0x4D, 0x2C, 0x01, 0x58, 0x01, 0x00, 0x00, 0x00, 0x64, 0x71, 0x08, 0x4A, 0x90,
            0xEE, 0xFE, 0xFF, 0x58, 0x01, 0x00, 0x00, 0x00, 0x65, 0x71, 0x09, 0x8A, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x01, 0x58, 0x01, 0x00, 0x00, 0x00, 0x66, 0x71, 0x0A, 0x8A, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x40, 0x75, 0x2E,
        ]
        let dict = try #require(try load(bytes).dictValue)
        #expect(dict.items.compactMap { $0.key.stringValue } == ["a", "b", "c", "d", "e", "f"])
        let a = try #require(dict["a"]?.sequenceValue)
        #expect(a.count == 6)
        #expect(a[0].intValue == 1)
        #expect(a[1].intValue == -2)
        if case .float(let f) = a[2] { #expect(f == 2.5) } else { Issue.record("a[2] is \(a[2].summary)") }
        if case .none = a[3] {} else { Issue.record("a[3] is \(a[3].summary)") }
        if case .bool(true) = a[4] {} else { Issue.record("a[4] is \(a[4].summary)") }
        if case .bool(false) = a[5] {} else { Issue.record("a[5] is \(a[5].summary)") }
        guard case .tuple(let b)? = dict["b"] else {
            Issue.record("b is not a tuple")
            return
        }
        #expect(b.map(\.stringValue) == ["x", "é€"])
        #expect(dict["c"]?.intValue == 300)
        #expect(dict["d"]?.intValue == -70000)
        #expect(dict["e"]?.intValue == 1 << 40)
        guard case .bigInt(let big)? = dict["f"] else {
            Issue.record("f is not a big integer")
            return
        }
        #expect(big == [0, 0, 0, 0, 0, 0, 0, 0, 0x40])  // 2**70, little-endian
    }

    /// CPython, protocol 4 (FRAME, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL):
    /// `{'k': [1, 2], 'long_name': 'ünïcode', 'g': collections.OrderedDict}` — the class is referenced, not called.
    @Test func protocol4FramesAndStackGlobal() throws {
        let bytes: [UInt8] = [
            0x80, 0x04, 0x95, 0x4B, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x7D, 0x94, 0x28, 0x8C, 0x01, 0x6B, 0x94,
            0x5D, 0x94, 0x28, 0x4B, 0x01, 0x4B, 0x02, 0x65, 0x8C, 0x09, 0x6C, 0x6F, 0x6E, 0x67, 0x5F, 0x6E, 0x61, 0x6D,
            0x65, 0x94, 0x8C, 0x09, 0xC3, 0xBC, 0x6E, 0xC3, 0xAF, 0x63, 0x6F, 0x64, 0x65, 0x94, 0x8C, 0x01, 0x67, 0x94,
            0x8C, 0x0B, 0x63, 0x6F, 0x6C, 0x6C, 0x65, 0x63, 0x74, 0x69, 0x6F, 0x6E, 0x73, 0x94, 0x8C, 0x0B, 0x4F, 0x72,
            0x64, 0x65, 0x72, 0x65, 0x64, 0x44, 0x69, 0x63, 0x74, 0x94, 0x93, 0x94, 0x75, 0x2E,
        ]
        let dict = try #require(try load(bytes).dictValue)
        #expect(dict["k"]?.sequenceValue?.map(\.intValue) == [1, 2])
        #expect(dict["long_name"]?.stringValue == "ünïcode")
        guard case .global(let module, let name)? = dict["g"] else {
            Issue.record("g is not a global")
            return
        }
        #expect(module == "collections" && name == "OrderedDict")
    }

    /// CPython, protocol 5: `l = []; d = {'x': l, 'y': l}; l.append(7)` — both keys see the same list, filled
    /// after it was memoized.
    @Test func memoSharesMutableContainers() throws {
        let bytes: [UInt8] = [
            0x80, 0x05, 0x95, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x7D, 0x94, 0x28, 0x8C, 0x01, 0x78, 0x94,
            0x5D, 0x94, 0x4B, 0x07, 0x61, 0x8C, 0x01, 0x79, 0x94, 0x68, 0x02, 0x75, 0x2E,
        ]
        let dict = try #require(try load(bytes).dictValue)
        guard case .list(let x)? = dict["x"], case .list(let y)? = dict["y"] else {
            Issue.record("x, y are not lists")
            return
        }
        #expect(x === y)
        #expect(x.items.map(\.intValue) == [7])
    }

    /// CPython, protocol 2: `{'hparams': argparse.Namespace(lr=0.5, name='vae')}` (NEWOBJ then BUILD), as in
    /// vae.ckpt. The class is never looked up: the value is an opaque object recording its state.
    @Test func unknownClassStaysOpaque() throws {
        let bytes: [UInt8] = [
            0x80, 0x02, 0x7D, 0x71, 0x00, 0x58, 0x07, 0x00, 0x00, 0x00, 0x68, 0x70, 0x61, 0x72, 0x61, 0x6D, 0x73, 0x71,
            0x01, 0x63, 0x61, 0x72, 0x67, 0x70, 0x61, 0x72, 0x73, 0x65, 0x0A, 0x4E, 0x61, 0x6D, 0x65, 0x73, 0x70, 0x61,
            0x63, 0x65, 0x0A, 0x71, 0x02, 0x29, 0x81, 0x71, 0x03, 0x7D, 0x71, 0x04, 0x28, 0x58, 0x02, 0x00, 0x00, 0x00,
            0x6C, 0x72, 0x71, 0x05, 0x47, 0x3F, 0xE0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x58, 0x04, 0x00, 0x00, 0x00,
            0x6E, 0x61, 0x6D, 0x65, 0x71, 0x06, 0x58, 0x03, 0x00, 0x00, 0x00, 0x76, 0x61, 0x65, 0x71, 0x07, 0x75, 0x62,
            0x73, 0x2E,
        ]
        let dict = try #require(try load(bytes).dictValue)
        guard case .object(let namespace)? = dict["hparams"] else {
            Issue.record("hparams is not opaque")
            return
        }
        #expect(namespace.callee == "argparse.Namespace")
        #expect(namespace.state?.dictValue?["name"]?.stringValue == "vae")
        #expect(namespace.problem == nil)
    }

    /// CPython, protocol 2: an `OrderedDict([('w', 1)])` with a `_metadata` attribute, as `state_dict()` returns:
    /// the BUILD sets an attribute, not an item.
    @Test func orderedDictMetadataIsNotAnItem() throws {
        let bytes: [UInt8] = [
            0x80, 0x02, 0x63, 0x63, 0x6F, 0x6C, 0x6C, 0x65, 0x63, 0x74, 0x69, 0x6F, 0x6E, 0x73, 0x0A, 0x4F, 0x72, 0x64,
            0x65, 0x72, 0x65, 0x64, 0x44, 0x69, 0x63, 0x74, 0x0A, 0x71, 0x00, 0x29, 0x52, 0x71, 0x01, 0x58, 0x01, 0x00,
            0x00, 0x00, 0x77, 0x71, 0x02, 0x4B, 0x01, 0x73, 0x7D, 0x71, 0x03, 0x58, 0x09, 0x00, 0x00, 0x00, 0x5F, 0x6D,
            0x65, 0x74, 0x61, 0x64, 0x61, 0x74, 0x61, 0x71, 0x04, 0x68, 0x00, 0x29, 0x52, 0x71, 0x05, 0x58, 0x00, 0x00,
            0x00, 0x00, 0x71, 0x06, 0x7D, 0x71, 0x07, 0x58, 0x07, 0x00, 0x00, 0x00, 0x76, 0x65, 0x72, 0x73, 0x69, 0x6F,
            0x6E, 0x71, 0x08, 0x4B, 0x01, 0x73, 0x73, 0x73, 0x62, 0x2E,
        ]
        let dict = try #require(try load(bytes).dictValue)
        #expect(dict.count == 1)
        #expect(dict["w"]?.intValue == 1)
    }

    /// `os.system("touch <file>")` via GLOBAL + REDUCE: recorded, never run.
    @Test func reduceNeverCalls() throws {
        let marker = NSTemporaryDirectory() + "kd-unpickler-\(getpid())-pwned"
        var p = PickleBuilder()
        p.global("os", "system")
        p.mark()
        p.string("touch \(marker)")
        p.tuple()
        p.reduce()
        p.stop()
        guard case .object(let object) = try load(p.bytes) else {
            Issue.record("not an opaque object")
            return
        }
        #expect(object.callee == "os.system")
        #expect(object.arguments.first?.stringValue == "touch \(marker)")
        #expect(!FileManager.default.fileExists(atPath: marker))
    }

    @Test func rebuildsTensorsOverStorages() throws {
        var p = PickleBuilder()
        p.tensor(storage: "3", type: "HalfStorage", numel: 12, offset: 2, size: [2, 3], stride: [1, 2])
        p.stop()
        let tensor = try #require(try load(p.bytes).tensorValue)
        #expect(tensor.storage.key == "3")
        #expect(tensor.storage.dtype == .f16)
        #expect(tensor.storage.count == 12)
        #expect(tensor.offset == 2)
        #expect(tensor.shape == [2, 3])
        #expect(tensor.stride == [1, 2])
        #expect(!tensor.isContiguous)
    }

    @Test func tensorOutsideItsStorageIsUnusable() throws {
        var p = PickleBuilder()
        p.tensor(storage: "0", numel: 4, offset: 1, size: [2, 2], stride: [2, 1])  // reaches element 4 of 0…3
        p.stop()
        guard case .object(let object) = try load(p.bytes) else {
            Issue.record("not an opaque object")
            return
        }
        #expect(object.problem == .storageOutOfRange)
    }

    @Test func absurdSizesAreRefused() throws {
        var p = PickleBuilder()
        p.tensor(storage: "0", numel: 4, size: [1 << 40, 1 << 40], stride: [1 << 40, 1])
        p.stop()
        guard case .object(let object) = try load(p.bytes) else {
            Issue.record("not an opaque object")
            return
        }
        #expect(object.problem == .limitExceeded)

        // A stride-0 view claiming 2^40 elements of a 4-element storage: refused, not streamed.
        var broadcast = PickleBuilder()
        broadcast.tensor(storage: "0", numel: 4, size: [1 << 20, 1 << 20], stride: [0, 0])
        broadcast.stop()
        guard case .object(let view) = try load(broadcast.bytes) else {
            Issue.record("not an opaque object")
            return
        }
        #expect(view.problem == .storageOutOfRange)

        // A string that claims 2 GB in a 20-byte pickle.
        expectError([0x80, 0x02, 0x58, 0xFF, 0xFF, 0xFF, 0x7F, 0x61, 0x62, 0x2E], .truncated)
        // BINUNICODE8 claiming 2^63 bytes.
        expectError([0x80, 0x04, 0x8D, 0, 0, 0, 0, 0, 0, 0, 0x80, 0x2E], .truncated)
        // A FRAME longer than the pickle.
        expectError([0x80, 0x04, 0x95, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0, 0x4E, 0x2E], .truncated)
    }

    @Test func deepNestingIsRefused() {
        // 10,000 nested one-element tuples: None, then TUPLE1 × 10,000.
        let bytes: [UInt8] = [0x80, 0x02, 0x4E] + [UInt8](repeating: 0x85, count: 10_000) + [0x2E]
        expectError(bytes, .limitExceeded)
        // 10,000 nested empty lists via MARK … LIST.
        expectError([0x80, 0x02] + [UInt8](repeating: 0x28, count: 10_000) + [0x2E], .limitExceeded)
    }

    @Test func limitsAreHonoured() {
        var limits = Unpickler.Limits()
        limits.maxMemo = 2
        // EMPTY_LIST; BINPUT 0; BINPUT 1; BINPUT 2 → a third memo entry.
        expectError([0x80, 0x02, 0x5D, 0x71, 0, 0x71, 1, 0x71, 2, 0x2E], .limitExceeded, limits: limits)
        limits = Unpickler.Limits()
        limits.maxStack = 3
        expectError([0x80, 0x02, 0x4E, 0x4E, 0x4E, 0x4E, 0x2E], .limitExceeded, limits: limits)
        limits = Unpickler.Limits()
        limits.maxBytes = 8
        expectError([0x80, 0x02, 0x4E, 0x4E, 0x4E, 0x4E, 0x30, 0x30, 0x30, 0x2E], .limitExceeded, limits: limits)
    }

    @Test func malformedPicklesGiveErrors() {
        expectError([0x80, 0x02, 0x2E], .malformedPickle)  // STOP on an empty stack
        expectError([0x80, 0x02, 0x68, 0x05, 0x2E], .malformedPickle)  // BINGET of a memo never stored
        expectError([0x80, 0x02, 0x4E, 0x61, 0x2E], .malformedPickle)  // APPEND with nothing below
        expectError([0x80, 0x02, 0x4B, 0x01, 0x4B, 0x02, 0x61, 0x2E], .malformedPickle)  // APPEND to an int
        expectError([0x80, 0x02, 0x75, 0x2E], .malformedPickle)  // SETITEMS without a MARK
        expectError([0x80, 0x02, 0x4E, 0x29, 0x52, 0x2E], .malformedPickle)  // REDUCE on None
        expectError([0x80, 0x02, 0x58, 0x02, 0, 0, 0, 0xC3, 0x28, 0x2E], .malformedPickle)  // invalid UTF-8
        expectError([0x80, 0x02, 0x4E], .truncated)  // no STOP
        expectError([0x80, 0x02, 0x4A, 0x01], .truncated)  // BININT cut short
        expectError([0x80, 0x02, 0x63, 0x6F, 0x73], .truncated)  // GLOBAL without newline
        // GLOBAL with a 5,000-byte module name.
        expectError(
            [0x80, 0x02, 0x63] + [UInt8](repeating: 0x61, count: 5000) + [0x0A, 0x62, 0x0A, 0x2E], .limitExceeded)
        expectError([0x80, 0x06, 0x4E, 0x2E], .unsupportedPickle)  // protocol 6
        expectError([0x80, 0x02, 0x82, 0x01, 0x2E], .unsupportedPickle)  // EXT1
        expectError([0x80, 0x02, 0xFF, 0x2E], .unsupportedPickle)  // no such opcode
    }

    /// Random bytes after a valid PROTO, and every prefix of a real checkpoint pickle: errors, never a crash.
    @Test func garbageNeverCrashes() {
        var rng = SeededGenerator(seed: 7)
        for _ in 0..<2000 {
            let length = Int.random(in: 0..<64, using: &rng)
            let bytes = [0x80, 0x02] + (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
            _ = try? Unpickler.load(bytes)
        }
        let pickle = PickleBuilder.dict([
            ("w", { $0.tensor(storage: "0", numel: 6, size: [2, 3], stride: [3, 1]) }),
            ("b", { $0.tensor(storage: "1", numel: 2, size: [2], stride: [1]) }),
        ])
        #expect((try? Unpickler.load(pickle)) != nil)
        for cut in 0..<pickle.count {
            #expect((try? Unpickler.load(Array(pickle[..<cut]))) == nil, "prefix of \(cut) bytes loaded")
        }
    }
}
