import Foundation
import ResultStore

/// What turns a request into images. The real pipeline conforms later; the queue only needs this.
///
/// `generate` is called on the worker's own thread (never on Swift's cooperative pool) and may block for as long
/// as sampling takes; it should call `context.checkCancelled()` between sampling steps.
public protocol JobGenerator: Sendable {
    func generate(_ request: GenerationRequest, context: GenerationContext) throws -> GenerationOutput
}

/// A generator that can make several jobs' images in one model batch (the daemon's batching).
///
/// The worker groups the jobs it has claimed by `batchKey` (nil: the job runs alone), oldest first, up to
/// `maxBatchImages` images, and calls `generate(batch:)` once per group. Each job keeps its own context (its
/// cancellation flag) and gets its own result, in order.
public protocol BatchingJobGenerator: JobGenerator {
    /// Jobs with equal keys may share a batch.
    func batchKey(_ request: GenerationRequest, defaults: GenerationDefaults) -> String?
    /// Images the job will make (counts against the batch size).
    func imageCount(_ request: GenerationRequest, defaults: GenerationDefaults) -> Int
    func generate(
        batch: [(request: GenerationRequest, context: GenerationContext)]
    ) -> [Result<GenerationOutput, any Error>]
}

/// The images of one job, with the parameters they were made with.
public struct GenerationOutput: Sendable {
    public var parameters: GenerationParameters
    /// Image `n` was made with seed `parameters.seed(ofImage: n)`.
    public var images: [PixelImage]
    public var model: String

    public init(parameters: GenerationParameters, images: [PixelImage], model: String) {
        (self.parameters, self.images, self.model) = (parameters, images, model)
    }
}

/// A generator's own failure. `retryable` failures are attempted again (up to the attempt limit, then the job is
/// dead); the others fail the job at once. Any other error a generator throws counts as retryable.
public struct GenerationFailure: Error, Equatable, Sendable {
    public var code: JobError.Code
    public var message: String
    public var retryable: Bool

    public init(_ code: JobError.Code = .generationFailed, _ message: String, retryable: Bool) {
        (self.code, self.message, self.retryable) = (code, message, retryable)
    }
}

/// What a generator may ask of the worker while it runs one job.
public final class GenerationContext {
    public let jobId: String
    public let attempt: Int
    public let defaults: GenerationDefaults
    private let cancelCheck: () -> Bool
    private let progressWriter: (Int, Int) -> Void
    private let interval: Duration
    private var lastCheck: ContinuousClock.Instant?
    private var lastProgress: ContinuousClock.Instant?
    private let clock = ContinuousClock()

    init(
        jobId: String, attempt: Int, defaults: GenerationDefaults, interval: Duration,
        cancelCheck: @escaping () -> Bool,
        progress: @escaping (Int, Int) -> Void = { _, _ in }
    ) {
        (self.jobId, self.attempt, self.defaults, self.interval) = (jobId, attempt, defaults, interval)
        self.cancelCheck = cancelCheck
        progressWriter = progress
        lastCheck = clock.now  // the claim has just read the flag
    }

    /// Records progress (`step/total`) in the job hash's `progress` field, at most once per interval and always for
    /// the last step.
    public func reportProgress(done: Int, total: Int) {
        let now = clock.now
        if done < total, let lastProgress, lastProgress.duration(to: now) < interval { return }
        lastProgress = now
        progressWriter(done, total)
    }

    /// Throws a `cancelled` failure once the job's cancel flag is set. Reads Redis at most once per configured
    /// interval, so it is cheap to call every sampling step.
    public func checkCancelled() throws(GenerationFailure) {
        let now = clock.now
        if let lastCheck, lastCheck.duration(to: now) < interval { return }
        lastCheck = now
        if cancelCheck() { throw GenerationFailure(.cancelled, "cancelled while running", retryable: false) }
    }
}

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
