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
    static func packedAttention(
        q: AttentionOperand, keys: [AttentionOperand], values: [AttentionOperand], slices n: Int, channels d: Int,
        valueChannels dv: Int, scale: Float, operands: [Tensor]
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
                    into: result.storage.pointer)
            }
        }
        return result
    }

    private static func packedAttention(
        q: AttentionOperand, keys: [AttentionOperand], values: [AttentionOperand], slices n: Int, channels d: Int,
        valueChannels dv: Int, scale: Float, into out: UnsafeMutablePointer<Float>
    ) {
        let (s, t) = (keys.reduce(0) { $0 + $1.count }, q.count)
        let step = PanelGEMM.aStep
        let keyFloats = PanelGEMM.packedCount(rows: s, k: d)
        let sliceFloats = keyFloats + PanelGEMM.packedCount(rows: dv, k: s)
        let packed = TensorStorage(count: n * sliceFloats, zeroed: false)
        let (keyPairs, valueGroups) = ((s + step - 1) / step, (dv + step - 1) / step)
        ComputePool.shared.parallelFor(n * (keyPairs + valueGroups)) { range in
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
        let blocks = (t + width - 1) / width
        let (keyPanels, valuePanels) = (PanelGEMM.packedRows(s) / 4, PanelGEMM.packedRows(dv) / 4)
        ComputePool.shared.parallelFor(n * blocks) { range in
            let scratch = Scratch.current
            let panel = scratch.buffer(0, count: d * width)
            let scores = scratch.buffer(1, count: PanelGEMM.packedRows(s) * width)
            let product = scratch.buffer(2, count: PanelGEMM.packedRows(dv) * width + width)
            let inverse = product + PanelGEMM.packedRows(dv) * width  // 1 / Σ of each column of the block
            for item in range {
                let (slice, first) = (item / blocks, item % blocks * width)
                let columns = PanelGEMM.Columns(min(width, t - first))
                let ldc = columns.padded
                let whole = columns.count & ~7
                // panel[c][j] = scale · q[c][first + j] (zero past the last query)
                for c in 0..<d {
                    let (src, dst) = (q.row(slice, c) + first, panel + c * ldc)
                    for j in stride(from: 0, to: whole, by: 8) {
                        VectorMath.store(scale * VectorMath.load(src + j), dst + j)
                    }
                    for j in whole..<ldc { dst[j] = j < columns.count ? scale * src[j] : 0 }
                }
                let a = packed.pointer + slice * sliceFloats
                PanelGEMM.multiply(a: a, rowPanels: keyPanels, b: panel, columns: columns, k: d, c: scores, ldc: ldc)
                for g in 0..<(ldc / 8) {
                    VectorMath.store(1 / softmaxColumns(scores + 8 * g, rows: s, stride: ldc), inverse + 8 * g)
                }
                PanelGEMM.multiply(
                    a: a + keyFloats, rowPanels: valuePanels, b: scores, columns: columns, k: s, c: product, ldc: ldc)
                // out[c][first + j] = product[c][j] / Σ column j
                let os = out + slice * dv * t + first
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
