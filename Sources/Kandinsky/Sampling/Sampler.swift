import Foundation
import Tensor

/// Per-image settings of one batch.
public struct ImageSampling: Sendable, Equatable {
    public var guidanceScale: Float
    public var eta: Double
    /// Percentile for dynamic thresholding of x0 (e.g. 99.5), or nil for none.
    public var dynamicThreshold: Double?

    public init(guidanceScale: Float, eta: Double = 0, dynamicThreshold: Double? = 99.5) {
        self.guidanceScale = guidanceScale
        self.eta = eta
        self.dynamicThreshold = dynamicThreshold
    }
}

/// What the sampler needs from the model at one step: guided ε and the (unguided, conditional) variance value v,
/// both `[B, 4, h, w]`, for latents `x` `[B, 4, h, w]` at original timestep `t`.
public typealias Denoiser = (_ x: Tensor, _ t: Int) -> (eps: Tensor, v: Tensor)

/// Inpainting's known region: after thresholding, x0 is blended as `x0·(1 − mask) + known·mask` (the release's
/// `denoised_fn`), then thresholded again.
public struct KnownRegion: Sendable {
    public var latent: Tensor
    public var mask: Tensor

    public init(latent: Tensor, mask: Tensor) {
        self.latent = latent
        self.mask = mask
    }
}

/// Why sampling stopped early.
public struct SamplingCancelled: Error, Equatable {
    public var step: Int
}

/// One sampling run over a batch of B images sharing sampler, step count and latent size.
public struct SamplingRun {
    public var kind: Sampler
    public var steps: Int
    public var images: [ImageSampling]
    public var schedule: DiffusionSchedule
    /// Start partway (img2img): the number of the sampler's steps still to run, counted from the end; nil for all.
    public var startStep: Int?
    public var known: KnownRegion?
    /// Called after each step with (step done, total); return false to cancel before the next step.
    public var progress: (Int, Int) -> Bool = { _, _ in true }

    public init(kind: Sampler, steps: Int, images: [ImageSampling], schedule: DiffusionSchedule = .linear()) {
        self.kind = kind
        self.steps = steps
        self.images = images
        self.schedule = schedule
    }

    /// The original timesteps the sampler visits, descending, before any img2img start.
    public var timesteps: [Int] {
        switch kind {
        case .ddim, .ddimLDM, .plms: return schedule.ddimTimesteps(steps).reversed()
        case .pSampler, .dpmpp2M: return schedule.spacedTimesteps(steps).reversed()
        }
    }

    /// The schedule the sampler steps through (ascending timesteps).
    var spaced: SpacedSchedule {
        SpacedSchedule(schedule, timesteps: Array(timesteps.reversed()))
    }

    /// Number of model evaluations the run will make (PLMS pays one extra on its first step).
    public var stepCount: Int {
        let n = min(startStep ?? timesteps.count, timesteps.count)
        return n
    }

    // MARK: - Sampling

    /// Runs the sampler from `x` (`[B, 4, h, w]`, pure noise or img2img's noised latent) and returns the final
    /// latent (x0 for the release samplers and DPM-Solver++, the last x for the LDM ones, as the official code).
    public func sample(
        from x: Tensor, denoise: Denoiser, noise: inout some NoiseSource
    ) throws(SamplingCancelled) -> Tensor {
        precondition(x.rank == 4 && x.shape[0] == images.count, "latents \(x.shape) for \(images.count) images")
        switch kind {
        case .ddim: return try releaseDDIM(x, denoise, &noise)
        case .pSampler: return try ancestral(x, denoise, &noise)
        case .ddimLDM: return try ldmDDIM(x, denoise, &noise)
        case .plms: return try plms(x, denoise)
        case .dpmpp2M: return try dpmSolver(x, denoise)
        }
    }

    /// Indices (into the spaced schedule) to run, descending.
    var indices: [Int] {
        let all = spaced.count
        let start = min(startStep ?? all, all)
        return Array((0..<start).reversed())
    }

    func report(_ done: Int, _ total: Int) throws(SamplingCancelled) {
        if !progress(done, total) { throw SamplingCancelled(step: done) }
    }

    /// x0 from ε: `√(1/ᾱ)·x − √(1/ᾱ − 1)·ε`.
    func predictX0(_ x: Tensor, _ eps: Tensor, _ a: Double) -> Tensor {
        let (c1, c2) = (Float((1 / a).squareRoot()), Float((1 / a - 1).squareRoot()))
        return Kernels.zipMap(x, eps) { c1 * $0 - c2 * $1 }
    }

    /// The release's `process_xstart`: dynamic thresholding per image, then the inpainting blend and the
    /// threshold again when a known region is given.
    func processX0(_ x0: Tensor) -> Tensor {
        var out = Thresholding.dynamic(x0, percentiles: images.map(\.dynamicThreshold))
        if let known {
            out = Thresholding.blend(out, known: known)
            out = Thresholding.dynamic(out, percentiles: images.map(\.dynamicThreshold))
        }
        return out
    }

    // MARK: release DDIM (140d16d gaussian_diffusion.ddim_sample)

    func releaseDDIM(
        _ start: Tensor, _ denoise: Denoiser, _ noise: inout some NoiseSource
    ) throws(SamplingCancelled) -> Tensor {
        let s = spaced
        var x = start
        let order = indices
        for (done, k) in order.enumerated() {
            let a = s.alphasCumprod[k]
            let aPrev = s.alphasCumprodPrevious[k]
            let (eps, _) = denoise(x, s.timesteps[k])
            let x0 = processX0(predictX0(x, eps, a))
            // ε re-derived from the processed x0: (√(1/ᾱ)·x − x0) / √(1/ᾱ − 1).
            let (r1, r2) = (Float((1 / a).squareRoot()), Float((1 / a - 1).squareRoot()))
            let epsPrime = Kernels.zipMap(x, x0) { (r1 * $0 - $1) / r2 }
            let next = Tensor(uninitialized: x.shape)
            let per = x.count / images.count
            for (i, image) in images.enumerated() {
                let sigma = image.eta * ((1 - aPrev) / (1 - a)).squareRoot() * (1 - a / aPrev).squareRoot()
                let cx = Float(aPrev.squareRoot())
                let ce = Float(max(0, 1 - aPrev - sigma * sigma).squareRoot())
                let z = noise.next(image: i, shape: Array(x.shape.dropFirst()))
                let cz = k == 0 ? Float(0) : Float(sigma)
                for j in 0..<per {
                    let o = i * per + j
                    next.storage.pointer[o] =
                        cx * x0.storage.pointer[o] + ce * epsPrime.storage.pointer[o] + cz * z.storage.pointer[j]
                }
            }
            x = next
            try report(done + 1, order.count)
        }
        return x
    }

    // MARK: release ancestral sampler (p_sample with learned range)

    func ancestral(
        _ start: Tensor, _ denoise: Denoiser, _ noise: inout some NoiseSource
    ) throws(SamplingCancelled) -> Tensor {
        let s = spaced
        let minLog = s.posteriorLogVarianceClipped
        var x = start
        let order = indices
        for (done, k) in order.enumerated() {
            let (a, aPrev, beta) = (s.alphasCumprod[k], s.alphasCumprodPrevious[k], s.betas[k])
            let (eps, v) = denoise(x, s.timesteps[k])
            let x0 = processX0(predictX0(x, eps, a))
            let c1 = Float(beta * aPrev.squareRoot() / (1 - a))
            let c2 = Float((1 - aPrev) * (1 - beta).squareRoot() / (1 - a))
            let (lo, hi) = (Float(minLog[k]), Float(log(beta)))
            let next = Tensor(uninitialized: x.shape)
            let per = x.count / images.count
            for i in 0..<images.count {
                // The release draws noise at every step and masks it out at the last.
                let z = noise.next(image: i, shape: Array(x.shape.dropFirst()))
                for j in 0..<per {
                    let o = i * per + j
                    let mean = c1 * x0.storage.pointer[o] + c2 * x.storage.pointer[o]
                    let frac = (v.storage.pointer[o] + 1) / 2
                    let logVariance = frac * hi + (1 - frac) * lo
                    next.storage.pointer[o] = k == 0 ? mean : mean + expf(0.5 * logVariance) * z.storage.pointer[j]
                }
            }
            x = next
            try report(done + 1, order.count)
        }
        return x
    }

    // MARK: today's repository: LDM DDIM and PLMS (samplers.py)

    /// (ᾱ_t, ᾱ_prev) of LDM's DDIM on the full schedule: the step below, or ᾱ[0] after the last.
    func ldmAlphas(_ order: [Int], _ position: Int) -> (Double, Double) {
        let ts = spaced.timesteps
        let a = schedule.alphasCumprod[ts[order[position]]]
        let k = order[position]
        let aPrev = k > 0 ? schedule.alphasCumprod[ts[k - 1]] : schedule.alphasCumprod[0]
        return (a, aPrev)
    }

    /// `x_prev = √ᾱ_prev·x0 + √(1 − ᾱ_prev)·ε` with `x0 = (x − √(1−ᾱ)·ε)/√ᾱ` (σ = 0, as eta is never applied there).
    func ldmStep(_ x: Tensor, _ eps: Tensor, a: Double, aPrev: Double) -> Tensor {
        let (sa, s1a) = (Float(a.squareRoot()), Float((1 - a).squareRoot()))
        let (sp, s1p) = (Float(aPrev.squareRoot()), Float((1 - aPrev).squareRoot()))
        return Kernels.zipMap(x, eps) { xv, e in sp * ((xv - s1a * e) / sa) + s1p * e }
    }

    func ldmDDIM(
        _ start: Tensor, _ denoise: Denoiser, _ noise: inout some NoiseSource
    ) throws(SamplingCancelled) -> Tensor {
        var x = start
        let order = indices
        for position in order.indices {
            let (a, aPrev) = ldmAlphas(order, position)
            let (eps, _) = denoise(x, spaced.timesteps[order[position]])
            // The official sampler draws noise each step though σ is 0; the draw keeps the streams aligned.
            for i in 0..<images.count { _ = noise.next(image: i, shape: Array(x.shape.dropFirst())) }
            x = ldmStep(x, eps, a: a, aPrev: aPrev)
            try report(position + 1, order.count)
        }
        return x
    }

    func plms(_ start: Tensor, _ denoise: Denoiser) throws(SamplingCancelled) -> Tensor {
        var x = start
        let order = indices
        var history: [Tensor] = []
        for position in order.indices {
            let (a, aPrev) = ldmAlphas(order, position)
            let t = spaced.timesteps[order[position]]
            let (eps, _) = denoise(x, t)
            let epsPrime: Tensor
            switch history.count {
            case 0:
                // Pseudo improved Euler: a provisional step, the model there, and the average.
                let provisional = ldmStep(x, eps, a: a, aPrev: aPrev)
                let tNext = position + 1 < order.count ? spaced.timesteps[order[position + 1]] : max(0, t)
                let (epsNext, _) = denoise(provisional, tNext)
                epsPrime = Kernels.zipMap(eps, epsNext) { ($0 + $1) / 2 }
            case 1:
                epsPrime = Kernels.zipMap(eps, history[0]) { (3 * $0 - $1) / 2 }
            case 2:
                let e1 = history[1]
                let e2 = history[0]
                epsPrime = Kernels.zipMap(Kernels.zipMap(eps, e1) { 23 * $0 - 16 * $1 }, e2) { ($0 + 5 * $1) / 12 }
            default:
                let (e1, e2, e3) = (history[history.count - 1], history[history.count - 2], history[history.count - 3])
                let partial = Kernels.zipMap(Kernels.zipMap(eps, e1) { 55 * $0 - 59 * $1 }, e2) { $0 + 37 * $1 }
                epsPrime = Kernels.zipMap(partial, e3) { ($0 - 9 * $1) / 24 }
            }
            history.append(eps)
            if history.count > 3 { history.removeFirst() }
            x = ldmStep(x, epsPrime, a: a, aPrev: aPrev)
            try report(position + 1, order.count)
        }
        return x
    }

    // MARK: DPM-Solver++(2M)

    func dpmSolver(_ start: Tensor, _ denoise: Denoiser) throws(SamplingCancelled) -> Tensor {
        let s = spaced
        var x = start
        let order = indices
        var previous: (x0: Tensor, h: Double)?
        for (done, k) in order.enumerated() {
            let a = s.alphasCumprod[k]
            let aNext = s.alphasCumprodPrevious[k]
            let (eps, _) = denoise(x, s.timesteps[k])
            let x0 = processX0(predictX0(x, eps, a))
            if aNext >= 1 {
                // The last step lands on σ = 0: the sample is the denoised estimate.
                x = x0
            } else {
                // λ = log(α/σ); x' = (σ'/σ)·x − α'·(e^{−h} − 1)·D, with D the second-order combination of x0s.
                let lambda = 0.5 * log(a / (1 - a))
                let lambdaNext = 0.5 * log(aNext / (1 - aNext))
                let h = lambdaNext - lambda
                var d = x0
                if let previous {
                    let r = previous.h / h
                    let (w0, w1) = (Float(1 + 1 / (2 * r)), Float(1 / (2 * r)))
                    d = Kernels.zipMap(x0, previous.x0) { w0 * $0 - w1 * $1 }
                }
                let ratio = Float(((1 - aNext) / (1 - a)).squareRoot())
                let coefficient = Float(aNext.squareRoot() * -expm1(-h))
                x = Kernels.zipMap(x, d) { ratio * $0 + coefficient * $1 }
                previous = (x0, h)
            }
            try report(done + 1, order.count)
        }
        return x
    }
}

/// Dynamic thresholding and the inpainting blend (spec §6.7, §6.11).
public enum Thresholding {
    /// Per image: `s` = the p-th percentile of |x0| over the image's values (numpy's linear interpolation),
    /// `s = max(s, 1)`, `x0 = clip(x0, −s, s)/s`. Images whose percentile is nil pass unchanged.
    public static func dynamic(_ x0: Tensor, percentiles: [Double?]) -> Tensor {
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

    /// `x0·(1 − mask) + known·mask`, the mask broadcast over channels (`[1 or B, 1, h, w]`).
    public static func blend(_ x0: Tensor, known: KnownRegion) -> Tensor {
        let (n, c) = (x0.shape[0], x0.shape[1])
        let plane = x0.count / (n * c)
        let out = Tensor(uninitialized: x0.shape)
        let knownPer = known.latent.count / max(1, known.latent.shape[0])
        let maskPer = known.mask.count / max(1, known.mask.shape[0])
        for b in 0..<n {
            let kb = known.latent.shape[0] == 1 ? 0 : b
            let mb = known.mask.shape[0] == 1 ? 0 : b
            for ch in 0..<c {
                for p in 0..<plane {
                    let o = (b * c + ch) * plane + p
                    let m = known.mask.storage.pointer[mb * maskPer + p]
                    let k = known.latent.storage.pointer[kb * knownPer + ch * plane + p]
                    out.storage.pointer[o] = x0.storage.pointer[o] * (1 - m) + k * m
                }
            }
        }
        return out
    }
}
