import Foundation
import JSON

/// Element types a safetensors file may hold.
public enum DType: String, Sendable, CaseIterable {
    case f64 = "F64", f32 = "F32", f16 = "F16", bf16 = "BF16", i64 = "I64", i32 = "I32", u8 = "U8", bool = "BOOL"

    public var byteSize: Int {
        switch self {
        case .f32, .i32: return 4
        case .f16, .bf16: return 2
        case .i64, .f64: return 8
        case .u8, .bool: return 1
        }
    }

    public var isFloatingPoint: Bool { self == .f32 || self == .f16 || self == .bf16 || self == .f64 }
}

/// One tensor's entry in a safetensors header.
public struct SafetensorsEntry: Sendable, Equatable {
    public var name: String
    public var dtype: DType
    public var shape: [Int]
    /// Byte range inside the data section (after the header).
    public var range: Range<Int>
}

/// A safetensors file, memory-mapped and validated: the header's length is bounded, every entry has a known dtype,
/// a byte range inside the file whose size matches its shape, no two entries overlap, no name repeats.
/// Tensor data is not copied until asked for in another dtype.
public final class SafetensorsFile: @unchecked Sendable {
    /// Headers larger than this are refused (the reference implementation's limit).
    public static let maxHeaderBytes = 100 << 20

    public let path: String
    public let entries: [String: SafetensorsEntry]
    /// Names in header order.
    public let names: [String]
    /// The optional `__metadata__` string map.
    public let metadata: [String: String]
    private let file: MappedFile
    /// The memory map, for views that must keep it alive.
    var mapping: AnyObject { file }
    private let dataStart: Int

    /// Opens and validates `path`.
    public init(path: String) throws(TensorError) {
        self.path = path
        file = try MappedFile(path: path)
        let bytes = file.bytes
        guard bytes.count >= 8 else {
            throw TensorError(
                .truncated, "file of \(bytes.count) bytes is shorter than the 8-byte header length", file: path)
        }
        let headerLength = bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self).littleEndian
        guard headerLength <= UInt64(Self.maxHeaderBytes) else {
            throw TensorError(
                .headerTooLarge, "header length \(headerLength) exceeds \(Self.maxHeaderBytes) bytes", file: path)
        }
        guard 8 + Int(headerLength) <= bytes.count else {
            throw TensorError(
                .truncated, "header of \(headerLength) bytes runs past the end of the \(bytes.count)-byte file",
                file: path)
        }
        dataStart = 8 + Int(headerLength)
        let header: JSONValue
        do {
            header = try JSONValue.parse(UnsafeRawBufferPointer(rebasing: bytes[8..<dataStart]))
        } catch let error where error.code == .duplicateKey && error.path.isEmpty {
            // The parser refuses every repeated name; at the top level that is a tensor (or the metadata) twice.
            let name = error.key ?? ""
            if name == "__metadata__" { throw TensorError(.duplicateName, "__metadata__ appears twice", file: path) }
            throw TensorError(.duplicateName, "name appears twice in the header", file: path, tensor: name)
        } catch {
            let tensor = error.path.first.flatMap { $0 == "__metadata__" ? nil : $0 }
            throw TensorError(.malformedHeader, "header is not valid JSON (\(error))", file: path, tensor: tensor)
        }
        guard let members = header.objectValue else {
            throw TensorError(.malformedHeader, "header is not a JSON object", file: path)
        }
        let (entries, names, metadata) = try Self.validate(members, dataSize: bytes.count - dataStart, path: path)
        (self.entries, self.names, self.metadata) = (entries, names, metadata)
    }

    private static func validate(
        _ members: JSONObject, dataSize: Int, path: String
    ) throws(TensorError) -> ([String: SafetensorsEntry], [String], [String: String]) {
        var entries: [String: SafetensorsEntry] = [:]
        var names: [String] = []
        var metadata: [String: String] = [:]
        // Names are unique: the parser refused the header otherwise.
        for (name, value) in members {
            if name == "__metadata__" {
                guard let fields = value.objectValue else {
                    throw TensorError(.malformedHeader, "__metadata__ is not an object", file: path)
                }
                for (k, v) in fields {
                    guard let s = v.stringValue else {
                        throw TensorError(.malformedHeader, "__metadata__ value \"\(k)\" is not a string", file: path)
                    }
                    metadata[k] = s
                }
                continue
            }
            let entry = try parseEntry(name: name, value, dataSize: dataSize, path: path)
            entries[name] = entry
            names.append(name)
        }
        // No two tensors may share bytes.
        let sorted = entries.values.filter { !$0.range.isEmpty }.sorted { $0.range.lowerBound < $1.range.lowerBound }
        for (a, b) in zip(sorted, sorted.dropFirst()) where b.range.lowerBound < a.range.upperBound {
            throw TensorError(
                .badOffsets, "bytes \(b.range) overlap those of \"\(a.name)\" (\(a.range))", file: path, tensor: b.name)
        }
        return (entries, names, metadata)
    }

    private static func parseEntry(
        name: String, _ value: JSONValue, dataSize: Int, path: String
    ) throws(TensorError) -> SafetensorsEntry {
        guard value.objectValue != nil else {
            throw TensorError(.malformedHeader, "entry is not an object", file: path, tensor: name)
        }
        guard let dtypeName = value["dtype"]?.stringValue else {
            throw TensorError(.malformedHeader, "entry has no string \"dtype\"", file: path, tensor: name)
        }
        guard let dtype = DType(rawValue: dtypeName) else {
            throw TensorError(
                .unknownDType, "unknown dtype \"\(dtypeName)\" (known: F64, F32, F16, BF16, I64, I32, U8, BOOL)",
                file: path, tensor: name)
        }
        guard let shapeValues = value["shape"]?.arrayValue else {
            throw TensorError(.malformedHeader, "entry has no \"shape\" array", file: path, tensor: name)
        }
        var shape: [Int] = []
        var elements = 1
        for dim in shapeValues {
            guard let d = dim.intValue, d >= 0 else {
                throw TensorError(
                    .malformedHeader,
                    "shape \(JSONValue.array(shapeValues).serialized) has a dimension that is not a non-negative integer",
                    file: path, tensor: name)
            }
            let (product, overflow) = elements.multipliedReportingOverflow(by: d)
            guard !overflow, product <= dataSize / dtype.byteSize || d == 0 else {
                throw TensorError(
                    .badOffsets, "shape \(shape + [d]) needs more bytes than the file holds", file: path, tensor: name)
            }
            shape.append(d)
            elements = product
        }
        guard let offsets = value["data_offsets"]?.arrayValue, offsets.count == 2,
            let begin = offsets[0].intValue, let end = offsets[1].intValue, begin >= 0
        else {
            throw TensorError(.malformedHeader, "entry has no [begin, end] \"data_offsets\"", file: path, tensor: name)
        }
        guard begin <= end, end <= dataSize else {
            throw TensorError(
                .badOffsets, "data_offsets [\(begin), \(end)] fall outside the \(dataSize)-byte data section",
                file: path, tensor: name)
        }
        guard end - begin == elements * dtype.byteSize else {
            throw TensorError(
                .badOffsets,
                "data_offsets span \(end - begin) bytes but shape \(shape) of \(dtypeName) needs \(elements * dtype.byteSize)",
                file: path, tensor: name)
        }
        if let extra = value.objectValue?.first(where: { !["dtype", "shape", "data_offsets"].contains($0.key) }) {
            throw TensorError(
                .malformedHeader, "unexpected field \"\(extra.key)\" in the entry", file: path, tensor: name)
        }
        return SafetensorsEntry(name: name, dtype: dtype, shape: shape, range: begin..<end)
    }

    /// The raw bytes of tensor `name`.
    public func rawBytes(_ name: String) throws(TensorError) -> UnsafeRawBufferPointer {
        let entry = try entry(name)
        return UnsafeRawBufferPointer(
            rebasing: file.bytes[(dataStart + entry.range.lowerBound)..<(dataStart + entry.range.upperBound)])
    }

    /// The header entry for `name`, or a `missingTensor` error.
    public func entry(_ name: String) throws(TensorError) -> SafetensorsEntry {
        guard let entry = entries[name] else {
            throw TensorError(.missingTensor, "no such tensor in the file", file: path, tensor: name)
        }
        return entry
    }

    /// Tensor `name` as float32: an F32 tensor is a read-only view of the mapped file (no copy) when its bytes are
    /// 4-byte aligned; F16 and BF16 are converted into owned memory.
    public func tensor(_ name: String) throws(TensorError) -> Tensor {
        let entry = try entry(name)
        let raw = try rawBytes(name)
        let count = entry.shape.reduce(1, *)
        switch entry.dtype {
        case .f32:
            if count > 0, let base = raw.baseAddress, Int(bitPattern: base) % MemoryLayout<Float>.alignment == 0 {
                let storage = TensorStorage(
                    readOnly: base.assumingMemoryBound(to: Float.self), count: count, owner: file)
                return Tensor(shape: entry.shape, storage: storage)
            }
            let t = Tensor(uninitialized: entry.shape)
            if count > 0, let base = raw.baseAddress {
                UnsafeMutableRawPointer(t.storage.pointer).copyMemory(from: base, byteCount: count * 4)
            }
            return t
        case .f16:
            let t = Tensor(uninitialized: entry.shape)
            HalfPrecision.f16ToF32(raw, into: t.storage.pointer, count: count)
            return t
        case .bf16:
            let t = Tensor(uninitialized: entry.shape)
            HalfPrecision.bf16ToF32(raw, into: t.storage.pointer, count: count)
            return t
        case .f64:
            let t = Tensor(uninitialized: entry.shape)
            for i in 0..<count {
                t.storage.pointer[i] = Float(raw.loadUnaligned(fromByteOffset: 8 * i, as: Double.self))
            }
            return t
        default:
            throw TensorError(
                .wrongDType, "tensor of \(entry.dtype.rawValue) cannot be read as floating point", file: path,
                tensor: name)
        }
    }

    /// Tensor `name` as float64 values (any floating-point dtype, widened exactly), e.g. the diffusion schedule.
    public func doubles(_ name: String) throws(TensorError) -> [Double] {
        let entry = try entry(name)
        if entry.dtype == .f64 {
            let raw = try rawBytes(name)
            return (0..<entry.shape.reduce(1, *)).map { raw.loadUnaligned(fromByteOffset: 8 * $0, as: Double.self) }
        }
        return try tensor(name).scalars.map(Double.init)
    }

    /// Tensor `name` as integers (I64, I32, U8 or BOOL), with its shape.
    public func integers(_ name: String) throws(TensorError) -> (shape: [Int], values: [Int]) {
        let entry = try entry(name)
        let raw = try rawBytes(name)
        let count = entry.shape.reduce(1, *)
        var values = [Int](repeating: 0, count: count)
        switch entry.dtype {
        case .i64:
            for i in 0..<count {
                values[i] = Int(Int64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)))
            }
        case .i32:
            for i in 0..<count {
                values[i] = Int(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self)))
            }
        case .u8, .bool:
            for i in 0..<count { values[i] = Int(raw[i]) }
        default:
            throw TensorError(
                .wrongDType, "tensor of \(entry.dtype.rawValue) cannot be read as integers", file: path, tensor: name)
        }
        return (entry.shape, values)
    }
}

// MARK: - Writing

/// A tensor to write: float32 data converted to the chosen dtype, or integers.
public enum SafetensorsPayload {
    case float(Tensor, DType)
    case integers([Int], shape: [Int], DType)
}

public enum SafetensorsWriter {
    /// Serializes tensors as a safetensors file: names sorted, data in that order, header padded with spaces to a
    /// multiple of 8 bytes (as the reference writer does) so float data stays aligned.
    public static func serialize(_ tensors: [String: SafetensorsPayload], metadata: [String: String] = [:]) -> [UInt8] {
        var declared: [(name: String, dtype: DType, shape: [Int])] = []
        for (name, payload) in tensors {
            switch payload {
            case let .float(t, d):
                precondition(d.isFloatingPoint, "float tensor \(name) written as \(d.rawValue)")
                declared.append((name, d, t.shape))
            case let .integers(values, s, d):
                precondition(values.count == s.reduce(1, *), "integer tensor \(name): \(values.count) values for \(s)")
                declared.append((name, d, s))
            }
        }
        var out = header(for: declared, metadata: metadata).bytes
        for name in tensors.keys.sorted() {
            switch tensors[name]! {
            case let .float(t, d):
                t.withUnsafeBufferPointer { src in
                    switch d {
                    case .f32: src.withMemoryRebound(to: UInt8.self) { out.append(contentsOf: $0) }
                    case .f64: for v in src { appendLE(&out, Double(v).bitPattern) }
                    case .f16: for v in src { appendLE(&out, Float16(v).bitPattern) }
                    default: for v in src { appendLE(&out, HalfPrecision.bf16Bits(v)) }
                    }
                }
            case let .integers(values, _, d):
                for v in values {
                    switch d {
                    case .i64: appendLE(&out, UInt64(bitPattern: Int64(v)))
                    case .i32: appendLE(&out, UInt32(bitPattern: Int32(truncatingIfNeeded: v)))
                    case .u8, .bool: out.append(UInt8(truncatingIfNeeded: v))
                    default: preconditionFailure("integer tensor \(name) written as \(d.rawValue)")
                    }
                }
            }
        }
        return out
    }

    /// Writes a safetensors file (to a temporary name, then renamed into place).
    public static func write(
        _ tensors: [String: SafetensorsPayload], to path: String, metadata: [String: String] = [:]
    ) throws(TensorError) {
        let bytes = serialize(tensors, metadata: metadata)
        let url = URL(fileURLWithPath: path)
        do {
            try Data(bytes).write(to: url, options: .atomic)
        } catch {
            throw TensorError(.io, "cannot write: \(error.localizedDescription)", file: path)
        }
    }

    /// The header — 8-byte length, then JSON padded with spaces to a multiple of 8 bytes, as `serialize` writes
    /// it — of a file whose data the caller writes itself, for tensors too large to gather in memory (model
    /// conversion streams them from a checkpoint). The data must follow in the returned order (names sorted),
    /// each tensor's raw little-endian bytes filling its `range` of the data section.
    /// - Parameters:
    ///   - tensors: name, dtype and shape of each tensor; names must be distinct.
    ///   - metadata: the optional `__metadata__` string map.
    public static func header(
        for tensors: [(name: String, dtype: DType, shape: [Int])], metadata: [String: String] = [:]
    ) -> (bytes: [UInt8], layout: [SafetensorsEntry]) {
        var members = JSONObject()
        if !metadata.isEmpty {
            members["__metadata__"] = .object(
                JSONObject(metadata.sorted { $0.key < $1.key }.map { (key: $0.key, value: .string($0.value)) }))
        }
        var layout: [SafetensorsEntry] = []
        var offset = 0
        for t in tensors.sorted(by: { $0.name < $1.name }) {
            precondition(layout.last?.name != t.name, "tensor \(t.name) appears twice")
            precondition(t.shape.allSatisfy { $0 >= 0 }, "tensor \(t.name) has shape \(t.shape)")
            let size = t.shape.reduce(t.dtype.byteSize, *)
            layout.append(
                SafetensorsEntry(name: t.name, dtype: t.dtype, shape: t.shape, range: offset..<(offset + size)))
            members[t.name] = .object([
                "dtype": .string(t.dtype.rawValue), "shape": .array(t.shape.map { .integer($0) }),
                "data_offsets": .array([.integer(offset), .integer(offset + size)]),
            ])
            offset += size
        }
        // In the order built: metadata first, then the tensors in the order of their data.
        var json = Array(JSONValue.object(members).serialized(memberOrder: .document).utf8)
        while json.count % 8 != 0 { json.append(0x20) }
        var out: [UInt8] = []
        out.reserveCapacity(8 + json.count)
        appendLE(&out, UInt64(json.count))
        out += json
        return (out, layout)
    }

    static func appendLE<T: FixedWidthInteger>(_ out: inout [UInt8], _ value: T) {
        withUnsafeBytes(of: value.littleEndian) { out.append(contentsOf: $0) }
    }
}

// MARK: - Half precision

/// Conversions between float32 and the 16-bit formats weights may be stored in.
public enum HalfPrecision {
    /// IEEE binary16 → float32.
    public static func f16ToF32(_ raw: UnsafeRawBufferPointer, into dst: UnsafeMutablePointer<Float>, count: Int) {
        ComputePool.current.parallelFor(count, minimumChunk: 1 << 16) { range in
            for i in range {
                dst[i] = Float(
                    Float16(bitPattern: UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
                )
            }
        }
    }

    /// bfloat16 (the high half of a float32) → float32.
    public static func bf16ToF32(_ raw: UnsafeRawBufferPointer, into dst: UnsafeMutablePointer<Float>, count: Int) {
        ComputePool.current.parallelFor(count, minimumChunk: 1 << 16) { range in
            for i in range {
                let bits = UInt32(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
                dst[i] = Float(bitPattern: bits << 16)
            }
        }
    }

    /// float32 → bfloat16 bits, rounding to nearest even (NaN stays NaN).
    public static func bf16Bits(_ value: Float) -> UInt16 {
        let bits = value.bitPattern
        if value.isNaN { return UInt16(bits >> 16) | 0x40 }
        let rounding = 0x7FFF + ((bits >> 16) & 1)
        return UInt16((bits &+ rounding) >> 16)
    }
}
