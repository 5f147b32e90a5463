@_exported import Generation
@_exported import JSON
@_exported import Redis

// MARK: - The validated request

/// `dynamic_threshold`: given as a percentile, or `null` to switch it off.
public enum DynamicThreshold: Equatable, Sendable {
    case disabled
    case percentile(Double)
}

/// A job of schema version 1 (DESIGN §3), parsed and validated. Parameters the job left out are `nil` here; the
/// sampling code fills them through `resolved(defaults:chooseSeed:)`, so "absent" never becomes a silent value
/// before the model's own defaults are known.
public struct GenerationRequest: Equatable, Sendable {
    public var id: String
    public var prompt: String
    public var negativePrompt: String?
    public var width: Int?
    public var height: Int?
    public var numImages: Int?
    public var steps: Int?
    public var guidanceScale: Double?
    public var sampler: Sampler?
    public var eta: Double?
    /// `nil`: not given; `.disabled`: given as `null`.
    public var dynamicThreshold: DynamicThreshold?
    public var seed: UInt64?
    /// Relative to the configured input root; checked free of `..` and absolute paths (`InputPath.resolve` also
    /// refuses symlinks out of the root when the file is read).
    public var initImage: String?
    public var strength: Double?
    public var maskImage: String?
    /// Any JSON, echoed back in the event.
    public var metadata: JSONValue?
    /// Epoch seconds after which the job must not start.
    public var deadline: Double?

    public init(id: String, prompt: String) {
        self.id = id
        self.prompt = prompt
    }

    /// The request with every parameter decided: absent ones from `defaults`, an absent seed from `chooseSeed`.
    /// `strength` is img2img's alone: inpainting (a mask) keeps the unmasked pixels instead, so it has none.
    public func resolved(defaults: GenerationDefaults, chooseSeed: () -> UInt64) -> GenerationParameters {
        let threshold: Double?
        switch dynamicThreshold {
        case nil: threshold = defaults.dynamicThreshold
        case .disabled?: threshold = nil
        case .percentile(let p)?: threshold = p
        }
        return GenerationParameters(
            prompt: prompt, negativePrompt: negativePrompt ?? "", width: width ?? defaults.width,
            height: height ?? defaults.height, numImages: numImages ?? defaults.numImages,
            steps: steps ?? defaults.steps, guidanceScale: guidanceScale ?? defaults.guidanceScale,
            sampler: sampler ?? defaults.sampler, eta: eta ?? defaults.eta, dynamicThreshold: threshold,
            seed: seed ?? (chooseSeed() & 0x7FFF_FFFF_FFFF_FFFF), initImage: initImage,
            strength: initImage == nil || maskImage != nil ? nil : (strength ?? defaults.strength),
            maskImage: maskImage)
    }

    /// The request as canonical JSON (what `job.json` records; only the fields the job gave).
    public var json: JSONValue {
        var m: JSONObject = ["id": .string(id), "prompt": .string(prompt)]
        if let negativePrompt { m["negative_prompt"] = .string(negativePrompt) }
        if let width { m["width"] = .integer(width) }
        if let height { m["height"] = .integer(height) }
        if let numImages { m["num_images"] = .integer(numImages) }
        if let steps { m["steps"] = .integer(steps) }
        if let guidanceScale { m["guidance_scale"] = .double(guidanceScale) }
        if let sampler { m["sampler"] = .string(sampler.rawValue) }
        if let eta { m["eta"] = .double(eta) }
        switch dynamicThreshold {
        case nil: break
        case .disabled?: m["dynamic_threshold"] = .null
        case .percentile(let p)?: m["dynamic_threshold"] = .double(p)
        }
        if let seed { m["seed"] = .integer(seed) }
        if let initImage { m["init_image"] = .string(initImage) }
        if let strength { m["strength"] = .double(strength) }
        if let maskImage { m["mask_image"] = .string(maskImage) }
        if let metadata { m["metadata"] = metadata }
        if let deadline { m["deadline"] = .double(deadline) }
        return .object(m)
    }
}
