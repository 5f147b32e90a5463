extension Kernels {
    /// Positions of a channel-first attention operand read where they lie: for slice `n`, channel `c` and position
    /// `j < count`, `base[n · sliceStride + c · channelStride + j]` (so q, k and v can be read out of one qkv tensor).
    struct AttentionOperand {
        let base: UnsafePointer<Float>
        let sliceStride: Int
        let channelStride: Int
        let count: Int

        /// A contiguous `[N, C, L]` tensor's channels from `first` on.
        init(_ tensor: Tensor, firstChannel first: Int = 0) {
            precondition(tensor.rank == 3, "attention operand of shape \(tensor.shape)")
            count = tensor.shape[2]
            channelStride = count
            sliceStride = tensor.shape[1] * count
            base = UnsafePointer(tensor.storage.pointer) + first * count
        }

        /// Channel `c` of slice `n` at position 0.
        @inline(__always) func row(_ n: Int, _ c: Int) -> UnsafePointer<Float> {
            base + n * sliceStride + c * channelStride
        }
    }

    /// Channel-first attention with both products on `PanelGEMM`'s register tile: for each of `n` slices,
    /// `out[c, t] = Σ_s softmax_s(scale · Σ_d q[d, t]·k[d, s]) · v[c, s]`, the keys and values being `keys` and `values`
    /// one after the other (text tokens, then the image's positions).
    ///
    /// OpenBLAS ran the UNet's heads at 0.6–0.7 × its peak: each block of queries made a product with k = 64 (scores)
    /// and one with 64 rows (output), and it packed the head's keys and values again for every block. Here each
    /// slice's keys are packed once as rows of A (`[keys][D]`, eight keys interleaved per step: straight copies of the
    /// channel-first rows) and its values once as rows of A (`[Dv][keys]`, by 8 × 8 transposes). A block of 24 queries is
    /// then one panel of B: the scores come out transposed, `Sᵀ[keys][24]`, which is already the packed B of the second
    /// product; the softmax runs down its columns eight queries at a time, and the output is divided by the column
    /// sums on its way out. Returns `[N, Dv, T]`; `operands` are the tensors the operands view, kept alive meanwhile.
    ///
    /// With `sixteen` (`PanelGEMM.sixteenLanes`: cores with two 512-bit units) the blocks hold 48 queries, two panels,
    /// so both products run the 8 × 48 tile: the scores are written panel by panel (`cPanelStride`), as the second
    /// product's packed B; the queries past the last whole block of 48 go in blocks of 24. The same bits either way,
    /// and on such cores the UNet's and the VAE's attention take about two fifths less time than in blocks of 24.
    static func packedAttention(
        q: AttentionOperand, keys: [AttentionOperand], values: [AttentionOperand], slices n: Int, channels d: Int,
        valueChannels dv: Int, scale: Float, operands: [Tensor], sixteen: Bool = PanelGEMM.sixteenLanes
    ) -> Tensor {
        precondition(keys.count == values.count && zip(keys, values).allSatisfy { $0.count == $1.count })
        let s = keys.reduce(0) { $0 + $1.count }
        let t = q.count
        let result = Tensor(uninitialized: [n, dv, t])
        KernelProfile.measure(.attention) {
            KernelProfile.addFlops(2 * Double(n * t * s) * Double(d + dv))
            withExtendedLifetime(operands) {
                packedAttention(
                    q: q, keys: keys, values: values, slices: n, channels: d, valueChannels: dv, scale: scale,
                    sixteen: sixteen, into: result.storage.pointer)
            }
        }
        return result
    }

    private static func packedAttention(
        q: AttentionOperand, keys: [AttentionOperand], values: [AttentionOperand], slices n: Int, channels d: Int,
        valueChannels dv: Int, scale: Float, sixteen: Bool, into out: UnsafeMutablePointer<Float>
    ) {
        let (s, t) = (keys.reduce(0) { $0 + $1.count }, q.count)
        let step = PanelGEMM.aStep
        let keyFloats = PanelGEMM.packedCount(rows: s, k: d)
        let sliceFloats = keyFloats + PanelGEMM.packedCount(rows: dv, k: s)
        let packed = TensorStorage(count: n * sliceFloats, zeroed: false)
        let (keyPairs, valueGroups) = ((s + step - 1) / step, (dv + step - 1) / step)
        ComputePool.current.parallelFor(n * (keyPairs + valueGroups)) { range in
            for item in range {
                let (slice, g) = (item / (keyPairs + valueGroups), item % (keyPairs + valueGroups))
                let a = packed.pointer + slice * sliceFloats
                if g < keyPairs {
                    packKeys(keys, slice: slice, positions: g * step, channels: d, into: a + g * d * step)
                } else {
                    // values[g][j][l] = v[8g + l][j] (zero past the last channel), one operand's stretch of j at a time
                    let first = (g - keyPairs) * step
                    var j = 0
                    for operand in values {
                        interleave(
                            operand.row(slice, first), rows: min(step, dv - first), stride: operand.channelStride,
                            k: operand.count, into: a + keyFloats + first * s + j * step)
                        j += operand.count
                    }
                }
            }
        }
        let width = PanelGEMM.panelColumns
        // Blocks of 48 queries (two whole panels) with the sixteen-lane tile, then of 24 (one panel, maybe partial): a
        // block's panels of scores share one row stride, the width of its first panel.
        let (pairs, pairWidth) = sixteen ? (t / (2 * width), 2 * width) : (0, 0)
        let blocks = pairs + (t - pairs * pairWidth + width - 1) / width
        let widest = pairs > 0 ? pairWidth : width
        let (keyRows, valueRows) = (PanelGEMM.packedRows(s), PanelGEMM.packedRows(dv))
        let (keyPanels, valuePanels) = (keyRows / 4, valueRows / 4)
        ComputePool.current.parallelFor(n * blocks) { range in
            let scratch = Scratch.current
            let panel = scratch.buffer(0, count: d * widest)
            let scores = scratch.buffer(1, count: keyRows * widest)
            let product = scratch.buffer(2, count: valueRows * widest + widest)
            let inverse = product + valueRows * widest  // 1 / Σ of each column of the block
            for item in range {
                let (slice, block) = (item / blocks, item % blocks)
                let first = block < pairs ? block * pairWidth : pairs * pairWidth + (block - pairs) * width
                let columns = PanelGEMM.Columns(min(block < pairs ? pairWidth : width, t - first))
                let ldc = columns.padded
                // Panel p of the queries, [d][its width], at p · 24 · d (B's packed layout):
                // panel[p][c][j] = scale · q[c][first + 24p + j] (zero past the last query)
                for p in 0..<columns.panels {
                    let (w, start) = (columns.width(p), first + p * width)
                    let used = min(w, t - start)
                    let whole = used & ~7
                    for c in 0..<d {
                        let (src, dst) = (q.row(slice, c) + start, panel + p * width * d + c * w)
                        for j in stride(from: 0, to: whole, by: 8) {
                            VectorMath.store(scale * VectorMath.load(src + j), dst + j)
                        }
                        for j in whole..<w { dst[j] = j < used ? scale * src[j] : 0 }
                    }
                }
                // The scores likewise: panel p, [keys][its width], at p · 24 · keyRows.
                let a = packed.pointer + slice * sliceFloats
                let scoreStride = width * keyRows
                PanelGEMM.multiply(
                    a: a, rowPanels: keyPanels, b: panel, columns: columns, k: d, c: scores, ldc: columns.width(0),
                    sixteen: sixteen, cPanelStride: scoreStride)
                for p in 0..<columns.panels {
                    for g in 0..<(columns.width(p) / 8) {
                        let sums = softmaxColumns(scores + p * scoreStride + 8 * g, rows: s, stride: columns.width(p))
                        VectorMath.store(1 / sums, inverse + p * width + 8 * g)
                    }
                }
                PanelGEMM.multiply(
                    a: a + keyFloats, rowPanels: valuePanels, b: scores, columns: columns, k: s, c: product, ldc: ldc,
                    sixteen: sixteen, bPanelStride: scoreStride)
                // out[c][first + j] = product[c][j] / Σ column j
                let os = out + slice * dv * t + first
                let whole = columns.count & ~7
                for c in 0..<dv {
                    let (src, dst) = (product + c * ldc, os + c * t)
                    for j in stride(from: 0, to: whole, by: 8) {
                        VectorMath.store(VectorMath.load(src + j) * VectorMath.load(inverse + j), dst + j)
                    }
                    for j in whole..<columns.count { dst[j] = src[j] * inverse[j] }
                }
            }
        }
    }

    /// `out[c][l] = key(c, first + l)` for the eight positions from `first` across the operands (zero past the last):
    /// eight-float copies where the eight lie in one operand.
    static func packKeys(
        _ keys: [AttentionOperand], slice: Int, positions first: Int, channels d: Int,
        into out: UnsafeMutablePointer<Float>
    ) {
        let step = PanelGEMM.aStep
        var start = 0
        for operand in keys {
            if first >= start && first + step <= start + operand.count {
                for c in 0..<d {
                    VectorMath.store(VectorMath.load(operand.row(slice, c) + first - start), out + c * step)
                }
                return
            }
            start += operand.count
        }
        for l in 0..<step {
            var (position, source): (Int, AttentionOperand?) = (first + l, nil)
            for operand in keys {
                if position < operand.count {
                    source = operand
                    break
                }
                position -= operand.count
            }
            for c in 0..<d { out[c * step + l] = source.map { $0.row(slice, c)[position] } ?? 0 }
        }
    }

    /// Unnormalised softmax down eight columns of `rows` rows `stride` floats apart: each column's maximum subtracted
    /// and the exponentials stored in place; returns the eight column sums.
    @inline(__always)
    static func softmaxColumns(_ x: UnsafeMutablePointer<Float>, rows: Int, stride: Int) -> VectorMath.Vector {
        var peak = VectorMath.Vector(repeating: -.infinity)
        for r in 0..<rows { peak = VectorMath.maximum(peak, VectorMath.load(x + r * stride)) }
        var sum = VectorMath.Vector.zero
        for r in 0..<rows {
            let e = VectorMath.exp(VectorMath.load(x + r * stride) - peak)
            VectorMath.store(e, x + r * stride)
            sum += e
        }
        return sum
    }
}
