/// Generation parameters with every value decided: what the sampling code runs.
public struct GenerationParameters: Equatable, Sendable {
    public var prompt: String
    public var negativePrompt: String
    public var width: Int
    public var height: Int
    public var numImages: Int
    public var steps: Int
    public var guidanceScale: Double
    public var sampler: Sampler
    public var eta: Double
    /// Percentile, or `nil` for no dynamic thresholding.
    public var dynamicThreshold: Double?
    /// The first image's seed; image `n` uses `seed + n` (DESIGN §5).
    public var seed: UInt64
    public var initImage: String?
    public var strength: Double?
    public var maskImage: String?

    public init(
        prompt: String, negativePrompt: String, width: Int, height: Int, numImages: Int, steps: Int,
        guidanceScale: Double, sampler: Sampler, eta: Double, dynamicThreshold: Double?, seed: UInt64,
        initImage: String? = nil, strength: Double? = nil, maskImage: String? = nil
    ) {
        (self.prompt, self.negativePrompt, self.width, self.height, self.numImages, self.steps) =
            (prompt, negativePrompt, width, height, numImages, steps)
        (self.guidanceScale, self.sampler, self.eta, self.dynamicThreshold, self.seed) =
            (guidanceScale, sampler, eta, dynamicThreshold, seed)
        (self.initImage, self.strength, self.maskImage) = (initImage, strength, maskImage)
    }

    /// The seed of image `n` (0-based).
    public func seed(ofImage n: Int) -> UInt64 { seed &+ UInt64(n) }
}
