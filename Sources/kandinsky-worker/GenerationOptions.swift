import ArgumentParser
import JobQueue

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

    /// The job JSON of DESIGN §3 these options and `prompt` make (only the options given), which `submit` pushes
    /// and `generate` checks with the workers' job decoder: one set of rules and limits for both.
    func job(id: String, prompt: String) throws -> JSONObject {
        var job: JSONObject = ["id": .string(id), "prompt": .string(prompt)]
        if let v = width { job["width"] = .integer(v) }
        if let v = height { job["height"] = .integer(v) }
        if let v = steps { job["steps"] = .integer(v) }
        if let v = sampler { job["sampler"] = .string(v) }
        if let v = guidanceScale { job["guidance_scale"] = .double(v) }
        if let v = eta { job["eta"] = .double(v) }
        if let v = seed { job["seed"] = .integer(v) }
        if let v = numImages { job["num_images"] = .integer(v) }
        if let v = negativePrompt { job["negative_prompt"] = .string(v) }
        if let v = dynamicThreshold {
            guard v == "none" || Double(v) != nil else {
                throw ValidationError("--dynamic-threshold must be a number or none")
            }
            job["dynamic_threshold"] = v == "none" ? .null : .double(Double(v)!)
        }
        return job
    }
}
