import Tensor

// Normalisation, activations and element-wise arithmetic as compute shaders (`Shaders/vulkan`). Each operation's
// semantics are `ComputeBackend`'s and the CPU backend's; the shader named in its comment states its bindings and push
// constants, and the tests (`VulkanOpsTests`) state the measured difference from `CPUBackend`.

// MARK: - Shared helpers

extension VulkanBackend {
    /// Workgroups for `count` one-workgroup-per-item kernels (a norm's rows or groups), folded into x and y so that
    /// no dimension exceeds 65535: the shader takes its item as `WorkGroupID.x + WorkGroupID.y · NumWorkGroups.x`.
    static func foldedGroups(_ count: Int) -> (x: Int, y: Int, z: Int) {
        let x = min(max(1, count), 65535)
        return (x, (max(1, count) + x - 1) / x, 1)
    }

    /// Stops with a message naming `role` unless `t` lives on this backend's device.
    func checkDevice(_ t: Tensor, _ role: String) {
        precondition(t.device == device, "\(role) is a \(t.device) tensor given to the \(device) backend")
    }

    /// Stops unless `t` is a float32 tensor of this device (an activation).
    func checkActivation(_ t: Tensor, _ role: String) {
        checkDevice(t, role)
        precondition(t.dtype == .f32, "\(role) is \(t.dtype.rawValue), not F32")
    }

    /// The element count as a 32-bit shader index: every tensor a binding reaches is far below 2³² elements
    /// (lavapipe binds at most 128 MiB), so a larger one is a caller's mistake.
    static func indexWord(_ n: Int, _ what: String) -> UInt32 {
        precondition(n >= 0 && n <= Int(UInt32.max), "\(what) \(n) does not fit a 32-bit shader index")
        return UInt32(n)
    }

    /// The kernel for a norm's optional weight and bias (F32 or F16, both the same): `name`, or its `_f16` variant
    /// (`weightKernel`) for half precision.
    func normKernel(_ name: String, _ weight: Tensor?, _ bias: Tensor?, _ norm: String) -> String {
        if let weight { checkDevice(weight, "\(norm) weight") }
        if let bias { checkDevice(bias, "\(norm) bias") }
        if let weight, let bias {
            precondition(
                weight.dtype == bias.dtype,
                "\(norm) weight \(weight.dtype.rawValue) and bias \(bias.dtype.rawValue) differ in dtype")
        }
        guard let w = weight ?? bias else { return name }
        return Self.weightKernel(name, w)
    }
}

// MARK: - Normalisation

extension VulkanBackend {
    /// Group normalization, then `·(1 + scale) + shift` from `modulation` (`[B, 2C]`, scale then shift) when given,
    /// then SiLU when `silu` — shader `group_norm` (`group_norm_f16` for half-precision weight and bias): one
    /// workgroup per (image, group), two-pass statistics in float32 with compensated partial sums.
    ///
    /// A tensor passed as its last use (a temporary, or `consume x`) is normalized in its own storage: every
    /// invocation writes only the elements it reads, after the group's statistics are taken.
    ///
    /// - Parameters:
    ///   - x: `[B, C, ...]`, C divisible by `groups`.
    ///   - weight, bias: `[C]` (F32 or F16, both the same), or nil for 1 and 0.
    ///   - modulation: `[B, 2C]` (F32).
    public func groupNorm(
        _ x: consuming Tensor, groups: Int, weight: Tensor?, bias: Tensor?, eps: Float, modulation: Tensor?, silu: Bool
    ) -> Tensor {
        var x = consume x
        checkActivation(x, "group norm input")
        precondition(x.rank >= 2, "group norm input must be [B, C, ...], got \(x.shape)")
        let (batch, channels) = (x.shape[0], x.shape[1])
        precondition(groups > 0 && channels % groups == 0, "\(channels) channels do not split into \(groups) groups")
        if let weight { precondition(weight.count == channels, "group norm weight \(weight.shape) for \(channels)") }
        if let bias { precondition(bias.count == channels, "group norm bias \(bias.shape) for \(channels)") }
        if let modulation {
            checkActivation(modulation, "group norm modulation")
            precondition(
                modulation.count == batch * 2 * channels,
                "modulation \(modulation.shape) for [\(batch), \(2 * channels)]")
        }
        let kernel = normKernel("group_norm", weight, bias, "group norm")
        let y = x.isUniquelyWritable() ? x : empty(x.shape)
        guard x.count > 0 else { return y }
        let spatial = x.count / (batch * channels)
        let flags = (weight != nil ? 1 : 0) | (bias != nil ? 2 : 0) | (modulation != nil ? 4 : 0) | (silu ? 8 : 0)
        let items = batch * groups
        dispatch(
            kernel, [x, y, weight ?? x, bias ?? x, modulation ?? x],
            push: [
                Self.indexWord(items, "group count"), groups.word, channels.word,
                Self.indexWord(spatial, "spatial size"), flags.word, eps.word,
            ],
            groups: Self.foldedGroups(items))
        return y
    }

    /// Layer normalization over the last dimension: `(x − mean)/√(var + eps)·weight + bias` — shader `row_norm`
    /// (`row_norm_f16` for half-precision weight and bias), one workgroup per row, two-pass statistics in float32.
    ///
    /// - Parameters:
    ///   - weight, bias: `[W]` for rows of W (F32 or F16, both the same), or nil for 1 and 0.
    public func layerNorm(_ x: Tensor, weight: Tensor?, bias: Tensor?, eps: Float) -> Tensor {
        checkActivation(x, "layer norm input")
        let width = x.shape.last ?? 1
        if let weight { precondition(weight.count == width, "layer norm weight \(weight.shape) for width \(width)") }
        if let bias { precondition(bias.count == width, "layer norm bias \(bias.shape) for width \(width)") }
        let kernel = normKernel("row_norm", weight, bias, "layer norm")
        let flags = (weight != nil ? 1 : 0) | (bias != nil ? 2 : 0)
        return rowNorm(kernel, x, weight, bias, flags, eps)
    }

    /// T5's RMS normalization over the last dimension: `x/√(mean(x²) + eps)·weight` (no mean subtracted, no bias) —
    /// shader `row_norm` with its RMS flag (`row_norm_f16` for a half-precision weight).
    ///
    /// - Parameter weight: `[W]` for rows of W (F32 or F16).
    public func rmsNorm(_ x: Tensor, weight: Tensor, eps: Float) -> Tensor {
        checkActivation(x, "RMS norm input")
        let width = x.shape.last ?? 1
        precondition(weight.count == width, "RMS norm weight \(weight.shape) for width \(width)")
        let kernel = normKernel("row_norm", weight, nil, "RMS norm")
        return rowNorm(kernel, x, weight, nil, 1 | 4, eps)
    }

    /// One `row_norm` dispatch over the rows of x's last dimension.
    func rowNorm(_ kernel: String, _ x: Tensor, _ w: Tensor?, _ b: Tensor?, _ flags: Int, _ eps: Float) -> Tensor {
        let y = empty(x.shape)
        let width = x.shape.last ?? 1
        guard x.count > 0, width > 0 else { return y }
        let rows = x.count / width
        dispatch(
            kernel, [x, y, w ?? x, b ?? x],
            push: [Self.indexWord(rows, "row count"), Self.indexWord(width, "row width"), flags.word, eps.word],
            groups: Self.foldedGroups(rows))
        return y
    }
}

// MARK: - Activations

extension VulkanBackend {
    /// The operations of shader `unary`, by its `op` push constant.
    enum UnaryOp: Int {
        case gelu = 0, geluTanh, silu, scale, clamp
    }

    /// One `unary` dispatch over every element of x.
    func unary(_ op: UnaryOp, _ x: Tensor, _ a: Float = 0, _ b: Float = 0) -> Tensor {
        checkActivation(x, "input")
        let y = empty(x.shape)
        guard x.count > 0 else { return y }
        dispatch1D(
            "unary", [x, y], push: [Self.indexWord(x.count, "element count"), op.rawValue.word, a.word, b.word],
            count: x.count)
        return y
    }

    /// erf GELU, `0.5·x·(1 + erf(x/√2))` with erf by Abramowitz & Stegun 7.1.26 as the CPU's — shader `unary`
    /// (op 0).
    public func gelu(_ x: Tensor) -> Tensor { unary(.gelu, x) }

    /// tanh-approximated GELU, `x / (1 + e^(−2u))` with `u = √(2/π)·(x + 0.044715·x³)` — shader `unary` (op 1).
    public func geluTanh(_ x: Tensor) -> Tensor { unary(.geluTanh, x) }

    /// `x·σ(x)`, as `x / (1 + e^(−x))` — shader `unary` (op 2).
    public func silu(_ x: Tensor) -> Tensor { unary(.silu, x) }
}

// MARK: - Element-wise

extension VulkanBackend {
    /// The operations of shader `binary`, by its `op` push constant.
    enum BinaryOp: Int {
        case add = 0, mul
    }

    /// One `binary` dispatch writing `a[i] ∘ b[(i / bOuter)·bOuterStride + i % bPeriod]` into `y`.
    func binary(
        _ op: BinaryOp, _ a: Tensor, _ b: Tensor, into y: Tensor, bPeriod: Int, bOuter: Int, bOuterStride: Int
    ) {
        guard a.count > 0 else { return }
        dispatch1D(
            "binary", [a, b, y],
            push: [
                Self.indexWord(a.count, "element count"), op.rawValue.word, Self.indexWord(bPeriod, "period"),
                Self.indexWord(bOuter, "outer size"), Self.indexWord(bOuterStride, "outer stride"),
            ],
            count: a.count)
    }

    /// `a + b` element by element, same shapes — shader `binary` (op 0). Bit for bit the CPU's.
    public func add(_ a: Tensor, _ b: Tensor) -> Tensor {
        sameShapeBinary(.add, a, b)
    }

    /// `b += a`, in b's storage when b is its own (uniquely referenced, writable), else into a new tensor that
    /// replaces b — shader `binary` (op 0, b bound as operand and result). Bit for bit the CPU's.
    public func add(_ a: Tensor, into b: inout Tensor) {
        checkActivation(a, "addend")
        checkActivation(b, "residual")
        precondition(a.shape == b.shape, "element-wise operands \(a.shape) and \(b.shape) differ")
        if b.isUniquelyWritable() {
            binary(.add, a, b, into: b, bPeriod: a.count, bOuter: max(1, a.count), bOuterStride: 0)
        } else {
            b = add(a, b)
        }
    }

    /// `a · b` element by element, same shapes — shader `binary` (op 1). Bit for bit the CPU's.
    public func mul(_ a: Tensor, _ b: Tensor) -> Tensor {
        sameShapeBinary(.mul, a, b)
    }

    private func sameShapeBinary(_ op: BinaryOp, _ a: Tensor, _ b: Tensor) -> Tensor {
        checkActivation(a, "left operand")
        checkActivation(b, "right operand")
        precondition(a.shape == b.shape, "element-wise operands \(a.shape) and \(b.shape) differ")
        let y = empty(a.shape)
        binary(op, a, b, into: y, bPeriod: a.count, bOuter: max(1, a.count), bOuterStride: 0)
        return y
    }

    /// `x + v` with `v` (`[W]`) added to every row of the last dimension — shader `binary` (op 0, b's index
    /// `i % W`). Bit for bit the CPU's.
    public func addRows(_ x: Tensor, _ v: Tensor) -> Tensor {
        checkActivation(x, "input")
        checkActivation(v, "row vector")
        let width = x.shape.last ?? 1
        precondition(v.count == width, "row vector of \(v.count) for rows of \(width)")
        let y = empty(x.shape)
        binary(.add, x, v, into: y, bPeriod: max(1, width), bOuter: max(1, x.count), bOuterStride: 0)
        return y
    }

    /// `a · s` — shader `unary` (op 3). Bit for bit the CPU's.
    public func scale(_ a: Tensor, by s: Float) -> Tensor { unary(.scale, a, s) }

    /// `min(max(x, lower), upper)` element by element — shader `unary` (op 4). Bit for bit the CPU's.
    public func clamp(_ x: Tensor, lower: Float, upper: Float) -> Tensor { unary(.clamp, x, lower, upper) }
}
