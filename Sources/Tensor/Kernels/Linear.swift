/// CPU kernels on float32 tensors, spread over `ComputePool.current`; products go through `BLAS.sgemm`.
public enum Kernels {}

extension Kernels {
    /// Fully connected layer: `y = x·Wᵀ + b`, with PyTorch's weight layout.
    ///
    /// - Parameters:
    ///   - x: `[..., in]`.
    ///   - weight: `[out, in]`.
    ///   - bias: `[out]`, or nil.
    /// - Returns: `[..., out]`.
    ///
    /// - Parameter rowIndependent: take `PanelGEMM`'s path whatever the row count, so that each row's result is the
    ///   same bit for bit whichever other rows come with it (OpenBLAS's small-matrix kernels, used under
    ///   `panelLinearRows` rows, sum in an order that depends on the row count).
    public static func linear(_ x: Tensor, weight: Tensor, bias: Tensor?, rowIndependent: Bool = false) -> Tensor {
        KernelProfile.measure(.linear) {
            precondition(weight.rank == 2, "linear weight must be [out, in], got \(weight.shape)")
            let (outFeatures, inFeatures) = (weight.shape[0], weight.shape[1])
            precondition(x.shape.last == inFeatures, "linear input \(x.shape) does not end in \(inFeatures)")
            if let bias {
                precondition(bias.shape == [outFeatures], "linear bias \(bias.shape) is not [\(outFeatures)]")
            }
            let rows = x.count / max(1, inFeatures)
            let y = Tensor(uninitialized: Array(x.shape.dropLast()) + [outFeatures])
            let yp = y.storage.pointer
            if (rows >= panelLinearRows || rowIndependent) && inFeatures > 0 {
                KernelProfile.addFlops(2 * Double(rows) * Double(outFeatures) * Double(inFeatures))
                panelLinear(
                    x.storage.pointer, rows: rows, inFeatures: inFeatures, weight: weight.storage.pointer,
                    outFeatures: outFeatures, bias: bias?.storage.pointer, into: yp)
                return y
            }
            if let bias {
                fillRows(yp, rows: rows, with: bias.storage.pointer, width: outFeatures)
            }
            // Y[rows, out] = X[rows, in] · W[out, in]ᵀ (+ Y, which holds the bias rows)
            BLAS.sgemm(
                transB: true, m: rows, n: outFeatures, k: inFeatures,
                a: x.storage.pointer, lda: inFeatures, b: weight.storage.pointer, ldb: inFeatures,
                beta: bias == nil ? 0 : 1, c: yp, ldc: outFeatures)
            return y
        }
    }

    /// 1-D convolution with kernel size 1 (a per-position linear map over channels): `y[b] = W·x[b] + bias`.
    ///
    /// - Parameters:
    ///   - x: `[B, Cin, L]`.
    ///   - weight: `[Cout, Cin, 1]` (or `[Cout, Cin]`).
    ///   - bias: `[Cout]`, or nil.
    /// - Returns: `[B, Cout, L]`.
    public static func conv1x1(_ x: Tensor, weight: Tensor, bias: Tensor?) -> Tensor {
        KernelProfile.measure(
            .conv1x1,
            shape: "conv1d \(weight.shape.count > 1 ? weight.shape[1] : 0)→\(weight.shape.first ?? 0) "
                + "L\(x.shape.last ?? 0) b\(x.shape.first ?? 0)"
        ) {
            precondition(x.rank == 3, "conv1d input must be [B, C, L], got \(x.shape)")
            precondition(
                weight.rank == 2 || (weight.rank == 3 && weight.shape[2] == 1),
                "conv1d kernel-1 weight must be [Cout, Cin, 1], got \(weight.shape)")
            let (batch, cin, length) = (x.shape[0], x.shape[1], x.shape[2])
            let cout = weight.shape[0]
            precondition(weight.shape[1] == cin, "conv1d weight \(weight.shape) for \(cin) input channels")
            let y = Tensor(uninitialized: [batch, cout, length])
            pointwise(
                x.storage.pointer, batch: batch, channels: cin, length: length, weight: weight.storage.pointer,
                outChannels: cout, bias: bias, into: y.storage.pointer)
            return y
        }
    }

    /// Batches with positions fewer than this go through one GEMM for all images (see `pointwise`).
    static let joinedLength = 1024

    /// `y[b] = W·x[b] + bias` for x `[batch, channels, length]`, W `[outChannels, channels]`, y `[batch, outChannels,
    /// length]`.
    ///
    /// With few positions (the UNet's 16×16 and 8×8 levels) the images are first gathered side by side, so one GEMM
    /// reads the weights once for the whole batch (each image's own GEMM read all of them from memory again, and
    /// 64 columns left OpenBLAS at three quarters of its peak).
    static func pointwise(
        _ x: UnsafePointer<Float>, batch: Int, channels cin: Int, length: Int, weight w: UnsafePointer<Float>,
        outChannels cout: Int, bias: Tensor?, into y: UnsafeMutablePointer<Float>
    ) {
        guard batch > 1 && length < joinedLength else {
            for b in 0..<batch {
                let yb = y + b * cout * length
                fillChannels(yb, channels: cout, size: length, bias: bias)
                // Y_b[Cout, L] = W[Cout, Cin] · X_b[Cin, L] (+ bias broadcast along L)
                BLAS.sgemm(
                    m: cout, n: length, k: cin, a: w, lda: cin, b: x + b * cin * length, ldb: length, beta: 1,
                    c: yb, ldc: length)
            }
            return
        }
        let n = batch * length
        let scratch = Scratch.current
        let (columns, product) = (scratch.buffer(0, count: cin * n), scratch.buffer(1, count: cout * n))
        // Columns[c][b·L + l] = x[b][c][l]
        ComputePool.current.parallelFor(cin * batch, minimumChunk: max(1, 16_384 / length)) { range in
            for item in range {
                let (c, b) = (item / batch, item % batch)
                (columns + c * n + b * length).update(from: x + (b * cin + c) * length, count: length)
            }
        }
        BLAS.sgemm(m: cout, n: n, k: cin, a: w, lda: cin, b: columns, ldb: n, c: product, ldc: n)
        let bp = bias?.storage.pointer
        ComputePool.current.parallelFor(cout * batch, minimumChunk: max(1, 16_384 / length)) { range in
            for item in range {
                let (o, b) = (item / batch, item % batch)
                let (src, dst, add) = (product + o * n + b * length, y + (b * cout + o) * length, bp?[o] ?? 0)
                for l in 0..<length { dst[l] = src[l] + add }
            }
        }
    }

    /// Writes `width` values of `row` into each of `rows` consecutive rows.
    static func fillRows(_ dest: UnsafeMutablePointer<Float>, rows: Int, with row: UnsafePointer<Float>, width: Int) {
        ComputePool.current.parallelFor(rows, minimumChunk: max(1, 16_384 / max(1, width))) { range in
            for r in range { (dest + r * width).update(from: row, count: width) }
        }
    }

    /// Fills `channels` planes of `size` values with the channel's bias (or zero).
    static func fillChannels(_ dest: UnsafeMutablePointer<Float>, channels: Int, size: Int, bias: Tensor?) {
        if let bias { precondition(bias.count == channels, "bias of \(bias.count) for \(channels) channels") }
        let bp = bias?.storage.pointer
        ComputePool.current.parallelFor(channels, minimumChunk: max(1, 16_384 / max(1, size))) { range in
            for c in range { (dest + c * size).update(repeating: bp?[c] ?? 0, count: size) }
        }
    }
}
