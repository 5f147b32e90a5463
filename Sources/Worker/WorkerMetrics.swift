import Foundation
import JobQueue
import Prometheus
import Tensor

/// The worker's Prometheus metrics (names in Ops/prometheus-alerts.yml): updated from the daemon's threads,
/// rendered by `/metrics`.
public final class WorkerMetrics: @unchecked Sendable {
    public let registry = PrometheusCollectorRegistry()
    private let lock = NSLock()
    private var jobCounters: [String: Counter] = [:]
    private var lastFinished: [String: Int] = [:]
    private var lastRedisErrors = 0
    private var lastFailovers = 0
    private var lastWithoutMaster = 0.0
    private var lastWaitShortfalls = 0
    private var recentImages: [(Date, Int)] = []
    private var queueGauges: [String: Gauge] = [:]
    private var lastRate = 0.0

    /// Images finished per second over the last minute, as of the last `update`.
    public var recentImagesPerSecond: Double { lock.withLock { lastRate } }
    let ready: Gauge
    let modelLoad: Gauge
    let imagesPerSecond: Gauge
    let redisErrors: Counter
    let redisFailovers: Counter
    let redisWithoutMaster: Counter
    let redisMasterLost: Gauge
    let redisWaitTimeouts: Counter
    let stepSeconds: DurationHistogram
    let runSeconds: DurationHistogram
    let batchImages: ValueHistogram
    let queueWait: DurationHistogram

    /// The device's memory (`kd_device_memory_used_bytes`, `kd_device_memory_total_bytes` by device), read at each
    /// scrape; set by `serve` for a GPU.
    public func setDevice(_ device: String, statistics: @escaping @Sendable () -> BackendStatistics?) {
        lock.withLock {
            deviceGauges = (
                registry.makeGauge(
                    descriptor: Self.describe(
                        "kd_device_memory_used_bytes", "Device memory held by the model's tensors"),
                    labels: [("device", device)]),
                registry.makeGauge(
                    descriptor: Self.describe("kd_device_memory_total_bytes", "The device's memory"),
                    labels: [("device", device)]),
                statistics
            )
        }
    }

    private var deviceGauges: (used: Gauge, total: Gauge, read: @Sendable () -> BackendStatistics?)?

    public init() {
        ready = registry.makeGauge(
            descriptor: Self.describe("kd_ready", "1 when the worker is ready (model loaded, Redis reachable)"))
        modelLoad = registry.makeGauge(
            descriptor: Self.describe("kd_model_load_seconds", "Time the model took to load"))
        imagesPerSecond = registry.makeGauge(
            descriptor: Self.describe("kd_images_per_second", "Images finished per second over the last minute"))
        redisErrors = registry.makeCounter(
            descriptor: Self.describe(
                "kd_redis_reconnects_total", "Redis errors that made the worker reconnect or retry"))
        redisFailovers = registry.makeCounter(
            descriptor: Self.describe(
                "kd_redis_failovers_total", "Times the worker found the Redis master at a new address and followed it"))
        redisWithoutMaster = registry.makeCounter(
            descriptor: Self.describe(
                "kd_redis_without_master_seconds_total",
                "Seconds the worker spent without a Redis master (ended outages)"))
        redisMasterLost = registry.makeGauge(
            descriptor: Self.describe(
                "kd_redis_master_lost_seconds", "Seconds since the worker lost its Redis master; 0 while it has one"))
        redisWaitTimeouts = registry.makeCounter(
            descriptor: Self.describe(
                "kd_redis_wait_timeouts_total", "Finishes whose WAIT timed out before the replicas confirmed them"))
        stepSeconds = registry.makeDurationHistogram(
            descriptor: Self.describe("kd_step_seconds", "Time of one sampling step (one UNet batch)"),
            buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30].map { .milliseconds(Int64($0 * 1000)) })
        runSeconds = registry.makeDurationHistogram(
            descriptor: Self.describe("kd_job_run_seconds", "Time spent generating one job"),
            buckets: [0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600].map { .milliseconds(Int64($0 * 1000)) })
        queueWait = registry.makeDurationHistogram(
            descriptor: Self.describe("kd_queue_wait_seconds", "Time a job waited in its queue before it started"),
            buckets: [0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600].map { .milliseconds(Int64($0 * 1000)) })
        batchImages = registry.makeValueHistogram(
            descriptor: Self.describe("kd_batch_images", "Images per UNet batch"), buckets: [1, 2, 4, 8, 16])
        for state in ["done", "failed", "cancelled", "dead"] {
            jobCounters[state] = registry.makeCounter(
                descriptor: Self.describe("kd_jobs_total", "Jobs by final state"), labels: [("state", state)])
        }
    }

    /// Brings the Redis failover series up to date with what the worker's clients saw.
    public func update(from topology: RedisTopologyState.Snapshot, nowMs: Int64 = ReliableQueue.nowMs()) {
        lock.withLock {
            if topology.failovers > lastFailovers {
                redisFailovers.increment(by: Int64(topology.failovers - lastFailovers))
            }
            lastFailovers = topology.failovers
            if topology.withoutMasterSeconds > lastWithoutMaster {
                redisWithoutMaster.increment(by: topology.withoutMasterSeconds - lastWithoutMaster)
            }
            lastWithoutMaster = topology.withoutMasterSeconds
            redisMasterLost.set(topology.withoutMasterSinceMs.map { Double(max(0, nowMs - $0)) / 1000 } ?? 0)
        }
    }

    /// Brings the counters up to date with the worker's statistics.
    public func update(from stats: QueueWorker.Stats) {
        lock.withLock {
            if stats.waitShortfalls > lastWaitShortfalls {
                redisWaitTimeouts.increment(by: Int64(stats.waitShortfalls - lastWaitShortfalls))
            }
            lastWaitShortfalls = stats.waitShortfalls
            for (state, n) in stats.finished {
                let key = state.rawValue
                let delta = n - (lastFinished[key] ?? 0)
                if delta > 0 { jobCounters[key]?.increment(by: Int64(delta)) }
                lastFinished[key] = n
            }
            let errors = stats.redisErrors - lastRedisErrors
            if errors > 0 { redisErrors.increment(by: Int64(errors)) }
            lastRedisErrors = stats.redisErrors
            let cutoff = Date().addingTimeInterval(-60)
            recentImages.removeAll { $0.0 < cutoff }
            lastRate = Double(recentImages.reduce(0) { $0 + $1.1 }) / 60
            imagesPerSecond.set(lastRate)
        }
    }

    public func setQueueDepth(_ queue: String, _ depth: Int) {
        lock.withLock {
            let gauge =
                queueGauges[queue]
                ?? registry.makeGauge(
                    descriptor: Self.describe("kd_queue_depth", "Jobs waiting"), labels: [("queue", queue)])
            queueGauges[queue] = gauge
            gauge.set(Double(depth))
        }
    }

    public func jobFinished(images: Int, run: Duration) {
        runSeconds.record(run)
        batchImages.record(Double(images))
        lock.withLock { recentImages.append((Date(), images)) }
    }

    public func step(_ d: Duration) { stepSeconds.record(d) }

    public func jobDone(queuedMs: Int64) { queueWait.record(.milliseconds(max(0, queuedMs))) }

    static func describe(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }

    /// Prometheus text exposition.
    public func render() -> String {
        if let d = lock.withLock({ deviceGauges }), let statistics = d.read() {
            d.used.set(Double(statistics.memoryInUse))
            d.total.set(Double(statistics.memoryTotal))
        }
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        return String(decoding: buffer, as: UTF8.self)
    }
}
