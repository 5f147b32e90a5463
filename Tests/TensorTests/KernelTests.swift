import Foundation
import TestSupport
import Testing

@testable import Tensor

/// Each kernel against a plain double-precision loop written here, on random inputs with awkward sizes
/// (odd widths, channel counts that are not multiples of 8, batch > 1).
///
/// Tolerance: float32 accumulation over at most a few thousand products of values in [-1, 1] differs from the
/// double result by well under 1e-4 relative to the output's scale; 1e-4 of max|reference| is asserted.
@Suite struct KernelTests {
    var rng = SeededGenerator(seed: 42)

    func tensor(_ shape: [Int], _ rng: inout SeededGenerator, in range: ClosedRange<Float> = -1...1) -> Tensor {
        Tensor(shape: shape, values: rng.floats(shape.reduce(1, *), in: range))
    }

    /// max|a − b| ≤ tolerance · max(1, max|b|).
    func expectClose(_ a: Tensor, _ b: [Double], shape: [Int], tolerance: Double = 1e-4, _ what: String) {
        #expect(a.shape == shape, "\(what): shape \(a.shape) vs \(shape)")
        guard a.count == b.count else { return }
        let scale = max(1, b.map(abs).max() ?? 0)
        let worst = zip(a.scalars, b).map { abs(Double($0) - $1) }.max() ?? 0
        #expect(worst <= tolerance * scale, "\(what): max error \(worst) > \(tolerance * scale)")
    }

    /// (rows, in, out): OpenBLAS below `Kernels.panelLinearRows` rows; from it `panelLinear`, with a last group of X
    /// rows partly empty, input widths not a multiple of eight, and output features ending in a partial panel (53 =
    /// 48 + 5) or whole panels (48).
    @Test(arguments: [(7, 13, 11), (Kernels.panelLinearRows, 16, 24), (37, 19, 53), (154, 40, 48)])
    func linearMatchesReference(_ shape: (Int, Int, Int)) {
        var rng = rng
        let (rows, inF, outF) = shape
        let x = tensor([1, rows, inF], &rng)
        let w = tensor([outF, inF], &rng)
        let b = tensor([outF], &rng)
        var ref = [Double](repeating: 0, count: rows * outF)
        for r in 0..<rows {
            for o in 0..<outF {
                var s = Double(b[o])
                for i in 0..<inF { s += Double(x[0, r, i]) * Double(w[o, i]) }
                ref[r * outF + o] = s
            }
        }
        expectClose(Kernels.linear(x, weight: w, bias: b), ref, shape: [1, rows, outF], "linear")
        let noBias = ref.enumerated().map { $0.element - Double(b[$0.offset % outF]) }
        expectClose(Kernels.linear(x, weight: w, bias: nil), noBias, shape: [1, rows, outF], "linear without bias")
    }

    /// Direct convolution in double precision with arbitrary padding and stride.
    func referenceConv(_ x: Tensor, _ w: Tensor, _ b: Tensor?, stride: Int, padding: Padding) -> ([Double], [Int]) {
        let (batch, cin, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (cout, kh, kw) = (w.shape[0], w.shape[2], w.shape[3])
        let oh = (h + padding.top + padding.bottom - kh) / stride + 1
        let ow = (wd + padding.left + padding.right - kw) / stride + 1
        var out = [Double](repeating: 0, count: batch * cout * oh * ow)
        for n in 0..<batch {
            for co in 0..<cout {
                for i in 0..<oh {
                    for j in 0..<ow {
                        var s = b.map { Double($0[co]) } ?? 0
                        for ci in 0..<cin {
                            for ki in 0..<kh {
                                for kj in 0..<kw {
                                    let y = i * stride - padding.top + ki
                                    let xx = j * stride - padding.left + kj
                                    if y >= 0 && y < h && xx >= 0 && xx < wd {
                                        s += Double(x[n, ci, y, xx]) * Double(w[co, ci, ki, kj])
                                    }
                                }
                            }
                        }
                        out[((n * cout + co) * oh + i) * ow + j] = s
                    }
                }
            }
        }
        return (out, [batch, cout, oh, ow])
    }

    @Test(arguments: [
        // (batch, cin, cout, h, w, kh, kw, stride, padding)
        (2, 5, 7, 9, 11, 3, 3, 1, Padding.uniform(1)),
        (3, 3, 6, 10, 7, 3, 3, 2, Padding.uniform(1)),
        (1, 6, 5, 9, 13, 3, 3, 2, Padding(top: 0, left: 0, bottom: 1, right: 1)),  // the VAE encoder's downsampling
        (2, 7, 3, 5, 6, 1, 1, 1, Padding.zero),  // pointwise: straight GEMM
        (1, 4, 9, 8, 8, 5, 3, 1, Padding(top: 2, left: 1, bottom: 2, right: 1)),
        (2, 3, 4, 70, 40, 3, 3, 1, Padding.uniform(1)),  // plane ≥ 2048: one image per GEMM, in bands
    ])
    func conv2dMatchesReference(
        _ c: (Int, Int, Int, Int, Int, Int, Int, Int, Padding)
    ) {
        var rng = rng
        let x = tensor([c.0, c.1, c.3, c.4], &rng)
        let w = tensor([c.2, c.1, c.5, c.6], &rng)
        let b = tensor([c.2], &rng)
        let (ref, shape) = referenceConv(x, w, b, stride: c.7, padding: c.8)
        expectClose(Kernels.conv2d(x, weight: w, bias: b, stride: c.7, padding: c.8), ref, shape: shape, "conv2d \(c)")
        let (refNoBias, _) = referenceConv(x, w, nil, stride: c.7, padding: c.8)
        expectClose(
            Kernels.conv2d(x, weight: w, bias: nil, stride: c.7, padding: c.8), refNoBias, shape: shape,
            "conv2d \(c) no bias")
    }

    @Test func conv2dBandsAndGroupsUnderSmallBudgets() {
        // A tiny im2col budget forces bands of a few output rows (large planes) and one image per group
        // (small planes); both must still give the reference.
        var rng = rng
        let b = tensor([3], &rng)
        let w = tensor([3, 2, 3, 3], &rng)
        let large = tensor([2, 2, 50, 47], &rng)
        let (ref, shape) = referenceConv(large, w, b, stride: 1, padding: .uniform(1))
        let banded = Kernels.conv2d(large, weight: w, bias: b, stride: 1, padding: .uniform(1), budget: 18 * 47 * 3)
        expectClose(banded, ref, shape: shape, "banded conv2d")
        let small = tensor([3, 2, 9, 9], &rng)
        let (refSmall, shapeSmall) = referenceConv(small, w, b, stride: 2, padding: .uniform(1))
        let grouped = Kernels.conv2d(small, weight: w, bias: b, stride: 2, padding: .uniform(1), budget: 1)
        expectClose(grouped, refSmall, shape: shapeSmall, "grouped conv2d")
    }

    /// Kernel-1 convolutions, 1-D and 2-D: images gathered into one GEMM (fewer than `Kernels.joinedLength`
    /// positions, several images) and one GEMM per image (one image, or many positions), with and without bias.
    @Test(arguments: [(3, 13, true), (2, 7, false), (1, 13, true), (2, Kernels.joinedLength + 6, true)])
    func conv1x1MatchesReference(_ c: (Int, Int, Bool)) {
        var rng = rng
        let (batch, len, hasBias) = c
        let (cin, cout) = (5, 7)
        let x = tensor([batch, cin, len], &rng)
        let w = tensor([cout, cin, 1], &rng)
        let b = hasBias ? tensor([cout], &rng) : nil
        var ref = [Double](repeating: 0, count: batch * cout * len)
        for n in 0..<batch {
            for o in 0..<cout {
                for l in 0..<len {
                    var s = Double(b?[o] ?? 0)
                    for i in 0..<cin { s += Double(w[o, i, 0]) * Double(x[n, i, l]) }
                    ref[(n * cout + o) * len + l] = s
                }
            }
        }
        expectClose(Kernels.conv1x1(x, weight: w, bias: b), ref, shape: [batch, cout, len], "conv1d k=1")
        let planes = Kernels.conv2d(
            x.reshaped([batch, cin, 1, len]), weight: w.reshaped([cout, cin, 1, 1]), bias: b)
        expectClose(planes, ref, shape: [batch, cout, 1, len], "conv2d 1×1")
    }

    @Test(arguments: [false, true])
    func groupNormMatchesReference(silu: Bool) {
        var rng = rng
        let (batch, channels, h, w, groups) = (2, 12, 5, 7, 3)
        // An offset mean checks that the variance is not computed as E[x²] − E[x]² in float.
        let x = tensor([batch, channels, h, w], &rng, in: 99...101)
        let weight = tensor([channels], &rng)
        let bias = tensor([channels], &rng)
        let per = channels / groups
        var ref = [Double](repeating: 0, count: x.count)
        let xs = x.scalars.map(Double.init)
        for n in 0..<batch {
            for g in 0..<groups {
                let start = (n * channels + g * per) * h * w
                let slice = xs[start..<(start + per * h * w)]
                let mean = slice.reduce(0, +) / Double(slice.count)
                let variance = slice.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(slice.count)
                for i in start..<(start + per * h * w) {
                    let c = g * per + (i - start) / (h * w)
                    var v = (xs[i] - mean) / (variance + 1e-5).squareRoot() * Double(weight[c]) + Double(bias[c])
                    if silu { v = v / (1 + exp(-v)) }
                    ref[i] = v
                }
            }
        }
        let y = Kernels.groupNorm(x, groups: groups, weight: weight, bias: bias, eps: 1e-5, silu: silu)
        expectClose(y, ref, shape: x.shape, tolerance: 2e-4, "group norm silu=\(silu)")

        // Given as its last use, a tensor is normalized in its own storage, to the same values.
        let owned = Tensor(shape: x.shape, values: x.scalars)
        let storage = owned.storage.pointer
        let inPlace = Kernels.groupNorm(
            consume owned, groups: groups, weight: weight, bias: bias, eps: 1e-5, silu: silu)
        #expect(inPlace.storage.pointer == storage, "a consumed tensor's storage is reused")
        #expect(inPlace.scalars == y.scalars)
        // A tensor still held elsewhere is left as it was.
        let shared = Tensor(shape: x.shape, values: x.scalars)
        let alias = shared
        let fromShared = Kernels.groupNorm(shared, groups: groups, weight: weight, bias: bias, eps: 1e-5, silu: silu)
        #expect(alias.scalars == x.scalars && fromShared.scalars == y.scalars)
    }

    /// The one-pass statistics shift by the mean of the first 256 values; a ramp makes that shift far from the
    /// mean, and an offset plateau makes it exact, and both must match double precision.
    @Test func normalizationStatisticsMatchDoublePrecision() {
        let ramp = (0..<5000).map { Float($0) * 0.2 }
        let plateau = (0..<4099).map { 1000 + Float(($0 * 7919) % 101) / 50 }
        for values in [ramp, plateau] {
            let (mean, inverseStd) = values.withUnsafeBufferPointer {
                Kernels.meanAndInverseStd($0.baseAddress!, count: $0.count, eps: 1e-5)
            }
            let exactMean = values.map(Double.init).reduce(0, +) / Double(values.count)
            let variance =
                values.map { (Double($0) - exactMean) * (Double($0) - exactMean) }.reduce(0, +)
                / Double(values.count)
            #expect(abs(Double(mean) - exactMean) <= 1e-6 * max(1, abs(exactMean)), "mean \(mean) vs \(exactMean)")
            let exactInverse = 1 / (variance + 1e-5).squareRoot()
            #expect(
                abs(Double(inverseStd) - exactInverse) <= 1e-5 * exactInverse, "1/std \(inverseStd) vs \(exactInverse)")
        }
    }

    @Test func layerNormAndRMSNormMatchReference() {
        var rng = rng
        let (rows, width) = (5, 37)
        let x = tensor([rows, width], &rng, in: -3...5)
        let weight = tensor([width], &rng)
        let bias = tensor([width], &rng)
        var layer = [Double](), rms = [Double]()
        for r in 0..<rows {
            let row = (0..<width).map { Double(x[r, $0]) }
            let mean = row.reduce(0, +) / Double(width)
            let variance = row.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(width)
            let meanSquare = row.map { $0 * $0 }.reduce(0, +) / Double(width)
            for i in 0..<width {
                layer.append((row[i] - mean) / (variance + 1e-5).squareRoot() * Double(weight[i]) + Double(bias[i]))
                rms.append(row[i] / (meanSquare + 1e-6).squareRoot() * Double(weight[i]))
            }
        }
        expectClose(Kernels.layerNorm(x, weight: weight, bias: bias, eps: 1e-5), layer, shape: x.shape, "layer norm")
        expectClose(Kernels.rmsNorm(x, weight: weight, eps: 1e-6), rms, shape: x.shape, "RMS norm")
    }

    @Test func activationsMatchReference() {
        var rng = rng
        let x = tensor([3, 101], &rng, in: -6...6)
        let xs = x.scalars.map(Double.init)
        expectClose(Kernels.gelu(x), xs.map { 0.5 * $0 * (1 + erf($0 / 2.0.squareRoot())) }, shape: x.shape, "gelu")
        let c = (2 / Double.pi).squareRoot()
        expectClose(
            Kernels.geluTanh(x), xs.map { 0.5 * $0 * (1 + tanh(c * ($0 + 0.044715 * $0 * $0 * $0))) },
            shape: x.shape, "gelu tanh")
        expectClose(Kernels.silu(x), xs.map { $0 / (1 + exp(-$0)) }, shape: x.shape, "silu")
    }

    /// The vectorised GELUs against double precision on a dense grid over [−12, 12] (tails included, and a count
    /// that leaves a partial vector): within 3e−7 · max(1, |x|), float32's own resolution.
    @Test func gelusAreWithinFloatResolution() {
        let xs = (0..<24_003).map { Float(-12 + Double($0) * 0.001) }
        let c = (2 / Double.pi).squareRoot()
        let cases: [(String, (Tensor) -> Tensor, (Double) -> Double)] = [
            ("gelu", Kernels.gelu, { 0.5 * $0 * (1 + erf($0 / 2.0.squareRoot())) }),
            ("gelu tanh", Kernels.geluTanh, { 0.5 * $0 * (1 + tanh(c * ($0 + 0.044715 * $0 * $0 * $0))) }),
        ]
        for (name, kernel, exact) in cases {
            let y = kernel(Tensor(shape: [xs.count], values: xs))
            var worst = 0.0
            for (x, v) in zip(xs, y.scalars) {
                worst = max(worst, abs(Double(v) - exact(Double(x))) / max(1, abs(Double(x))))
            }
            #expect(worst <= 3e-7, "\(name): max error \(worst)")
        }
    }

    @Test func softmaxMatchesReferenceAndIsStable() {
        var rng = rng
        let x = tensor([4, 19], &rng, in: -50...50)
        var ref = [Double]()
        for r in 0..<4 {
            let row = (0..<19).map { Double(x[r, $0]) }
            let m = row.max()!
            let e = row.map { exp($0 - m) }
            let s = e.reduce(0, +)
            ref += e.map { $0 / s }
        }
        expectClose(Kernels.softmax(x), ref, shape: x.shape, "softmax")
        let big = Tensor(shape: [1, 3], values: [1000, 1000, 999])
        #expect(Kernels.softmax(big).scalars.allSatisfy { $0.isFinite })
    }

    @Test(arguments: [false, true])
    func attentionMatchesReference(masked: Bool) {
        var rng = rng
        let (batch, heads, lq, lk, d, dv) = (2, 3, 5, 7, 6, 4)
        let n = batch * heads
        let q = tensor([n, lq, d], &rng)
        let k = tensor([n, lk, d], &rng)
        let v = tensor([n, lk, dv], &rng)
        // Mask the last two keys of batch item 1 (−inf style large negative), none of item 0.
        var maskValues = [Float](repeating: 0, count: batch * lk)
        for j in (lk - 2)..<lk { maskValues[lk + j] = -1e9 }
        let mask = Tensor(shape: [batch, 1, lk], values: maskValues)
        let scale = 1 / Float(d).squareRoot()
        var ref = [Double]()
        for s in 0..<n {
            for i in 0..<lq {
                var scores = (0..<lk).map { j in
                    (0..<d).reduce(0.0) { $0 + Double(q[s, i, $1]) * Double(k[s, j, $1]) } * Double(scale)
                }
                if masked { for j in 0..<lk { scores[j] += Double(maskValues[(s / heads) * lk + j]) } }
                let m = scores.max()!
                let e = scores.map { exp($0 - m) }
                let sum = e.reduce(0, +)
                for c in 0..<dv { ref.append((0..<lk).reduce(0.0) { $0 + e[$1] / sum * Double(v[s, $1, c]) }) }
            }
        }
        let y = Kernels.attention(q: q, k: k, v: v, scale: scale, mask: masked ? mask : nil)
        expectClose(y, ref, shape: [n, lq, dv], "attention masked=\(masked)")
    }

    /// Several query blocks (the last one partial), rows wider than one SIMD vector with a tail, a per-query mask,
    /// and the channel-first variant the UNet and the VAE use.
    @Test func attentionOverSeveralQueryBlocksMatchesReference() {
        var rng = rng
        let (n, lq, lk, d, dv) = (3, Kernels.queryBlock * 2 + 11, 37, 8, 5)
        let q = tensor([n, lq, d], &rng, in: -2...2)
        let k = tensor([n, lk, d], &rng, in: -2...2)
        let v = tensor([n, lk, dv], &rng)
        let maskValues = (0..<(lq * lk)).map { $0 % 5 == 0 ? Float(-1e9) : 0 }
        let mask = Tensor(shape: [1, lq, lk], values: maskValues)
        let scale: Float = 0.7
        func reference(masked: Bool) -> [Double] {
            var ref = [Double]()
            for s in 0..<n {
                for i in 0..<lq {
                    var scores = (0..<lk).map { j in
                        (0..<d).reduce(0.0) { $0 + Double(q[s, i, $1]) * Double(k[s, j, $1]) } * Double(scale)
                    }
                    if masked { for j in 0..<lk { scores[j] += Double(maskValues[i * lk + j]) } }
                    let m = scores.max()!
                    let e = scores.map { exp($0 - m) }
                    let sum = e.reduce(0, +)
                    for c in 0..<dv { ref.append((0..<lk).reduce(0.0) { $0 + e[$1] / sum * Double(v[s, $1, c]) }) }
                }
            }
            return ref
        }
        let masked = Kernels.attention(q: q, k: k, v: v, scale: scale, mask: mask)
        expectClose(masked, reference(masked: true), shape: [n, lq, dv], "attention, per-query mask")

        // Channel-first operands: [N, D, L]; the result is [N, Dv, Lq] (37 keys: a partial pair of packed rows; 5 value
        // channels: a partial row panel; 139 queries: five blocks of 24 and one of 19, whose last columns are padding).
        let plain = reference(masked: false)
        let first = Kernels.attentionChannelsFirst(
            q: Kernels.permute(q, [0, 2, 1]), k: Kernels.permute(k, [0, 2, 1]), v: Kernels.permute(v, [0, 2, 1]),
            scale: scale)
        var transposed = [Double](repeating: 0, count: plain.count)
        for s in 0..<n {
            for i in 0..<lq { for c in 0..<dv { transposed[(s * dv + c) * lq + i] = plain[(s * lq + i) * dv + c] } }
        }
        expectClose(first, transposed, shape: [n, dv, lq], "attention, channels first")

        // Blocks of 48 queries (two blocks, then 24 and 19) with the sixteen-lane tile, and of 24 without: the same
        // bits, whichever the processor picks.
        let (cq, ck, cv) = (
            Kernels.permute(q, [0, 2, 1]), Kernels.permute(k, [0, 2, 1]), Kernels.permute(v, [0, 2, 1])
        )
        let bySize = [false, true].map { sixteen in
            Kernels.packedAttention(
                q: .init(cq), keys: [.init(ck)], values: [.init(cv)], slices: n, channels: d, valueChannels: dv,
                scale: scale, operands: [cq, ck, cv], sixteen: sixteen
            ).scalars.map(\.bitPattern)
        }
        for (name, bits) in [("blocks of 48", bySize[1]), ("attentionChannelsFirst", first.scalars.map(\.bitPattern))] {
            let differing = zip(bySize[0], bits).filter { $0 != $1 }.count
            #expect(differing == 0, "\(name) against blocks of 24: \(differing) of \(bits.count) elements differ")
        }
    }

    /// The UNet's attention: q, k, v read in place from one qkv tensor, the text's keys and values first (13 text
    /// tokens, so packed pairs of keys straddle the text and the image), with and without text.
    @Test(arguments: [13, 0])
    func qkvAttentionWithTextMatchesReference(textTokens: Int) {
        var rng = rng
        let (n, d, t) = (4, 9, 30)
        let qkv = tensor([n, 3 * d, t], &rng, in: -2...2)
        let textKV = tensor([n, 2 * d, textTokens], &rng, in: -2...2)
        let scale: Float = 0.4
        // key/value j of slice s: the text's first, then the image's
        func key(_ s: Int, _ c: Int, _ j: Int) -> Double {
            Double(j < textTokens ? textKV[s, c, j] : qkv[s, d + c, j - textTokens])
        }
        func value(_ s: Int, _ c: Int, _ j: Int) -> Double {
            Double(j < textTokens ? textKV[s, d + c, j] : qkv[s, 2 * d + c, j - textTokens])
        }
        var ref = [Double](repeating: 0, count: n * d * t)
        for s in 0..<n {
            for i in 0..<t {
                let scores = (0..<(textTokens + t)).map { j in
                    (0..<d).reduce(0.0) { $0 + Double(qkv[s, $1, i]) * key(s, $1, j) } * Double(scale)
                }
                let e = scores.map { exp($0 - scores.max()!) }
                let sum = e.reduce(0, +)
                for c in 0..<d {
                    ref[(s * d + c) * t + i] = (0..<(textTokens + t)).reduce(0.0) { $0 + e[$1] / sum * value(s, c, $1) }
                }
            }
        }
        let y = Kernels.attentionChannelsFirst(qkv: qkv, textKV: textTokens > 0 ? textKV : nil, scale: scale)
        expectClose(y, ref, shape: [n, d, t], "qkv attention, \(textTokens) text tokens")
    }

    /// The vectorised exponential against double precision, over the range the kernels use, including the lanes
    /// of a partial vector and the clamp below −87.
    @Test func vectorExponentialIsWithinFourUlp() {
        var worst = 0.0
        var x: Float = -87
        while x <= 30 {
            let lanes = VectorMath.Vector((0..<VectorMath.Vector.scalarCount).map { x + Float($0) * 0.000_37 })
            let e = VectorMath.exp(lanes)
            for lane in lanes.indices {
                let exact = Foundation.exp(Double(lanes[lane]))
                worst = max(worst, abs(Double(e[lane]) - exact) / exact)
            }
            x += 0.0173
        }
        #expect(worst <= 4 * Double(Float.ulpOfOne), "relative error \(worst)")
        #expect(VectorMath.exp(Float(0)) == 1)
        // Below ln FLT_MIN exactly zero, as expf turns subnormal there: never a subnormal result (a softmax's weight
        // for a masked key, −FLT_MAX, was 1.6e−38 / sum and every multiply-add on it slow), never a negative one.
        for x: Float in [-1000, -Float.greatestFiniteMagnitude, -88, -87.34, -Float.infinity] {
            #expect(VectorMath.exp(x) == 0, "e^\(x)")
        }
        var y = VectorMath.lowest
        while y < -80 {
            let e = VectorMath.exp(y)
            #expect(
                e.isNormal && abs(Double(e) - Foundation.exp(Double(y))) <= 4e-7 * Foundation.exp(Double(y)),
                "e^\(y) = \(e)")
            y += 0.01
        }
    }

    /// A softmax row's masked entries (the text encoders' additive mask, −FLT_MAX) get a weight of exactly zero, as in
    /// PyTorch, not a subnormal one.
    @Test func softmaxGivesMaskedEntriesZero() {
        var row: [Float] = [0.5, -Float.greatestFiniteMagnitude, 2, -Float.greatestFiniteMagnitude, -90, 1, 0, 3, -3]
        row.withUnsafeMutableBufferPointer { VectorMath.softmaxRow($0.baseAddress!, width: $0.count) }
        #expect(row[1] == 0 && row[3] == 0 && row[4] == 0, "\(row)")
        #expect(row.allSatisfy { $0 == 0 || $0.isNormal }, "\(row)")
        #expect(abs(row.reduce(0, +) - 1) <= 1e-6)
    }

    @Test func embeddingUpsamplePoolConcat() {
        var rng = rng
        let table = tensor([9, 5], &rng)
        let ids = [3, 0, 8, 3]
        let e = Kernels.embedding(table, ids: ids)
        expectClose(
            e, ids.flatMap { id in (0..<5).map { Double(table[id, $0]) } }, shape: [4, 5], tolerance: 0, "embedding")

        let x = tensor([2, 3, 5, 7], &rng)
        var up = [Double]()
        for p in 0..<6 { for i in 0..<10 { for j in 0..<14 { up.append(Double(x[p / 3, p % 3, i / 2, j / 2])) } } }
        expectClose(Kernels.upsampleNearest2x(x), up, shape: [2, 3, 10, 14], tolerance: 0, "upsample")

        var pooled = [Double]()
        for p in 0..<6 {
            for i in 0..<2 {
                for j in 0..<3 {
                    let vals = [(0, 0), (0, 1), (1, 0), (1, 1)].map {
                        Double(x[p / 3, p % 3, 2 * i + $0.0, 2 * j + $0.1])
                    }
                    pooled.append(vals.reduce(0, +) / 4)
                }
            }
        }
        expectClose(Kernels.avgPool2x2(x), pooled, shape: [2, 3, 2, 3], "avg pool (odd sizes floor)")

        let y = tensor([2, 2, 5, 7], &rng)
        var cat = [Double]()
        for n in 0..<2 {
            cat += (0..<(3 * 35)).map { Double(x.scalars[n * 105 + $0]) }
            cat += (0..<(2 * 35)).map { Double(y.scalars[n * 70 + $0]) }
        }
        expectClose(Kernels.concatChannels([x, y]), cat, shape: [2, 5, 5, 7], tolerance: 0, "concat")
    }

    /// A concatenation large enough to be copied by several threads, in ranges that start and end inside the parts'
    /// runs (one part empty): every value where a plain loop puts it.
    @Test func largeConcatenationMatchesPlainCopy() {
        let shapes = [[3, 7, 20_011], [3, 0, 20_011], [3, 11, 20_011], [3, 1, 20_011]]
        let parts = shapes.enumerated().map { i, shape in
            Tensor(shape: shape, values: (0..<shape.reduce(1, *)).map { Float(i * 1_000_000 + $0) })
        }
        var expected: [Float] = []
        for o in 0..<3 {
            for (p, shape) in zip(parts, shapes) {
                let n = shape[1] * shape[2]
                expected += p.scalars[(o * n)..<((o + 1) * n)]
            }
        }
        let y = Kernels.concat(parts, axis: 1)
        #expect(y.shape == [3, 19, 20_011])
        let got = y.scalars
        // The first misplaced value, if any (a failure prints this instead of two arrays of 1.1 M floats).
        let wrong = got.indices.first { got[$0] != expected[$0] }
        #expect(got.count == expected.count && wrong == nil, "first wrong value at \(wrong.map(String.init) ?? "-")")
    }

    @Test func elementwiseAndChannelBroadcast() {
        var rng = rng
        let a = tensor([2, 3, 4, 5], &rng)
        let b = tensor([2, 3, 4, 5], &rng)
        expectClose(Kernels.add(a, b), zip(a.scalars, b.scalars).map { Double($0) + Double($1) }, shape: a.shape, "add")
        expectClose(Kernels.mul(a, b), zip(a.scalars, b.scalars).map { Double($0) * Double($1) }, shape: a.shape, "mul")
        let perChannel = tensor([3], &rng)
        let perItem = tensor([2, 3, 1, 1], &rng)
        let idx = (0..<a.count).map { ($0 / 20 / 3, ($0 / 20) % 3) }
        expectClose(
            Kernels.addChannels(a, perChannel),
            idx.enumerated().map { Double(a.scalars[$0.offset]) + Double(perChannel[$0.element.1]) }, shape: a.shape,
            "add [C]")
        expectClose(
            Kernels.mulChannels(a, perItem),
            idx.enumerated().map { Double(a.scalars[$0.offset]) * Double(perItem[$0.element.0, $0.element.1, 0, 0]) },
            shape: a.shape, "mul [B, C, 1, 1]")
    }

    @Test func tensorCopyOnWriteAndReadOnlyStorage() {
        var a = Tensor(shape: [2, 2], values: [1, 2, 3, 4])
        let b = a
        a[0, 0] = 9
        #expect(b[0, 0] == 1 && a[0, 0] == 9)
        #expect(a.reshaped([4]).shape == [4] && a.reshaped([-1, 1]).shape == [4, 1])
    }

    @Test func blockCacheGivesBackOldSizesOnAMiss() {
        let mib = 1 << 20
        let cache = BlockCache(limitBytes: 8 * mib)
        defer { cache.trim() }
        let (a, b) = (cache.allocate(bytes: 3 * mib), cache.allocate(bytes: 4 * mib))
        cache.release(a, bytes: 3 * mib)
        cache.release(b, bytes: 4 * mib)
        #expect(cache.heldBytes == 7 * mib)
        // A hit hands back the block of that size and keeps the others.
        let again = cache.allocate(bytes: 4 * mib)
        #expect(again == b && cache.heldBytes == 3 * mib)
        // A miss of 6 MiB: 3 + 6 would be over the limit, so the 3 MiB block goes first.
        let c = cache.allocate(bytes: 6 * mib)
        #expect(cache.heldBytes == 0)
        // Freed blocks past the limit push out the oldest.
        cache.release(again, bytes: 4 * mib)
        cache.release(c, bytes: 6 * mib)
        #expect(cache.heldBytes == 6 * mib)
        // Blocks under a megabyte are not cached.
        cache.release(cache.allocate(bytes: 1000), bytes: 1000)
        #expect(cache.heldBytes == 6 * mib)
    }

    @Test func blockCacheLimitIsRaisedUntilTheNextTrim() {
        let mib = 1 << 20
        let cache = BlockCache(limitBytes: 4 * mib)
        defer { cache.trim() }
        let (a, b) = (cache.allocate(bytes: 3 * mib), cache.allocate(bytes: 3 * mib))
        cache.keep(upTo: 8 * mib)
        // A smaller request does not lower it.
        cache.keep(upTo: 2 * mib)
        #expect(cache.limitBytes == 8 * mib)
        cache.release(a, bytes: 3 * mib)
        cache.release(b, bytes: 3 * mib)
        #expect(cache.heldBytes == 6 * mib)
        // A trim gives everything back and the limit returns to its default: past it, nothing is kept.
        cache.trim()
        #expect(cache.heldBytes == 0 && cache.limitBytes == 4 * mib)
        let (c, d) = (cache.allocate(bytes: 3 * mib), cache.allocate(bytes: 6 * mib))
        cache.release(c, bytes: 3 * mib)
        cache.release(d, bytes: 6 * mib)
        #expect(cache.heldBytes == 3 * mib)
    }

    @Test func computePoolRunsEveryChunkOnce() {
        let pool = ComputePool(threads: 3)
        let hits = UnsafeMutablePointer<Int>.allocate(capacity: 1000)
        defer { hits.deallocate() }
        hits.initialize(repeating: 0, count: 1000)
        for _ in 0..<50 {
            pool.parallelFor(1000) { range in for i in range { hits[i] += 1 } }
        }
        #expect((0..<1000).allSatisfy { hits[$0] == 50 })
        // A region started inside another runs serially (on the thread of the outer chunk) and still covers
        // everything. Two outer chunks, so a region is started (one chunk runs inline, with no region, and its inner
        // loop in parallel: counting into one variable from there raced, and CI once saw 9), each counting into its
        // own slot.
        let nested = UnsafeMutablePointer<Int>.allocate(capacity: 2)
        defer { nested.deallocate() }
        nested.initialize(repeating: 0, count: 2)
        pool.run(chunks: 2) { chunk in pool.parallelFor(10) { nested[chunk] += $0.count } }
        #expect(nested[0] == 10 && nested[1] == 10)
    }
}
