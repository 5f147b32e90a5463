import ArgumentParser

/// The generation parameters `generate` and `submit` share; absent ones fall back to the model's and then the
/// built-in defaults (for `submit`, to the worker's).
struct GenerationOptions: ParsableArguments {
    @Option(help: "Width in pixels (64-1024).") var width: Int?
    @Option(help: "Height in pixels (64-1024).") var height: Int?
    @Option(help: "Sampling steps (1-1000).") var steps: Int?
    @Option(help: "ddim, p_sampler, ddim_ldm, plms or dpmpp_2m.") var sampler: String?
    @Option(help: "Classifier-free guidance scale (0-100).") var guidanceScale: Double?
    @Option(help: "DDIM eta (0-1).") var eta: Double?
    @Option(help: "Dynamic thresholding percentile (0-100], or 'none'.") var dynamicThreshold: String?
    @Option(help: "Seed of the first image; image k uses seed + k (default: random, reported).") var seed: UInt64?
    @Option(help: "Number of images (1-16).") var numImages: Int?
    @Option(help: "Negative prompt (replaces the empty unconditional prompt).") var negativePrompt: String?
}
