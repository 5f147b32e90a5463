import Tensor

// The samplers' arithmetic as compute shaders, in the CPU backend's order (`precise` in the shaders stops the
// compiler contracting or reassociating it): per-image coefficients go up as push constants, a few images per
// dispatch, so that no step waits on an upload.

extension VulkanBackend {
    /// Images per `weighted_sum` or `guidance` dispatch: their coefficient arrays in the push constants.
    static let coefficientImages = 16
    /// Images per `dynamic_threshold` dispatch: its rank and fraction arrays in the push constants.
    static let thresholdImages = 8

    /// `(c₀·t₀ + c₁·t₁ + …) / divisor` per batch row with that row's coefficients — shader `weighted_sum`, one
    /// dispatch per term (and per 16 images), in the CPU's order: `y = c₀·t₀`, then `y = y + cₖ·tₖ`, then `y / divisor`
    /// (only when the divisor is not 1), each rounded to float32. Bit for bit the CPU's but the division.
    public func weightedSum(_ terms: [Tensor], coefficients: [[Float]], dividedBy divisor: Float) -> Tensor {
        guard let first = terms.first else { preconditionFailure("a weighted sum of no terms") }
        let rows = first.shape.first ?? 1
        precondition(coefficients.count == rows, "\(coefficients.count) coefficient rows for \(rows) images")
        precondition(coefficients.allSatisfy { $0.count == terms.count }, "coefficients for other than the terms")
        for t in terms {
            checkActivation(t, "weighted-sum term")
            precondition(t.shape == first.shape, "weighted-sum terms \(t.shape) and \(first.shape)")
        }
        let y = empty(first.shape)
        guard rows > 0, first.count > 0 else { return y }
        let per = first.count / rows
        for base in stride(from: 0, to: rows, by: Self.coefficientImages) {
            let images = min(Self.coefficientImages, rows - base)
            for (k, term) in terms.enumerated() {
                let divide = k == terms.count - 1 && divisor != 1
                var c = (base..<(base + images)).map { coefficients[$0][k].word }
                c += [UInt32](repeating: 0, count: Self.coefficientImages - images)
                dispatch1D(
                    "weighted_sum", [term, y],
                    push: [
                        Self.indexWord(per, "image size"), images.word, base.word, (k > 0 ? 1 : 0).word,
                        (divide ? 1 : 0).word, divisor.word,
                    ] + c,
                    count: images * per)
            }
        }
        return y
    }

    /// Classifier-free guidance on `[2B, 2C, h, w]` (conditional rows, then unconditional):
    /// `ε = ε_u + g_i·(ε_c − ε_u)` on channels `0..<C`, and v the conditional rows' channels `C..<2C` — shader
    /// `guidance`, one dispatch per 16 images. Bit for bit the CPU's.
    public func guidanceCombine(_ output: Tensor, scales: [Float]) -> (eps: Tensor, v: Tensor) {
        checkActivation(output, "guided output")
        precondition(output.rank >= 2 && output.shape[1] % 2 == 0, "guided output \(output.shape) is not [2B, 2C, ...]")
        let b = output.shape[0] / 2
        precondition(output.shape[0] == 2 * b && scales.count == b, "\(scales.count) scales for \(output.shape)")
        let channels = output.shape[1] / 2
        let shape = [b, channels] + output.shape.dropFirst(2)
        let eps = empty(shape)
        let v = empty(shape)
        guard b > 0, output.count > 0 else { return (eps, v) }
        let per = output.count / (2 * b) / 2
        for base in stride(from: 0, to: b, by: Self.coefficientImages) {
            let images = min(Self.coefficientImages, b - base)
            var g = scales[base..<(base + images)].map(\.word)
            g += [UInt32](repeating: 0, count: Self.coefficientImages - images)
            dispatch1D(
                "guidance", [output, eps, v],
                push: [Self.indexWord(per, "image size"), images.word, base.word, b.word] + g, count: images * per)
        }
        return (eps, v)
    }

    /// The ancestral step: `mean = c1·x0 + c2·x`, `frac = (v + 1)/2`,
    /// `log σ² = frac·upper + (1 − frac)·lower`, and `mean + exp(½·log σ²)·noise` when `addNoise` — shader
    /// `ancestral`, the CPU's order; only `exp` differs.
    public func ancestralStep(
        x0: Tensor, x: Tensor, v: Tensor, noise: Tensor, c1: Float, c2: Float,
        logVariance: (lower: Float, upper: Float), addNoise: Bool
    ) -> Tensor {
        for (t, role) in [(x0, "x0"), (x, "x"), (v, "v"), (noise, "noise")] { checkActivation(t, role) }
        precondition(x0.shape == x.shape && v.shape == x.shape && noise.shape == x.shape, "ancestral step shapes")
        let y = empty(x.shape)
        guard x.count > 0 else { return y }
        dispatch1D(
            "ancestral", [x0, x, v, noise, y],
            push: [
                Self.indexWord(x.count, "element count"), c1.word, c2.word, logVariance.lower.word,
                logVariance.upper.word, (addNoise ? 1 : 0).word,
            ],
            count: x.count)
        return y
    }

    /// Dynamic thresholding per image: `s` = the p-th percentile of |x0| over the image (numpy's linear
    /// interpolation between the k-th and (k+1)-th smallest, found exactly by a radix select on the device),
    /// `s = max(s, 1)`, `clip(x0, −s, s)/s`; images whose percentile is nil pass unchanged — shader
    /// `dynamic_threshold`, one workgroup per image, 8 images per dispatch. Bit for bit the CPU's but the division.
    ///
    /// - Parameter percentiles: one per image, in `0...100`, or nil.
    public func dynamicThreshold(_ x0: Tensor, percentiles: [Double?]) -> Tensor {
        checkActivation(x0, "x0")
        precondition(x0.rank >= 1, "dynamic thresholding needs [B, ...], got \(x0.shape)")
        let n = x0.shape[0]
        precondition(percentiles.count == n, "\(percentiles.count) percentiles for \(n) images")
        let y = empty(x0.shape)
        guard n > 0, x0.count > 0 else { return y }
        let per = x0.count / n
        // The ranks and fraction as the CPU computes them, so the interpolation is the same.
        let ranks: [(k: UInt32, fraction: Float)] = percentiles.map { p in
            guard let p else { return (UInt32.max, 0) }
            precondition((0...100).contains(p), "percentile \(p) outside 0...100")
            let position = Double(per - 1) * p / 100
            let lower = Int(position.rounded(.down))
            return (UInt32(lower), Float(position - Double(lower)))
        }
        precondition(per < Int(UInt32.max), "an image of \(per) values")
        for base in stride(from: 0, to: n, by: Self.thresholdImages) {
            let images = min(Self.thresholdImages, n - base)
            let chunk = ranks[base..<(base + images)]
            let pad = Self.thresholdImages - images
            let push =
                [Self.indexWord(per, "image size"), base.word] + chunk.map(\.k) + [UInt32](repeating: 0, count: pad)
                + chunk.map(\.fraction.word) + [UInt32](repeating: 0, count: pad)
            dispatch("dynamic_threshold", [x0, y], push: push, groups: (images, 1, 1))
        }
        return y
    }

    /// `x0·(1 − mask) + known·mask`, `known` `[1 or B, C, h, w]` and `mask` `[1 or B, 1, h, w]` broadcast over
    /// channels — shader `masked_blend`. Bit for bit the CPU's.
    public func maskedBlend(_ x0: Tensor, known: Tensor, mask: Tensor) -> Tensor {
        checkActivation(x0, "x0")
        checkActivation(known, "known image")
        checkActivation(mask, "mask")
        precondition(x0.rank >= 2, "masked blend needs [B, C, ...], got \(x0.shape)")
        let (n, c) = (x0.shape[0], x0.shape[1])
        let plane = x0.count / max(1, n * c)
        precondition(
            known.rank >= 1 && (known.shape[0] == 1 || known.shape[0] == n)
                && known.count == known.shape[0] * c * plane,
            "known image \(known.shape) for \(x0.shape)")
        precondition(
            mask.rank >= 1 && (mask.shape[0] == 1 || mask.shape[0] == n) && mask.count == mask.shape[0] * plane,
            "mask \(mask.shape) for \(x0.shape)")
        let y = empty(x0.shape)
        guard x0.count > 0 else { return y }
        let knownStride = known.shape[0] == 1 ? 0 : c * plane
        let maskStride = mask.shape[0] == 1 ? 0 : plane
        dispatch1D(
            "masked_blend", [x0, known, mask, y],
            push: [
                Self.indexWord(x0.count, "element count"), c.word, plane.word, knownStride.word, maskStride.word,
            ],
            count: x0.count)
        return y
    }

    /// `x · mask` with `mask` `[B, 1, h, w]` broadcast over channels — shader `binary` (op 1, the mask's index
    /// `(i / (C·h·w))·h·w + i % (h·w)`). Bit for bit the CPU's.
    public func multiplyByMask(_ x: Tensor, _ mask: Tensor) -> Tensor {
        checkActivation(x, "masked tensor")
        checkActivation(mask, "mask")
        precondition(x.rank >= 2, "masking needs [B, C, ...], got \(x.shape)")
        let (n, c) = (x.shape[0], x.shape[1])
        let plane = x.count / max(1, n * c)
        precondition(mask.count == n * plane, "mask \(mask.shape) for \(x.shape)")
        let y = empty(x.shape)
        binary(.mul, x, mask, into: y, bPeriod: max(1, plane), bOuter: max(1, c * plane), bOuterStride: plane)
        return y
    }

    /// A draw from the autoencoder's posterior in the UNet's scale: `(mean + exp(½·logVariance)·noise)·scale` —
    /// shader `gaussian_sample`, the CPU's order; only `exp` differs.
    public func gaussianSample(mean: Tensor, logVariance: Tensor, noise: Tensor, scale: Float) -> Tensor {
        for (t, role) in [(mean, "mean"), (logVariance, "log variance"), (noise, "noise")] { checkActivation(t, role) }
        precondition(
            logVariance.shape == mean.shape && noise.shape == mean.shape,
            "posterior mean \(mean.shape), log variance \(logVariance.shape) and noise \(noise.shape) differ")
        let y = empty(mean.shape)
        guard mean.count > 0 else { return y }
        dispatch1D(
            "gaussian_sample", [mean, logVariance, noise, y],
            push: [Self.indexWord(mean.count, "element count"), scale.word], count: mean.count)
        return y
    }

    /// The mean over the sequence of `[N, L, D]` of the positions whose `mask[n][l]` is not 0, divided by
    /// `max(1, Σ mask[n])` as the CPU's: `[N, D]` — shader `masked_mean`, the counts and flags uploaded as one
    /// buffer of words. Bit for bit the CPU's but the division.
    public func maskedMean(_ x: Tensor, mask: [[Int]]) -> Tensor {
        checkActivation(x, "pooled sequence")
        precondition(x.rank == 3, "masked mean needs [N, L, D], got \(x.shape)")
        let (n, length, d) = (x.shape[0], x.shape[1], x.shape[2])
        precondition(mask.count == n, "\(mask.count) mask rows for \(x.shape)")
        precondition(mask.allSatisfy { $0.count == length }, "mask rows of other than \(length) positions")
        let y = empty([n, d])
        guard n > 0, d > 0 else { return y }
        let counts = mask.map { Float(max(1, $0.reduce(0, +))).bitPattern }
        let flags = mask.flatMap { row in row.map { UInt32($0 != 0 ? 1 : 0) } }
        let table = upload(words: counts + flags)
        dispatch1D(
            "masked_mean", [x, table, y],
            push: [Self.indexWord(n, "row count"), Self.indexWord(length, "sequence length"), d.word], count: n * d)
        return y
    }
}
