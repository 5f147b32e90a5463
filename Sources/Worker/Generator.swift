import Foundation
import JobQueue
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
