import Foundation

/// The diffusion's noise schedule in float64 (spec §6.2): guided-diffusion's "linear" betas over 1000 steps and
/// their cumulative products. Coefficients become float32 only when they multiply a tensor.
public struct DiffusionSchedule: Sendable, Equatable {
    public let betas: [Double]
    public let alphasCumprod: [Double]

    public var count: Int { betas.count }

    /// `β = linspace(s·start, s·end, T)` with `s = 1000/T`.
    public static func linear(steps: Int = 1000, start: Double = 1e-4, end: Double = 0.02) -> DiffusionSchedule {
        let scale = 1000 / Double(steps)
        let (a, b) = (scale * start, scale * end)
        // numpy.linspace: a + i·(b − a)/(T − 1), the last value exactly b.
        let step = (b - a) / Double(steps - 1)
        var betas = (0..<steps).map { a + Double($0) * step }
        betas[steps - 1] = b
        var product = 1.0
        let cumulative = betas.map { beta -> Double in
            product *= 1 - beta
            return product
        }
        return DiffusionSchedule(betas: betas, alphasCumprod: cumulative)
    }

    public init(betas: [Double], alphasCumprod: [Double]) {
        self.betas = betas
        self.alphasCumprod = alphasCumprod
    }

    /// From a model's diffusion configuration.
    public init(_ config: DiffusionConfig) throws(KandinskyError) {
        guard config.noiseSchedule == "linear" else {
            throw KandinskyError(
                .modelDirectory, "noise_schedule \(config.noiseSchedule) (only linear)", key: "diffusion.noise_schedule"
            )
        }
        guard config.steps >= 2 else {
            throw KandinskyError(.modelDirectory, "steps must be at least 2", key: "diffusion.steps")
        }
        self = .linear(steps: config.steps, start: config.linearStart ?? 1e-4, end: config.linearEnd ?? 0.02)
    }

    // MARK: - Respacing (model/respace.py)

    /// `space_timesteps(T, "K")`: K steps at `round(j·(T−1)/(K−1))`, Python's round (half to even).
    public func spacedTimesteps(_ k: Int) -> [Int] {
        precondition(k >= 1 && k <= count, "cannot take \(k) steps out of \(count)")
        if k == 1 { return [0] }
        let stride = Double(count - 1) / Double(k - 1)
        var steps: [Int] = []
        var current = 0.0
        for _ in 0..<k {
            let t = Int(current.rounded(.toNearestOrEven))
            if steps.last != t { steps.append(t) }
            current += stride
        }
        return steps
    }

    /// `space_timesteps(T, "ddimK")` = LDM's uniform DDIM steps: every `c = T / K`-th step from 0, plus one.
    /// The number of steps is ⌈T / c⌉, which can exceed K (75 → 77).
    public func ddimTimesteps(_ k: Int) -> [Int] {
        precondition(k >= 1 && k <= count, "cannot take \(k) steps out of \(count)")
        let c = count / k
        return Swift.stride(from: 0, to: count, by: c).map { $0 + 1 }.filter { $0 < count }
    }
}

/// A respaced schedule (`SpacedDiffusion`): kept steps `t_0 < … < t_{K−1}` with
/// `ᾱ'_k = ᾱ[t_k]`, `β'_k = 1 − ᾱ[t_k]/ᾱ[t_{k−1}]` (ᾱ[t_{−1}] = 1).
public struct SpacedSchedule: Sendable, Equatable {
    /// The original timesteps kept, ascending (`timestep_map`).
    public let timesteps: [Int]
    public let alphasCumprod: [Double]
    public let alphasCumprodPrevious: [Double]
    public let betas: [Double]

    public init(_ base: DiffusionSchedule, timesteps: [Int]) {
        self.timesteps = timesteps
        alphasCumprod = timesteps.map { base.alphasCumprod[$0] }
        alphasCumprodPrevious = [1.0] + alphasCumprod.dropLast()
        betas = zip(alphasCumprod, alphasCumprodPrevious).map { 1 - $0 / $1 }
    }

    public var count: Int { timesteps.count }

    /// log of the posterior variance `β'(1 − ᾱ'_prev)/(1 − ᾱ')`, entry 0 replaced by entry 1 (clipped).
    public var posteriorLogVarianceClipped: [Double] {
        let variance = (0..<count).map { k in betas[k] * (1 - alphasCumprodPrevious[k]) / (1 - alphasCumprod[k]) }
        guard count > 1 else { return [log(max(variance[0], 1e-20))] }
        return ([variance[1]] + variance.dropFirst()).map { log($0) }
    }
}
