import Foundation

/// Assembles pickles opcode by opcode, the way `torch.save` writes them (protocol 2), so tests can build
/// checkpoints — well-formed or hostile — without Python.
struct PickleBuilder {
    var bytes: [UInt8] = [0x80, 0x02]  // PROTO 2

    mutating func op(_ code: UInt8) { bytes.append(code) }
    mutating func mark() { op(0x28) }
    mutating func stop() { op(0x2E) }
    mutating func emptyDict() { op(0x7D) }
    mutating func emptyTuple() { op(0x29) }
    mutating func tuple() { op(0x74) }
    mutating func setItems() { op(0x75) }
    mutating func reduce() { op(0x52) }
    mutating func persistentID() { op(0x51) }
    mutating func bool(_ b: Bool) { op(b ? 0x88 : 0x89) }

    mutating func string(_ s: String) {
        op(0x58)  // BINUNICODE
        let utf8 = Array(s.utf8)
        appendLE(UInt32(utf8.count))
        bytes += utf8
    }

    mutating func int(_ i: Int) {
        if i >= 0 && i < 256 {
            op(0x4B)
            bytes.append(UInt8(i))
        } else if i >= Int(Int32.min) && i <= Int(Int32.max) {
            op(0x4A)
            appendLE(UInt32(bitPattern: Int32(i)))
        } else {
            op(0x8A)  // LONG1, 8 bytes
            bytes.append(8)
            appendLE(UInt64(bitPattern: Int64(i)))
        }
    }

    mutating func global(_ module: String, _ name: String) {
        op(0x63)
        bytes += Array("\(module)\n\(name)\n".utf8)
    }

    mutating func intTuple(_ values: [Int]) {
        mark()
        for v in values { int(v) }
        tuple()
    }

    /// `torch._utils._rebuild_tensor_v2(persistent_load(('storage', torch.<type>, key, 'cpu', numel)), offset, size,
    /// stride, False, OrderedDict())`.
    mutating func tensor(
        storage key: String, type: String = "FloatStorage", numel: Int, offset: Int = 0, size: [Int], stride: [Int]
    ) {
        global("torch._utils", "_rebuild_tensor_v2")
        mark()
        mark()
        string("storage")
        global("torch", type)
        string(key)
        string("cpu")
        int(numel)
        tuple()
        persistentID()
        int(offset)
        intTuple(size)
        intTuple(stride)
        bool(false)
        global("collections", "OrderedDict")
        emptyTuple()
        reduce()
        tuple()
        reduce()
    }

    /// A dict of `entries`, each value written by its closure, then STOP.
    static func dict(_ entries: [(String, (inout PickleBuilder) -> Void)]) -> [UInt8] {
        var p = PickleBuilder()
        p.emptyDict()
        p.mark()
        for (key, value) in entries {
            p.string(key)
            value(&p)
        }
        p.setItems()
        p.stop()
        return p.bytes
    }

    private mutating func appendLE<T: FixedWidthInteger>(_ v: T) {
        withUnsafeBytes(of: v.littleEndian) { bytes += $0 }
    }
}

/// Writes a zip archive of stored (uncompressed) entries, as `torch.save` does: local headers, data, central
/// directory, end record.
enum ZipBuilder {
    static func archive(_ entries: [(name: String, data: [UInt8])]) -> [UInt8] {
        var out: [UInt8] = []
        var central: [UInt8] = []
        for (name, data) in entries {
            let offset = UInt32(out.count)
            let crc = crc32(data)
            let nameBytes = Array(name.utf8)
            // Local file header.
            le(&out, UInt32(0x0403_4B50))
            le(&out, UInt16(20))  // version needed
            le(&out, UInt16(0x0800))  // flags: UTF-8 names
            le(&out, UInt16(0))  // stored
            le(&out, UInt32(0))  // time, date
            le(&out, crc)
            le(&out, UInt32(data.count))
            le(&out, UInt32(data.count))
            le(&out, UInt16(nameBytes.count))
            le(&out, UInt16(0))
            out += nameBytes
            out += data
            // Central directory record.
            le(&central, UInt32(0x0201_4B50))
            le(&central, UInt16(20))  // made by
            le(&central, UInt16(20))
            le(&central, UInt16(0x0800))
            le(&central, UInt16(0))
            le(&central, UInt32(0))
            le(&central, crc)
            le(&central, UInt32(data.count))
            le(&central, UInt32(data.count))
            le(&central, UInt16(nameBytes.count))
            le(&central, UInt16(0))  // extra
            le(&central, UInt16(0))  // comment
            le(&central, UInt16(0))  // disk
            le(&central, UInt16(0))  // internal attributes
            le(&central, UInt32(0))  // external attributes
            le(&central, offset)
            central += nameBytes
        }
        let centralOffset = UInt32(out.count)
        out += central
        le(&out, UInt32(0x0605_4B50))
        le(&out, UInt16(0))
        le(&out, UInt16(0))
        le(&out, UInt16(entries.count))
        le(&out, UInt16(entries.count))
        le(&out, UInt32(central.count))
        le(&out, centralOffset)
        le(&out, UInt16(0))
        return out
    }

    /// A torch checkpoint: `<prefix>/data.pkl`, `<prefix>/byteorder`, `<prefix>/data/<key>` for each storage.
    static func checkpoint(
        pickle: [UInt8], storages: [String: [UInt8]], prefix: String = "archive", byteorder: String = "little"
    ) -> [UInt8] {
        var entries: [(name: String, data: [UInt8])] = [("\(prefix)/data.pkl", pickle)]
        entries.append(("\(prefix)/byteorder", Array(byteorder.utf8)))
        for key in storages.keys.sorted() { entries.append(("\(prefix)/data/\(key)", storages[key]!)) }
        entries.append(("\(prefix)/version", Array("3\n".utf8)))
        return archive(entries)
    }

    /// IEEE CRC-32 (the zip checksum), bit by bit.
    static func crc32(_ data: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in data {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = (crc >> 1) ^ (crc & 1 == 1 ? 0xEDB8_8320 : 0) }
        }
        return ~crc
    }

    private static func le<T: FixedWidthInteger>(_ out: inout [UInt8], _ v: T) {
        withUnsafeBytes(of: v.littleEndian) { out += $0 }
    }
}

/// Little-endian float32 bytes of `values`.
func float32Bytes(_ values: [Float]) -> [UInt8] {
    values.flatMap { v in withUnsafeBytes(of: v.bitPattern.littleEndian) { Array($0) } }
}

func writeFile(_ bytes: [UInt8], to path: String) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}
