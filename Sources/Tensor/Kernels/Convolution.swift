/// Zero padding around the two spatial dimensions; asymmetric padding (the VAE encoder's downsampling pads only
/// right and bottom by one) is expressed directly.
public struct Padding: Equatable, Sendable {
    public var top: Int, left: Int, bottom: Int, right: Int

    public init(top: Int, left: Int, bottom: Int, right: Int) {
        precondition(top >= 0 && left >= 0 && bottom >= 0 && right >= 0, "negative padding")
        (self.top, self.left, self.bottom, self.right) = (top, left, bottom, right)
    }

    /// The same padding on every side.
    public static func uniform(_ p: Int) -> Padding { Padding(top: p, left: p, bottom: p, right: p) }
    public static let zero = Padding.uniform(0)
}

extension Kernels {
    /// The most floats one im2col buffer may hold (16 MiB): larger convolutions are done in bands of output rows,
    /// which keeps the columns in the last-level cache while the GEMM reads them (on the UNet's 64×64 layers, bands
    /// of 64 MiB and of 4 MiB were both slower).
    static let im2colBudget = 4 << 20
    /// Below this many output pixels per image, several images share one GEMM (wider products run faster).
    static let smallPlane = 2048

    /// 2-D convolution (cross-correlation, as PyTorch's `conv2d`) with zero padding.
    ///
    /// - Parameters:
    ///   - x: `[B, Cin, H, W]`.
    ///   - weight: `[Cout, Cin, KH, KW]`.
    ///   - bias: `[Cout]`, or nil.
    ///   - stride: step in both spatial dimensions.
    ///   - padding: zeros added around the input.
    /// - Returns: `[B, Cout, (H + top + bottom − KH) / stride + 1, (W + left + right − KW) / stride + 1]`.
    public static func conv2d(
        _ x: Tensor, weight: Tensor, bias: Tensor?, stride: Int = 1, padding: Padding = .zero
    ) -> Tensor {
        measureConv(x, weight: weight, stride: stride, padding: padding, upsampled: false) { algorithm in
            if algorithm != .im2col { return winogradConv3x3(x, weight: weight, bias: bias, algorithm: algorithm) }
            return conv2d(x, weight: weight, bias: bias, stride: stride, padding: padding, budget: im2colBudget)
        }
    }

    /// `conv2d(upsampleNearest2x(x), weight: weight, bias: bias, padding: .uniform(1))` for a 3×3 kernel (the
    /// VAE's and the UNet's upsampling layers). On the Winograd path the input transform reads x directly, so the
    /// upsampled tensor (268 MB before the VAE's last level at 512×512) is never made.
    public static func conv3x3Upsampled(_ x: Tensor, weight: Tensor, bias: Tensor?) -> Tensor {
        precondition(
            weight.rank == 4 && weight.shape[2] == 3 && weight.shape[3] == 3,
            "upsampling convolution weight must be [Cout, Cin, 3, 3], got \(weight.shape)")
        return measureConv(x, weight: weight, stride: 1, padding: .uniform(1), upsampled: true) { algorithm in
            if algorithm != .im2col {
                return winogradConv3x3(x, weight: weight, bias: bias, upsampled: true, algorithm: algorithm)
            }
            return conv2d(
                upsampleNearest2x(x), weight: weight, bias: bias, stride: 1, padding: .uniform(1),
                budget: im2colBudget)
        }
    }

    /// Runs `body` with the algorithm for this convolution, timed under its shape (the output's size) in the
    /// kernel profile.
    private static func measureConv(
        _ x: Tensor, weight: Tensor, stride: Int, padding: Padding, upsampled: Bool,
        _ body: (ConvAlgorithm) -> Tensor
    ) -> Tensor {
        let kernel = weight.rank == 4 ? (weight.shape[2], weight.shape[3]) : (0, 0)
        let factor = upsampled ? 2 : 1
        let size = x.shape.dropFirst(2).map { factor * $0 }
        let algorithm =
            x.rank == 4
            ? convAlgorithm(
                kernel: kernel, stride: stride, padding: padding, batch: x.shape[0], outH: size[0], outW: size[1],
                inChannels: weight.rank == 4 ? weight.shape[1] : 0, outChannels: weight.shape.first ?? 0)
            : .im2col
        return KernelProfile.measure(
            kernel == (1, 1) ? .conv1x1 : .conv3x3,
            shape: "conv\(kernel.0)×\(kernel.1)\(stride > 1 ? "/\(stride)" : "") \(weight.shape[1])→\(weight.shape[0]) "
                + "\(size.map(String.init).joined(separator: "×")) b\(x.shape[0]) \(algorithm.rawValue)"
                + (upsampled ? " ↑2" : "")
        ) { body(algorithm) }
    }

    /// `conv2d` by im2col and GEMM only (the direct method), for comparisons with the Winograd path.
    public static func conv2dDirect(
        _ x: Tensor, weight: Tensor, bias: Tensor?, stride: Int = 1, padding: Padding = .zero
    ) -> Tensor {
        conv2d(x, weight: weight, bias: bias, stride: stride, padding: padding, budget: im2colBudget)
    }

    /// `conv2d` with an explicit im2col budget (floats), so tests can force the banded and grouped paths.
    static func conv2d(
        _ x: Tensor, weight: Tensor, bias: Tensor?, stride: Int, padding: Padding, budget: Int
    ) -> Tensor {
        precondition(x.rank == 4, "conv2d input must be [B, C, H, W], got \(x.shape)")
        precondition(weight.rank == 4, "conv2d weight must be [Cout, Cin, KH, KW], got \(weight.shape)")
        precondition(stride >= 1, "conv2d stride must be ≥ 1")
        let (batch, cin, height, width) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (cout, kh, kw) = (weight.shape[0], weight.shape[2], weight.shape[3])
        precondition(weight.shape[1] == cin, "conv2d weight \(weight.shape) for \(cin) input channels")
        if let bias { precondition(bias.shape == [cout], "conv2d bias \(bias.shape) is not [\(cout)]") }
        let paddedH = height + padding.top + padding.bottom
        let paddedW = width + padding.left + padding.right
        precondition(paddedH >= kh && paddedW >= kw, "conv2d kernel \(kh)×\(kw) larger than padded input")
        let geometry = ConvGeometry(
            channels: cin, height: height, width: width, kernelH: kh, kernelW: kw, stride: stride,
            padding: padding, outH: (paddedH - kh) / stride + 1, outW: (paddedW - kw) / stride + 1)
        let y = Tensor(uninitialized: [batch, cout, geometry.outH, geometry.outW])
        let plane = geometry.outH * geometry.outW
        let k = cin * kh * kw
        let xp = x.storage.pointer
        let yp = y.storage.pointer
        let wp = weight.storage.pointer

        if geometry.isPointwise {
            pointwise(
                xp, batch: batch, channels: cin, length: plane, weight: wp, outChannels: cout, bias: bias, into: yp)
            return y
        }

        if plane < smallPlane && batch > 1 {
            // Several whole images per GEMM: columns of image b follow those of image b − 1.
            let imagesPerGroup = max(1, min(batch, budget / max(1, k * plane)))
            let scratch = Scratch.current
            let columns = scratch.buffer(0, count: k * plane * imagesPerGroup)
            let product = scratch.buffer(1, count: cout * plane * imagesPerGroup)
            var first = 0
            while first < batch {
                let count = min(imagesPerGroup, batch - first)
                let n = count * plane
                for i in 0..<count {
                    geometry.im2col(
                        xp + (first + i) * cin * height * width, rows: 0..<geometry.outH,
                        into: columns + i * plane, ldc: n)
                }
                // P[Cout, n] = W[Cout, Cin·KH·KW] · Col[Cin·KH·KW, n]
                BLAS.sgemm(m: cout, n: n, k: k, a: wp, lda: k, b: columns, ldb: n, c: product, ldc: n)
                let bp = bias?.storage.pointer
                let pp = product
                ComputePool.current.parallelFor(cout * count) { range in
                    for item in range {
                        let (co, i) = (item / count, item % count)
                        let src = pp + co * n + i * plane
                        let dst = yp + ((first + i) * cout + co) * plane
                        let add = bp?[co] ?? 0
                        for p in 0..<plane { dst[p] = src[p] + add }
                    }
                }
                first += count
            }
            return y
        }

        // One image at a time, in bands of output rows small enough for the im2col budget.
        let rowsPerBand = max(1, min(geometry.outH, budget / max(1, k * geometry.outW)))
        let columns = Scratch.current.buffer(0, count: k * rowsPerBand * geometry.outW)
        for b in 0..<batch {
            let yb = yp + b * cout * plane
            fillChannels(yb, channels: cout, size: plane, bias: bias)
            var row = 0
            while row < geometry.outH {
                let rows = row..<min(geometry.outH, row + rowsPerBand)
                let n = rows.count * geometry.outW
                geometry.im2col(xp + b * cin * height * width, rows: rows, into: columns, ldc: n)
                // Y_b[Cout, band] = W[Cout, Cin·KH·KW] · Col[Cin·KH·KW, band] + Y_b (the bias)
                BLAS.sgemm(
                    m: cout, n: n, k: k, a: wp, lda: k, b: columns, ldb: n,
                    beta: 1, c: yb + row * geometry.outW, ldc: plane)
                row = rows.upperBound
            }
        }
        return y
    }
}

/// The shape arithmetic of one convolution, and its im2col.
struct ConvGeometry {
    let channels: Int, height: Int, width: Int
    let kernelH: Int, kernelW: Int, stride: Int
    let padding: Padding
    let outH: Int, outW: Int

    var isPointwise: Bool { kernelH == 1 && kernelW == 1 && stride == 1 && padding == .zero }

    /// Writes the receptive fields of output rows `rows` of one image as columns:
    /// `col[(c·KH + i)·KW + j][(oh − rows.lower)·outW + ow] = x[c][oh·s − top + i][ow·s − left + j]` (0 outside).
    func im2col(_ image: UnsafePointer<Float>, rows: Range<Int>, into col: UnsafeMutablePointer<Float>, ldc: Int) {
        let kernelRows = channels * kernelH * kernelW
        ComputePool.current.parallelFor(kernelRows, minimumChunk: 4) { range in
            for r in range {
                let c = r / (kernelH * kernelW)
                let i = (r / kernelW) % kernelH
                let j = r % kernelW
                let plane = image + c * height * width
                var dst = col + r * ldc
                for oh in rows {
                    let ih = oh * stride - padding.top + i
                    if ih < 0 || ih >= height {
                        dst.update(repeating: 0, count: outW)
                    } else {
                        let src = plane + ih * width
                        if stride == 1 {
                            // Contiguous run: zeros, then a copy, then zeros.
                            let shift = j - padding.left
                            let lo = min(outW, max(0, -shift))
                            let hi = max(lo, min(outW, width - shift))
                            if lo > 0 { dst.update(repeating: 0, count: lo) }
                            if hi > lo { (dst + lo).update(from: src + lo + shift, count: hi - lo) }
                            if outW > hi { (dst + hi).update(repeating: 0, count: outW - hi) }
                        } else {
                            for ow in 0..<outW {
                                let iw = ow * stride - padding.left + j
                                dst[ow] = (iw >= 0 && iw < width) ? src[iw] : 0
                            }
                        }
                    }
                    dst += outW
                }
            }
        }
    }
}
