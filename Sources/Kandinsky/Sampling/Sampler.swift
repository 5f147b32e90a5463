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
    /// The backend the steps compute on: the UNet's (the latents, ε and the known region are its tensors).
    public var backend: any ComputeBackend = CPUBackend.shared

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

    /// Each image's next draw of its latent's shape (`[4, h, w]`), uploaded together as `[B, 4, h, w]`.
    func draw(_ noise: inout some NoiseSource, like x: Tensor) -> Tensor {
        let shape = Array(x.shape.dropFirst())
        var draws: [Tensor] = []
        for i in 0..<images.count {
            draws.append(backend.upload(noise.next(image: i, shape: shape).reshaped([1] + shape)))
        }
        return draws.count == 1 ? draws[0] : backend.concat(draws, axis: 0)
    }

    /// x0 from ε: `√(1/ᾱ)·x − √(1/ᾱ − 1)·ε`.
    func predictX0(_ x: Tensor, _ eps: Tensor, _ a: Double) -> Tensor {
        let (c1, c2) = (Float((1 / a).squareRoot()), Float((1 / a - 1).squareRoot()))
        return backend.weightedSum([x, eps], [c1, -c2])
    }

    /// The release's `process_xstart`: dynamic thresholding per image (spec §6.7), then the inpainting blend
    /// (`denoised_fn`, spec §6.11) and the threshold again when a known region is given.
    func processX0(_ x0: Tensor) -> Tensor {
        let percentiles = images.map(\.dynamicThreshold)
        var out = backend.dynamicThreshold(x0, percentiles: percentiles)
        if let known {
            out = backend.maskedBlend(out, known: known.latent, mask: known.mask)
            out = backend.dynamicThreshold(out, percentiles: percentiles)
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
            let epsPrime = backend.weightedSum([x, x0], [r1, -1], dividedBy: r2)
            // x_prev = √ᾱ_prev·x0 + √(1 − ᾱ_prev − σ²)·ε' + σ·z, σ per image from its eta (no noise at the last step).
            let coefficients = images.map { image -> [Float] in
                let sigma = image.eta * ((1 - aPrev) / (1 - a)).squareRoot() * (1 - a / aPrev).squareRoot()
                let cx = Float(aPrev.squareRoot())
                let ce = Float(max(0, 1 - aPrev - sigma * sigma).squareRoot())
                let cz = k == 0 ? Float(0) : Float(sigma)
                return [cx, ce, cz]
            }
            let z = draw(&noise, like: x)
            x = backend.weightedSum([x0, epsPrime, z], coefficients: coefficients, dividedBy: 1)
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
            // The release draws noise at every step and masks it out at the last.
            let z = draw(&noise, like: x)
            x = backend.ancestralStep(
                x0: x0, x: x, v: v, noise: z, c1: c1, c2: c2, logVariance: (lo, hi), addNoise: k != 0)
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
        let x0 = backend.weightedSum([x, eps], [1, -s1a], dividedBy: sa)
        return backend.weightedSum([x0, eps], [sp, s1p])
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
                epsPrime = backend.weightedSum([eps, epsNext], [1, 1], dividedBy: 2)
            case 1:
                epsPrime = backend.weightedSum([eps, history[0]], [3, -1], dividedBy: 2)
            case 2:
                let e1 = history[1]
                let e2 = history[0]
                epsPrime = backend.weightedSum([eps, e1, e2], [23, -16, 5], dividedBy: 12)
            default:
                let (e1, e2, e3) = (history[history.count - 1], history[history.count - 2], history[history.count - 3])
                epsPrime = backend.weightedSum([eps, e1, e2, e3], [55, -59, 37, -9], dividedBy: 24)
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
                    d = backend.weightedSum([x0, previous.x0], [w0, -w1])
                }
                let ratio = Float(((1 - aNext) / (1 - a)).squareRoot())
                let coefficient = Float(aNext.squareRoot() * -expm1(-h))
                x = backend.weightedSum([x, d], [ratio, coefficient])
                previous = (x0, h)
            }
            try report(done + 1, order.count)
        }
        return x
    }
}
