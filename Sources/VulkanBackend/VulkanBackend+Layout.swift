import Tensor

// Layout operations: embedding rows, and every reordering of elements as strided copies of the `copy` shader (up to
// six dimensions, per-dimension source and destination strides), so they are exact. A half-precision source
// (a weight) is widened: these operations always give float32 tensors.

// MARK: - Strided copy

extension VulkanBackend {
    /// A region for the `copy` kernel: every index `(i₀, …)` of `shape` (row-major) copies
    /// `source[sourceOffset + Σ i_d·sourceStrides[d]]` to
    /// `destination[destinationOffset + Σ i_d·destinationStrides[d]]`; strides and offsets in elements.
    struct CopyRegion {
        var shape: [Int]
        var sourceStrides: [Int]
        var destinationStrides: [Int]
        var sourceOffset = 0
        var destinationOffset = 0
    }

    /// The most dimensions one `copy` dispatch takes.
    static let copyRank = 6

    /// Records one `copy` dispatch (`copy_f16` for a half-precision source) of `region` from `source` into
    /// `destination`.
    func copy(_ source: Tensor, into destination: Tensor, _ region: CopyRegion) {
        let rank = region.shape.count
        precondition(
            rank <= Self.copyRank && region.sourceStrides.count == rank && region.destinationStrides.count == rank,
            "a copy region of \(rank) dimensions (at most \(Self.copyRank), one stride per dimension)")
        let count = region.shape.reduce(1, *)
        guard count > 0 else { return }
        let pad = Self.copyRank - rank
        let shape = [Int](repeating: 1, count: pad) + region.shape
        let sourceStrides = [Int](repeating: 0, count: pad) + region.sourceStrides
        let destinationStrides = [Int](repeating: 0, count: pad) + region.destinationStrides
        let push =
            [
                Self.indexWord(count, "copy size"), Self.indexWord(region.sourceOffset, "source offset"),
                Self.indexWord(region.destinationOffset, "destination offset"),
            ]
            + shape.map { Self.indexWord($0, "copy dimension") }
            + sourceStrides.map { Self.indexWord($0, "source stride") }
            + destinationStrides.map { Self.indexWord($0, "destination stride") }
        dispatch1D(
            Self.weightKernel("copy", source), [source, destination], push: push,
            count: count)
    }

    /// A float32 or half-precision tensor of this device (a layout operation's source).
    private func checkSource(_ t: Tensor, _ role: String) {
        checkDevice(t, role)
        precondition(t.dtype == .f32 || t.dtype == .f16, "\(role) of dtype \(t.dtype.rawValue): F32 or F16 only")
    }
}

// MARK: - Operations

extension VulkanBackend {
    /// Rows `ids` of the `[V, D]` table (F32, or F16 widened to float32): `[ids.count, D]` — shader `embedding`
    /// (`embedding_f16`), the ids checked here and uploaded as 32-bit words. Exact.
    public func embedding(_ table: Tensor, ids: [Int]) -> Tensor {
        checkSource(table, "embedding table")
        precondition(table.rank == 2, "embedding table must be [V, D], got \(table.shape)")
        let (vocab, width) = (table.shape[0], table.shape[1])
        for id in ids { precondition(id >= 0 && id < vocab, "embedding id \(id) outside 0..<\(vocab)") }
        let y = empty([ids.count, width])
        guard !ids.isEmpty, width > 0 else { return y }
        let words = upload(words: ids.map { UInt32($0) })
        dispatch1D(
            Self.weightKernel("embedding", table), [table, words, y],
            push: [Self.indexWord(y.count, "element count"), width.word], count: y.count)
        return y
    }

    /// Concatenation along `axis` of tensors that agree on every other dimension — one `copy` per part into its
    /// region of the result. Exact.
    public func concat(_ parts: [Tensor], axis: Int) -> Tensor {
        for p in parts { checkSource(p, "concatenated tensor") }
        let (shape, outer, inner) = LayoutShapes.concat(parts.map(\.shape), axis: axis)
        let y = empty(shape)
        var at = 0
        for p in parts {
            let n = p.shape[axis]
            copy(
                p, into: y,
                CopyRegion(
                    shape: [outer, n, inner], sourceStrides: [n * inner, inner, 1],
                    destinationStrides: [shape[axis] * inner, inner, 1], destinationOffset: at * inner))
            at += n
        }
        return y
    }

    /// The sub-tensor `range` along `axis` — one `copy`. Exact.
    public func slice(_ x: Tensor, axis: Int, _ range: Range<Int>) -> Tensor {
        checkSource(x, "sliced tensor")
        let (shape, outer, inner) = LayoutShapes.slice(x.shape, axis: axis, range)
        let y = empty(shape)
        copy(
            x, into: y,
            CopyRegion(
                shape: [outer, range.count, inner], sourceStrides: [x.shape[axis] * inner, inner, 1],
                destinationStrides: [range.count * inner, inner, 1], sourceOffset: range.lowerBound * inner))
        return y
    }

    /// `[N, L, H·Dh] → [N·H, L, Dh]` — one `copy` over the result `[N, H, L, Dh]`. Exact.
    public func splitHeads(_ x: Tensor, heads: Int) -> Tensor {
        checkSource(x, "head input")
        precondition(
            x.rank == 3 && heads > 0 && x.shape[2] % heads == 0, "cannot split \(x.shape) into \(heads) heads")
        let (n, l, d) = (x.shape[0], x.shape[1], x.shape[2])
        let dh = d / heads
        let y = empty([n * heads, l, dh])
        copy(
            x, into: y,
            CopyRegion(
                shape: [n, heads, l, dh], sourceStrides: [l * d, dh, d, 1],
                destinationStrides: [heads * l * dh, l * dh, dh, 1]))
        return y
    }

    /// `[N·H, L, Dh] → [N, L, H·Dh]`, the inverse of `splitHeads` — one `copy` over the result `[N, L, H, Dh]`.
    /// Exact.
    public func mergeHeads(_ x: Tensor, heads: Int) -> Tensor {
        checkSource(x, "head output")
        precondition(
            x.rank == 3 && heads > 0 && x.shape[0] % heads == 0, "cannot merge \(x.shape) over \(heads) heads")
        let (n, l, dh) = (x.shape[0] / heads, x.shape[1], x.shape[2])
        let y = empty([n, l, heads * dh])
        copy(
            x, into: y,
            CopyRegion(
                shape: [n, l, heads, dh], sourceStrides: [heads * l * dh, dh, l * dh, 1],
                destinationStrides: [l * heads * dh, heads * dh, dh, 1]))
        return y
    }

    /// The last two dimensions swapped, `[..., A, B] → [..., B, A]` — one `copy`. Exact.
    public func transposeLast2(_ x: Tensor) -> Tensor {
        checkSource(x, "transposed tensor")
        precondition(x.rank >= 2, "transpose needs rank ≥ 2, got \(x.shape)")
        let (a, b) = (x.shape[x.rank - 2], x.shape[x.rank - 1])
        let outer = x.shape.dropLast(2).reduce(1, *)
        let y = empty(x.shape.dropLast(2) + [b, a])
        copy(
            x, into: y,
            CopyRegion(shape: [outer, b, a], sourceStrides: [a * b, 1, b], destinationStrides: [a * b, a, 1]))
        return y
    }

    /// Nearest-neighbour ×2 upsampling of `[N, C, H, W]`: `y[n, c, i, j] = x[n, c, i/2, j/2]` — one `copy` over
    /// `[N·C, H, 2, W, 2]` with zero source strides on the repeated dimensions. Exact.
    public func upsampleNearest2x(_ x: Tensor) -> Tensor {
        checkSource(x, "upsampled tensor")
        precondition(x.rank == 4, "upsampling needs [B, C, H, W], got \(x.shape)")
        let (planes, h, w) = (x.shape[0] * x.shape[1], x.shape[2], x.shape[3])
        let y = empty([x.shape[0], x.shape[1], 2 * h, 2 * w])
        copy(
            x, into: y,
            CopyRegion(
                shape: [planes, h, 2, w, 2], sourceStrides: [h * w, w, 0, 1, 0],
                destinationStrides: [4 * h * w, 4 * w, 2 * w, 2, 1]))
        return y
    }

    /// 2×2 average pooling, stride 2, of `[N, C, H, W]` (an odd last row or column dropped):
    /// `(x₀₀ + x₀₁ + x₁₀ + x₁₁)·0.25` summed left to right — shader `avg_pool`. Bit for bit the CPU's.
    public func avgPool2x2(_ x: Tensor) -> Tensor {
        checkActivation(x, "pooled tensor")
        precondition(x.rank == 4, "pooling needs [B, C, H, W], got \(x.shape)")
        let (planes, h, w) = (x.shape[0] * x.shape[1], x.shape[2], x.shape[3])
        let (oh, ow) = (h / 2, w / 2)
        let y = empty([x.shape[0], x.shape[1], oh, ow])
        guard y.count > 0 else { return y }
        dispatch1D(
            "avg_pool", [x, y],
            push: [Self.indexWord(planes * oh * ow, "element count"), h.word, w.word, oh.word, ow.word],
            count: y.count)
        return y
    }
}
