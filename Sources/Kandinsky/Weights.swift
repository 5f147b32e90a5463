import Foundation
import Tensor

/// Strict access to one component's weights: every tensor is taken by its official key with the shape the
/// configuration implies; a missing key, a wrong shape, a non-float dtype or a non-finite value is an error naming
/// the file and key, and the keys never taken are reported as unused.
///
/// A second mode records instead of loading: each tensor asked for is noted (key and shape, in order) and served
/// as lazily-mapped zero pages, so building a module reveals its exact key list without touching gigabytes.
public final class WeightFile: @unchecked Sendable {
    public let file: SafetensorsFile?
    private var used: Set<String> = []
    /// Whether to scan every weight for NaN/∞ (seconds for the full-size model; on by default).
    public let checkFinite: Bool
    /// Whether layer weights stored as F16/BF16 stay in half precision (see `matrix`).
    public let keepHalf: Bool
    /// In recording mode: the keys and shapes asked for, in order.
    public private(set) var recorded: [(key: String, shape: [Int])] = []
    /// The backend the modules built from this file compute on; each weight is uploaded to it once, when taken.
    public let backend: any ComputeBackend
    private let label: String

    public init(
        path: String, checkFinite: Bool = true, keepHalf: Bool = false,
        backend: any ComputeBackend = CPUBackend.shared
    ) throws(KandinskyError) {
        do {
            file = try SafetensorsFile(path: path)
        } catch {
            throw KandinskyError(.badWeight, error.message, file: path, key: error.tensor)
        }
        self.checkFinite = checkFinite
        self.keepHalf = keepHalf
        self.backend = backend
        label = path
    }

    /// A recorder: every request succeeds with zeros and is noted in `recorded`.
    public init(recording label: String, keepHalf: Bool = false, backend: any ComputeBackend = CPUBackend.shared) {
        file = nil
        checkFinite = false
        self.keepHalf = keepHalf
        self.backend = backend
        self.label = label
    }

    public var path: String { label }

    /// The float32 tensor `key`, which must have shape `shape`, on the backend's device.
    public func tensor(_ key: String, _ shape: [Int]) throws(KandinskyError) -> Tensor {
        backend.upload(try hostTensor(key, shape))
    }

    /// The float32 tensor `key` in host memory (mapped, or expanded from 16 bits), checked; noted as used.
    private func hostTensor(_ key: String, _ shape: [Int]) throws(KandinskyError) -> Tensor {
        guard let file else {
            recorded.append((key, shape))
            used.insert(key)
            return Tensor(shape: shape, storage: ZeroPages.storage(count: shape.reduce(1, *)))
        }
        guard let entry = file.entries[key] else {
            throw KandinskyError(.missingWeight, "missing tensor (expected shape \(shape))", file: path, key: key)
        }
        guard entry.shape == shape else {
            throw KandinskyError(.badWeight, "shape \(entry.shape), expected \(shape)", file: path, key: key)
        }
        guard entry.dtype == .f32 || entry.dtype == .f16 || entry.dtype == .bf16 else {
            throw KandinskyError(
                .badWeight, "dtype \(entry.dtype.rawValue), expected F32, F16 or BF16", file: path, key: key)
        }
        let t: Tensor
        do {
            t = try file.tensor(key)
        } catch {
            throw KandinskyError(.badWeight, error.message, file: path, key: key)
        }
        if checkFinite, let bad = Self.firstNonFinite(t) {
            throw KandinskyError(.badWeight, "non-finite value \(bad.1) at element \(bad.0)", file: path, key: key)
        }
        used.insert(key)
        return t
    }

    /// A layer's weight matrix `key` of shape `shape`, for the backend's layer operations. With `keepHalf`
    /// (`--precision f16`), in 16 bits where the backend keeps them so (`ComputeBackend.upload(_: HalfWeight)`): the
    /// file's F16/BF16 values (on the CPU a view of the mapped values), or on a device that converts them its F32
    /// values. Otherwise the float32 tensor of `tensor(_:_:)`.
    public func matrix(_ key: String, _ shape: [Int]) throws(KandinskyError) -> Tensor {
        guard keepHalf else { return try tensor(key, shape) }
        guard let file else {
            // A recorder's zero weights, in 16 bits where the device keeps them so (a benchmark's preset).
            let host = try hostTensor(key, shape)
            return backend.uploadHalf(host) ?? backend.upload(host)
        }
        guard let entry = file.entries[key], entry.shape == shape else { return try tensor(key, shape) }
        guard entry.dtype == .f16 || entry.dtype == .bf16 else {
            let host = try hostTensor(key, shape)
            return backend.uploadHalf(host) ?? backend.upload(host)
        }
        let half: HalfWeight?
        do {
            half = try file.halfWeight(key)
        } catch {
            throw KandinskyError(.badWeight, error.message, file: path, key: key)
        }
        guard let half else { return try tensor(key, shape) }
        if checkFinite, let bad = half.firstNonFinite() {
            throw KandinskyError(.badWeight, "non-finite value \(bad.1) at element \(bad.0)", file: path, key: key)
        }
        // Checked before it goes to the device; a device that cannot keep 16 bits takes the float32 tensor.
        guard let weight = backend.upload(half) else { return try tensor(key, shape) }
        used.insert(key)
        return weight
    }

    /// Whether the file holds `key` (for optional parts such as a duplicated embedding).
    public func has(_ key: String) -> Bool { file?.entries[key] != nil }

    /// Whether this is a recorder rather than a file.
    public var isRecording: Bool { file == nil }

    /// Takes a tensor the official checkpoints carry but the model does not use (the XLM-R pooler): a recorder
    /// notes it so generated files match the official key list; loading leaves it to be reported as unused.
    public func declareUnused(_ key: String, _ shape: [Int]) {
        if isRecording { recorded.append((key, shape)) }
    }

    /// Keys present in the file that no module took.
    public var unusedKeys: [String] { file?.names.filter { !used.contains($0) } ?? [] }

    /// Number of parameters taken so far.
    public var parameterCount: Int {
        guard let file else { return recorded.reduce(0) { $0 + $1.shape.reduce(1, *) } }
        return used.reduce(0) { $0 + (file.entries[$1]?.shape.reduce(1, *) ?? 0) }
    }

    /// Storage dtypes of the tensors taken, with their counts.
    public var dtypes: [String: Int] {
        var out: [String: Int] = [:]
        for key in used { if let e = file?.entries[key] { out[e.dtype.rawValue, default: 0] += 1 } }
        return out
    }

    /// The first NaN or infinity of `t` and its index (`NonFinite`), checked in host memory before the upload.
    static func firstNonFinite(_ t: Tensor) -> (Int, Float)? {
        t.withUnsafeBufferPointer { values in values.baseAddress.flatMap { NonFinite.first($0, count: values.count) } }
    }
}

// MARK: - Layers holding weights

/// `nn.Linear`: `y = x·Wᵀ + b`.
public struct Linear: Sendable {
    /// float32, or 16 bits with `--precision f16` (`WeightFile.matrix`).
    public let weight: Tensor
    public let bias: Tensor?
    public let backend: any ComputeBackend

    public init(
        _ w: WeightFile, _ prefix: String, in inFeatures: Int, out outFeatures: Int, bias: Bool = true
    )
        throws(KandinskyError)
    {
        weight = try w.matrix("\(prefix).weight", [outFeatures, inFeatures])
        self.bias = bias ? try w.tensor("\(prefix).bias", [outFeatures]) : nil
        backend = w.backend
    }

    /// - Parameter rowIndependent: each row's result the same whichever other rows come with it
    ///   (`ComputeBackend.linear`).
    public func callAsFunction(_ x: Tensor, rowIndependent: Bool = false) -> Tensor {
        backend.linear(x, weight: weight, bias: bias, rowIndependent: rowIndependent)
    }
}

/// `nn.Conv2d` (zero padding, square stride).
public struct Conv2d: Sendable {
    /// float32, or 16 bits with `--precision f16` (`WeightFile.matrix`).
    public let weight: Tensor
    public let bias: Tensor?
    public let stride: Int
    public let padding: Padding
    public let backend: any ComputeBackend

    public init(
        _ w: WeightFile, _ prefix: String, in inChannels: Int, out outChannels: Int, kernel: Int,
        stride: Int = 1, padding: Padding? = nil
    ) throws(KandinskyError) {
        weight = try w.matrix("\(prefix).weight", [outChannels, inChannels, kernel, kernel])
        bias = try w.tensor("\(prefix).bias", [outChannels])
        self.stride = stride
        self.padding = padding ?? .uniform(kernel / 2)
        backend = w.backend
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        backend.conv2d(x, weight: weight, bias: bias, stride: stride, padding: padding)
    }

    /// This 3×3, stride-1, padding-1 convolution of `x` upsampled ×2 (nearest), without making the upsampled tensor.
    public func callAsFunction(upsampling x: Tensor) -> Tensor {
        precondition(stride == 1 && padding == .uniform(1), "upsampling convolutions are stride 1, padding 1")
        return backend.conv3x3Upsampled(x, weight: weight, bias: bias)
    }
}

/// `nn.Conv1d` with kernel size 1.
public struct Conv1x1: Sendable {
    /// float32, or 16 bits with `--precision f16` (`WeightFile.matrix`).
    public let weight: Tensor
    public let bias: Tensor
    public let backend: any ComputeBackend

    public init(_ w: WeightFile, _ prefix: String, in inChannels: Int, out outChannels: Int) throws(KandinskyError) {
        weight = try w.matrix("\(prefix).weight", [outChannels, inChannels, 1])
        bias = try w.tensor("\(prefix).bias", [outChannels])
        backend = w.backend
    }

    public func callAsFunction(_ x: Tensor) -> Tensor { backend.conv1x1(x, weight: weight, bias: bias) }
}

/// `nn.GroupNorm` with affine parameters, optionally followed by SiLU in the same pass.
public struct GroupNorm: Sendable {
    public let weight: Tensor
    public let bias: Tensor
    public let groups: Int
    public let eps: Float
    public let backend: any ComputeBackend

    public init(_ w: WeightFile, _ prefix: String, channels: Int, groups: Int = 32, eps: Float) throws(KandinskyError) {
        weight = try w.tensor("\(prefix).weight", [channels])
        bias = try w.tensor("\(prefix).bias", [channels])
        self.groups = groups
        self.eps = eps
        backend = w.backend
    }

    /// Normalizes x in its own storage when this is its last use (see `ComputeBackend.groupNorm`); with
    /// `modulation` (`[N, 2C]`: scale, then shift), `GN(x)·(1 + scale) + shift` in the same pass.
    public func callAsFunction(_ x: consuming Tensor, modulation: Tensor? = nil, silu: Bool = false) -> Tensor {
        backend.groupNorm(
            consume x, groups: groups, weight: weight, bias: bias, eps: eps, modulation: modulation, silu: silu)
    }
}

/// `nn.LayerNorm` over the last dimension.
public struct LayerNorm: Sendable {
    public let weight: Tensor
    public let bias: Tensor
    public let eps: Float
    public let backend: any ComputeBackend

    public init(_ w: WeightFile, _ prefix: String, width: Int, eps: Float) throws(KandinskyError) {
        weight = try w.tensor("\(prefix).weight", [width])
        bias = try w.tensor("\(prefix).bias", [width])
        self.eps = eps
        backend = w.backend
    }

    public func callAsFunction(_ x: Tensor) -> Tensor { backend.layerNorm(x, weight: weight, bias: bias, eps: eps) }
}
