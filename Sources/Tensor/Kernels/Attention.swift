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
        ComputePool.shared.parallelFor(slices * blocks) { range in
            let scores = Scratch.current.buffer(1, count: queryBlock * keys)
            for item in range {
                let (slice, block) = (item / blocks, item % blocks)
                let first = block * queryBlock
                body(slice, first..<min(queries, first + queryBlock), scores)
            }
        }
    }

    /// Attention with channel-first operands (GLIDE's `QKVAttentionLegacy`, the VAE's `AttnBlock`): for each of N
    /// slices, `out[:, t] = Σ_s softmax_s(scale · q[:, t]·k[:, s]) · v[:, s]`.
    ///
    /// - Parameters:
    ///   - q: `[N, D, T]`.
    ///   - k: `[N, D, S]`.
    ///   - v: `[N, Dv, S]`.
    ///   - packedFrom: queries from which heads up to `packedAttentionWidth` wide take `packedAttention` (tests force it).
    /// - Returns: `[N, Dv, T]`.
    public static func attentionChannelsFirst(
        q: Tensor, k: Tensor, v: Tensor, scale: Float, packedFrom: Int = packedAttentionQueries
    ) -> Tensor {
        KernelProfile.measure(.attention) {
            precondition(q.rank == 3 && k.rank == 3 && v.rank == 3, "attention takes [N, D, L] tensors")
            let (n, d, t) = (q.shape[0], q.shape[1], q.shape[2])
            let s = k.shape[2]
            let dv = v.shape[1]
            precondition(k.shape == [n, d, s], "attention keys \(k.shape) for queries \(q.shape)")
            precondition(v.shape == [n, dv, s], "attention values \(v.shape) for keys \(k.shape)")
            let out = Tensor(uninitialized: [n, dv, t])
            let (qp, kp, vp, op) = (q.storage.pointer, k.storage.pointer, v.storage.pointer, out.storage.pointer)
            KernelProfile.addFlops(2 * Double(n * t * s) * Double(d + dv))
            if n == 0 || t == 0 || dv == 0 { return out }
            if d <= packedAttentionWidth && dv <= packedAttentionWidth && t >= packedFrom && s > 0 {
                packedAttention(
                    q: qp, k: kp, v: vp, out: op, slices: n, width: d, queries: t, keys: s, values: dv, scale: scale)
                return out
            }
            forEachQueryBlock(slices: n, queries: t, keys: s) { slice, rows, scores in
                // S[rows, S] = scale · Q_nᵀ[rows, D] · K_n[D, S]
                BLAS.sgemmSerial(
                    transA: true, m: rows.count, n: s, k: d, alpha: scale, a: qp + slice * d * t + rows.lowerBound,
                    lda: t, b: kp + slice * d * s, ldb: s, c: scores, ldc: s)
                for i in 0..<rows.count { VectorMath.softmaxRow(scores + i * s, width: s) }
                // O_n[Dv, rows] = V_n[Dv, S] · Pᵀ[S, rows]
                BLAS.sgemmSerial(
                    transB: true, m: dv, n: rows.count, k: s, a: vp + slice * dv * s, lda: s, b: scores, ldb: s,
                    c: op + slice * dv * t + rows.lowerBound, ldc: t)
            }
            return out
        }
    }

    /// Head widths (D and Dv) up to which `attentionChannelsFirst` takes `packedAttention`: the UNet's heads (64).
    /// The VAE's single head of 512 channels keeps OpenBLAS, whose products are long enough in every dimension.
    static let packedAttentionWidth = 128
    /// Queries from which `attentionChannelsFirst` takes `packedAttention` (`bench kernels --only attention`: 12 heads
    /// of the UNet's 32×32 level, 1024 queries, 0.67–0.74 × sgemm against OpenBLAS's 0.59–0.68; the 16×16 level, 256
    /// queries, the same; 8×8, 64 queries, 0.32–0.35 against 0.41–0.49: too few queries per head to pay for packing).
    public static let packedAttentionQueries = 512

    /// `attentionChannelsFirst` on `PanelGEMM`'s register tile, 24 queries at a time.
    ///
    /// With heads of 64 channels each OpenBLAS product was short in one dimension (Q·Kᵀ over 64, P·V onto 64) and
    /// packed its operands again for every block of queries: attention ran at two thirds of the sgemm peak. Here
    /// each slice's keys (scaled, as Kᵀ: rows are keys) and values are packed once; each block of 24 queries gets
    /// its scores transposed, Sᵀ[keys, 24] = Kᵀ·Q (already the packed B of the second product), a softmax down the
    /// columns (`softmaxColumns`), then O[Dv, 24] = V·Sᵀ, written out divided by each query's sum.
    static func packedAttention(
        q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>,
        slices: Int, width d: Int, queries t: Int, keys s: Int, values dv: Int, scale: Float
    ) {
        let (keyRows, valueRows) = (PanelGEMM.packedRows(s), PanelGEMM.packedRows(dv))
        let (keyFloats, valueFloats) = (PanelGEMM.packedCount(rows: s, k: d), PanelGEMM.packedCount(rows: dv, k: s))
        let packed = Scratch.current.buffer(0, count: slices * (keyFloats + valueFloats))
        let step = PanelGEMM.aStep
        // Kᵀ·scale as A ([s / 8][d][8]) and V as A ([dv / 8][s][8]) for every slice, zero rows past s and dv.
        ComputePool.shared.parallelFor(slices) { range in
            for slice in range {
                let (keys, values) = (k + slice * d * s, v + slice * dv * s)
                let a = packed + slice * (keyFloats + valueFloats)
                for group in 0..<(keyFloats / (step * d)) {
                    let first = group * step
                    let lanes = min(step, s - first)
                    for i in 0..<d {
                        let dst = a + (group * d + i) * step
                        let src = keys + i * s + first
                        if lanes == step {
                            PanelGEMM.store(PanelGEMM.load(src) * scale, dst)
                        } else {
                            for lane in 0..<step { dst[lane] = lane < lanes ? src[lane] * scale : 0 }
                        }
                    }
                }
                let b = a + keyFloats
                for group in 0..<(valueFloats / (step * s)) {
                    let first = group * step
                    let lanes = min(step, dv - first)
                    let (src, dst) = (values + first * s, b + group * s * step)
                    var j = 0
                    if lanes == step {
                        while j + 8 <= s {
                            PanelGEMM.transpose8(src + j, stride: s, into: dst + j * step)
                            j += 8
                        }
                    }
                    for j in j..<s {
                        for lane in 0..<step { dst[j * step + lane] = lane < lanes ? src[lane * s + j] : 0 }
                    }
                }
            }
        }
        let panels = (t + PanelGEMM.panelColumns - 1) / PanelGEMM.panelColumns
        ComputePool.shared.parallelFor(slices * panels) { range in
            let width = PanelGEMM.panelColumns
            let buffer = Scratch.current.buffer(1, count: (d + keyRows + valueRows + 1) * width)
            let (queryPanel, scores) = (buffer, buffer + d * width)
            let (result, inverse) = (scores + keyRows * width, scores + (keyRows + valueRows) * width)
            for item in range {
                let (slice, panel) = (item / panels, item % panels)
                let first = panel * width
                let columns = PanelGEMM.Columns(min(width, t - first))
                let ldc = columns.padded
                // Q's columns of this block as B ([d][ldc], zero past the last query).
                let queries = q + slice * d * t + first
                for i in 0..<d {
                    let (src, dst) = (queries + i * t, queryPanel + i * ldc)
                    if columns.count == width {
                        for j in stride(from: 0, to: width, by: 8) { PanelGEMM.store(PanelGEMM.load(src + j), dst + j) }
                    } else {
                        for j in 0..<ldc { dst[j] = j < columns.count ? src[j] : 0 }
                    }
                }
                let a = packed + slice * (keyFloats + valueFloats)
                PanelGEMM.multiply(
                    a: a, rowPanels: keyRows / PanelGEMM.panelRows, b: queryPanel, columns: columns, k: d, c: scores,
                    ldc: ldc)
                softmaxColumns(scores, rows: s, columns: ldc, inverse: inverse)
                PanelGEMM.multiply(
                    a: a + keyFloats, rowPanels: valueRows / PanelGEMM.panelRows, b: scores, columns: columns, k: s,
                    c: result, ldc: ldc)
                let o = out + slice * dv * t + first
                if columns.count == width {
                    let (i0, i1, i2) = (
                        PanelGEMM.load(inverse), PanelGEMM.load(inverse + 8), PanelGEMM.load(inverse + 16)
                    )
                    for c in 0..<dv {
                        let (src, dst) = (result + c * ldc, o + c * t)
                        PanelGEMM.store(PanelGEMM.load(src) * i0, dst)
                        PanelGEMM.store(PanelGEMM.load(src + 8) * i1, dst + 8)
                        PanelGEMM.store(PanelGEMM.load(src + 16) * i2, dst + 16)
                    }
                } else {
                    for c in 0..<dv {
                        for j in 0..<columns.count { o[c * t + j] = result[c * ldc + j] * inverse[j] }
                    }
                }
            }
        }
    }

    /// Column-wise exponentials of `rows × columns` scores (`columns` 8, 16 or 24, rows `columns` floats apart): each
    /// column shifted by its maximum; `inverse[j]` = 1 / the column's sum.
    ///
    /// The scores are swept as one contiguous run of 16-float vectors, whose lanes fall on the columns with a period
    /// of 48 floats (three vectors) for 24 columns, 16 for 16 and 8: per-lane maxima and sums are kept for one period
    /// and folded into the columns at the end (a sweep down each group of eight columns was a quarter of the
    /// attention's time).
    static func softmaxColumns(
        _ scores: UnsafeMutablePointer<Float>, rows: Int, columns: Int, inverse: UnsafeMutablePointer<Float>
    ) {
        typealias Vector = VectorMath.Vector
        precondition(columns % 8 == 0 && columns <= 24, "softmax over \(columns) columns")
        let count = rows * columns
        let period = columns == 24 ? 48 : 16
        let whole = count / period * period
        /// The column of lane `lane` of vector `k` within a period.
        @inline(__always) func column(_ k: Int, _ lane: Int) -> Int { (16 * k + lane) % columns }
        var peaks = (Vector(repeating: -.infinity), Vector(repeating: -.infinity), Vector(repeating: -.infinity))
        var i = 0
        if period == 48 {
            while i < whole {
                peaks.0 = VectorMath.maximum(peaks.0, VectorMath.load(scores + i))
                peaks.1 = VectorMath.maximum(peaks.1, VectorMath.load(scores + i + 16))
                peaks.2 = VectorMath.maximum(peaks.2, VectorMath.load(scores + i + 32))
                i += 48
            }
        } else {
            while i < whole {
                peaks.0 = VectorMath.maximum(peaks.0, VectorMath.load(scores + i))
                i += 16
            }
        }
        var peak = [Float](repeating: -.infinity, count: 24)
        for lane in 0..<16 {
            peak[column(0, lane)] = max(peak[column(0, lane)], peaks.0[lane])
            peak[column(1, lane)] = max(peak[column(1, lane)], peaks.1[lane])
            peak[column(2, lane)] = max(peak[column(2, lane)], peaks.2[lane])
        }
        for j in whole..<count { peak[j % columns] = max(peak[j % columns], scores[j]) }
        var shifts = (Vector(), Vector(), Vector())
        for lane in 0..<16 {
            shifts.0[lane] = peak[column(0, lane)]
            shifts.1[lane] = peak[column(1, lane)]
            shifts.2[lane] = peak[column(2, lane)]
        }
        var sums = (Vector.zero, Vector.zero, Vector.zero)
        i = 0
        if period == 48 {
            while i < whole {
                let e0 = VectorMath.exp(VectorMath.load(scores + i) - shifts.0)
                let e1 = VectorMath.exp(VectorMath.load(scores + i + 16) - shifts.1)
                let e2 = VectorMath.exp(VectorMath.load(scores + i + 32) - shifts.2)
                VectorMath.store(e0, scores + i)
                VectorMath.store(e1, scores + i + 16)
                VectorMath.store(e2, scores + i + 32)
                (sums.0, sums.1, sums.2) = (sums.0 + e0, sums.1 + e1, sums.2 + e2)
                i += 48
            }
        } else {
            while i < whole {
                let e = VectorMath.exp(VectorMath.load(scores + i) - shifts.0)
                VectorMath.store(e, scores + i)
                sums.0 += e
                i += 16
            }
        }
        var total = [Float](repeating: 0, count: 24)
        for lane in 0..<16 {
            total[column(0, lane)] += sums.0[lane]
            total[column(1, lane)] += sums.1[lane]
            total[column(2, lane)] += sums.2[lane]
        }
        for j in whole..<count {
            let e = VectorMath.exp(scores[j] - peak[j % columns])
            scores[j] = e
            total[j % columns] += e
        }
        for j in 0..<columns { inverse[j] = 1 / total[j] }
    }
}
