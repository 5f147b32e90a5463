import Foundation
import JobQueue
import ResultStore
import Worker

/// A generator that does no model work, for tests and `bench queue`. Its behaviour comes from the job's
/// `metadata.test` object: `sleep_ms` (sleep in steps of 10 ms, checking for cancellation), `fail` = `poison`
/// (always a retryable failure), `once` (a retryable failure on the first attempt only) or `fatal` (a failure that is
/// not retried), `crash` = true (the process exits abruptly, as if killed). Images are small deterministic noise, one
/// per requested image, at the requested size.
public struct ScriptedGenerator: JobGenerator {
    /// When false, no images are made (pure queue throughput).
    public var makesImages: Bool

    public init(makesImages: Bool = true) { self.makesImages = makesImages }

    public func generate(_ request: GenerationRequest, context: GenerationContext) throws -> GenerationOutput {
        let test = request.metadata?["test"]
        if let sleep = test?["sleep_ms"]?.int64Value, sleep > 0 {
            var left = sleep
            while left > 0 {
                try context.checkCancelled()
                let step = min(left, 10)
                usleep(UInt32(step * 1000))
                left -= step
            }
        }
        try context.checkCancelled()
        switch test?["fail"]?.stringValue {
        case "poison"?: throw GenerationFailure(.generationFailed, "poison job (metadata.test.fail)", retryable: true)
        case "fatal"?: throw GenerationFailure(.generationFailed, "fatal job (metadata.test.fail)", retryable: false)
        case "once"? where context.attempt == 1:
            throw GenerationFailure(
                .generationFailed, "fails on its first attempt (metadata.test.fail)", retryable: true)
        default: break
        }
        if test?["crash"] == .bool(true) { _exit(137) }
        var seedSource = SystemRandomNumberGenerator()
        let parameters = request.resolved(defaults: context.defaults) { seedSource.next() }
        var images: [PixelImage] = []
        if makesImages {
            for n in 0..<parameters.numImages {
                var state = parameters.seed(ofImage: n)
                var pixels = [UInt8](repeating: 0, count: parameters.width * parameters.height * 3)
                for i in pixels.indices {
                    state &+= 0x9E37_79B9_7F4A_7C15
                    pixels[i] = UInt8(truncatingIfNeeded: (state ^ (state >> 29)) &* 0xBF58_476D_1CE4_E5B9 >> 56)
                }
                images.append(
                    PixelImage(width: parameters.width, height: parameters.height, channels: 3, pixels: pixels))
            }
        }
        return GenerationOutput(parameters: parameters, images: images, model: "scripted")
    }
}
