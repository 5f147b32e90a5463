/// The values used where a job leaves a parameter out (configuration, or the model's `defaults`).
public struct GenerationDefaults: Equatable, Sendable {
    public var width = 512
    public var height = 512
    public var numImages = 1
    public var steps = 50
    public var guidanceScale = 7.0
    public var sampler = Sampler.ddim
    public var eta = 0.0
    public var dynamicThreshold: Double? = 99.5
    public var strength = 0.7
    public init() {}

    /// The one merge of defaults (DESIGN §2): these (the configuration's), with every value the model states in its
    /// `model.json` `defaults` taking their place.
    public func overridden(by model: ModelDefaults?) -> GenerationDefaults {
        guard let model else { return self }
        var d = self
        if let v = model.width { d.width = v }
        if let v = model.height { d.height = v }
        if let v = model.steps { d.steps = v }
        if let v = model.guidanceScale { d.guidanceScale = v }
        if let v = model.sampler { d.sampler = v }
        if let v = model.eta { d.eta = v }
        if let v = model.dynamicThreshold { d.dynamicThreshold = v }
        return d
    }
}

/// Generation parameters a model states for requests that leave them out (`model.json` `defaults`).
public struct ModelDefaults: Codable, Sendable, Equatable {
    public var width: Int?
    public var height: Int?
    public var steps: Int?
    public var guidanceScale: Double?
    /// An unknown name fails the model's loading, naming it.
    public var sampler: Sampler?
    public var eta: Double?
    public var dynamicThreshold: Double?

    public init() {}

    enum CodingKeys: String, CodingKey {
        case width, height, steps, sampler, eta
        case guidanceScale = "guidance_scale", dynamicThreshold = "dynamic_threshold"
    }
}
