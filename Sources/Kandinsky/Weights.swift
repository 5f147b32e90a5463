import Foundation
import Tensor

/// Strict access to one component's weights file: every tensor is taken by its official key with the shape the
/// configuration implies; a missing key, a wrong shape, a non-float dtype or a non-finite value is an error naming
/// the file and key, and the keys never taken are reported as unused.
public final class WeightFile: @unchecked Sendable {
    public let file: SafetensorsFile
    private var used: Set<String> = []
    /// Whether to scan every weight for NaN/∞ (seconds for the full-size model; on by default).
    public let checkFinite: Bool

    public init(path: String, checkFinite: Bool = true) throws(KandinskyError) {
        do {
            file = try SafetensorsFile(path: path)
        } catch {
            throw KandinskyError(.badWeight, error.message, file: path, key: error.tensor)
        }
        self.checkFinite = checkFinite
    }

    public var path: String { file.path }

    /// The float32 tensor `key`, which must have shape `shape`.
    public func tensor(_ key: String, _ shape: [Int]) throws(KandinskyError) -> Tensor {
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

    /// Whether the file holds `key` (for optional parts such as a skip connection).
    public func has(_ key: String) -> Bool { file.entries[key] != nil }

    /// Marks keys as intentionally ignored (e.g. the XLM-R pooler), so they are not reported as unused.
    public func ignore(_ keys: [String]) { used.formUnion(keys.filter { file.entries[$0] != nil }) }

    /// Keys present in the file that no module took.
    public var unusedKeys: [String] { file.names.filter { !used.contains($0) } }

    /// Number of parameters taken so far.
    public var parameterCount: Int { used.reduce(0) { $0 + (file.entries[$1]?.shape.reduce(1, *) ?? 0) } }

    /// Storage dtypes of the tensors taken, with their counts.
    public var dtypes: [String: Int] {
        var out: [String: Int] = [:]
        for key in used { if let e = file.entries[key] { out[e.dtype.rawValue, default: 0] += 1 } }
        return out
    }

    static func firstNonFinite(_ t: Tensor) -> (Int, Float)? {
        t.withUnsafeBufferPointer { p in
            for i in 0..<p.count where !p[i].isFinite { return (i, p[i]) }
            return nil
        }
    }
}

// MARK: - Layers holding weights

/// `nn.Linear`: `y = x·Wᵀ + b`.
public struct Linear: Sendable {
    public let weight: Tensor
    public let bias: Tensor?

    public init(
        _ w: WeightFile, _ prefix: String, in inFeatures: Int, out outFeatures: Int, bias: Bool = true
    )
        throws(KandinskyError)
    {
        weight = try w.tensor("\(prefix).weight", [outFeatures, inFeatures])
        self.bias = bias ? try w.tensor("\(prefix).bias", [outFeatures]) : nil
    }

    public func callAsFunction(_ x: Tensor) -> Tensor { Kernels.linear(x, weight: weight, bias: bias) }
}

/// `nn.Conv2d` (zero padding, square stride).
public struct Conv2d: Sendable {
    public let weight: Tensor
    public let bias: Tensor?
    public let stride: Int
    public let padding: Padding

    public init(
        _ w: WeightFile, _ prefix: String, in inChannels: Int, out outChannels: Int, kernel: Int,
        stride: Int = 1, padding: Padding? = nil
    ) throws(KandinskyError) {
        weight = try w.tensor("\(prefix).weight", [outChannels, inChannels, kernel, kernel])
        bias = try w.tensor("\(prefix).bias", [outChannels])
        self.stride = stride
        self.padding = padding ?? .uniform(kernel / 2)
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        Kernels.conv2d(x, weight: weight, bias: bias, stride: stride, padding: padding)
    }
}

/// `nn.Conv1d` with kernel size 1.
public struct Conv1x1: Sendable {
    public let weight: Tensor
    public let bias: Tensor

    public init(_ w: WeightFile, _ prefix: String, in inChannels: Int, out outChannels: Int) throws(KandinskyError) {
        weight = try w.tensor("\(prefix).weight", [outChannels, inChannels, 1])
        bias = try w.tensor("\(prefix).bias", [outChannels])
    }

    public func callAsFunction(_ x: Tensor) -> Tensor { Kernels.conv1x1(x, weight: weight, bias: bias) }
}

/// `nn.GroupNorm` with affine parameters, optionally followed by SiLU in the same pass.
public struct GroupNorm: Sendable {
    public let weight: Tensor
    public let bias: Tensor
    public let groups: Int
    public let eps: Float

    public init(_ w: WeightFile, _ prefix: String, channels: Int, groups: Int = 32, eps: Float) throws(KandinskyError) {
        weight = try w.tensor("\(prefix).weight", [channels])
        bias = try w.tensor("\(prefix).bias", [channels])
        self.groups = groups
        self.eps = eps
    }

    public func callAsFunction(_ x: Tensor, silu: Bool = false) -> Tensor {
        Kernels.groupNorm(x, groups: groups, weight: weight, bias: bias, eps: eps, silu: silu)
    }
}

/// `nn.LayerNorm` over the last dimension.
public struct LayerNorm: Sendable {
    public let weight: Tensor
    public let bias: Tensor
    public let eps: Float

    public init(_ w: WeightFile, _ prefix: String, width: Int, eps: Float) throws(KandinskyError) {
        weight = try w.tensor("\(prefix).weight", [width])
        bias = try w.tensor("\(prefix).bias", [width])
        self.eps = eps
    }

    public func callAsFunction(_ x: Tensor) -> Tensor { Kernels.layerNorm(x, weight: weight, bias: bias, eps: eps) }
}
