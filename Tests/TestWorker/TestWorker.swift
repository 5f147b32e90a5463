import ArgumentParser
import Foundation
import JobQueue
import ResultStore
import Worker
import WorkerTesting

/// A worker process with the scripted (no-model) generator: what the multi-process queue tests and the load and
/// chaos scripts (`Ops/loadgen`, `Ops/chaos`) start, kill and restart. A test tool, not part of the product:
/// `kandinsky-worker serve` is the real daemon.
@main
struct TestWorker: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kd-test-worker",
        abstract: "Run the queue worker loop with the scripted test generator (for tests and Ops/loadgen).")

    @Option(help: "Redis URL (redis://[user:password@]host:port/db or unix:///path/redis.sock).")
    var redis: String

    @Option(help: "A queue to take from; repeat in priority order.")
    var queue: [String] = ["default"]

    @Option(help: "Worker name (its processing list and heartbeat key).")
    var name: String

    @Option(help: "Result store root (no files written when left out).")
    var store: String?

    @Option(help: "Key prefix.")
    var prefix = "kd:"

    @Option(help: "Hash tag put in every key (one Redis Cluster slot).")
    var hashTag: String?

    @Option(help: "Heartbeat interval in milliseconds.")
    var heartbeatMs = 1000

    @Option(help: "Attempts before a failing job goes to the dead list.")
    var maxAttempts = 3

    @Option(help: "First retry delay in milliseconds (doubling, with jitter).")
    var retryMs = 100

    @Option(help: "Jobs taken per round trip.")
    var takeBatch = 1

    @Option(help: "Default image size for jobs that give none.")
    var defaultSize = 64

    func validate() throws {
        guard heartbeatMs >= 10, maxAttempts >= 1, retryMs >= 1, takeBatch >= 1, defaultSize >= 8 else {
            throw ValidationError("--heartbeat-ms ≥ 10, --max-attempts ≥ 1, --retry-ms ≥ 1, --take-batch ≥ 1")
        }
    }

    func run() throws {
        var queueConfig = QueueConfiguration(queues: queue, worker: name)
        queueConfig.keys = KeySpace(prefix: prefix, hashTag: hashTag)
        queueConfig.heartbeatInterval = .milliseconds(heartbeatMs)
        queueConfig.maxAttempts = maxAttempts
        queueConfig.retryBackoff = Backoff(
            initial: .milliseconds(retryMs), cap: .milliseconds(retryMs * 8), floor: .milliseconds(retryMs / 2))
        queueConfig.takeBatch = takeBatch
        queueConfig.cancelCheckInterval = .milliseconds(50)
        var options = QueueWorker.Options(redis: try RedisConfiguration(url: redis), queue: queueConfig)
        options.defaults.width = defaultSize
        options.defaults.height = defaultSize
        options.model = "scripted"
        let worker = QueueWorker(
            options: options, generator: ScriptedGenerator(), store: store.map { ResultStore(root: $0) },
            log: { line in FileHandle.standardError.write(Data("[\(name)] \(line)\n".utf8)) })
        TerminationSignals.install()
        Thread.detachNewThread {
            TerminationSignals.wait()
            worker.stop()
        }
        try worker.start()
        FileHandle.standardOutput.write(Data("kd-test-worker \(name) started (pid \(getpid()))\n".utf8))
        worker.wait()
        let stats = worker.stats
        FileHandle.standardError.write(Data("[\(name)] stopped: \(stats)\n".utf8))
    }
}
