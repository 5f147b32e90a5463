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
            let scores = TensorStorage(count: lq * lk, zeroed: false)
            let sp = scores.pointer
            for slice in 0..<n {
                // S[Lq, Lk] = scale · Q_n[Lq, D] · K_n[Lk, D]ᵀ
                BLAS.sgemm(
                    transB: true, m: lq, n: lk, k: d, alpha: scale, a: q.storage.pointer + slice * lq * d, lda: d,
                    b: k.storage.pointer + slice * lk * d, ldb: d, c: sp, ldc: lk)
                if let mask {
                    let mp = mask.storage.pointer + (slice / maskGroups) * maskRows * lk
                    ComputePool.shared.parallelFor(lq, minimumChunk: 16) { range in
                        for row in range {
                            let m = mp + (maskRows == 1 ? 0 : row * lk)
                            let s = sp + row * lk
                            for j in 0..<lk { s[j] += m[j] }
                        }
                    }
                }
                softmaxRows(sp, rows: lq, width: lk)
                // O_n[Lq, Dv] = P[Lq, Lk] · V_n[Lk, Dv]
                BLAS.sgemm(
                    m: lq, n: dv, k: lk, a: sp, lda: lk, b: v.storage.pointer + slice * lk * dv, ldb: dv,
                    c: out.storage.pointer + slice * lq * dv, ldc: dv)
            }
            return out
        }
    }

    /// Attention with channel-first operands (GLIDE's `QKVAttentionLegacy`, the VAE's `AttnBlock`): for each of N
    /// slices, `out[:, t] = Σ_s softmax_s(scale · q[:, t]·k[:, s]) · v[:, s]`.
    ///
    /// - Parameters:
    ///   - q: `[N, D, T]`.
    ///   - k: `[N, D, S]`.
    ///   - v: `[N, Dv, S]`.
    /// - Returns: `[N, Dv, T]`.
    public static func attentionChannelsFirst(q: Tensor, k: Tensor, v: Tensor, scale: Float) -> Tensor {
        KernelProfile.measure(.attention) {
            precondition(q.rank == 3 && k.rank == 3 && v.rank == 3, "attention takes [N, D, L] tensors")
            let (n, d, t) = (q.shape[0], q.shape[1], q.shape[2])
            let s = k.shape[2]
            let dv = v.shape[1]
            precondition(k.shape == [n, d, s], "attention keys \(k.shape) for queries \(q.shape)")
            precondition(v.shape == [n, dv, s], "attention values \(v.shape) for keys \(k.shape)")
            let out = Tensor(uninitialized: [n, dv, t])
            let scores = Scratch.current.buffer(1, count: t * s)
            for slice in 0..<n {
                // S[T, S] = scale · Q_nᵀ[T, D] · K_n[D, S]
                BLAS.sgemm(
                    transA: true, m: t, n: s, k: d, alpha: scale, a: q.storage.pointer + slice * d * t, lda: t,
                    b: k.storage.pointer + slice * d * s, ldb: s, c: scores, ldc: s)
                softmaxRows(scores, rows: t, width: s)
                // O_n[Dv, T] = V_n[Dv, S] · Pᵀ[S, T]
                BLAS.sgemm(
                    transB: true, m: dv, n: t, k: s, a: v.storage.pointer + slice * dv * s, lda: s, b: scores, ldb: s,
                    c: out.storage.pointer + slice * dv * t, ldc: t)
            }
            return out
        }
    }
}
