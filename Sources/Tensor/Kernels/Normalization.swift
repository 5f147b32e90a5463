import Foundation

extension Kernels {
    /// Group normalization (PyTorch `GroupNorm`): for each image and each of `groups` channel groups,
    /// `y = (x − mean) / √(var + eps) · weight[c] + bias[c]`, statistics over the group's channels and positions
    /// (biased variance), accumulated in double precision. With `silu`, `y · σ(y)` is applied in the same pass.
    ///
    /// - Parameters:
    ///   - x: `[B, C, ...]` with C divisible by `groups`.
    ///   - weight, bias: `[C]`, or nil for 1 and 0.
    public static func groupNorm(
        _ x: consuming Tensor, groups: Int, weight: Tensor?, bias: Tensor?, eps: Float, silu: Bool = false
    ) -> Tensor {
        groupNorm(consume x, groups: groups, weight: weight, bias: bias, eps: eps, modulation: nil, silu: silu)
    }

    /// Group normalization followed by a per-item scale and shift (GLIDE's `use_scale_shift_norm`):
    /// `y = GN(x)·(1 + scale[b, c]) + shift[b, c]`, then SiLU when `silu`, in one pass.
    ///
    /// - Parameter modulation: `[B, 2C]`, scale in the first C columns and shift in the last C (the chunk order
    ///   of `emb_out.chunk(2, dim=1)`).
    ///
    /// A tensor passed as its last use (a temporary, or `consume x`) is normalized in its own storage: each group's
    /// statistics are taken before any of its elements is written.
    public static func groupNorm(
        _ x: consuming Tensor, groups: Int, weight: Tensor?, bias: Tensor?, eps: Float, modulation: Tensor?,
        silu: Bool
    ) -> Tensor {
        let inPlace = x.isUniquelyWritable()
        return KernelProfile.measure(.norms) {
            precondition(x.rank >= 2, "group norm input must be [B, C, ...], got \(x.shape)")
            let (batch, channels) = (x.shape[0], x.shape[1])
            precondition(
                groups > 0 && channels % groups == 0, "\(channels) channels do not split into \(groups) groups")
            if let weight {
                precondition(weight.count == channels, "group norm weight \(weight.shape) for \(channels)")
            }
            if let bias { precondition(bias.count == channels, "group norm bias \(bias.shape) for \(channels)") }
            if let modulation {
                precondition(
                    modulation.count == batch * 2 * channels,
                    "modulation \(modulation.shape) for [\(batch), \(2 * channels)]")
            }
            let spatial = x.count / max(1, batch * channels)
            let perGroup = channels / groups
            let y = inPlace ? x : Tensor(uninitialized: x.shape)
            let (xp, yp) = (x.storage.pointer, y.storage.pointer)
            let wp = weight?.storage.pointer
            let bp = bias?.storage.pointer
            let mp = modulation?.storage.pointer
            ComputePool.current.parallelFor(batch * groups) { range in
                for item in range {
                    let (b, g) = (item / groups, item % groups)
                    let base = item * perGroup * spatial
                    let n = perGroup * spatial
                    let (mean, invStd) = meanAndInverseStd(xp + base, count: n, eps: eps)
                    for cc in 0..<perGroup {
                        let c = g * perGroup + cc
                        var scale = invStd * (wp?[c] ?? 1)
                        var shift = (bp?[c] ?? 0) - mean * scale
                        if let mp {
                            // (x̂·w + b)·(1 + s) + t, folded into one multiply-add per element.
                            let s = 1 + mp[b * 2 * channels + c]
                            let t = mp[b * 2 * channels + channels + c]
                            scale *= s
                            shift = shift * s + t
                        }
                        VectorMath.scaleShift(
                            xp + base + cc * spatial, into: yp + base + cc * spatial, count: spatial, scale: scale,
                            shift: shift, silu: silu)
                    }
                }
            }
            return y
        }
    }

    /// Layer normalization over the last dimension (PyTorch `LayerNorm`):
    /// `y = (x − mean) / √(var + eps) · weight + bias`.
    public static func layerNorm(_ x: Tensor, weight: Tensor?, bias: Tensor?, eps: Float) -> Tensor {
        KernelProfile.measure(.norms) {
            let width = x.shape.last ?? 1
            if let weight {
                precondition(weight.count == width, "layer norm weight \(weight.shape) for width \(width)")
            }
            if let bias { precondition(bias.count == width, "layer norm bias \(bias.shape) for width \(width)") }
            let y = Tensor(uninitialized: x.shape)
            let (xp, yp) = (x.storage.pointer, y.storage.pointer)
            let wp = weight?.storage.pointer
            let bp = bias?.storage.pointer
            ComputePool.current.parallelFor(x.count / max(1, width), minimumChunk: 8) { range in
                for row in range {
                    let (mean, invStd) = meanAndInverseStd(xp + row * width, count: width, eps: eps)
                    let src = xp + row * width
                    let dst = yp + row * width
                    for i in 0..<width { dst[i] = (src[i] - mean) * invStd * (wp?[i] ?? 1) + (bp?[i] ?? 0) }
                }
            }
            return y
        }
    }

    /// Root-mean-square normalization over the last dimension (T5's `T5LayerNorm`, no mean subtracted, no bias):
    /// `y = x / √(mean(x²) + eps) · weight`.
    public static func rmsNorm(_ x: Tensor, weight: Tensor, eps: Float) -> Tensor {
        KernelProfile.measure(.norms) {
            let width = x.shape.last ?? 1
            precondition(weight.count == width, "RMS norm weight \(weight.shape) for width \(width)")
            let y = Tensor(uninitialized: x.shape)
            let (xp, yp, wp) = (x.storage.pointer, y.storage.pointer, weight.storage.pointer)
            ComputePool.current.parallelFor(x.count / max(1, width), minimumChunk: 8) { range in
                for row in range {
                    let src = xp + row * width
                    let dst = yp + row * width
                    var sum = 0.0
                    for i in 0..<width { sum += Double(src[i]) * Double(src[i]) }
                    let inv = Float(1 / (sum / Double(width) + Double(eps)).squareRoot())
                    for i in 0..<width { dst[i] = src[i] * inv * wp[i] }
                }
            }
            return y
        }
    }

    /// Mean and 1/√(variance + eps) of `count` floats in one pass: sums of x − s and (x − s)² with s the mean of the
    /// first 256 values (shifted data: no cancellation while s is within a few deviations of the mean), partial sums
    /// of eight lanes × 256 floats in single precision, added up in double precision.
    @inline(__always)
    static func meanAndInverseStd(_ p: UnsafePointer<Float>, count: Int, eps: Float) -> (Float, Float) {
        let head = min(count, 256)
        var headSum = 0.0
        for i in 0..<head { headSum += Double(p[i]) }
        let shift = Float(headSum / Double(max(1, head)))
        let (first, second) = VectorMath.shiftedSums(p, count: count, shift: shift)
        let n = Double(max(1, count))
        let offset = first / n
        let variance = max(0, second / n - offset * offset)
        return (Float(Double(shift) + offset), Float(1 / (variance + Double(eps)).squareRoot()))
    }
}
