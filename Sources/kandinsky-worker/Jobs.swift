import ArgumentParser
import Foundation
import JobQueue
import Worker

/// Options shared by the commands that talk to Redis as a producer.
struct RedisOptions: ParsableArguments {
    @Option(
        help:
            "Redis URL: redis://, unix://, redis-sentinel://h:p[,h:p…]/MASTER or redis://h:p[,…]?cluster=1 (default: $KD_REDIS_URL, else redis://127.0.0.1:6379)."
    )
    var redis: String?
    @Option(help: "Key prefix (with ?cluster=1: put in braces, kd: → {kd}:, unless it or --hash-tag has a tag).")
    var prefix = "kd:"
    @Option(help: "Hash tag put in every key (one Redis Cluster slot), as the workers' hash_tag.") var hashTag: String?

    func producer() throws -> JobProducer {
        let url = redis ?? ProcessInfo.processInfo.environment["KD_REDIS_URL"] ?? "redis://127.0.0.1:6379"
        var configuration = try RedisConfiguration(url: url)
        var keys = KeySpace(prefix: prefix, hashTag: hashTag)
        if configuration.mode.isCluster {
            keys = keys.forCluster()
            configuration.clusterSlot = keys.slot
        }
        let client = RedisClient(configuration)
        try client.connect()
        return JobProducer(client: client, keys: keys)
    }
}

/// `submit PROMPT`: pushes a job, optionally waits for its final event.
struct Submit: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Push a generation job onto a queue.")

    @Argument(help: "The prompt, in any language.") var prompt: String
    @OptionGroup var redis: RedisOptions
    @Option(help: "Queue name.") var queue = "default"
    @Option(help: "Job id (default: a random one).") var id: String?
    @OptionGroup var options: GenerationOptions
    @Flag(help: "Wait for the job's final event and print it.") var wait = false
    @Option(help: "Seconds to wait with --wait.") var timeout: Double = 600
    @Flag(help: "Print JSON only.") var json = false

    func run() throws {
        let jobId = id ?? "job-\(UUID().uuidString.lowercased().prefix(12))"
        let job = try options.job(id: jobId, prompt: prompt)
        let producer = try redis.producer()
        try producer.submit(Array(JSONValue.object(job).serialized.utf8), queue: queue)
        if !json { print("submitted \(jobId) to \(queue)") }
        guard wait else {
            if json { print(#"{"id":"\#(jobId)"}"#) }
            return
        }
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let status = try producer.status(jobId)
            if let state = status["state"], ["done", "failed", "cancelled", "dead"].contains(state) {
                let event = try producer.event(for: jobId)
                print(event ?? JSONValue.object(JSONObject(status.mapValues { .string($0) })).serialized)
                if state != "done" { throw ExitCode(1) }
                return
            }
            Thread.sleep(forTimeInterval: 0.2)
        }
        throw ValidationError("job \(jobId) did not finish within \(timeout) s")
    }
}

/// `status JOB_ID`: the job hash.
struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a job's state (its kd:job:<id> hash).")
    @Argument(help: "Job id.") var id: String
    @OptionGroup var redis: RedisOptions

    func run() throws {
        let status = try redis.producer().status(id)
        guard !status.isEmpty else {
            throw ValidationError("no job \(id) (never seen, or expired after its retention)")
        }
        for (key, value) in status.sorted(by: { $0.key < $1.key }) { print("\(key): \(value)") }
    }
}

/// `cancel JOB_ID`: sets the cancel flag, honoured before start and between sampling steps.
struct Cancel: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Cancel a job (before it starts or between steps).")
    @Argument(help: "Job id.") var id: String
    @OptionGroup var redis: RedisOptions

    func run() throws {
        try redis.producer().cancel(id)
        print("cancel requested for \(id)")
    }
}

/// `health`: the fleet as Redis sees it; exit 0 healthy, 1 degraded, 2 critical.
struct Health: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Report workers, heartbeat ages, queue depths, the oldest waiting job and dead letters.",
        discussion:
            "Exit status: 0 healthy, 1 degraded, 2 critical (no live worker while jobs wait, or Redis unreachable).")

    @OptionGroup var redis: RedisOptions
    @Option(parsing: .upToNextOption, help: "Queues to report besides those the workers registered.")
    var queue: [String] = ["default"]
    @Option(help: "Seconds a job may wait before the fleet counts as degraded.") var maxWait: Double = 300
    @Option(help: "A worker's HTTP address (http://127.0.0.1:9464) whose /readyz to check as well.") var url: String?

    func run() throws {
        let producer: JobProducer
        let health: FleetHealth
        do {
            producer = try redis.producer()
            health = try FleetHealth.read(
                client: producer.client, keys: producer.keys, queues: queue,
                nowMs: Int64(Date().timeIntervalSince1970 * 1000))
        } catch {
            print("critical: Redis unreachable: \(error)")
            throw ExitCode(2)
        }
        print(health.report)
        var (verdict, reasons) = health.verdict(maxWaitMs: Int64(maxWait * 1000))
        if let url {
            let (status, body) = readiness(url)
            print("\(url)/readyz: \(status.map(String.init) ?? "unreachable") \(body)")
            if status != 200 {
                reasons.append("\(url) is not ready")
                if verdict == .healthy { verdict = .degraded }
            }
        }
        print("\(verdict): " + (reasons.isEmpty ? "all well" : reasons.joined(separator: "; ")))
        if verdict != .healthy { throw ExitCode(verdict.rawValue) }
    }
}

/// GET `<base>/readyz`: the status (nil when unreachable) and the body's first line. Through `HTTPProbe`, not
/// URLSession, so the binary needs no libcurl.
func readiness(_ base: String) -> (Int?, String) {
    let answer = HTTPProbe.get(base.hasSuffix("/") ? base + "readyz" : base + "/readyz", timeout: .seconds(5))
    return (answer.status, answer.body.split(separator: "\n").first.map(String.init) ?? "")
}
