import Tensor

// MARK: - Products and convolutions

extension VulkanBackend {
    /// `x·Wᵀ + b` over the last dimension (`nn.Linear`), any leading shape, on shader `gemm` (`gemm_f16` for a
    /// half-precision weight): A = x as `[rows, in]`, B = Wᵀ read in place from the `[out, in]` weight, the bias per
    /// column.
    ///
    /// Each output's sum runs over the input features in ascending order, whatever the number of rows (no split-K),
    /// so every row's result is the same whichever other rows come with it: `rowIndependent` always holds.
    ///
    /// - Parameters:
    ///   - x: `[..., in]`, f32.
    ///   - weight: `[out, in]`, f32 or f16.
    ///   - bias: `[out]` f32, or nil.
    /// - Returns: `[..., out]`.
    public func linear(_ x: Tensor, weight: Tensor, bias: Tensor?, rowIndependent: Bool) -> Tensor {
        precondition(weight.rank == 2, "linear weight must be [out, in], got \(weight.shape)")
        let (outFeatures, inFeatures) = (weight.shape[0], weight.shape[1])
        precondition(x.rank >= 1 && x.shape.last == inFeatures, "linear input \(x.shape) does not end in \(inFeatures)")
        if let bias { precondition(bias.shape == [outFeatures], "linear bias \(bias.shape) is not [\(outFeatures)]") }
        let rows = x.shape.dropLast().reduce(1, *)
        let y = empty(Array(x.shape.dropLast()) + [outFeatures])
        // Y[rows, out] = X[rows, in] · W[out, in]ᵀ + b
        gemm(
            MatrixView(x, rowStride: inFeatures, columnStride: 1),
            MatrixView(weight, rowStride: 1, columnStride: inFeatures),
            into: MatrixView(y, rowStride: outFeatures, columnStride: 1),
            m: rows, n: outFeatures, k: inFeatures, bias: bias.map { ($0, .perColumn) })
        return y
    }

    /// `nn.Conv2d` (cross-correlation, zero padding, square stride) as an implicit GEMM on shader `conv2d`
    /// (`conv2d_f16` for a half-precision weight): the receptive fields are gathered from x into shared memory as the
    /// tiles need them, never written out.
    ///
    /// - Parameters:
    ///   - x: `[N, Ci, H, W]`.
    ///   - weight: `[Co, Ci, KH, KW]`, f32 or f16.
    ///   - bias: `[Co]` f32, or nil.
    ///   - stride: the step in both spatial dimensions, ≥ 1.
    ///   - padding: zeros around the input, each side its own.
    /// - Returns: `[N, Co, (H + top + bottom − KH) / stride + 1, (W + left + right − KW) / stride + 1]`.
    public func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor?, stride: Int, padding: Padding) -> Tensor {
        precondition(x.rank == 4, "conv2d input must be [N, C, H, W], got \(x.shape)")
        precondition(weight.rank == 4, "conv2d weight must be [Cout, Cin, KH, KW], got \(weight.shape)")
        precondition(stride >= 1, "conv2d stride must be ≥ 1, got \(stride)")
        let (height, width) = (x.shape[2], x.shape[3])
        let (kh, kw) = (weight.shape[2], weight.shape[3])
        let paddedH = height + padding.top + padding.bottom
        let paddedW = width + padding.left + padding.right
        precondition(
            kh >= 1 && kw >= 1 && paddedH >= kh && paddedW >= kw,
            "conv2d kernel \(kh)×\(kw) larger than the padded input \(paddedH)×\(paddedW)")
        return convolve(
            x, planeH: height, planeW: width, weight: weight, kernel: (kh, kw), bias: bias, stride: stride,
            padding: padding, outH: (paddedH - kh) / stride + 1, outW: (paddedW - kw) / stride + 1, upsample: false)
    }

    /// A 3×3, stride-1, padding-1 convolution of x upsampled ×2 (nearest), on shader `conv2d` (`conv2d_f16`) with its
    /// `upsample` flag: the gather reads `x[ih / 2][iw / 2]`, so the upsampled tensor is never made.
    ///
    /// - Parameters:
    ///   - x: `[N, Ci, H, W]`.
    ///   - weight: `[Co, Ci, 3, 3]`, f32 or f16.
    ///   - bias: `[Co]` f32, or nil.
    /// - Returns: `[N, Co, 2H, 2W]`.
    public func conv3x3Upsampled(_ x: Tensor, weight: Tensor, bias: Tensor?) -> Tensor {
        precondition(x.rank == 4, "conv2d input must be [N, C, H, W], got \(x.shape)")
        precondition(
            weight.rank == 4 && weight.shape[2] == 3 && weight.shape[3] == 3,
            "upsampling convolution weight must be [Cout, Cin, 3, 3], got \(weight.shape)")
        let (height, width) = (2 * x.shape[2], 2 * x.shape[3])
        return convolve(
            x, planeH: x.shape[2], planeW: x.shape[3], weight: weight, kernel: (3, 3), bias: bias, stride: 1,
            padding: .uniform(1), outH: height, outW: width, upsample: true)
    }

    /// `nn.Conv1d` with kernel size 1 on `[N, C, T]`, on shader `conv2d` (`conv2d_f16`) as a 1×1 convolution of
    /// `[N, C, 1, T]`.
    ///
    /// - Parameters:
    ///   - x: `[N, Ci, T]`.
    ///   - weight: `[Co, Ci, 1]` (or `[Co, Ci]`), f32 or f16.
    ///   - bias: `[Co]` f32, or nil.
    /// - Returns: `[N, Co, T]`.
    public func conv1x1(_ x: Tensor, weight: Tensor, bias: Tensor?) -> Tensor {
        precondition(x.rank == 3, "conv1d input must be [N, C, T], got \(x.shape)")
        precondition(
            weight.rank == 2 || (weight.rank == 3 && weight.shape[2] == 1),
            "conv1d kernel-1 weight must be [Cout, Cin, 1], got \(weight.shape)")
        return convolve(
            x, planeH: 1, planeW: x.shape[2], weight: weight, kernel: (1, 1), bias: bias, stride: 1, padding: .zero,
            outH: 1, outW: x.shape[2], upsample: false, shape: [x.shape[0], weight.shape[0], x.shape[2]])
    }

    /// One dispatch of `conv2d` (see the shader's header): x's planes are `planeH × planeW` (before upsampling); the
    /// result is `[N, Co, outH, outW]`, or `shape` when given (the same elements: conv1x1's `[N, Co, T]`).
    private func convolve(
        _ x: Tensor, planeH: Int, planeW: Int, weight: Tensor, kernel: (h: Int, w: Int), bias: Tensor?, stride: Int,
        padding: Padding, outH: Int, outW: Int, upsample: Bool, shape: [Int]? = nil
    ) -> Tensor {
        let (batch, cin, cout) = (x.shape[0], x.shape[1], weight.shape[0])
        precondition(weight.shape[1] == cin, "convolution weight \(weight.shape) for \(cin) input channels")
        precondition(x.dtype == .f32, "convolution input of dtype \(x.dtype.rawValue), expected F32")
        if let bias {
            precondition(bias.shape == [cout], "convolution bias \(bias.shape) is not [\(cout)]")
            precondition(bias.dtype == .f32, "convolution bias of dtype \(bias.dtype.rawValue), expected F32")
        }
        let y = empty(shape ?? [batch, cout, outH, outW])
        let columns = batch * outH * outW
        guard columns > 0 && cout > 0 else { return y }
        let groups = (x: (columns + Self.tileN - 1) / Self.tileN, y: (cout + Self.tileM - 1) / Self.tileM)
        precondition(
            groups.x <= Self.maxGroups && groups.y <= Self.maxGroups,
            "convolution of \(columns) output positions and \(cout) channels exceeds the dispatch grid")
        dispatch(
            Self.weightKernel("conv2d", weight), [x, weight, y, bias ?? x],
            push: [
                cin.word, planeH.word, planeW.word, kernel.h.word, kernel.w.word, stride.word, padding.top.word,
                padding.left.word, outH.word, outW.word, cout.word, batch.word, (upsample ? 1 : 0).word,
                (bias == nil ? 0 : 1).word,
            ],
            groups: (groups.x, groups.y, 1))
        return y
    }
}

// MARK: - The general product

/// Which way `gemm`'s bias is broadcast.
enum BiasAxis {
    /// `bias[n]` added to column n of every row (`nn.Linear`).
    case perColumn
    /// `bias[m]` added to row m (a convolution's channels when they are the rows).
    case perRow
}

/// A matrix operand of `VulkanBackend.gemm` read in place: element `(z, i, j)` (batch z, row i, column j) is element
/// `offset + z·batchStride + i·rowStride + j·columnStride` of `tensor`'s storage, so a transpose, a slice of heads
/// or a third of a qkv tensor is a view, not a copy.
struct MatrixView {
    var tensor: Tensor
    var offset: Int
    var batchStride: Int
    var rowStride: Int
    var columnStride: Int

    init(_ tensor: Tensor, offset: Int = 0, batchStride: Int = 0, rowStride: Int, columnStride: Int) {
        precondition(
            offset >= 0 && batchStride >= 0 && rowStride >= 0 && columnStride >= 0, "negative matrix view strides")
        (self.tensor, self.offset, self.batchStride) = (tensor, offset, batchStride)
        (self.rowStride, self.columnStride) = (rowStride, columnStride)
    }

    /// The largest element index the view reaches for `batches × rows × columns` (all counts ≥ 1).
    func lastIndex(batches: Int, rows: Int, columns: Int) -> Int {
        offset + (batches - 1) * batchStride + (rows - 1) * rowStride + (columns - 1) * columnStride
    }
}

extension VulkanBackend {
    /// The workgroup tile of `gemm.comp` and `conv2d.comp` (`gemm_tile.glsl`'s BM × BN).
    static let tileM = 64
    static let tileN = 64
    /// Vulkan's guaranteed workgroup count per dimension (lavapipe's too).
    static let maxGroups = 65535

    /// `kernel`, or its `_f16` variant when `weight` is half precision.
    static func weightKernel(_ kernel: String, _ weight: Tensor) -> String {
        switch weight.dtype {
        case .f32: return kernel
        case .f16: return kernel + "_f16"
        default: preconditionFailure("\(kernel) weight of dtype \(weight.dtype.rawValue), expected F32 or F16")
        }
    }

    /// `C[z] = alpha · A[z] · B[z] (+ bias)` for `batches` products of `[m, k] · [k, n]`, every operand a strided view,
    /// on shader `gemm` (`gemm_f16` when B is half precision: B is where a weight goes). Sums run in f32 over
    /// ascending k, so each row of C is independent of the others. The bias (f32) is `[n]` per column or `[m]` per row.
    func gemm(
        _ a: MatrixView, _ b: MatrixView, into c: MatrixView, m: Int, n: Int, k: Int, batches: Int = 1,
        alpha: Float = 1, bias: (tensor: Tensor, axis: BiasAxis)? = nil
    ) {
        precondition(m >= 0 && n >= 0 && k >= 0 && batches >= 0, "gemm of negative size")
        precondition(a.tensor.dtype == .f32, "gemm A of dtype \(a.tensor.dtype.rawValue), expected F32")
        precondition(c.tensor.dtype == .f32, "gemm C of dtype \(c.tensor.dtype.rawValue), expected F32")
        guard m > 0 && n > 0 && batches > 0 else { return }
        let words = Int(UInt32.max)
        if k > 0 {
            precondition(
                a.lastIndex(batches: batches, rows: m, columns: k) < min(a.tensor.count, words),
                "gemm A view reaches past its \(a.tensor.shape) tensor")
            precondition(
                b.lastIndex(batches: batches, rows: k, columns: n) < min(b.tensor.count, words),
                "gemm B view reaches past its \(b.tensor.shape) tensor")
        }
        precondition(
            c.lastIndex(batches: batches, rows: m, columns: n) < min(c.tensor.count, words),
            "gemm C view reaches past its \(c.tensor.shape) tensor")
        var biasMode = 0
        if let bias {
            let length = bias.axis == .perColumn ? n : m
            precondition(bias.tensor.count == length, "gemm bias \(bias.tensor.shape) is not [\(length)]")
            precondition(bias.tensor.dtype == .f32, "gemm bias of dtype \(bias.tensor.dtype.rawValue), expected F32")
            biasMode = bias.axis == .perColumn ? 1 : 2
        }
        let groups = (x: (n + Self.tileN - 1) / Self.tileN, y: (m + Self.tileM - 1) / Self.tileM)
        precondition(
            groups.x <= Self.maxGroups && groups.y <= Self.maxGroups && batches <= Self.maxGroups,
            "gemm of \(batches) × \(m) × \(n) exceeds the dispatch grid")
        dispatch(
            Self.weightKernel("gemm", b.tensor), [a.tensor, b.tensor, c.tensor, bias?.tensor ?? a.tensor],
            push: [
                m.word, n.word, k.word,
                a.offset.word, a.batchStride.word, a.rowStride.word, a.columnStride.word,
                b.offset.word, b.batchStride.word, b.rowStride.word, b.columnStride.word,
                c.offset.word, c.batchStride.word, c.rowStride.word, c.columnStride.word,
                alpha.word, biasMode.word, 0.word,
            ],
            groups: (groups.x, groups.y, batches))
    }
}

// MARK: - Attention

/// One operand of `attention.comp` read in place: slice n, position j, channel c at
/// `offset + n·slice + j·position + c·channel` of `tensor`'s storage.
struct AttentionView {
    var tensor: Tensor
    var offset = 0
    var slice: Int
    var position: Int
    var channel: Int

    /// A row-major `[N, L, D]` tensor.
    static func rows(_ t: Tensor) -> AttentionView {
        AttentionView(tensor: t, slice: t.shape[1] * t.shape[2], position: t.shape[2], channel: 1)
    }

    /// Channels `first…` of a channels-first `[N, C, L]` tensor.
    static func channelsFirst(_ t: Tensor, firstChannel first: Int = 0) -> AttentionView {
        AttentionView(
            tensor: t, offset: first * t.shape[2], slice: t.shape[1] * t.shape[2], position: 1, channel: t.shape[2])
    }

    var words: [UInt32] { [offset.word, slice.word, position.word, channel.word] }
}

extension VulkanBackend {
    /// `softmax(q·kᵀ·scale + mask)·v` for each of N `[L, D]` slices, fused on shader `attention` (an online softmax
    /// over blocks of keys; the scores never reach device memory).
    ///
    /// - Parameters:
    ///   - q: `[N, Lq, D]`.
    ///   - k: `[N, Lk, D]`.
    ///   - v: `[N, Lk, Dv]`.
    ///   - scale: multiplies the scores.
    ///   - mask: additive, `[Bm, Lq or 1, Lk]` with N a multiple of Bm: slice n adds item `n / (N / Bm)` (the heads of
    ///     one batch item share its mask), one row per query or one row for all. A row masked entirely (all −∞)
    ///     gives the mean of the values, as the CPU backend's uniform row.
    /// - Returns: `[N, Lq, Dv]`.
    public func attention(q: Tensor, k: Tensor, v: Tensor, scale: Float, mask: Tensor?) -> Tensor {
        precondition(q.rank == 3 && k.rank == 3 && v.rank == 3, "attention takes [N, L, D] tensors")
        let (n, lq, d) = (q.shape[0], q.shape[1], q.shape[2])
        let (lk, dv) = (k.shape[1], v.shape[2])
        precondition(k.shape == [n, lk, d], "attention keys \(k.shape) for queries \(q.shape)")
        precondition(v.shape[0] == n && v.shape[1] == lk, "attention values \(v.shape) for keys \(k.shape)")
        var maskWords: (groups: Int, rowStride: Int) = (0, 0)
        if let mask {
            precondition(mask.rank == 3 && mask.shape[2] == lk, "attention mask \(mask.shape) for \(lk) keys")
            precondition(mask.shape[1] == lq || mask.shape[1] == 1, "attention mask \(mask.shape) for \(lq) queries")
            precondition(mask.shape[0] > 0 && n % mask.shape[0] == 0, "attention mask \(mask.shape) for \(n) slices")
            precondition(mask.dtype == .f32, "attention mask of dtype \(mask.dtype.rawValue), expected F32")
            // [Bm, 1, Lk] with Lq = 1 is either form; one row per item reads the same elements.
            maskWords = (n / mask.shape[0], mask.shape[1] == 1 ? 0 : lk)
        }
        let out = empty([n, lq, dv])
        fusedAttention(
            q: .rows(q), queries: lq, channels: d, sources: [(.rows(k), .rows(v), lk)], valueChannels: dv,
            out: .rows(out), slices: n, scale: scale, mask: mask.map { ($0, maskWords.groups, maskWords.rowStride) })
        return out
    }

    /// Attention over channels-first `[N, C, T]` operands (the autoencoder's `AttnBlock`, one head of up to 512
    /// channels), fused on shader `attention`: `out[:, t] = Σ_s softmax_s(scale·q[:, t]·k[:, s])·v[:, s]`.
    ///
    /// - Parameters:
    ///   - q: `[N, D, T]`.
    ///   - k: `[N, D, S]`.
    ///   - v: `[N, Dv, S]`.
    /// - Returns: `[N, Dv, T]`.
    public func attentionChannelsFirst(q: Tensor, k: Tensor, v: Tensor, scale: Float) -> Tensor {
        precondition(q.rank == 3 && k.rank == 3 && v.rank == 3, "attention takes [N, D, L] tensors")
        let (n, d, t) = (q.shape[0], q.shape[1], q.shape[2])
        let s = k.shape[2]
        precondition(k.shape == [n, d, s], "attention keys \(k.shape) for queries \(q.shape)")
        precondition(v.shape == [n, v.shape[1], s], "attention values \(v.shape) for keys \(k.shape)")
        let out = empty([n, v.shape[1], t])
        fusedAttention(
            q: .channelsFirst(q), queries: t, channels: d, sources: [(.channelsFirst(k), .channelsFirst(v), s)],
            valueChannels: v.shape[1], out: .channelsFirst(out), slices: n, scale: scale, mask: nil)
        return out
    }

    /// GLIDE's `QKVAttentionLegacy` with the text's keys and values before the image's in one softmax, fused on shader
    /// `attention` with two key/value sources: q, k and v are the thirds of each slice of `qkv`, and `textKV` holds
    /// the text's keys then its values; all are read in place.
    ///
    /// - Parameters:
    ///   - qkv: `[N, 3D, T]`.
    ///   - textKV: `[N, 2D, S]`, or nil.
    /// - Returns: `[N, D, T]`.
    public func attentionChannelsFirst(qkv: Tensor, textKV: Tensor?, scale: Float) -> Tensor {
        precondition(qkv.rank == 3 && qkv.shape[1] % 3 == 0, "attention qkv of shape \(qkv.shape)")
        let (n, d, t) = (qkv.shape[0], qkv.shape[1] / 3, qkv.shape[2])
        var sources = [(keys: AttentionView, values: AttentionView, count: Int)]()
        if let textKV {
            precondition(
                textKV.rank == 3 && textKV.shape[0] == n && textKV.shape[1] == 2 * d,
                "attention text keys and values \(textKV.shape) for qkv \(qkv.shape)")
            sources.append((.channelsFirst(textKV), .channelsFirst(textKV, firstChannel: d), textKV.shape[2]))
        }
        sources.append((.channelsFirst(qkv, firstChannel: d), .channelsFirst(qkv, firstChannel: 2 * d), t))
        let out = empty([n, d, t])
        fusedAttention(
            q: .channelsFirst(qkv), queries: t, channels: d, sources: sources, valueChannels: d,
            out: .channelsFirst(out), slices: n, scale: scale, mask: nil)
        return out
    }

    /// Value channels one workgroup of `attention.comp` holds (its DVMAX); more go to further workgroups along z.
    static let attentionValueChannels = 512
    /// Queries per workgroup of `attention.comp` (its BQ).
    static let attentionQueries = 16

    /// One dispatch of `attention.comp` (see its header): the keys and values of `sources` (one or two) in order in
    /// one softmax; `mask` with its slices per item and row stride (0 or Lk).
    private func fusedAttention(
        q: AttentionView, queries lq: Int, channels d: Int,
        sources: [(keys: AttentionView, values: AttentionView, count: Int)], valueChannels dv: Int,
        out: AttentionView, slices n: Int, scale: Float, mask: (tensor: Tensor, groups: Int, rowStride: Int)?
    ) {
        precondition(sources.count == 1 || sources.count == 2, "attention of \(sources.count) key sources")
        let lk = sources.reduce(0) { $0 + $1.count }
        precondition(d >= 1 && lk >= 1, "attention needs at least one channel and one key, got \(d) and \(lk)")
        let operands = [q.tensor, out.tensor] + sources.flatMap { [$0.keys.tensor, $0.values.tensor] }
        for t in operands {
            precondition(t.dtype == .f32, "attention operand of dtype \(t.dtype.rawValue), expected F32")
            precondition(t.count <= Int(UInt32.max), "attention operand \(t.shape) too large to index")
        }
        guard lq > 0 && dv > 0 && n > 0 else { return }
        let groups = (
            x: (lq + Self.attentionQueries - 1) / Self.attentionQueries, y: n,
            z: (dv + Self.attentionValueChannels - 1) / Self.attentionValueChannels
        )
        precondition(
            groups.x <= Self.maxGroups && groups.y <= Self.maxGroups, "attention of \(n) × \(lq) exceeds the grid")
        // An absent second source repeats the first with no keys.
        let first = sources[0]
        let second = sources.count == 2 ? sources[1] : (keys: first.keys, values: first.values, count: 0)
        var push: [UInt32] = [lq.word, first.count.word, second.count.word, d.word, dv.word]
        push += [q.slice.word, q.position.word, q.channel.word]
        push += first.keys.words + first.values.words + second.keys.words + second.values.words
        push += [out.slice.word, out.position.word, out.channel.word]
        push += [scale.word, (mask?.groups ?? 0).word, (mask?.rowStride ?? 0).word]
        precondition(q.offset == 0 && out.offset == 0, "attention q and out views start at their tensor's start")
        dispatch(
            "attention",
            [
                q.tensor, first.keys.tensor, first.values.tensor, second.keys.tensor, second.values.tensor,
                mask?.tensor ?? q.tensor, out.tensor,
            ],
            push: push, groups: (groups.x, groups.y, groups.z))
    }
}
