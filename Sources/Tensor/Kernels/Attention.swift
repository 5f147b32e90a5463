extension Kernels {
    /// Scaled dot-product attention over independent heads: `softmax(Q·Kᵀ·scale + mask)·V` for each of N slices.
    ///
    /// - Parameters:
    ///   - q: `[N, Lq, D]` (N = batch × heads).
    ///   - k: `[N, Lk, D]`.
    ///   - v: `[N, Lk, Dv]`.
    ///   - scale: multiplies the scores (usually 1/√D; T5 uses 1).
    ///   - mask: additive, `[Bm, Lq or 1, Lk]` with N divisible by Bm; slice n uses mask row `n / (N / Bm)`
    ///     (heads of one batch item share its mask).
    /// - Returns: `[N, Lq, Dv]`.
    public static func attention(q: Tensor, k: Tensor, v: Tensor, scale: Float, mask: Tensor? = nil) -> Tensor {
        KernelProfile.measure(.attention) {
            precondition(q.rank == 3 && k.rank == 3 && v.rank == 3, "attention takes [N, L, D] tensors")
            let (n, lq, d) = (q.shape[0], q.shape[1], q.shape[2])
            let (lk, dv) = (k.shape[1], v.shape[2])
            precondition(k.shape == [n, lk, d], "attention keys \(k.shape) for queries \(q.shape)")
            precondition(v.shape[0] == n && v.shape[1] == lk, "attention values \(v.shape) for keys \(k.shape)")
            var maskRows = 0
            var maskGroups = 1
            if let mask {
                precondition(mask.rank == 3 && mask.shape[2] == lk, "attention mask \(mask.shape) for \(lk) keys")
                precondition(
                    mask.shape[1] == lq || mask.shape[1] == 1, "attention mask \(mask.shape) for \(lq) queries")
                precondition(
                    mask.shape[0] > 0 && n % mask.shape[0] == 0, "attention mask \(mask.shape) for \(n) slices")
                maskRows = mask.shape[1]
                maskGroups = n / mask.shape[0]
            }
            let out = Tensor(uninitialized: [n, lq, dv])
            let (qp, kp, vp, op) = (q.storage.pointer, k.storage.pointer, v.storage.pointer, out.storage.pointer)
            let mp = mask?.storage.pointer
            KernelProfile.addFlops(2 * Double(n * lq * lk) * Double(d + dv))
            forEachQueryBlock(slices: n, queries: lq, keys: lk) { slice, rows, scores in
                // S[rows, Lk] = scale · Q_n[rows, D] · K_n[Lk, D]ᵀ
                BLAS.sgemmSerial(
                    transB: true, m: rows.count, n: lk, k: d, alpha: scale, a: qp + (slice * lq + rows.lowerBound) * d,
                    lda: d, b: kp + slice * lk * d, ldb: d, c: scores, ldc: lk)
                for (i, row) in rows.enumerated() {
                    let s = scores + i * lk
                    if let mp {
                        let m = mp + (slice / maskGroups) * maskRows * lk + (maskRows == 1 ? 0 : row * lk)
                        for j in 0..<lk { s[j] += m[j] }
                    }
                    VectorMath.softmaxRow(s, width: lk)
                }
                // O_n[rows, Dv] = P[rows, Lk] · V_n[Lk, Dv]
                BLAS.sgemmSerial(
                    m: rows.count, n: dv, k: lk, a: scores, lda: lk, b: vp + slice * lk * dv, ldb: dv,
                    c: op + (slice * lq + rows.lowerBound) * dv, ldc: dv)
            }
            return out
        }
    }

    /// Queries handled together by one thread: their scores (`queryBlock × keys` floats) stay in its L2 cache
    /// between the two products and the softmax, instead of a whole `queries × keys` matrix going through memory.
    static let queryBlock = 64

    /// Runs `body(slice, rows, scores)` for every block of up to `queryBlock` queries of every slice, in parallel;
    /// `scores` is the calling thread's scratch with room for `rows.count × keys` floats.
    static func forEachQueryBlock(
        slices: Int, queries: Int, keys: Int,
        _ body: (_ slice: Int, _ rows: Range<Int>, _ scores: UnsafeMutablePointer<Float>) -> Void
    ) {
        let blocks = (queries + queryBlock - 1) / queryBlock
        ComputePool.current.parallelFor(slices * blocks) { range in
            let scores = Scratch.current.buffer(1, count: queryBlock * keys)
            for item in range {
                let (slice, block) = (item / blocks, item % blocks)
                let first = block * queryBlock
                body(slice, first..<min(queries, first + queryBlock), scores)
            }
        }
    }

    /// Attention with channel-first operands (the VAE's `AttnBlock`): for each of N slices,
    /// `out[:, t] = Σ_s softmax_s(scale · q[:, t]·k[:, s]) · v[:, s]`.
    ///
    /// - Parameters:
    ///   - q: `[N, D, T]`.
    ///   - k: `[N, D, S]`.
    ///   - v: `[N, Dv, S]`.
    /// - Returns: `[N, Dv, T]`.
    public static func attentionChannelsFirst(q: Tensor, k: Tensor, v: Tensor, scale: Float) -> Tensor {
        precondition(q.rank == 3 && k.rank == 3 && v.rank == 3, "attention takes [N, D, L] tensors")
        let (n, d) = (q.shape[0], q.shape[1])
        precondition(k.shape == [n, d, k.shape[2]], "attention keys \(k.shape) for queries \(q.shape)")
        precondition(v.shape == [n, v.shape[1], k.shape[2]], "attention values \(v.shape) for keys \(k.shape)")
        return packedAttention(
            q: AttentionOperand(q), keys: [AttentionOperand(k)], values: [AttentionOperand(v)], slices: n, channels: d,
            valueChannels: v.shape[1], scale: scale, operands: [q, k, v])
    }

    /// GLIDE's `QKVAttentionLegacy` with the text's keys and values (`encoder_kv`) before the image's, in one softmax:
    /// q, k and v are the thirds of each slice of `qkv` (`[N, 3·D, T]`), and `textKV` (`[N, 2·D, S]`) holds the text's
    /// keys then its values; all are read in place. Returns `[N, D, T]`.
    public static func attentionChannelsFirst(qkv: Tensor, textKV: Tensor?, scale: Float) -> Tensor {
        precondition(qkv.rank == 3 && qkv.shape[1] % 3 == 0, "attention qkv of shape \(qkv.shape)")
        let (n, d) = (qkv.shape[0], qkv.shape[1] / 3)
        var (keys, values) = ([AttentionOperand(qkv, firstChannel: d)], [AttentionOperand(qkv, firstChannel: 2 * d)])
        if let textKV {
            precondition(
                textKV.rank == 3 && textKV.shape[0] == n && textKV.shape[1] == 2 * d,
                "attention text keys and values \(textKV.shape) for qkv \(qkv.shape)")
            keys.insert(AttentionOperand(textKV), at: 0)
            values.insert(AttentionOperand(textKV, firstChannel: d), at: 0)
        }
        return packedAttention(
            q: AttentionOperand(qkv), keys: keys, values: values, slices: n, channels: d, valueChannels: d,
            scale: scale, operands: [qkv] + (textKV.map { [$0] } ?? []))
    }
}
