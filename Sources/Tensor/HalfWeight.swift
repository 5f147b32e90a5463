/// A weight held in half precision (F16 or BF16, normally a read-only view of a memory-mapped file), expanded to
/// float32 into a per-thread buffer just before a kernel uses it: half the resident memory of float32 weights, for
/// one conversion pass over the weight per use.
public struct HalfWeight: @unchecked Sendable {
    public let shape: [Int]
    public let dtype: DType
    /// The little-endian 16-bit values.
    public let raw: UnsafeRawBufferPointer
    /// Keeps `raw` alive (the memory map).
    let owner: AnyObject

    public init(shape: [Int], dtype: DType, raw: UnsafeRawBufferPointer, owner: AnyObject) {
        precondition(dtype == .f16 || dtype == .bf16, "half-precision weight of dtype \(dtype.rawValue)")
        precondition(raw.count == 2 * shape.reduce(1, *), "\(raw.count) bytes for a half-precision \(shape)")
        (self.shape, self.dtype, self.raw, self.owner) = (shape, dtype, raw, owner)
    }

    public var count: Int { shape.reduce(1, *) }

    /// The values as float32, in this thread's expansion buffer: valid until this thread expands another weight,
    /// so use it at once (a layer's call) and never keep it.
    public func expanded() -> Tensor { Self.expand(raw, dtype: dtype, shape: shape) }

    /// The 16-bit values `raw` (`dtype` F16 or BF16) as a float32 tensor of `shape` in this thread's expansion
    /// buffer.
    static func expand(_ raw: UnsafeRawBufferPointer, dtype: DType, shape: [Int]) -> Tensor {
        let count = shape.reduce(1, *)
        let storage = Scratch.current.storage(3, count: max(1, count))
        if dtype == .f16 {
            HalfPrecision.f16ToF32(raw, into: storage.pointer, count: count)
        } else {
            HalfPrecision.bf16ToF32(raw, into: storage.pointer, count: count)
        }
        return Tensor(shape: shape, storage: TensorStorage(readOnly: storage.pointer, count: count, owner: storage))
    }

    /// The weight as a host tensor of its 16-bit dtype, viewing the same mapped values: what the CPU backend keeps
    /// as the layer's weight and expands at each use (`Tensor.expandedFromHalf`).
    var hostTensor: Tensor {
        Tensor(shape: shape, storage: TensorStorage(halfReadOnly: raw, count: count, dtype: dtype, owner: owner))
    }

    /// Index and value of the first NaN or ±∞ (exponent bits all ones), or nil.
    public func firstNonFinite() -> (Int, Float)? {
        guard let base = raw.baseAddress else { return nil }
        let exponent: UInt16 = dtype == .f16 ? 0x7C00 : 0x7F80
        return NonFinite.firstHalf(base, count: count, exponent: exponent).map { i in
            let bits = UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
            return (i, dtype == .f16 ? Float(Float16(bitPattern: bits)) : Float(bitPattern: UInt32(bits) << 16))
        }
    }
}

extension Tensor {
    /// A 16-bit host tensor's values (`HalfWeight.hostTensor`) as float32, in this thread's expansion buffer: valid
    /// until this thread expands another weight. A float32 tensor is returned as it is.
    func expandedFromHalf() -> Tensor {
        guard dtype == .f16 || dtype == .bf16 else { return self }
        precondition(device == .cpu, "a \(device) tensor expanded on the host")
        let raw = UnsafeRawBufferPointer(start: UnsafeRawPointer(storage.pointer), count: 2 * count)
        return HalfWeight.expand(raw, dtype: dtype, shape: shape)
    }
}

extension SafetensorsFile {
    /// Tensor `name` as a half-precision weight viewing the mapped file, or nil when it is not stored as F16/BF16
    /// (or its bytes are not 2-byte aligned).
    public func halfWeight(_ name: String) throws(TensorError) -> HalfWeight? {
        let entry = try entry(name)
        guard entry.dtype == .f16 || entry.dtype == .bf16 else { return nil }
        let raw = try rawBytes(name)
        guard let base = raw.baseAddress, Int(bitPattern: base) % 2 == 0 else { return nil }
        return HalfWeight(shape: entry.shape, dtype: entry.dtype, raw: raw, owner: mapping)
    }
}
