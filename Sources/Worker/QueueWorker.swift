import Foundation
import JobQueue
import ResultStore

/// A worker: takes jobs from its queues, runs them through a `JobGenerator`, writes their files to the result
/// store and makes their final transitions, on two threads of its own (the job loop, and heartbeat + reaper +
/// retry promotion), never on Swift's cooperative pool.
///
/// Guarantees (with the scripts in `Scripts`): every taken job stays in this worker's processing list until a
/// script moves it on; a job is reported done only after its files are durably written; a Redis outage is survived
/// by reconnecting with backoff and handing back whatever the worker no longer tracks.
public final class QueueWorker: @unchecked Sendable {
    public struct Options: Sendable {
        public var redis: RedisConfiguration
        public var queue: QueueConfiguration
        public var defaults = GenerationDefaults()
        public var limits = JobLimits()
        /// Reported in the heartbeat hash.
        public var device = "cpu"
        /// The device's memory in use and in all, for the heartbeat (nil on the CPU).
        public var deviceMemory: (@Sendable () -> (used: Int, total: Int)?)? = nil
        public var model = ""
        public var version = productVersion
        /// More fields for the heartbeat hash (the daemon's HTTP address, say).
        public var heartbeatFields: [String: String] = [:]
        /// Why the generation is stuck, or nil while it makes progress: a stuck worker stops renewing its heartbeat,
        /// so that the reaper of another worker hands its jobs back.
        public var stuck: @Sendable () -> String? = { nil }
        /// Called for every job this worker finishes as done, with its queue wait and run time in milliseconds.
        public var onDone: @Sendable (_ queuedMs: Int64, _ runMs: Int64) -> Void = { _, _ in }
        /// Called once for every job whose final transition this worker made (done, failed, cancelled or dead), after
        /// Redis took it: the daemon's one log line per job.
        public var onFinished: @Sendable (FinishedJob) -> Void = { _ in }
        /// With a `BatchingJobGenerator`: the most images one batch may hold, and how long a claimed job (already
        /// leased in this worker's processing list) waits for batch-mates when fewer than that were taken.
        public var maxBatchImages = 1
        public var maxBatchWait: Duration = .zero

        public init(redis: RedisConfiguration, queue: QueueConfiguration) {
            self.redis = redis
            self.queue = queue
        }
    }

    /// Counts of what this worker did.
    public struct Stats: Equatable, Sendable {
        public var finished: [FinalState: Int] = [:]
        /// Final transitions this worker tried that another had made first (no second event).
        public var alreadyFinal = 0
        public var retried = 0
        public var handedBack = 0
        public var reaped = 0
        public var redisErrors = 0
        /// `WAIT`s after a finish that timed out before the replicas confirmed it.
        public var waitShortfalls = 0
        /// Finishes sent again after the connection failed around them (a failover): made on the new master unless
        /// the first one reached it through replication.
        public var finishesRedone = 0
        /// Round trips to Redis made by the job loop (the heartbeat thread's are not counted).
        public var jobLoopRoundTrips = 0

        public init() {}
    }

    /// One line from the loops (hand-backs, reconnects, retries) and the job it concerns, when it concerns one.
    public struct Note: Sendable, Equatable, CustomStringConvertible {
        public var message: String
        public var jobId: String?

        public init(_ message: String, jobId: String? = nil) {
            self.message = message
            self.jobId = jobId
        }

        public var description: String { message }
    }

    /// A job this worker moved to its final state (another worker's transition is not reported here).
    public struct FinishedJob: Sendable, Equatable {
        /// nil when the payload held no usable id (it failed validation).
        public var id: String?
        public var state: FinalState
        public var attempts: Int
        /// Enqueued (or first seen) to started, and the run itself; nil when the job never ran.
        public var queuedMs: Int64?
        public var runMs: Int64?
        /// Images stored (done jobs only).
        public var images: Int
        public var error: JobError?
        /// The ids of the model batch the job ran in, itself included; empty when it never ran.
        public var batch: [String]

        public init(
            id: String?, state: FinalState, attempts: Int, queuedMs: Int64? = nil, runMs: Int64? = nil, images: Int = 0,
            error: JobError? = nil, batch: [String] = []
        ) {
            (self.id, self.state, self.attempts, self.queuedMs, self.runMs) = (id, state, attempts, queuedMs, runMs)
            (self.images, self.error, self.batch) = (images, error, batch)
        }

        /// The record a final event was made from (the event JSON carries the figures).
        init(_ finish: Finish, batch: [String]) {
            let event = finish.event
            var images = 0
            if case .array(let list)? = event["images"] { images = list.count }
            self.init(
                id: finish.jobKeyId, state: finish.state, attempts: event["attempts"]?.int64Value.map(Int.init) ?? 0,
                queuedMs: event["queued_ms"]?.int64Value, runMs: event["run_ms"]?.int64Value, images: images,
                error: finish.error, batch: batch)
        }
    }

    public let options: Options
    /// The Redis master in use, its replicas and the failovers followed (shared by both loops' clients).
    public let topology = RedisTopologyState()
    private let generator: any JobGenerator
    private let store: ResultStore?
    private let note: @Sendable (Note) -> Void
    private let decoder: JobDecoder

    private let lock = NSLock()
    private var stopping = false
    private var _stats = Stats()
    private var current: [String] = []
    private var started = false
    private let wake = DispatchSemaphore(value: 0)
    private let threads = DispatchGroup()

    /// - Parameters:
    ///   - store: where images go; nil writes no files (queue benchmarks only).
    ///   - log: one line per notable event (hand-backs, reconnects, retries), with the job it concerns; finished
    ///     jobs go to `Options.onFinished` instead.
    public init(
        options: Options, generator: any JobGenerator, store: ResultStore?,
        log: @escaping @Sendable (Note) -> Void = { _ in }
    ) {
        self.options = options
        self.generator = generator
        self.store = store
        self.note = log
        self.decoder = JobDecoder(limits: options.limits)
    }

    public var stats: Stats { lock.withLock { _stats } }
    /// Ids of the jobs running now (one batch).
    public var currentJobs: [String] { lock.withLock { current } }
    public var isStopping: Bool { lock.withLock { stopping } }

    /// Starts the job loop and the maintenance loop on threads of their own.
    public func start() throws(JobError) {
        try options.queue.validate()
        let already = lock.withLock {
            defer { started = true }
            return started
        }
        guard !already else { return }
        let loops: [(String, @Sendable () -> Void)] = [
            ("kd-jobs", { [self] in jobLoop() }), ("kd-maintenance", { [self] in maintenanceLoop() }),
        ]
        for (name, body) in loops {
            threads.enter()
            let thread = Thread { [threads] in
                body()
                threads.leave()
            }
            thread.name = name
            thread.start()
        }
    }

    /// Asks both loops to stop: no new jobs are taken; the running job finishes; taken jobs not started are handed
    /// back. Returns at once; `wait()` blocks until the loops have ended.
    public func stop() {
        lock.withLock { stopping = true }
        wake.signal()
    }

    /// Blocks until both loops have ended (call from a thread of your own).
    public func wait() { threads.wait() }

    /// Suspends until both loops have ended or `limit` has passed, without blocking the cooperative pool; returns
    /// whether they ended. (The wait is bounded here, on a thread of its own: a task group cannot bound it from
    /// outside, since it waits for every child, and a child waiting on the loops ignores cancellation.)
    public func waitUntilStopped(within limit: Duration) async -> Bool {
        let threads = self.threads
        return await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
            Thread.detachNewThread {
                let deadline = DispatchTime.now() + .milliseconds(Int(Self.ms(limit)))
                continuation.resume(returning: threads.wait(timeout: deadline) == .success)
            }
        }
    }

    private func count(_ update: (inout Stats) -> Void) { lock.withLock { update(&_stats) } }

    private func log(_ message: String, job: String? = nil) { note(Note(message, jobId: job)) }

    /// Hands every job this worker holds back to the front of its queue, over a connection of its own: for a failure
    /// the process cannot continue after (a lost GPU), just before it exits. Returns how many went back.
    public func handBackEverything(reason: String) -> Int {
        let client = RedisClient(redisConfiguration, topology: topology)
        let queue = ReliableQueue(client: client, configuration: options.queue)
        let n =
            (try? redis(
                client,
                { () throws(RedisError) in
                    try queue.handBack(
                        worker: options.queue.worker, recoveredBy: reason, fallbackQueues: options.queue.queues)
                })) ?? 0
        count { $0.handedBack += n }
        return n
    }

    // MARK: - Job loop

    /// The Redis configuration of the loops' clients: in cluster mode, pointed at the key space's slot.
    private var redisConfiguration: RedisConfiguration {
        var c = options.redis
        if c.mode.isCluster { c.clusterSlot = options.queue.keys.slot }
        return c
    }

    private func jobLoop() {
        let client = RedisClient(redisConfiguration, topology: topology)
        let queue = ReliableQueue(client: client, configuration: options.queue)
        let me = options.queue.worker
        // A restart under the same name takes its own leftovers back at once.
        if let n = try? redis(
            client,
            { () throws(RedisError) in
                try queue.handBack(worker: me, recoveredBy: "self", fallbackQueues: options.queue.queues)
            }), n > 0
        {
            count { $0.handedBack += n }
            log("handed back \(n) job(s) left in \(options.queue.keys.processing(me)) by an earlier run")
        }
        var seenReconnects = client.reconnects
        while !isStopping {
            do {
                var taken = try redis(client) { () throws(RedisError) in
                    try queue.take(max: options.queue.takeBatch, block: true)
                }
                // Batch-mates: jobs taken so far stay leased while we wait a little for more.
                let wantsMates = (taken.count < options.queue.takeBatch) && options.maxBatchWait > .zero
                if !taken.isEmpty, wantsMates, generator is any BatchingJobGenerator {
                    Thread.sleep(forTimeInterval: Double(Self.ms(options.maxBatchWait)) / 1000)
                    let more = options.queue.takeBatch - taken.count
                    taken += try redis(client) { () throws(RedisError) in try queue.take(max: more, block: false) }
                }
                if client.reconnects != seenReconnects {
                    // A reply may have been lost with the connection (a BLMOVE that moved a job, say): whatever
                    // is in the list but not in hand goes back.
                    seenReconnects = client.reconnects
                    let n = try redis(client) { () throws(RedisError) in
                        try queue.handBack(
                            worker: me, keeping: taken.map(\.payload), recoveredBy: "self",
                            fallbackQueues: options.queue.queues)
                    }
                    if n > 0 {
                        count { $0.handedBack += n }
                        log("handed back \(n) job(s) after reconnecting to Redis")
                    }
                }
                if !taken.isEmpty { try process(taken, queue: queue) }
                count { $0.jobLoopRoundTrips = client.roundTrips }
            } catch {
                // Only reached when stopping, or on a non-transient Redis error (logged, then a pause).
                count { $0.redisErrors += 1 }
                if isStopping { break }
                log("job loop: \(error)")
                Thread.sleep(forTimeInterval: 0.5)
            }
        }
        // Hand back what was taken but not started; then leave the registry.
        if let n = try? queue.handBack(worker: me, recoveredBy: "self", fallbackQueues: options.queue.queues), n > 0 {
            count { $0.handedBack += n }
        }
        try? queue.deregister()
    }

    /// Runs a Redis step until it succeeds, reconnecting with backoff; gives up only when stopping.
    private func redis<T>(_ client: RedisClient, _ body: () throws(RedisError) -> T) throws(RedisError) -> T {
        try client.retrying(
            shouldStop: { isStopping },
            onRetry: { error, wait in
                self.count { $0.redisErrors += 1 }
                self.log("redis: \(error); retrying in \(Int(wait.seconds * 1000)) ms")
            }
        ) { _ throws(RedisError) in try body() }
    }

    private struct InHand {
        var taken: TakenJob
        var lifecycle: JobLifecycle
        var id: String?
        var request: GenerationRequest?
    }

    private func process(_ batch: [TakenJob], queue: ReliableQueue) throws(RedisError) {
        var random = SystemRandomNumberGenerator()
        let q = options.queue
        var jobs: [InHand] = []
        var pending: [Finish] = []
        var pendingBatches: [[String]] = []
        var pendingSince: ContinuousClock.Instant?
        let clock = ContinuousClock()

        func flush() throws(RedisError) {
            guard !pending.isEmpty else { return }
            // A finish whose reply (or WAIT) was lost with the connection is sent again: on the same master it finds
            // the jobs final (no second event); after a failover that lost it, it is made on the new master. Each
            // job counts as made if any try made it.
            var made = [Bool](repeating: false, count: pending.count)
            var tries = 0
            let shortfalls = queue.client.waitShortfalls
            _ = try redis(queue.client) { () throws(RedisError) in
                tries += 1
                let now = try queue.finish(pending, nowMs: ReliableQueue.nowMs())
                for i in made.indices where now[i] { made[i] = true }
            }
            if tries > 1 { count { $0.finishesRedone += pending.count } }
            let short = queue.client.waitShortfalls - shortfalls
            if short > 0 {
                count { $0.waitShortfalls += short }
                log("WAIT: the replicas did not confirm \(pending.count) finish(es) in time")
            }
            for (f, m) in zip(pending, made) {
                if m { count { $0.finished[f.state, default: 0] += 1 } } else { count { $0.alreadyFinal += 1 } }
            }
            for ((f, batch), m) in zip(zip(pending, pendingBatches), made) where m {
                options.onFinished(FinishedJob(f, batch: batch))
            }
            pending = []
            pendingBatches = []
            pendingSince = nil
        }
        func enqueueFinish(_ f: Finish, batch: [String] = []) {
            pending.append(f)
            pendingBatches.append(batch)
            if pendingSince == nil { pendingSince = clock.now }
        }

        // Decode, then claim every identified job in one round trip.
        var claims: [(id: String, taken: TakenJob)] = []
        for taken in batch {
            var lifecycle = JobLifecycle(maxAttempts: q.maxAttempts, retryBackoff: q.retryBackoff)
            let decoding = decoder.decode(taken.payload)
            var job = InHand(taken: taken, lifecycle: lifecycle, id: nil, request: nil)
            switch lifecycle.handle(.decoded(decoding), random: &random) {
            case .claim(let id):
                job.id = id
                if case .valid(let r) = decoding { job.request = r }
                claims.append((id, taken))
            case .finish(let state, let error, _):
                enqueueFinish(finishRecord(job, state: state, error: error, attempts: 0))
            default: break
            }
            job.lifecycle = lifecycle
            jobs.append(job)
        }
        let results = try redis(queue.client) { () throws(RedisError) in
            try queue.claim(claims, nowMs: ReliableQueue.nowMs())
        }
        var claimIndex = 0
        var runnable: [(index: Int, request: GenerationRequest, attempt: Attempt)] = []
        for i in jobs.indices where jobs[i].id != nil {
            let result = results[claimIndex]
            claimIndex += 1
            let now = Date().timeIntervalSince1970
            let action = jobs[i].lifecycle.handle(.claimed(result, nowSeconds: now), random: &random)
            switch action {
            case .drop:
                count { $0.alreadyFinal += 1 }
            case .finish(let state, let error, let attempts):
                enqueueFinish(finishRecord(jobs[i], state: state, error: error, attempts: attempts))
            case .run(let request, let attempt):
                runnable.append((i, request, attempt))
            case .rejected(let why):
                log("job lifecycle: \(why)")
            default: break
            }
        }
        // Run, oldest first; compatible jobs share one model batch when the generator batches.
        for group in groups(runnable) {
            if isStopping { break }  // the rest is handed back when the loop ends
            if let since = pendingSince, since.duration(to: clock.now) > .milliseconds(20) { try flush() }
            lock.withLock { current = group.map(\.request.id) }
            let contexts = group.map { context(for: $0.request, attempt: $0.attempt, queue: queue) }
            let started = ContinuousClock.now
            let results: [Result<GenerationOutput, any Error>]
            if group.count > 1, let batching = generator as? any BatchingJobGenerator {
                results = batching.generate(batch: zip(group, contexts).map { ($0.request, $1) })
            } else {
                results = zip(group, contexts).map { job, context in
                    Result { try generator.generate(job.request, context: context) }
                }
            }
            let batch = group.map(\.request.id)
            for (job, result) in zip(group, results) {
                let f = complete(
                    &jobs[job.index], request: job.request, attempt: job.attempt, result: result, started: started,
                    queue: queue, random: &random)
                if let f { enqueueFinish(f, batch: batch) }
            }
            lock.withLock { current = [] }
        }
        try flush()
    }

    /// Groups runnable jobs into batches: in order of age, each group takes the oldest job still waiting and then
    /// later compatible ones while the images fit (a job never waits behind younger ones).
    private func groups(
        _ runnable: [(index: Int, request: GenerationRequest, attempt: Attempt)]
    ) -> [[(index: Int, request: GenerationRequest, attempt: Attempt)]] {
        guard let batching = generator as? any BatchingJobGenerator, options.maxBatchImages > 1 else {
            return runnable.map { [$0] }
        }
        var left = runnable
        var out: [[(index: Int, request: GenerationRequest, attempt: Attempt)]] = []
        while !left.isEmpty {
            let first = left.removeFirst()
            var group = [first]
            var images = batching.imageCount(first.request, defaults: options.defaults)
            if let key = batching.batchKey(first.request, defaults: options.defaults) {
                var i = 0
                while i < left.count {
                    let n = batching.imageCount(left[i].request, defaults: options.defaults)
                    if images + n <= options.maxBatchImages,
                        batching.batchKey(left[i].request, defaults: options.defaults) == key
                    {
                        group.append(left.remove(at: i))
                        images += n
                    } else {
                        i += 1
                    }
                }
            }
            out.append(group)
        }
        return out
    }

    private func context(for request: GenerationRequest, attempt: Attempt, queue: ReliableQueue) -> GenerationContext {
        let key = options.queue.keys.job(request.id)
        return GenerationContext(
            jobId: request.id, attempt: attempt.number, defaults: options.defaults,
            interval: options.queue.cancelCheckInterval,
            cancelCheck: { (try? queue.isCancelRequested(request.id)) ?? false },
            progress: { done, total in _ = try? queue.client.command(["HSET", key, "progress", "\(done)/\(total)"]) })
    }

    /// Completes one attempt from the generator's result: store, then the finish record (or the retry, done here).
    private func complete(
        _ job: inout InHand, request: GenerationRequest, attempt: Attempt, result: Result<GenerationOutput, any Error>,
        started: ContinuousClock.Instant, queue: ReliableQueue, random: inout SystemRandomNumberGenerator
    ) -> Finish? {
        var outcome: JobLifecycle.Action
        var output: GenerationOutput?
        var stored: (images: [StoredFile], jobFile: StoredFile)?
        do {
            let out = try result.get()
            output = out
            _ = job.lifecycle.handle(.generated, random: &random)
            stored = try write(out, request: request, attempt: attempt, runMs: started.duration(to: .now))
            outcome = job.lifecycle.handle(.stored, random: &random)
        } catch let failure as GenerationFailure {
            outcome = job.lifecycle.handle(
                .attemptFailed(
                    JobError(failure.code, failure.message, jobId: request.id), retryable: failure.retryable),
                random: &random)
        } catch let e as PNGError {
            outcome = job.lifecycle.handle(
                .attemptFailed(
                    JobError(.storeFailed, "encoding a PNG failed: \(e)", jobId: request.id), retryable: false),
                random: &random)
        } catch let e as StoreError {
            outcome = job.lifecycle.handle(
                .attemptFailed(
                    JobError(.storeFailed, "writing the results failed: \(e.message)", jobId: request.id, key: e.path),
                    retryable: true),
                random: &random)
        } catch {
            outcome = job.lifecycle.handle(
                .attemptFailed(JobError(.generationFailed, "\(error)", jobId: request.id), retryable: true),
                random: &random)
        }
        let runMs = Self.ms(started.duration(to: .now))
        switch outcome {
        case .finish(let state, let error, let attempts):
            var images: [JSONValue] = []
            if let output, let stored {
                for (n, file) in stored.images.enumerated() {
                    images.append(
                        .object([
                            "path": .string(file.path), "width": .integer(output.images[n].width),
                            "height": .integer(output.images[n].height),
                            "seed": .integer(output.parameters.seed(ofImage: n)), "sha256": .string(file.sha256),
                        ]))
                }
            }
            var record = finishRecord(
                job, state: state, error: error, attempts: attempts, attempt: attempt, runMs: runMs, images: images)
            if state == .done {
                options.onDone(attempt.startedMs - (attempt.enqueuedMs ?? attempt.firstSeenMs), runMs)
            }
            if state == .done, let stored {
                record.result = .object([
                    "images": .array(images), "job_json": .string(stored.jobFile.path),
                    "seed": output.map { .integer($0.parameters.seed) } ?? .null,
                ])
            }
            return record
        case .retry(let error, _, let delay):
            do {
                let scheduled = try redis(queue.client) { () throws(RedisError) in
                    try queue.retry(
                        id: request.id, taken: job.taken, error: error, delay: delay, nowMs: ReliableQueue.nowMs())
                }
                _ = job.lifecycle.handle(.retryAcknowledged(scheduled: scheduled), random: &random)
                if scheduled { count { $0.retried += 1 } }
                log(
                    "job \(request.id) attempt \(attempt.number) failed (\(error)); retry in \(Int(delay.seconds * 1000)) ms",
                    job: request.id)
            } catch {
                log(
                    "job \(request.id): could not schedule its retry (\(error)); it stays in the processing list",
                    job: request.id)
            }
            return nil
        default:
            log("job \(request.id): unexpected lifecycle action \(outcome)", job: request.id)
            return nil
        }
    }

    /// Encodes and stores the images and `job.json`. Throws on any failure: nothing is reported done unless every
    /// file is durably in place.
    private func write(
        _ output: GenerationOutput, request: GenerationRequest, attempt: Attempt, runMs: Duration
    ) throws -> (images: [StoredFile], jobFile: StoredFile)? {
        guard let store else { return ([], StoredFile(path: "", sha256: "", bytes: 0)) }
        var pngs: [[UInt8]] = []
        for (n, image) in output.images.enumerated() {
            let seed = output.parameters.seed(ofImage: n)
            pngs.append(
                try PNGCodec.encode(image, text: pngTextChunks(output.parameters, seed: seed, model: output.model)))
        }
        let p = output.parameters
        var parameters: JSONObject = [
            "prompt": .string(p.prompt), "negative_prompt": .string(p.negativePrompt), "width": .integer(p.width),
            "height": .integer(p.height), "num_images": .integer(p.numImages), "steps": .integer(p.steps),
            "guidance_scale": .double(p.guidanceScale), "sampler": .string(p.sampler.rawValue), "eta": .double(p.eta),
            "dynamic_threshold": p.dynamicThreshold.map { .double($0) } ?? .null, "seed": .integer(p.seed),
        ]
        if let i = p.initImage { parameters["init_image"] = .string(i) }
        if let s = p.strength { parameters["strength"] = .double(s) }
        if let m = p.maskImage { parameters["mask_image"] = .string(m) }
        let jobJSON = JSONValue.object([
            "id": .string(request.id), "request": request.json, "parameters": .object(parameters),
            "seeds": .array((0..<output.images.count).map { .integer(p.seed(ofImage: $0)) }),
            "model": .string(output.model), "worker": .string(options.queue.worker),
            "attempt": .integer(attempt.number),
            "timings": .object(["run_ms": .integer(Self.ms(runMs))]),
        ])
        return try store.write(
            jobId: request.id, firstSeenMs: attempt.firstSeenMs, pngs: pngs,
            jobJSON: Array((jobJSON.serialized + "\n").utf8))
    }

    /// The final transition record: event JSON (DESIGN §3), error, and the dead-list entry when dead.
    private func finishRecord(
        _ job: InHand, state: FinalState, error: JobError?, attempts: Int, attempt: Attempt? = nil,
        runMs: Int64? = nil, images: [JSONValue] = []
    ) -> Finish {
        var error = error
        error?.jobId = job.id
        var event: JSONObject = [
            "id": job.id.map { .string($0) } ?? .null, "state": .string(state.rawValue),
            "worker": .string(options.queue.worker), "attempts": .integer(attempts), "images": .array(images),
            "metadata": job.request?.metadata ?? Self.metadataOf(job.taken.payload) ?? .null,
        ]
        if let attempt {
            event["queued_ms"] = .integer(attempt.startedMs - (attempt.enqueuedMs ?? attempt.firstSeenMs))
        }
        if let runMs { event["run_ms"] = .integer(runMs) }
        if let error {
            event["error"] = .object(["code": .string(error.code.rawValue), "message": .string(error.message)])
        }
        var dead: JSONValue?
        if state == .dead {
            dead = .object([
                "id": job.id.map { .string($0) } ?? .null, "queue": .string(job.taken.queue),
                "error": error?.json ?? .null, "attempts": .integer(attempts),
                "payload": .string(String(decoding: job.taken.payload.prefix(64 * 1024), as: UTF8.self)),
                "payload_bytes": .integer(job.taken.payload.count), "worker": .string(options.queue.worker),
                "failed_ms": .integer(ReliableQueue.nowMs()),
            ])
        }
        return Finish(
            jobKeyId: job.id, payload: job.taken.payload, state: state, event: .object(event), result: nil,
            error: error, deadEntry: dead)
    }

    /// The `metadata` of an invalid job, echoed back when the payload parses at all.
    private static func metadataOf(_ payload: [UInt8]) -> JSONValue? {
        guard payload.count <= 4 * 1024 * 1024 else { return nil }
        return (try? JSONValue.parse(payload, invalidUTF8: .replace))?["metadata"]
    }

    static func ms(_ d: Duration) -> Int64 { ReliableQueue.milliseconds(d) }

    // MARK: - Maintenance loop

    private func maintenanceLoop() {
        let client = RedisClient(redisConfiguration, topology: topology)
        let queue = ReliableQueue(client: client, configuration: options.queue)
        let interval = options.queue.heartbeatInterval
        let tick = min(interval, .milliseconds(250))
        let clock = ContinuousClock()
        var nextBeat = clock.now
        var nextSentinelCheck = clock.now + interval
        let host = ProcessInfo.processInfo.hostName
        let pid = String(getpid())
        var withholding = false
        var seenEpoch = client.reconnects
        while !isStopping {
            do {
                if client.reconnects != seenEpoch {
                    // A new connection may be to a new master, where this worker's heartbeat is older (it was
                    // replicated before the failover) and could expire under the reaper: beat at once.
                    seenEpoch = client.reconnects
                    nextBeat = clock.now
                }
                if !client.isConnected { try client.connect() }
                let stuck = options.stuck()
                if stuck != nil, !withholding {
                    log("withholding the heartbeat: \(stuck!)")
                } else if stuck == nil, withholding {
                    log("heartbeat resumed: the stuck step returned")
                }
                withholding = stuck != nil
                if clock.now >= nextBeat, !withholding {
                    nextBeat = clock.now + interval
                    let jobs = lock.withLock { current }
                    let seen = topology.snapshot
                    var redisFields = ["redis_failovers": String(seen.failovers)]
                    if let m = seen.master { redisFields["redis_master"] = m.description }
                    if let t = seen.lastFailoverMs { redisFields["redis_last_failover_ms"] = String(t) }
                    if let p = seen.previousMaster { redisFields["redis_previous_master"] = p.description }
                    if let memory = options.deviceMemory?() {
                        redisFields["device_memory_used_mb"] = String(memory.used >> 20)
                        redisFields["device_memory_total_mb"] = String(memory.total >> 20)
                    }
                    try queue.heartbeat(
                        fields: options.heartbeatFields.merging(redisFields) { _, redis in redis }.merging([
                            "host": host, "pid": pid, "device": options.device, "model": options.model,
                            "version": options.version, "state": jobs.isEmpty ? "idle" : "running",
                            "current": jobs.joined(separator: ","), "last_beat_ms": String(ReliableQueue.nowMs()),
                            "queues": options.queue.queues.joined(separator: ","),
                        ]) { _, ours in ours })
                    let n = try queue.reap()
                    if n > 0 {
                        count { $0.reaped += n }
                        log("reaper handed back \(n) job(s) of workers whose heartbeat expired")
                    }
                }
                try queue.promoteDue(nowMs: ReliableQueue.nowMs())
                if clock.now >= nextSentinelCheck {
                    // A failover that no command has run into yet (the old master still answers, say).
                    nextSentinelCheck = clock.now + interval
                    client.checkSentinels()
                }
            } catch {
                count { $0.redisErrors += 1 }
                client.disconnect()
            }
            _ = wake.wait(timeout: .now() + tick.seconds)
        }
        wake.signal()  // the other waiter, if any
    }
}
