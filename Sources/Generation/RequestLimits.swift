/// The bounds a job is checked against. The defaults are those of DESIGN §3; a deployment may narrow or widen them.
public struct JobLimits: Equatable, Sendable {
    public var maxPayloadBytes = 64 * 1024
    public var maxPromptBytes = 8 * 1024
    public var size: ClosedRange<Int> = 64...1024
    /// Width and height must be multiples of this (the autoencoder downsamples by 8).
    public var sizeMultiple = 8
    public var numImages: ClosedRange<Int> = 1...16
    public var steps: ClosedRange<Int> = 1...1000
    public var guidanceScale: ClosedRange<Double> = 0...100
    /// Any seed a signed 64-bit integer holds (producers in languages without unsigned integers can send every one);
    /// the noise, like `torch.manual_seed`, depends on its low 32 bits.
    public var seed: ClosedRange<UInt64> = 0...UInt64(Int64.max)
    public var maxPathBytes = 1024
    public init() {}
}
