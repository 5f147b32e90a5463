import Foundation
import JobQueue
import Kandinsky
import ResultStore

/// The real generator behind the queue: a validated job becomes an `ImageRequest` for the Kandinsky pipeline.
///
/// Input images (`init_image`, `mask_image`) are read only from below the input root (no absolute paths, no `..`,
/// no symlinks out of it), as PNG of at most 16 MB and 4096×4096 pixels. Cancellation is checked between sampling
/// steps.
public final class KandinskyGenerator: BatchingJobGenerator, @unchecked Sendable {
    public let service: GenerationService
    public var pipeline: KandinskyPipeline { service.pipeline }
    /// Called after each sampling step with (job id, step, total) — for progress in the job hash and metrics.
    public var onStep: @Sendable (String, Int, Int) -> Void = { _, _, _ in }
    /// Called when a job's images are made, with their count and the time generating took.
    public var onJob: @Sendable (Int, Duration) -> Void = { _, _ in }
    /// Told when a batch begins, after each step and when it ends: what the watchdog, heartbeat and `/readyz` ask.
    public var liveness: Liveness?
    /// Fault injection for liveness tests (`KD_FAULT_HANG_AFTER_STEP`): every run blocks for good after this step,
    /// as a wedged device or a deadlock would.
    public var hangAfterStep: Int?

    public init(service: GenerationService) { self.service = service }

    public func generate(_ request: GenerationRequest, context: GenerationContext) throws -> GenerationOutput {
        try generate(batch: [(request, context)])[0].get()
    }

    // MARK: - Batching

    public func batchKey(_ request: GenerationRequest, defaults: JobQueue.GenerationDefaults) -> String? {
        // img2img and inpainting run alone (their starting images differ per job).
        guard request.initImage == nil, request.maskImage == nil else { return nil }
        let p = request.resolved(defaults: defaults) { 0 }
        let latent = ImageRequest(p).latentSize(factor: pipeline.vae.downsamplingFactor)
        return "\(latent.height)x\(latent.width)|\(p.sampler.rawValue)|\(p.steps)"
    }

    public func imageCount(_ request: GenerationRequest, defaults: JobQueue.GenerationDefaults) -> Int {
        request.resolved(defaults: defaults) { 0 }.numImages
    }

    /// Generates compatible jobs as one batch. A job cancelled (or past its deadline) between steps leaves the
    /// batch, which starts again without it: every image depends only on its own seed, so the others come out the
    /// same.
    public func generate(
        batch: [(request: GenerationRequest, context: GenerationContext)]
    ) -> [Result<GenerationOutput, any Error>] {
        var results = [Result<GenerationOutput, any Error>?](repeating: nil, count: batch.count)
        var active: [(index: Int, parameters: GenerationParameters, image: ImageRequest)] = []
        for (i, job) in batch.enumerated() {
            do {
                let (parameters, image) = try prepare(job.request, context: job.context)
                active.append((i, parameters, image))
            } catch {
                results[i] = .failure(error)
            }
        }
        defer { liveness?.ended() }
        while !active.isEmpty {
            var stopped: [Int: GenerationFailure] = [:]
            let started = ContinuousClock.now
            liveness?.began(
                jobs: active.map { batch[$0.index].context.jobId }, steps: active.map(\.image.steps).max() ?? 0)
            do {
                let images = try pipeline.generate(active.map(\.image)) {
                    [onStep, liveness, hangAfterStep] done, total in
                    liveness?.stepped(done: done, steps: total)
                    if let hangAfterStep, done == hangAfterStep {
                        while true { Thread.sleep(forTimeInterval: 3600) }
                    }
                    for job in active {
                        onStep(batch[job.index].context.jobId, done, total)
                        batch[job.index].context.reportProgress(done: done, total: total)
                        do throws(GenerationFailure) {
                            try batch[job.index].context.checkCancelled()
                            if let deadline = batch[job.index].request.deadline,
                                Date().timeIntervalSince1970 > deadline
                            {
                                throw GenerationFailure(
                                    .deadlineExceeded, "deadline passed while running", retryable: false)
                            }
                        } catch {
                            stopped[job.index] = error
                        }
                    }
                    return stopped.isEmpty
                }
                onJob(images.reduce(0) { $0 + $1.count }, ContinuousClock.now - started)
                for (job, made) in zip(active, images) {
                    let pixels = made.map {
                        PixelImage(width: $0.width, height: $0.height, channels: 3, pixels: $0.rgb)
                    }
                    results[job.index] = .success(
                        GenerationOutput(parameters: job.parameters, images: pixels, model: service.modelName))
                }
                active = []
            } catch is SamplingCancelled {
                for (index, failure) in stopped { results[index] = .failure(failure) }
                active.removeAll { stopped[$0.index] != nil }
            } catch let error as KandinskyError {
                for job in active {
                    results[job.index] = .failure(GenerationFailure(.invalidValue, error.description, retryable: false))
                }
                active = []
            } catch {
                for job in active { results[job.index] = .failure(error) }
                active = []
            }
        }
        return results.map { $0 ?? .failure(GenerationFailure(.generationFailed, "no result", retryable: true)) }
    }

    /// The job's parameters, resolved and checked, as a pipeline request (input images read and checked).
    func prepare(
        _ request: GenerationRequest, context: GenerationContext
    ) throws -> (GenerationParameters, ImageRequest) {
        let p = request.resolved(defaults: context.defaults) { UInt64.random(in: 0..<(1 << 32)) }
        return (p, try service.imageRequest(p))
    }
}
