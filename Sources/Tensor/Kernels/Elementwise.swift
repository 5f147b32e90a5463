extension Kernels {
    /// `a + b`, same shapes.
    public static func add(_ a: Tensor, _ b: Tensor) -> Tensor { zipMap(a, b, +) }

    /// `b += a` element by element, in b's own storage (copied first only if shared or read-only): a residual add
    /// without a third tensor (one 134–268 MB allocation and one pass over memory less at the VAE's 512×512 planes).
    /// The same sums as `add(a, b)`.
    public static func add(_ a: Tensor, into b: inout Tensor) {
        precondition(a.shape == b.shape, "element-wise operands \(a.shape) and \(b.shape) differ")
        b.makeUnique()
        let (ap, bp) = (a.storage.pointer, b.storage.pointer)
        ComputePool.current.parallelFor(a.count, minimumChunk: 4096) { range in
            for i in range { bp[i] += ap[i] }
        }
    }

    /// `a · b` element by element, same shapes.
    public static func mul(_ a: Tensor, _ b: Tensor) -> Tensor { zipMap(a, b, *) }

    /// `a · s`.
    public static func scale(_ a: Tensor, by s: Float) -> Tensor { map(a) { $0 * s } }

    /// Combines two tensors of the same shape element by element, in parallel.
    public static func zipMap(_ a: Tensor, _ b: Tensor, _ f: (Float, Float) -> Float) -> Tensor {
        precondition(a.shape == b.shape, "element-wise operands \(a.shape) and \(b.shape) differ")
        let y = Tensor(uninitialized: a.shape)
        let (ap, bp, yp) = (a.storage.pointer, b.storage.pointer, y.storage.pointer)
        ComputePool.current.parallelFor(a.count, minimumChunk: 4096) { range in
            for i in range { yp[i] = f(ap[i], bp[i]) }
        }
        return y
    }

    /// Per-channel broadcast: `y[b, c, ...] = f(x[b, c, ...], v[b or 0, c])`, where `v` is `[C]`, `[1, C]` or `[B, C]`
    /// (trailing singleton dimensions allowed, as in PyTorch's `emb[..., None, None]`).
    public static func channelMap(_ x: Tensor, _ v: Tensor, _ f: (Float, Float) -> Float) -> Tensor {
        precondition(x.rank >= 2, "channel broadcast needs [B, C, ...], got \(x.shape)")
        let (batch, channels) = (x.shape[0], x.shape[1])
        let perBatch: Bool
        if v.count == channels {
            perBatch = false
        } else {
            precondition(
                v.count == batch * channels && v.shape.first == batch, "\(v.shape) does not broadcast to \(x.shape)")
            perBatch = true
        }
        let spatial = x.count / max(1, batch * channels)
        let y = Tensor(uninitialized: x.shape)
        let (xp, vp, yp) = (x.storage.pointer, v.storage.pointer, y.storage.pointer)
        ComputePool.current.parallelFor(batch * channels, minimumChunk: max(1, 4096 / max(1, spatial))) { range in
            for plane in range {
                let value = vp[perBatch ? plane : plane % channels]
                let base = plane * spatial
                for i in 0..<spatial { yp[base + i] = f(xp[base + i], value) }
            }
        }
        return y
    }

    /// `x + v` with `v` broadcast per channel (`[C]` or `[B, C]`).
    public static func addChannels(_ x: Tensor, _ v: Tensor) -> Tensor { channelMap(x, v, +) }

    /// `x · v` with `v` broadcast per channel (`[C]` or `[B, C]`).
    public static func mulChannels(_ x: Tensor, _ v: Tensor) -> Tensor { channelMap(x, v, *) }

    /// Rows of an embedding table: `y[i] = table[ids[i]]`.
    ///
    /// - Parameters:
    ///   - table: `[V, D]`.
    ///   - ids: indices in `0..<V`.
    /// - Returns: `[ids.count, D]`.
    public static func embedding(_ table: Tensor, ids: [Int]) -> Tensor {
        precondition(table.rank == 2, "embedding table must be [V, D], got \(table.shape)")
        let (vocab, width) = (table.shape[0], table.shape[1])
        let y = Tensor(uninitialized: [ids.count, width])
        for (row, id) in ids.enumerated() {
            precondition(id >= 0 && id < vocab, "embedding id \(id) outside 0..<\(vocab)")
            (y.storage.pointer + row * width).update(from: table.storage.pointer + id * width, count: width)
        }
        return y
    }

    /// Concatenation along dimension 1 (channels) of tensors that agree on every other dimension.
    public static func concatChannels(_ parts: [Tensor]) -> Tensor { concat(parts, axis: 1) }
}

extension Kernels {
    /// `x + v` with `v` (`[W]`) added to every row of the last dimension.
    public static func addRows(_ x: Tensor, _ v: Tensor) -> Tensor {
        let width = x.shape.last ?? 1
        precondition(v.count == width, "row vector of \(v.count) for rows of \(width)")
        let y = Tensor(uninitialized: x.shape)
        let (xp, vp, yp) = (x.storage.pointer, v.storage.pointer, y.storage.pointer)
        ComputePool.current.parallelFor(x.count / max(1, width), minimumChunk: max(1, 4096 / max(1, width))) { range in
            for r in range {
                for i in 0..<width { yp[r * width + i] = xp[r * width + i] + vp[i] }
            }
        }
        return y
    }
}
