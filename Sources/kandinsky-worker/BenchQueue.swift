import ArgumentParser
import Foundation
import JobQueue
import Worker

/// `bench queue`: jobs/s through take → claim → finish → event with a generator that does no work, against a local
/// redis-server, with Redis commands per job and redis-benchmark's LPUSH rate measured in the same run.
struct BenchQueue: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "queue",
        abstract:
            "Queue throughput (no-op generator): jobs/s, round trips per job, and redis-benchmark LPUSH/s; --replica "
            + "measures it against a replicated master, with WAIT (default) or without (--wait-replicas 0).")

    @Option(help: "Jobs to run (after a warm-up of 1,000).")
    var jobs = 20_000

    @Option(help: "Worker job loops (each its own thread and connection).")
    var workers = 2

    @Option(help: "Jobs taken per round trip.")
    var batch = 16

    @Option(help: "Redis URL; a private redis-server (Unix socket, appendonly yes) when left out.")
    var redis: String?

    @Flag(help: "With the private redis-server: give it one replica (replication over loopback TCP).")
    var replica = false

    @Option(help: "Replicas each finish waits for (WAIT); default: one where the master has a replica, else none.")
    var waitReplicas: Int?

    @Flag(help: "Print one JSON document on stdout (the human lines go to stderr).")
    var json = false

    func validate() throws {
        guard jobs >= 1, workers >= 1, batch >= 1 else { throw ValidationError("--jobs, --workers, --batch ≥ 1") }
        guard waitReplicas.map({ $0 >= 0 }) ?? true else { throw ValidationError("--wait-replicas ≥ 0") }
        guard !(replica && redis != nil) else { throw ValidationError("--replica is for the private redis-server") }
    }

    func run() throws {
        var servers: [LocalRedisServer] = []
        var config: RedisConfiguration
        if let redis {
            config = try RedisConfiguration(url: redis)
        } else if replica {
            // The replica follows over TCP (replicaof takes no Unix socket); the workers use the master's socket.
            let port = LocalRedisServer.freePort()
            let master = try LocalRedisServer(extraConfig: ["port \(port)", "bind 127.0.0.1"])
            let follower = try LocalRedisServer(extraConfig: ["replicaof 127.0.0.1 \(port)"])
            servers = [master, follower]
            let probe = RedisClient(RedisConfiguration(master.endpoint))
            let deadline = Date().addingTimeInterval(30)
            // Synced when the master lists the replica as online.
            while try probe.command(["INFO", "replication"]).text?.contains("state=online") != true {
                guard Date() < deadline else { throw ValidationError("bench queue: the replica did not sync") }
                usleep(20_000)
            }
            config = RedisConfiguration(master.endpoint)
        } else {
            let local = try LocalRedisServer()
            servers = [local]
            config = RedisConfiguration(local.endpoint)
        }
        if let waitReplicas { config.waitReplicas = waitReplicas }
        let admin = RedisClient(config)
        let replicasWaitedFor = try admin.replicasToWaitFor()
        let keys = KeySpace(prefix: "kd-bench:")
        try admin.command(["DEL", keys.queue("bench"), keys.events])

        let lpush = try redisBenchmarkLPUSH(config)
        _ = try run(jobs: 1000, config: config, keys: keys, admin: admin, tag: "w")  // warm-up
        try admin.command(["DEL", keys.events])
        let r = try run(jobs: jobs, config: config, keys: keys, admin: admin, tag: "m")
        let jobsPerSecond = Double(jobs) / r.seconds
        let console = Console(json: json)
        console.line(
            String(
                format: "queue: %d jobs, %d worker loop(s), take batch %d: %.0f jobs/s; %.3f round trips/job",
                jobs, workers, batch, jobsPerSecond, r.roundTripsPerJob))
        console.line(
            String(
                format: "redis: %.2f commands/job (INFO commandstats, script-internal calls included): %@",
                r.commandsPerJob, r.breakdown))
        if let lpush {
            console.line(String(format: "redis-benchmark LPUSH (50 clients, same server): %.0f requests/s", lpush))
        } else {
            console.line("redis-benchmark: not found or failed; LPUSH rate not measured")
        }
        console.line(
            "WAIT: \(replicasWaitedFor) replica(s) after every finish"
                + (replicasWaitedFor > 0 ? ", timeout \(config.waitTimeout); \(r.waitTimeouts) timed out" : ""))
        withExtendedLifetime(servers) {}
        if json {
            let object: [String: Any] = [
                "jobs_per_s": (jobsPerSecond * 10).rounded() / 10,
                "round_trips_per_job": (r.roundTripsPerJob * 1000).rounded() / 1000,
                "redis_commands_per_job": (r.commandsPerJob * 100).rounded() / 100,
                "redis_benchmark_lpush_per_s": lpush.map { ($0 * 10).rounded() / 10 } ?? NSNull(),
                "jobs": jobs, "workers": workers, "take_batch": batch, "wait_replicas": replicasWaitedFor,
                "wait_timeouts": r.waitTimeouts,
            ]
            try console.document(object)
        }
    }

    private struct Result {
        var seconds: Double
        var roundTripsPerJob: Double
        var commandsPerJob: Double
        var breakdown: String
        var waitTimeouts: Int
    }

    private func run(
        jobs: Int, config: RedisConfiguration, keys: KeySpace, admin: RedisClient, tag: String
    ) throws -> Result {
        let producer = JobProducer(client: admin, keys: keys)
        let payloads = (0..<jobs).map { Array("{\"id\":\"\(tag)\($0)\",\"prompt\":\"bench\"}".utf8) }
        try producer.submitMany(payloads, queue: "bench")
        try admin.command(["CONFIG", "RESETSTAT"])
        var pool: [QueueWorker] = []
        for w in 0..<workers {
            var q = QueueConfiguration(queues: ["bench"], worker: "bench-\(tag)\(w)")
            q.keys = keys
            q.takeBatch = batch
            q.blockTimeout = .milliseconds(100)
            pool.append(
                QueueWorker(
                    options: QueueWorker.Options(redis: config, queue: q),
                    generator: NoModelWork(), store: nil))
        }
        let start = ContinuousClock.now
        for w in pool { try w.start() }
        let deadline = start + .seconds(300)
        while pool.reduce(0, { $0 + $1.stats.finished.values.reduce(0, +) }) < jobs {
            guard ContinuousClock.now < deadline else { throw ValidationError("bench queue: jobs did not finish") }
            usleep(1000)
        }
        let elapsed = start.duration(to: .now)
        let stats = try admin.command(["INFO", "commandstats"]).text ?? ""
        for w in pool { w.stop() }
        for w in pool { w.wait() }
        var calls: [String: Int] = [:]
        for line in stats.split(whereSeparator: \.isNewline) where line.hasPrefix("cmdstat_") {
            let name = line.dropFirst("cmdstat_".count).prefix { $0 != ":" }
            if let range = line.range(of: "calls="), let n = Int(line[range.upperBound...].prefix { $0.isNumber }),
                name != "info", name != "config"
            {
                calls[String(name)] = n
            }
        }
        let total = calls.values.reduce(0, +)
        let breakdown = calls.sorted { $0.value > $1.value }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        let trips = pool.reduce(0) { $0 + $1.stats.jobLoopRoundTrips }
        return Result(
            seconds: elapsed.seconds, roundTripsPerJob: Double(trips) / Double(jobs),
            commandsPerJob: Double(total) / Double(jobs), breakdown: breakdown,
            waitTimeouts: pool.reduce(0) { $0 + $1.stats.waitShortfalls })
    }

    /// redis-benchmark's LPUSH requests/s against the same server (nil when it is not installed).
    private func redisBenchmarkLPUSH(_ config: RedisConfiguration) throws -> Double? {
        guard let binary = LocalRedisServer.find("redis-benchmark") else { return nil }
        var arguments = ["-t", "lpush", "-n", "100000", "-c", "50", "-q"]
        switch config.endpoint {
        case .unix(let path): arguments += ["-s", path]
        case .tcp(let host, let port): arguments += ["-h", host, "-p", String(port)]
        }
        if let password = config.password { arguments += ["-a", password] }
        if let user = config.username { arguments += ["--user", user] }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        // "LPUSH: 123456.79 requests per second, p50=…" (progress lines end in \r).
        for line in output.split(whereSeparator: { $0 == "\n" || $0 == "\r" }).reversed() {
            if let r = line.range(of: "LPUSH: ") {
                return Double(line[r.upperBound...].prefix { $0.isNumber || $0 == "." })
            }
        }
        return nil
    }
}

/// The queue benchmark's generator: no model work and no images, so only the queue is measured.
private struct NoModelWork: JobGenerator {
    func generate(_ request: GenerationRequest, context: GenerationContext) throws -> GenerationOutput {
        var seedSource = SystemRandomNumberGenerator()
        return GenerationOutput(
            parameters: request.resolved(defaults: context.defaults) { seedSource.next() }, images: [],
            model: "none")
    }
}
