import CKernels

extension Kernels {
    /// `linear` through `PanelGEMM` from this many rows (fewer: OpenBLAS, whose small-matrix kernels suit them).
    static let panelLinearRows = 32

    /// Y[rows, out] = X[rows, in] · W[out, in]ᵀ (+ bias) on `PanelGEMM`'s register tile.
    ///
    /// X is packed once (pairs of 4-row panels, 8 rows interleaved per step of k); each thread then takes panels of 24
    /// output features, transposes their 24 rows of W into a packed B of `[in][24]` in its L2, multiplies every row panel
    /// of X by it and adds the bias on the way out. OpenBLAS did the same products at the text encoders' shapes (154
    /// rows) at 0.78 × its peak, a sixth of its time packing W again on every call.
    static func panelLinear(
        _ x: UnsafePointer<Float>, rows: Int, inFeatures k: Int, weight w: UnsafePointer<Float>, outFeatures: Int,
        bias: UnsafePointer<Float>?, into y: UnsafeMutablePointer<Float>
    ) {
        let packedRows = PanelGEMM.packedRows(rows)
        let packedX = Scratch.current.buffer(0, count: PanelGEMM.packedCount(rows: rows, k: k))
        let step = PanelGEMM.aStep
        // packedX[g][i][l] = x[8g + l][i] (zero past the last row).
        ComputePool.current.run(chunks: (rows + step - 1) / step) { g in
            interleave(
                x + g * step * k, rows: min(step, rows - g * step), stride: k, k: k, into: packedX + g * step * k)
        }
        // Two panels of B per thread's share with the sixteen-lane tiles (`kw_gemm_8x48` takes them together).
        let width = PanelGEMM.panelColumns * (PanelGEMM.sixteenLanes ? 2 : 1)
        let panels = (outFeatures + width - 1) / width
        ComputePool.current.run(chunks: panels) { p in
            let first = p * width
            let count = min(width, outFeatures - first)
            let columns = PanelGEMM.Columns(count)
            let scratch = Scratch.current
            let (panel, product) = (
                scratch.buffer(1, count: k * columns.padded), scratch.buffer(2, count: packedRows * columns.padded)
            )
            // panel[column 8q + l at row i] = w[first + 8q + l][i]
            for q in 0..<(columns.padded / 8) {
                interleave(
                    w + (first + 8 * q) * k, rows: max(0, min(8, count - 8 * q)), stride: k, k: k,
                    into: panel + columns.offset(row: 0, column: 8 * q, rows: k),
                    step: columns.width(8 * q / PanelGEMM.panelColumns))
            }
            // One row panel at a time, with the W rows of the panel this thread most likely takes next (the pool hands
            // them out in order) prefetched between them: the next transpose then reads them from L2.
            let next = p + ComputePool.current.threadCount
            let lines = next < panels ? (min(width, outFeatures - next * width) * k + 15) / 16 : 0
            let rowPanels = packedRows / PanelGEMM.panelRows
            var issued = 0
            // Pairs of row panels, so the AVX-512VL tiles (which take both panels of a pair) can run.
            for r in stride(from: 0, to: rowPanels, by: 2) {
                let end = min(rowPanels, r + 2)
                while issued < end * lines / rowPanels {
                    kw_prefetch(w + next * width * k + 16 * issued)
                    issued += 1
                }
                PanelGEMM.multiply(
                    a: packedX + r / 2 * step * k, rowPanels: end - r, b: panel, columns: columns, k: k,
                    c: product + r * PanelGEMM.panelRows * columns.padded, ldc: columns.padded)
            }
            addBias(
                product, stride: columns.padded, rows: rows, count: count, bias: bias.map { $0 + first },
                into: y + first, yStride: outFeatures)
        }
    }

    /// `y[r · yStride + j] = src[r · stride + j] + bias[j]` for r in 0..<rows, j in 0..<count.
    static func addBias(
        _ src: UnsafePointer<Float>, stride: Int, rows: Int, count: Int, bias: UnsafePointer<Float>?,
        into y: UnsafeMutablePointer<Float>, yStride: Int
    ) {
        let whole = count & ~7
        for r in 0..<rows {
            let (s, d) = (src + r * stride, y + r * yStride)
            var j = 0
            while j < whole {
                let add = bias.map { VectorMath.load($0 + j) } ?? .zero
                VectorMath.store(VectorMath.load(s + j) + add, d + j)
                j += 8
            }
            while j < count {
                d[j] = s[j] + (bias?[j] ?? 0)
                j += 1
            }
        }
    }

    /// `out[i · step + l] = src[l · stride + i]` for l in 0..<8 and i in 0..<k (zero for l ≥ rows): eight rows of k
    /// floats interleaved, by 8 × 8 transposes where whole (`panelLinear`'s operands, the Winograd weight transform's
    /// groups of eight filters).
    static func interleave(
        _ src: UnsafePointer<Float>, rows: Int, stride: Int, k: Int, into out: UnsafeMutablePointer<Float>,
        step: Int = 8
    ) {
        var i = 0
        if rows == 8 {
            while i + 8 <= k {
                kw_transpose8(src + i, stride, out + i * step, step)
                i += 8
            }
        }
        while i < k {
            for l in 0..<8 { out[i * step + l] = l < rows ? src[l * stride + i] : 0 }
            i += 1
        }
    }
}
