extension Kernels {
    /// Reorders dimensions: `y[i_order[0], i_order[1], …] = x[i_0, i_1, …]`, i.e. output dimension d is input
    /// dimension `order[d]` (PyTorch `permute`), copied into contiguous memory.
    public static func permute(_ x: Tensor, _ order: [Int]) -> Tensor {
        precondition(order.sorted() == Array(0..<x.rank), "permutation \(order) for rank \(x.rank)")
        let outShape = order.map { x.shape[$0] }
        // Input strides, in the output's dimension order.
        var inStrides = [Int](repeating: 1, count: x.rank)
        for d in stride(from: x.rank - 2, through: 0, by: -1) { inStrides[d] = inStrides[d + 1] * x.shape[d + 1] }
        let strides = order.map { inStrides[$0] }
        let y = Tensor(uninitialized: outShape)
        let (xp, yp) = (x.storage.pointer, y.storage.pointer)
        let inner = outShape.last ?? 1
        let innerStride = strides.last ?? 1
        let outer = x.count / max(1, inner)
        ComputePool.current.parallelFor(outer, minimumChunk: max(1, 4096 / max(1, inner))) { range in
            for row in range {
                // Offset of this output row in the input.
                var rest = row
                var offset = 0
                for d in stride(from: outShape.count - 2, through: 0, by: -1) {
                    offset += (rest % outShape[d]) * strides[d]
                    rest /= outShape[d]
                }
                let dst = yp + row * inner
                for i in 0..<inner { dst[i] = xp[offset + i * innerStride] }
            }
        }
        return y
    }

    /// Swaps the last two dimensions: `[..., A, B] → [..., B, A]`.
    public static func transposeLast2(_ x: Tensor) -> Tensor {
        precondition(x.rank >= 2, "transpose needs rank ≥ 2, got \(x.shape)")
        var order = Array(0..<x.rank)
        order.swapAt(x.rank - 1, x.rank - 2)
        return permute(x, order)
    }

    /// Concatenation along dimension `axis` of tensors that agree on every other dimension.
    public static func concat(_ parts: [Tensor], axis: Int) -> Tensor {
        let (shape, outer, inner) = LayoutShapes.concat(parts.map(\.shape), axis: axis)
        let y = Tensor(uninitialized: shape)
        // The runs to copy, in y's order; shared out among the threads as ranges of y (the UNet's skip
        // concatenations are 25–50 MB, and one thread copying them kept the other waiting).
        var runs: [(source: UnsafePointer<Float>, count: Int)] = []
        for o in 0..<outer {
            for p in parts {
                let n = p.shape[axis] * inner
                if n > 0 { runs.append((UnsafePointer(p.storage.pointer + o * n), n)) }
            }
        }
        let starts = runs.reduce(into: [0]) { $0.append($0.last! + $1.count) }
        let yp = y.storage.pointer
        ComputePool.current.parallelFor(y.count, minimumChunk: 1 << 16) { range in
            // The first run that range overlaps, then each run's part within it.
            var r = max(0, (starts.firstIndex { $0 > range.lowerBound } ?? starts.count) - 1)
            var at = range.lowerBound
            while at < range.upperBound {
                let end = min(range.upperBound, starts[r + 1])
                (yp + at).update(from: runs[r].source + (at - starts[r]), count: end - at)
                at = end
                r += 1
            }
        }
        return y
    }

    /// The sub-tensor `range` along `axis`, copied.
    public static func slice(_ x: Tensor, axis: Int, _ range: Range<Int>) -> Tensor {
        let (shape, outer, inner) = LayoutShapes.slice(x.shape, axis: axis, range)
        let y = Tensor(uninitialized: shape)
        for o in 0..<outer {
            (y.storage.pointer + o * range.count * inner).update(
                from: x.storage.pointer + (o * x.shape[axis] + range.lowerBound) * inner, count: range.count * inner)
        }
        return y
    }
}

extension Kernels {
    /// `[N, L, H·Dh] → [N·H, L, Dh]`: heads as contiguous channel chunks, split into separate slices.
    public static func splitHeads(_ x: Tensor, heads: Int) -> Tensor {
        precondition(x.rank == 3 && x.shape[2] % heads == 0, "cannot split \(x.shape) into \(heads) heads")
        let (n, l, d) = (x.shape[0], x.shape[1], x.shape[2])
        return permute(x.reshaped([n, l, heads, d / heads]), [0, 2, 1, 3]).reshaped([n * heads, l, d / heads])
    }

    /// `[N·H, L, Dh] → [N, L, H·Dh]`, the inverse of `splitHeads`.
    public static func mergeHeads(_ x: Tensor, heads: Int) -> Tensor {
        precondition(x.rank == 3 && x.shape[0] % heads == 0, "cannot merge \(x.shape) over \(heads) heads")
        let (n, l, dh) = (x.shape[0] / heads, x.shape[1], x.shape[2])
        return permute(x.reshaped([n, heads, l, dh]), [0, 2, 1, 3]).reshaped([n, l, heads * dh])
    }
}
