/// CPU kernels on float32 tensors, spread over `ComputePool.shared`; products go through `BLAS.sgemm`.
public enum Kernels {}

extension Kernels {
    /// Fully connected layer: `y = x·Wᵀ + b`, with PyTorch's weight layout.
    ///
    /// - Parameters:
    ///   - x: `[..., in]`.
    ///   - weight: `[out, in]`.
    ///   - bias: `[out]`, or nil.
    /// - Returns: `[..., out]`.
    public static func linear(_ x: Tensor, weight: Tensor, bias: Tensor?) -> Tensor {
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
            for b in 0..<batch {
                let yb = y.storage.pointer + b * cout * length
                fillChannels(yb, channels: cout, size: length, bias: bias)
                // Y_b[Cout, L] = W[Cout, Cin] · X_b[Cin, L] (+ bias broadcast along L)
                BLAS.sgemm(
                    m: cout, n: length, k: cin, a: weight.storage.pointer, lda: cin,
                    b: x.storage.pointer + b * cin * length, ldb: length, beta: 1, c: yb, ldc: length)
            }
            return y
        }
    }

    /// Writes `width` values of `row` into each of `rows` consecutive rows.
    static func fillRows(_ dest: UnsafeMutablePointer<Float>, rows: Int, with row: UnsafePointer<Float>, width: Int) {
        ComputePool.shared.parallelFor(rows, minimumChunk: max(1, 16_384 / max(1, width))) { range in
            for r in range { (dest + r * width).update(from: row, count: width) }
        }
    }

    /// Fills `channels` planes of `size` values with the channel's bias (or zero).
    static func fillChannels(_ dest: UnsafeMutablePointer<Float>, channels: Int, size: Int, bias: Tensor?) {
        if let bias { precondition(bias.count == channels, "bias of \(bias.count) for \(channels) channels") }
        let bp = bias?.storage.pointer
        ComputePool.shared.parallelFor(channels, minimumChunk: max(1, 16_384 / max(1, size))) { range in
            for c in range { (dest + c * size).update(repeating: bp?[c] ?? 0, count: size) }
        }
    }
}
