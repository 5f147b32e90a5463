import Foundation

/// The CPU backend: today's kernels (`Kernels`), each call run at once on the calling thread and the compute pool.
///
/// Every operation is the arithmetic of the code it replaced, in the same order (no fused multiply-adds, no
/// reassociation), so the models' outputs are bit for bit those from before the device seam.
///
/// Each instance owns its `CPUResources` — its compute pool (also OpenBLAS's threads), its block cache and its kernel
/// profile — and binds them to the calling thread for each operation, so the kernels it runs use them (see
/// `CPUResources` for why they are found that way).
public final class CPUBackend: ComputeBackend {
    /// The backend every module uses unless given another: one thread per core. Kernels called outside any
    /// backend's operation (tests, `bench kernels`) run on its resources.
    public static let shared = CPUBackend()

    /// The pool, block cache and profile this backend computes with.
    public let resources: CPUResources

    /// A backend with a compute pool of `threads` threads (the calling thread included; one per core by default).
    public init(threads: Int? = nil) {
        resources = CPUResources(threads: threads ?? ProcessInfo.processInfo.activeProcessorCount)
    }

    /// Threads an operation runs on.
    public var threads: Int { resources.pool.threadCount }

    /// Runs `body` with this backend's resources current on the calling thread.
    @inline(__always)
    private func run<R>(_ body: () -> R) -> R { resources.bound(body) }

    public var device: Device { .cpu }

    // MARK: Transfers and memory

    public func upload(_ values: [Float], shape: [Int]) -> Tensor { run { Tensor(shape: shape, values: values) } }

    public func upload(_ host: Tensor) -> Tensor {
        precondition(host.device == .cpu, "a \(host.device) tensor given to the CPU backend")
        return host
    }

    /// The weight as a host tensor of its 16-bit dtype, viewing the mapped file: half the resident memory of
    /// float32, for one conversion pass per use (the layer operations expand it into a per-thread buffer first).
    public func upload(_ weight: HalfWeight) -> Tensor? { weight.hostTensor }

    /// Nil: the CPU computes on float32 weights as the file stores them.
    public func uploadHalf(_ host: Tensor) -> Tensor? { nil }

    public func download(_ x: Tensor) -> [Float] { x.scalars }

    /// Nothing to wait for: every operation has run when it returns.
    public func synchronize() {}

    public var statistics: BackendStatistics? { nil }

    public func keepFreedActivations(upTo bytes: Int) { resources.keepFreedBlocks(upTo: bytes) }

    public func releaseCachedMemory() { resources.releaseCachedMemory() }

    /// One image at a time: the decoder's activations grow with the images decoded at once (four 512×512 images
    /// together peaked 1.24 GB above one) and together they were no faster on the CPU, so a batch's peak stays one
    /// image's, and each image is decoded as its request alone would decode it.
    public func imagesPerPass(activationBytesPerImage: Int, images: Int) -> Int { 1 }

    // MARK: Layers

    public func linear(_ x: Tensor, weight: Tensor, bias: Tensor?, rowIndependent: Bool) -> Tensor {
        let binding = resources.enter()
        defer { binding.leave() }
        return Kernels.linear(x, weight: weight.expandedFromHalf(), bias: bias, rowIndependent: rowIndependent)
    }

    public func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor?, stride: Int, padding: Padding) -> Tensor {
        let binding = resources.enter()
        defer { binding.leave() }
        return Kernels.conv2d(x, weight: weight.expandedFromHalf(), bias: bias, stride: stride, padding: padding)
    }

    public func conv3x3Upsampled(_ x: Tensor, weight: Tensor, bias: Tensor?) -> Tensor {
        let binding = resources.enter()
        defer { binding.leave() }
        return Kernels.conv3x3Upsampled(x, weight: weight.expandedFromHalf(), bias: bias)
    }

    public func conv1x1(_ x: Tensor, weight: Tensor, bias: Tensor?) -> Tensor {
        let binding = resources.enter()
        defer { binding.leave() }
        return Kernels.conv1x1(x, weight: weight.expandedFromHalf(), bias: bias)
    }

    public func groupNorm(
        _ x: consuming Tensor, groups: Int, weight: Tensor?, bias: Tensor?, eps: Float, modulation: Tensor?, silu: Bool
    ) -> Tensor {
        let binding = resources.enter()
        defer { binding.leave() }
        return Kernels.groupNorm(
            consume x, groups: groups, weight: weight, bias: bias, eps: eps, modulation: modulation, silu: silu)
    }

    public func layerNorm(_ x: Tensor, weight: Tensor?, bias: Tensor?, eps: Float) -> Tensor {
        let binding = resources.enter()
        defer { binding.leave() }
        return Kernels.layerNorm(x, weight: weight, bias: bias, eps: eps)
    }

    public func rmsNorm(_ x: Tensor, weight: Tensor, eps: Float) -> Tensor {
        let binding = resources.enter()
        defer { binding.leave() }
        return Kernels.rmsNorm(x, weight: weight, eps: eps)
    }

    public func attention(q: Tensor, k: Tensor, v: Tensor, scale: Float, mask: Tensor?) -> Tensor {
        let binding = resources.enter()
        defer { binding.leave() }
        return Kernels.attention(q: q, k: k, v: v, scale: scale, mask: mask)
    }

    public func attentionChannelsFirst(q: Tensor, k: Tensor, v: Tensor, scale: Float) -> Tensor {
        let binding = resources.enter()
        defer { binding.leave() }
        return Kernels.attentionChannelsFirst(q: q, k: k, v: v, scale: scale)
    }

    public func attentionChannelsFirst(qkv: Tensor, textKV: Tensor?, scale: Float) -> Tensor {
        let binding = resources.enter()
        defer { binding.leave() }
        return Kernels.attentionChannelsFirst(qkv: qkv, textKV: textKV, scale: scale)
    }

    public func gelu(_ x: Tensor) -> Tensor { run { Kernels.gelu(x) } }
    public func geluTanh(_ x: Tensor) -> Tensor { run { Kernels.geluTanh(x) } }
    public func silu(_ x: Tensor) -> Tensor { run { Kernels.silu(x) } }
    public func upsampleNearest2x(_ x: Tensor) -> Tensor { run { Kernels.upsampleNearest2x(x) } }
    public func avgPool2x2(_ x: Tensor) -> Tensor { run { Kernels.avgPool2x2(x) } }

    // MARK: Element-wise and layout

    public func add(_ a: Tensor, _ b: Tensor) -> Tensor { run { Kernels.add(a, b) } }
    public func add(_ a: Tensor, into b: inout Tensor) {
        let binding = resources.enter()
        defer { binding.leave() }
        Kernels.add(a, into: &b)
    }
    public func mul(_ a: Tensor, _ b: Tensor) -> Tensor { run { Kernels.mul(a, b) } }
    public func addRows(_ x: Tensor, _ v: Tensor) -> Tensor { run { Kernels.addRows(x, v) } }
    public func scale(_ a: Tensor, by s: Float) -> Tensor { run { Kernels.scale(a, by: s) } }

    public func clamp(_ x: Tensor, lower: Float, upper: Float) -> Tensor {
        let binding = resources.enter()
        defer { binding.leave() }
        return Kernels.map(x) { min(max($0, lower), upper) }
    }

    public func embedding(_ table: Tensor, ids: [Int]) -> Tensor { run { Kernels.embedding(table, ids: ids) } }
    public func concat(_ parts: [Tensor], axis: Int) -> Tensor { run { Kernels.concat(parts, axis: axis) } }
    public func slice(_ x: Tensor, axis: Int, _ range: Range<Int>) -> Tensor {
        run { Kernels.slice(x, axis: axis, range) }
    }
    public func splitHeads(_ x: Tensor, heads: Int) -> Tensor { run { Kernels.splitHeads(x, heads: heads) } }
    public func mergeHeads(_ x: Tensor, heads: Int) -> Tensor { run { Kernels.mergeHeads(x, heads: heads) } }
    public func transposeLast2(_ x: Tensor) -> Tensor { run { Kernels.transposeLast2(x) } }

    // MARK: Sampler operations

    /// One pass per term (`y = c₀·t₀`, then `y = y + cₖ·tₖ`, then `y = y / divisor`): each intermediate is rounded to
    /// float32 exactly as the closures it replaced (`c1 * $0 - c2 * $1` is `c1·x + (−c2)·y` bit for bit).
    public func weightedSum(_ terms: [Tensor], coefficients: [[Float]], dividedBy divisor: Float) -> Tensor {
        let binding = resources.enter()
        defer { binding.leave() }
        guard let first = terms.first else { preconditionFailure("a weighted sum of no terms") }
        let rows = first.shape.first ?? 1
        precondition(coefficients.count == rows, "\(coefficients.count) coefficient rows for \(rows) images")
        precondition(coefficients.allSatisfy { $0.count == terms.count }, "coefficients for other than the terms")
        for t in terms { precondition(t.shape == first.shape, "weighted-sum terms \(t.shape) and \(first.shape)") }
        let y = Tensor(uninitialized: first.shape)
        let yp = y.storage.pointer
        let per = first.count / max(1, rows)
        for i in 0..<rows {
            let out = yp + i * per
            let c = coefficients[i]
            let t0 = first.storage.pointer + i * per
            let c0 = c[0]
            for j in 0..<per { out[j] = c0 * t0[j] }
            for k in 1..<terms.count {
                let tk = terms[k].storage.pointer + i * per
                let ck = c[k]
                for j in 0..<per { out[j] = out[j] + ck * tk[j] }
            }
            if divisor != 1 {
                for j in 0..<per { out[j] = out[j] / divisor }
            }
        }
        return y
    }

    public func guidanceCombine(_ output: Tensor, scales: [Float]) -> (eps: Tensor, v: Tensor) {
        let binding = resources.enter()
        defer { binding.leave() }
        let b = output.shape[0] / 2
        precondition(output.shape[0] == 2 * b && scales.count == b, "\(scales.count) scales for \(output.shape)")
        let channels = output.shape[1] / 2
        let plane = output.count / (2 * b * output.shape[1])
        let shape = [b, channels] + output.shape.dropFirst(2)
        let eps = Tensor(uninitialized: shape)
        let v = Tensor(uninitialized: shape)
        let per = channels * plane
        for i in 0..<b {
            let cond = output.storage.pointer + i * 2 * per
            let uncond = output.storage.pointer + (b + i) * 2 * per
            let g = scales[i]
            for j in 0..<per {
                eps.storage.pointer[i * per + j] = uncond[j] + g * (cond[j] - uncond[j])
                v.storage.pointer[i * per + j] = cond[per + j]
            }
        }
        return (eps, v)
    }

    public func ancestralStep(
        x0: Tensor, x: Tensor, v: Tensor, noise: Tensor, c1: Float, c2: Float,
        logVariance: (lower: Float, upper: Float), addNoise: Bool
    ) -> Tensor {
        let binding = resources.enter()
        defer { binding.leave() }
        precondition(x0.shape == x.shape && v.shape == x.shape && noise.shape == x.shape, "ancestral step shapes")
        let (lo, hi) = (logVariance.lower, logVariance.upper)
        let next = Tensor(uninitialized: x.shape)
        let (x0p, xp, vp, zp, np) = (
            x0.storage.pointer, x.storage.pointer, v.storage.pointer, noise.storage.pointer, next.storage.pointer
        )
        for o in 0..<x.count {
            let mean = c1 * x0p[o] + c2 * xp[o]
            let frac = (vp[o] + 1) / 2
            let logVariance = frac * hi + (1 - frac) * lo
            np[o] = addNoise ? mean + expf(0.5 * logVariance) * zp[o] : mean
        }
        return next
    }

    public func dynamicThreshold(_ x0: Tensor, percentiles: [Double?]) -> Tensor {
        let binding = resources.enter()
        defer { binding.leave() }
        let n = x0.shape[0]
        precondition(percentiles.count == n, "\(percentiles.count) percentiles for \(n) images")
        let per = x0.count / n
        let out = Tensor(uninitialized: x0.shape)
        for i in 0..<n {
            let src = x0.storage.pointer + i * per
            let dst = out.storage.pointer + i * per
            guard let p = percentiles[i] else {
                dst.update(from: src, count: per)
                continue
            }
            var magnitudes = (0..<per).map { abs(src[$0]) }
            magnitudes.sort()
            let position = Double(per - 1) * p / 100
            let lower = Int(position.rounded(.down))
            let upper = min(lower + 1, per - 1)
            let fraction = Float(position - Double(lower))
            // numpy's linear method: lower + (upper − lower)·fraction.
            let value = magnitudes[lower] + (magnitudes[upper] - magnitudes[lower]) * fraction
            let s = max(value, 1)
            for j in 0..<per { dst[j] = min(max(src[j], -s), s) / s }
        }
        return out
    }

    public func maskedBlend(_ x0: Tensor, known: Tensor, mask: Tensor) -> Tensor {
        let binding = resources.enter()
        defer { binding.leave() }
        let (n, c) = (x0.shape[0], x0.shape[1])
        let plane = x0.count / (n * c)
        let out = Tensor(uninitialized: x0.shape)
        let knownPer = known.count / max(1, known.shape[0])
        let maskPer = mask.count / max(1, mask.shape[0])
        let (xp, kp, mp, op) = (x0.storage.pointer, known.storage.pointer, mask.storage.pointer, out.storage.pointer)
        for b in 0..<n {
            let kb = known.shape[0] == 1 ? 0 : b
            let mb = mask.shape[0] == 1 ? 0 : b
            for ch in 0..<c {
                for p in 0..<plane {
                    let o = (b * c + ch) * plane + p
                    let m = mp[mb * maskPer + p]
                    let k = kp[kb * knownPer + ch * plane + p]
                    op[o] = xp[o] * (1 - m) + k * m
                }
            }
        }
        return out
    }

    public func multiplyByMask(_ x: Tensor, _ mask: Tensor) -> Tensor {
        let binding = resources.enter()
        defer { binding.leave() }
        let (n, c) = (x.shape[0], x.shape[1])
        let plane = x.count / (n * c)
        precondition(mask.count == n * plane, "mask \(mask.shape) for \(x.shape)")
        let out = Tensor(uninitialized: x.shape)
        let (xp, mp, op) = (x.storage.pointer, mask.storage.pointer, out.storage.pointer)
        for b in 0..<n {
            for ch in 0..<c {
                for p in 0..<plane {
                    op[(b * c + ch) * plane + p] = xp[(b * c + ch) * plane + p] * mp[b * plane + p]
                }
            }
        }
        return out
    }

    public func gaussianSample(mean: Tensor, logVariance: Tensor, noise: Tensor, scale: Float) -> Tensor {
        let binding = resources.enter()
        defer { binding.leave() }
        let std = Kernels.map(logVariance) { expf(0.5 * $0) }
        return Kernels.scale(Kernels.add(mean, Kernels.mul(std, noise)), by: scale)
    }

    public func maskedMean(_ x: Tensor, mask: [[Int]]) -> Tensor {
        let binding = resources.enter()
        defer { binding.leave() }
        let (n, length, d) = (x.shape[0], x.shape[1], x.shape[2])
        precondition(mask.count == n, "\(mask.count) mask rows for \(x.shape)")
        let pooled = Tensor(zeros: [n, d])
        x.withUnsafeBufferPointer { hp in
            for b in 0..<n {
                let count = Float(max(1, mask[b].reduce(0, +)))
                let dst = pooled.storage.pointer + b * d
                for t in 0..<length where mask[b][t] != 0 {
                    for j in 0..<d { dst[j] += hp[(b * length + t) * d + j] }
                }
                for j in 0..<d { dst[j] /= count }
            }
        }
        return pooled
    }

    public func rgb8(_ images: Tensor, image: Int, width: Int, height: Int) -> [UInt8] {
        let (c, fullH, fullW) = (images.shape[1], images.shape[2], images.shape[3])
        precondition(width <= fullW && height <= fullH, "crop \(width)×\(height) of \(fullW)×\(fullH)")
        var out = [UInt8](repeating: 0, count: width * height * c)
        let base = images.storage.pointer + image * c * fullH * fullW
        for y in 0..<height {
            for x in 0..<width {
                for ch in 0..<c {
                    let v = ((base[(ch * fullH + y) * fullW + x] + 1) * 127.5).rounded(.toNearestOrEven)
                    out[(y * width + x) * c + ch] = UInt8(min(max(v, 0), 255))
                }
            }
        }
        return out
    }
}
