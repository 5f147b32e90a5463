import Foundation
import JobQueue
import Kandinsky
import Logging
import ResultStore
import ServiceLifecycle
import Systemd
import Tensor
import VulkanBackend

/// `kandinsky-worker serve`: a prelude (configuration, Redis, model load, warm-up), then the worker's loops until
/// SIGTERM or SIGINT.
///
/// systemd: `READY=1` only after the prelude, `WATCHDOG=1` while the loops run, `STATUS=` lines, `STOPPING=1` on the
/// signal. Stopping takes no new job, lets the running one finish within the grace period, hands the rest back to
/// Redis and returns.
public final class WorkerDaemon: @unchecked Sendable {
    public let configuration: ServeConfiguration
    private let log: @Sendable (String) -> Void
    let logger: Logger
    private let notifier = SystemdNotifier()
    /// sd_notify blocks when the manager is not reading its socket; notifications go out from a serial queue of
    /// their own so that never stalls the daemon (order is kept).
    private let notifications = DispatchQueue(label: "kd.notify")
    private var privateRedis: LocalRedisServer?
    private let stateLock = NSLock()
    private var _ready = false
    private var redisReachable = true
    private var lastBeat = Date()
    private var worker: QueueWorker?
    private var health: HealthServer?
    /// Set by `stop` when the grace period ended with a job still running (read once the services have ended).
    private var stoppedWithJobRunning = false
    public let metrics = WorkerMetrics()
    /// What the generation loop reports: the watchdog, the heartbeat and `/readyz` follow it, not a timer.
    public let liveness: Liveness
    /// The stall last logged (so it is said once, and its end too).
    private var reportedStall: Liveness.Stall?

    /// Whether the prelude finished (model loaded, Redis reachable at start).
    public var isReady: Bool { stateLock.withLock { _ready } }

    public init(
        configuration: ServeConfiguration, logger: Logger = Logger(label: "kandinsky-worker"),
        log: @escaping @Sendable (String) -> Void
    ) {
        self.configuration = configuration
        self.logger = logger
        self.log = log
        liveness = Liveness(stepTimeout: .seconds(configuration.stepTimeoutSeconds))
    }

    /// The worker's name: configured, or `<host>-<device>`.
    public var workerName: String { configuration.workerName }

    /// A start-up failure, with what to do about it.
    public struct StartupError: Error, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    /// Runs until stopped (SIGTERM or SIGINT): the prelude on a thread of its own, then a swift-service-lifecycle
    /// `ServiceGroup` of the HTTP server, the watchdog and the worker's loops; returns the process exit status.
    public func run() async throws -> Int32 {
        TerminationSignals.install()
        let worker = try await Self.offPool { try self.prelude() }
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [
                    // Shut down in reverse order: the worker first (its batch finishes), then the watchdog, HTTP last.
                    .init(service: HealthService(daemon: self), serviceName: "http"),
                    .init(service: WatchdogService(daemon: self, worker: worker), serviceName: "watchdog"),
                    .init(service: WorkerService(daemon: self, worker: worker), serviceName: "worker"),
                ], logger: logger))
        // A real handler turns the signal into a graceful shutdown of the group (see TerminationSignals).
        Thread.detachNewThread {
            TerminationSignals.wait()
            Task { await group.triggerGracefulShutdown() }
        }
        try await group.run()
        metrics.ready.set(0.0)
        _ = notifications.sync(execute: {}) as Void?  // flush what is queued (bounded by the manager reading)
        privateRedis?.stop()
        if stoppedWithJobRunning {
            // The job's thread is still in the model: leave without running exit handlers (libraries' destructors
            // would free what it uses). Its files are written atomically, so nothing half-made is left behind.
            _exit(0)
        }
        return 0
    }

    /// Configuration checks, HTTP, Redis (a private server when none is configured), the model, a warm-up; returns
    /// the started worker. Blocking, so never called on the cooperative pool.
    func prelude() throws -> QueueWorker {
        let c = configuration
        // The device and precision first: a host that cannot run them says so before anything starts.
        let device: DeviceInfo
        let backend: any ComputeBackend
        do {
            device = try Devices.select(c.device, precision: c.precision.rawValue).device
            backend = try Devices.backend(for: device.id, stateDirectory: c.stateDirectory)
        } catch {
            throw StartupError(message: error.message)
        }
        log("device \(device.line); precision \(c.precision.rawValue)")
        installDeviceFailureHandler()
        let name = workerName

        // MARK: HTTP first, so /readyz answers 503 while the rest starts
        let server = HealthServer()
        let (host, port) = ServeConfiguration.hostPort(c.http)!
        try server.start(
            host: host, port: port,
            endpoints: .init(
                notReady: { [weak self] in
                    guard let self else { return "stopping" }
                    return self.notReadyReason()
                }, metrics: { [metrics] in metrics.render() }))
        health = server
        log("health and metrics on http://\(host):\(server.port)/ (healthz, readyz, metrics)")

        // MARK: Redis
        var redis: RedisConfiguration
        if let configured = try c.redisConfiguration() {
            redis = configured
        } else {
            let directory = (c.stateDirectory as NSString).appendingPathComponent("redis")
            let server = try LocalRedisServer(directory: directory, extraConfig: ["appendonly yes"])
            privateRedis = server
            redis = RedisConfiguration(server.endpoint)
            log("no Redis configured: started a private redis-server on \(server.socketPath)")
            notifyStatus("private redis-server at \(server.socketPath)")
        }
        let keys = c.keySpace(cluster: redis.mode.isCluster)
        if redis.mode.isCluster { redis.clusterSlot = keys.slot }
        let probe = RedisClient(redis)
        do {
            try probe.connect()
            _ = try probe.command(["PING"])
        } catch {
            throw StartupError(message: "Redis (\(redis.target)): \(error)")
        }
        if !redis.mode.isStandalone {
            let seen = probe.topology.snapshot
            log(
                "Redis \(redis.target): master \(seen.master?.description ?? "?"), replicas "
                    + "\(seen.replicas.isEmpty ? "none" : seen.replicas.joined(separator: ", ")); keys \(keys.base)*")
        }

        // MARK: model
        notifyStatus("loading the model")
        let loadStart = ContinuousClock.now
        var directory =
            try c.model.map { path throws(KandinskyError) in try ModelDirectory(path: path) }
            ?? ModelDirectory.embeddedDemo()
        directory.keepHalfPrecision = c.halfWeights
        directory.backend = backend
        do {
            try Devices.checkCapacity(directory, on: device, precision: c.precision)
        } catch {
            throw StartupError(message: error.message)
        }
        let service = try GenerationService(
            directory: directory, configurationDefaults: c.defaults, inputRoot: c.inputDirectory)
        let (pipeline, modelName, defaults) = (service.pipeline, service.modelName, service.defaults)
        let loadSeconds = Self.seconds(ContinuousClock.now - loadStart)
        metrics.modelLoad.set(loadSeconds)
        log(String(format: "model %@ loaded from %@ in %.1f s", modelName, directory.path, loadSeconds))

        // MARK: warm-up: one step at the smallest size, so the first job does not pay for first-touch costs
        notifyStatus("warming up")
        _ = try pipeline.generate([ImageRequest(prompt: "", width: 64, height: 64, steps: 1, seed: 0)])

        // MARK: the worker
        var queue = QueueConfiguration(queues: c.queues, worker: name)
        queue.keys = keys
        queue.heartbeatInterval = .milliseconds(c.heartbeatMs)
        queue.maxAttempts = c.maxAttempts
        queue.retention = .seconds(c.retentionSeconds)
        queue.takeBatch = c.maxBatchImages
        var options = QueueWorker.Options(redis: redis, queue: queue)
        options.maxBatchImages = c.maxBatchImages
        options.maxBatchWait = .milliseconds(c.maxBatchWaitMs)
        options.onDone = { [metrics] queuedMs, _ in metrics.jobDone(queuedMs: queuedMs) }
        options.onFinished = { [weak self] job in self?.logFinished(job) }
        options.defaults = defaults
        options.device = c.device
        if backend.statistics != nil {
            options.deviceMemory = { [backend] in backend.statistics.map { ($0.memoryInUse, $0.memoryTotal) } }
            metrics.setDevice(device.id.description) { [backend] in backend.statistics }
        }
        options.model = modelName
        options.heartbeatFields = ["http": "\(host):\(server.port)"]
        options.stuck = { [liveness] in liveness.stall()?.description }
        let generator = KandinskyGenerator(service: service)
        generator.liveness = liveness
        if let text = ProcessInfo.processInfo.environment["KD_FAULT_HANG_AFTER_STEP"], let step = Int(text) {
            generator.hangAfterStep = step
            logger.warning("fault injection: every generation hangs after step \(step) (KD_FAULT_HANG_AFTER_STEP)")
        }
        let stepClock = StepClock()
        generator.onStep = { [metrics] _, done, _ in
            if let d = stepClock.lap(restart: done == 1) { metrics.step(d) }
        }
        generator.onJob = { [metrics] images, run in metrics.jobFinished(images: images, run: run) }
        try? FileManager.default.createDirectory(atPath: c.inputDirectory, withIntermediateDirectories: true)
        // A test's injected GPU fault (KD_VULKAN_FAULT) counts from here: it hits a batch, not the warm-up.
        VulkanBackend.faultArmed = true
        let worker = QueueWorker(
            options: options, generator: generator, store: ResultStore(root: c.storeRoot),
            log: { [weak self] note in self?.logFromWorker(note) })
        stateLock.withLock { self.worker = worker }

        try worker.start()
        stateLock.withLock {
            _ready = true
            lastBeat = Date()
        }
        metrics.ready.set(1.0)
        let compute =
            device.kind == "gpu"
            ? "device \(device.id)"
            : "\(BLAS.threads) compute threads, OpenBLAS kernel \(BLAS.coreDescription)"
        log("worker \(name) ready: queues \(c.queues.joined(separator: ", ")), store \(c.storeRoot); \(compute)")
        notify(["READY=1", "STATUS=ready: 0 jobs done"])
        return worker
    }

    /// Stopping: STOPPING=1, no new jobs, the running batch finishes within the grace, the rest is handed back.
    func stop(_ worker: QueueWorker) async {
        notify(["STOPPING=1", "STATUS=stopping"])
        log("stopping: no new jobs; the running job finishes within \(configuration.shutdownGraceSeconds) s")
        worker.stop()
        if await worker.waitUntilStopped(within: .seconds(configuration.shutdownGraceSeconds)) {
            log("stopped: \(Self.summary(worker.stats))")
        } else {
            stoppedWithJobRunning = true
            log(
                "the running job did not finish within the grace period (\(configuration.shutdownGraceSeconds) s); it stays in this worker's processing list and is handed back by another worker's reaper, or by this worker's next start"
            )
        }
    }

    /// A line from the worker's loops, logged with structured fields (journald: JOB_ID, BATCH): the job it concerns,
    /// as the loop said, and the batch running now.
    func logFromWorker(_ note: QueueWorker.Note) {
        var metadata: Logger.Metadata = [:]
        if let id = note.jobId { metadata["job_id"] = "\(id)" }
        if let batch = worker?.currentJobs, !batch.isEmpty { metadata["batch"] = "\(batch.joined(separator: ","))" }
        logger.info("\(note.message)", metadata: metadata)
    }

    /// The one line per finished job (journald: JOB_ID, BATCH, STATE, ATTEMPTS, QUEUED_MS, RUN_MS, IMAGES and
    /// ERROR_CODE when it failed), as operators of job workers expect: `journalctl JOB_ID=abc` finds it.
    func logFinished(_ job: QueueWorker.FinishedJob) {
        let (message, metadata) = Self.finishedLine(job)
        logger.info("\(message)", metadata: metadata)
    }

    /// The text and fields of a finished job's line.
    static func finishedLine(_ job: QueueWorker.FinishedJob) -> (String, Logger.Metadata) {
        var parts = ["\(job.attempts) attempt\(job.attempts == 1 ? "" : "s")"]
        if let queued = job.queuedMs { parts.append("\(queued) ms in the queue") }
        if let run = job.runMs { parts.append("ran \(run) ms") }
        if job.state == .done { parts.append("\(job.images) image\(job.images == 1 ? "" : "s")") }
        var message = "job \(job.id ?? "(no id)") \(job.state.rawValue): " + parts.joined(separator: ", ")
        if let error = job.error { message += " (\(error.code): \(error.message))" }
        var metadata: Logger.Metadata = [
            "state": "\(job.state.rawValue)", "attempts": "\(job.attempts)", "images": "\(job.images)",
        ]
        if let id = job.id { metadata["job_id"] = "\(id)" }
        if !job.batch.isEmpty { metadata["batch"] = "\(job.batch.joined(separator: ","))" }
        if let queued = job.queuedMs { metadata["queued_ms"] = "\(queued)" }
        if let run = job.runMs { metadata["run_ms"] = "\(run)" }
        if let error = job.error { metadata["error_code"] = "\(error.code.rawValue)" }
        return (message, metadata)
    }

    /// What the worker did, in words, for the line that says it stopped.
    static func summary(_ stats: QueueWorker.Stats) -> String {
        let finished = FinalState.allCases.map { "\(stats.finished[$0, default: 0]) \($0.rawValue)" }
        var parts = ["jobs " + finished.joined(separator: ", ")]
        parts.append("\(stats.retried) retried")
        parts.append("\(stats.handedBack) handed back")
        if stats.reaped > 0 { parts.append("\(stats.reaped) reaped from other workers") }
        if stats.alreadyFinal > 0 { parts.append("\(stats.alreadyFinal) already finished elsewhere") }
        if stats.redisErrors > 0 { parts.append("\(stats.redisErrors) Redis errors") }
        return parts.joined(separator: "; ")
    }

    /// Stops the HTTP server.
    func stopHTTP() async {
        let server = health
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            Thread.detachNewThread {
                server?.stop()
                continuation.resume()
            }
        }
    }

    /// Asks the daemon to stop (as SIGTERM does).
    public func requestStop() { TerminationSignals.raiseStop() }

    private func notifyStatus(_ text: String) { notify(["STATUS=\(text)"]) }

    /// A GPU that fails under a batch (lost, hung, out of memory) cannot be recovered in the process: the jobs this
    /// worker holds go back to the front of their queues for another worker, and the process exits with status 75
    /// (EX_TEMPFAIL), so that systemd restarts it (`Restart=on-failure`).
    private func installDeviceFailureHandler() {
        VulkanBackend.failureHandler = .init { [weak self, logger] error in
            logger.critical("device failure: \(error.message)")
            if let self, let worker = self.stateLock.withLock({ self.worker }) {
                let n = worker.handBackEverything(reason: "device-failure")
                logger.critical("handed back \(n) job(s) for another worker; exiting so that the service restarts")
            }
            _exit(75)
        }
    }

    private func notify(_ lines: [String]) {
        notifications.async { [notifier] in _ = try? notifier.notify(lines) }
    }

    /// Why `/readyz` should answer 503, or nil when ready.
    func notReadyReason() -> String? {
        stateLock.withLock {
            if !_ready { return "starting (model loading or warming up)" }
            if let stall = liveness.stall() { return stall.description }
            if !redisReachable { return "Redis unreachable" }
            if Date().timeIntervalSince(lastBeat) > 3 * max(1, Double(configuration.heartbeatMs) / 1000) {
                return "the worker loops stopped beating"
            }
            return nil
        }
    }

    /// Every tick (half the watchdog interval, at most 1 s): checks Redis, refreshes metrics and queue depths, pings
    /// the watchdog and refreshes the status line.
    func startWatchdog(_ worker: QueueWorker) -> DispatchSourceTimer {
        let interval = min(1, notifier.watchdogInterval.map { Self.seconds($0) / 2 } ?? 1)
        let timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "kd.watchdog"))
        timer.schedule(deadline: .now() + interval, repeating: interval)
        var probeConfiguration = worker.options.redis
        if probeConfiguration.mode.isCluster { probeConfiguration.clusterSlot = worker.options.queue.keys.slot }
        let probe = RedisClient(probeConfiguration, topology: worker.topology)
        let keys = worker.options.queue.keys
        let queues = worker.options.queue.queues
        timer.setEventHandler { [weak self, metrics] in
            guard let self, !worker.isStopping else { return }
            var reachable = false
            if let depths = try? probe.pipeline(queues.map { ["LLEN", keys.queue($0)] }) {
                reachable = true
                for (q, d) in zip(queues, depths) { metrics.setQueueDepth(q, d.integer ?? 0) }
            } else {
                probe.disconnect()
            }
            let stats = worker.stats
            metrics.update(from: stats)
            metrics.update(from: worker.topology.snapshot)
            self.stateLock.withLock {
                self.redisReachable = reachable
                self.lastBeat = Date()
            }
            // A stuck generation gets no watchdog ping: systemd restarts the worker after WatchdogSec.
            if let stall = self.liveness.stall() {
                self.reportStall(stall)
                self.notify(["STATUS=\(stall)"])
                return
            }
            self.reportStall(nil)
            let done = stats.finished.values.reduce(0, +)
            let batch = worker.currentJobs
            let running = batch.isEmpty ? "idle" : "batch \(batch.joined(separator: ","))"
            let rate = String(format: "%.2f", metrics.recentImagesPerSecond)
            self.notify(["WATCHDOG=1", "STATUS=\(done) jobs done, \(running), \(rate) images/s"])
        }
        timer.resume()
        return timer
    }

    /// Logs a stall when it starts (once) and when the step returns after all.
    private func reportStall(_ stall: Liveness.Stall?) {
        let previous = stateLock.withLock {
            defer { reportedStall = stall }
            return reportedStall
        }
        if let stall, previous == nil {
            logger.error(
                "\(stall); no more watchdog pings or heartbeats: systemd restarts this worker and another takes the jobs over",
                metadata: ["job_id": "\(stall.jobs.joined(separator: ","))"])
        } else if stall == nil, let previous {
            logger.warning(
                "the stuck step returned after all; pinging the watchdog again",
                metadata: ["job_id": "\(previous.jobs.joined(separator: ","))"])
        }
    }

    static func seconds(_ d: Duration) -> Double {
        let (s, atto) = d.components
        return Double(s) + Double(atto) / 1e18
    }
}

/// Times consecutive sampling steps (thread-safe).
final class StepClock: @unchecked Sendable {
    private let lock = NSLock()
    private var last: ContinuousClock.Instant?

    /// The time since the previous lap (nil on the first of a run).
    func lap(restart: Bool) -> Duration? {
        lock.withLock {
            let now = ContinuousClock.now
            defer { last = now }
            guard !restart, let last else { return nil }
            return now - last
        }
    }
}

extension WorkerDaemon {
    /// Runs blocking work on a thread of its own and awaits its result (never blocks the cooperative pool).
    static func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread { continuation.resume(with: Result { try body() }) }
        }
    }
}

/// The worker's loops (claim, batch, generate; heartbeat, reaper) as a service: graceful shutdown stops taking
/// jobs and waits for the running batch.
struct WorkerService: Service {
    let daemon: WorkerDaemon
    let worker: QueueWorker

    func run() async throws {
        try? await gracefulShutdown()  // until SIGTERM/SIGINT (or the group is cancelled)
        await daemon.stop(worker)
    }
}

/// Readiness checks, metrics refresh and systemd watchdog pings, on a timer of their own.
struct WatchdogService: Service {
    let daemon: WorkerDaemon
    let worker: QueueWorker

    func run() async throws {
        let timer = daemon.startWatchdog(worker)
        try? await gracefulShutdown()
        timer.cancel()
    }
}

/// The health and metrics HTTP server (started in the prelude, so /readyz answers while loading), stopped last.
struct HealthService: Service {
    let daemon: WorkerDaemon

    func run() async throws {
        try? await gracefulShutdown()
        await daemon.stopHTTP()
    }
}
