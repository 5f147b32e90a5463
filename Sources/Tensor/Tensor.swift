import Foundation

// MARK: - Storage

/// The memory behind a tensor: either owned (allocated, aligned, freed in `deinit`) or a read-only window
/// into a memory-mapped file (kept alive by holding the mapping).
public final class TensorStorage: @unchecked Sendable {
    /// Start of the float32 elements. Internal: outside the kernels and the CPU backend, code reads and writes a
    /// tensor only through `ComputeBackend` (whose tensors may live on another device), so a stray write into a
    /// read-only mapped weight cannot compile.
    @usableFromInline let pointer: UnsafeMutablePointer<Float>
    /// Number of float32 elements.
    public let count: Int
    /// Whether the memory is a read-only map; writing goes through a copy.
    public let isReadOnly: Bool
    /// Where the elements live: host memory for every storage the CPU backend makes.
    public let device: Device
    /// The element type: `.f32` in host memory; on a device also `.f16` (half-precision weights) or `.i32`.
    public let dtype: DType
    /// The device memory holding the elements, for a storage on another device: its backend's handle, which frees
    /// the memory when the last tensor using it goes.
    public let allocation: AnyObject?
    private let owner: AnyObject?
    /// For owned memory: the cache it came from and goes back to (that of the resources current at allocation).
    private let cache: BlockCache?

    /// Allocates `count` floats (64-byte aligned), zero-filled when `zeroed`.
    public init(count: Int, zeroed: Bool = true) {
        precondition(count >= 0, "negative element count")
        let bytes = max(count, 1) * MemoryLayout<Float>.stride
        let cache = CPUResources.current.blocks
        let raw = cache.allocate(bytes: bytes)
        if zeroed { raw.initializeMemory(as: UInt8.self, repeating: 0, count: bytes) }
        self.pointer = raw.bindMemory(to: Float.self, capacity: max(count, 1))
        self.count = count
        self.isReadOnly = false
        self.device = .cpu
        self.dtype = .f32
        self.allocation = nil
        self.owner = nil
        self.cache = cache
    }

    /// A storage in `device`'s memory, whose elements only its backend reads and writes.
    public init(device: Device, count: Int, dtype: DType, allocation: AnyObject) {
        precondition(device != .cpu, "a device storage on the cpu")
        self.pointer = TensorStorage.noHostMemory
        self.count = count
        self.isReadOnly = false
        self.device = device
        self.dtype = dtype
        self.allocation = allocation
        self.owner = nil
        self.cache = nil
    }

    /// The pointer of a storage without host memory (never read: host access to a device tensor stops first).
    nonisolated(unsafe) private static let noHostMemory = UnsafeMutablePointer<Float>.allocate(capacity: 1)

    /// Stops with a message when the elements are not in host memory.
    @inlinable
    func requireHost(_ what: StaticString = "read") {
        precondition(
            device == .cpu,
            "tried to \(what) the elements of a \(device) tensor on the host: download them through its backend")
        precondition(dtype == .f32, "tried to \(what) the elements of a \(dtype.rawValue) tensor as float32")
    }

    /// Wraps 16-bit values (`dtype` F16 or BF16) that `owner` keeps alive (a memory map), in host memory: a layer
    /// weight the CPU backend expands to float32 at each use; never read or written as floats.
    init(halfReadOnly raw: UnsafeRawBufferPointer, count: Int, dtype: DType, owner: AnyObject) {
        precondition(dtype == .f16 || dtype == .bf16, "a 16-bit storage of dtype \(dtype.rawValue)")
        precondition(raw.count == 2 * count, "\(raw.count) bytes for \(count) 16-bit values")
        self.pointer = UnsafeMutableRawPointer(mutating: raw.baseAddress ?? UnsafeRawPointer(Self.noHostMemory))
            .assumingMemoryBound(to: Float.self)
        self.count = count
        self.isReadOnly = true
        self.device = .cpu
        self.dtype = dtype
        self.allocation = nil
        self.owner = owner
        self.cache = nil
    }

    /// Wraps memory that `owner` keeps alive (a memory map); the storage never writes to it.
    public init(readOnly pointer: UnsafePointer<Float>, count: Int, owner: AnyObject) {
        self.pointer = UnsafeMutablePointer(mutating: pointer)
        self.count = count
        self.isReadOnly = true
        self.device = .cpu
        self.dtype = .f32
        self.allocation = nil
        self.owner = owner
        self.cache = nil
    }

    deinit {
        cache?.release(UnsafeMutableRawPointer(pointer), bytes: max(count, 1) * 4)
    }
}

// MARK: - Tensor

/// A contiguous, row-major float32 tensor (NCHW for images).
///
/// Value semantics: copies share storage until one of them is written (copy-on-write); a tensor backed by a
/// read-only memory map is copied the first time it is written.
public struct Tensor: @unchecked Sendable, CustomStringConvertible {
    public private(set) var shape: [Int]
    public private(set) var storage: TensorStorage

    /// Number of elements: the product of the shape.
    public var count: Int { shape.reduce(1, *) }
    public var rank: Int { shape.count }
    /// The device holding the elements (see `ComputeBackend`).
    public var device: Device { storage.device }
    /// The element type: float32, except half-precision weights and integer inputs on a device (see `TensorStorage`).
    public var dtype: DType { storage.dtype }

    /// A zero-filled tensor.
    public init(zeros shape: [Int]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        self.shape = shape
        self.storage = TensorStorage(count: shape.reduce(1, *))
    }

    /// A tensor whose elements are left for the caller to write (every element must be written before reading).
    public init(uninitialized shape: [Int]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        self.shape = shape
        self.storage = TensorStorage(count: shape.reduce(1, *), zeroed: false)
    }

    /// A tensor holding `values` (row-major), which must have exactly as many elements as the shape.
    public init(shape: [Int], values: [Float]) {
        precondition(shape.reduce(1, *) == values.count, "\(values.count) values for shape \(shape)")
        self.init(uninitialized: shape)
        values.withUnsafeBufferPointer { src in
            if let base = src.baseAddress { storage.pointer.update(from: base, count: values.count) }
        }
    }

    /// A tensor filled with one value.
    public init(shape: [Int], repeating value: Float) {
        self.init(uninitialized: shape)
        storage.pointer.update(repeating: value, count: count)
    }

    /// A tensor over existing storage (for example a memory-mapped weight).
    public init(shape: [Int], storage: TensorStorage) {
        precondition(shape.reduce(1, *) == storage.count, "shape \(shape) does not cover \(storage.count) elements")
        self.shape = shape
        self.storage = storage
    }

    /// The elements as an array (a copy).
    public var scalars: [Float] {
        storage.requireHost()
        return Array(UnsafeBufferPointer(start: storage.pointer, count: count))
    }

    /// Read access to the elements.
    @inlinable
    public func withUnsafeBufferPointer<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        storage.requireHost()
        return try body(UnsafeBufferPointer(start: storage.pointer, count: count))
    }

    /// Write access to the elements; copies first if the storage is shared or read-only.
    public mutating func withUnsafeMutableBufferPointer<R>(
        _ body: (UnsafeMutableBufferPointer<Float>) throws -> R
    ) rethrows -> R {
        makeUnique()
        return try body(UnsafeMutableBufferPointer(start: storage.pointer, count: count))
    }

    /// Whether this tensor alone holds its storage and may write it: a kernel given a tensor it consumes can then
    /// write its result over the input instead of allocating another of the same size.
    public mutating func isUniquelyWritable() -> Bool {
        !storage.isReadOnly && isKnownUniquelyReferenced(&storage)
    }

    /// Makes the storage this tensor's own and writable.
    public mutating func makeUnique() {
        storage.requireHost("write")
        if storage.isReadOnly || !isKnownUniquelyReferenced(&storage) {
            let copy = TensorStorage(count: count, zeroed: false)
            copy.pointer.update(from: storage.pointer, count: count)
            storage = copy
        }
    }

    /// The same elements under another shape with the same element count; `-1` stands for the inferred dimension.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        var dims = newShape
        if let hole = dims.firstIndex(of: -1) {
            let known = dims.enumerated().filter { $0.offset != hole }.map(\.element).reduce(1, *)
            precondition(known > 0 && count % known == 0, "cannot infer a dimension of \(newShape) for \(shape)")
            dims[hole] = count / known
        }
        precondition(dims.reduce(1, *) == count, "cannot reshape \(shape) to \(newShape)")
        return Tensor(shape: dims, storage: storage)
    }

    /// Element at a multi-dimensional index (slow; for tests and small tensors).
    public subscript(_ index: Int...) -> Float {
        get {
            storage.requireHost()
            return storage.pointer[flatIndex(index)]
        }
        set {
            makeUnique()
            storage.pointer[flatIndex(index)] = newValue
        }
    }

    private func flatIndex(_ index: [Int]) -> Int {
        precondition(index.count == shape.count, "index \(index) for shape \(shape)")
        var flat = 0
        for (i, dim) in zip(index, shape) {
            precondition(i >= 0 && i < dim, "index \(index) out of range for shape \(shape)")
            flat = flat * dim + i
        }
        return flat
    }

    public var description: String { "Tensor\(shape)" }
}

extension Tensor {
    /// Rows `range` of the first dimension, copied.
    public func slice(first range: Range<Int>) -> Tensor {
        precondition(
            rank >= 1 && range.lowerBound >= 0 && range.upperBound <= shape[0], "bad slice \(range) of \(shape)")
        let inner = shape.dropFirst().reduce(1, *)
        let out = Tensor(uninitialized: [range.count] + shape.dropFirst())
        out.storage.pointer.update(from: storage.pointer + range.lowerBound * inner, count: range.count * inner)
        return out
    }

    /// Maximum absolute difference and the reference's standard deviation, the figure the conformance tests use:
    /// `max|self − reference| / std(reference)`.
    public func relativeMaxError(to reference: Tensor) -> Double {
        precondition(shape == reference.shape, "shape \(shape) vs reference \(reference.shape)")
        var mean = 0.0
        reference.withUnsafeBufferPointer { r in for v in r { mean += Double(v) } }
        mean /= Double(max(1, reference.count))
        var variance = 0.0
        var maxDiff = 0.0
        withUnsafeBufferPointer { a in
            reference.withUnsafeBufferPointer { r in
                for i in 0..<r.count {
                    let d = Double(r[i]) - mean
                    variance += d * d
                    let diff = abs(Double(a[i]) - Double(r[i]))
                    if diff.isNaN { maxDiff = .infinity } else { maxDiff = max(maxDiff, diff) }
                }
            }
        }
        let std = (variance / Double(max(1, reference.count))).squareRoot()
        return std > 0 ? maxDiff / std : maxDiff
    }
}
