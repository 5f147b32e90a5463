import Foundation
import JobQueue
import Redis
import Worker

/// What `bench queue` measures, and against which server.
public struct QueueBenchOptions: Sendable {
    /// The Redis server the jobs go through.
    public enum Server: Sendable, Equatable {
        /// A private redis-server started for the run (Unix socket, appendonly yes), stopped at its end.
        case local
        /// A private master with one replica following it over loopback TCP (the workers use the master's socket).
        case localWithReplica
        /// A server already running; the run deletes and refills the `kd-bench:` keys it uses.
        case external(RedisConfiguration)
    }

    public var server: Server
    /// Jobs timed, after `warmUpJobs` untimed ones.
    public var jobs: Int
    /// Worker job loops, each its own thread and connection.
    public var workers: Int
    /// Jobs taken per round trip.
    public var takeBatch: Int
    /// Replicas each finish waits for (WAIT); nil: one where the master has a replica, else none.
    public var waitReplicas: Int?
    public var warmUpJobs: Int
    /// LPUSH requests redis-benchmark sends for its rate (50 clients, the same server); nil: not measured.
    public var redisBenchmarkRequests: Int?

    public init(
        server: Server = .local, jobs: Int = 20_000, workers: Int = 2, takeBatch: Int = 16, waitReplicas: Int? = nil,
        warmUpJobs: Int = 1000, redisBenchmarkRequests: Int? = 100_000
    ) {
        (self.server, self.jobs, self.workers, self.takeBatch) = (server, jobs, workers, takeBatch)
        (self.waitReplicas, self.warmUpJobs, self.redisBenchmarkRequests) =
            (waitReplicas, warmUpJobs, redisBenchmarkRequests)
    }
}

/// What `bench queue` measured.
public struct QueueBenchResult: Sendable {
    public var jobs: Int, workers: Int, takeBatch: Int
    /// From the first worker's start until every timed job was finished.
    public var seconds: Double
    /// Job-loop round trips to Redis per job (takes, claims, finishes, heartbeats).
    public var roundTripsPerJob: Double
    /// Redis commands per job, script-internal calls included (INFO commandstats over the timed pass, less the INFO
    /// that reads them).
    public var commandsPerJob: Double
    /// The calls behind `commandsPerJob`, per command.
    public var commandCalls: [String: Int]
    /// Replicas every finish waited for, the longest it waited, and how many finishes saw fewer in time.
    public var replicasWaitedFor: Int, waitTimeout: Duration, waitTimeouts: Int
    /// redis-benchmark's LPUSH requests/s against the same server (nil when not measured or not installed).
    public var redisBenchmarkLPUSH: Double?

    public var jobsPerSecond: Double { Double(jobs) / seconds }

    /// The human lines.
    public var lines: [String] {
        let breakdown = commandCalls.sorted { ($0.value, $1.key) > ($1.value, $0.key) }.map { "\($0.key) \($0.value)" }
        return [
            String(
                format: "queue: %d jobs, %d worker loop(s), take batch %d: %.0f jobs/s; %.3f round trips/job",
                jobs, workers, takeBatch, jobsPerSecond, roundTripsPerJob),
            String(
                format: "redis: %.2f commands/job (INFO commandstats, script-internal calls included): %@",
                commandsPerJob, breakdown.joined(separator: ", ")),
            redisBenchmarkLPUSH.map {
                String(format: "redis-benchmark LPUSH (50 clients, same server): %.0f requests/s", $0)
            } ?? "redis-benchmark: not found, failed or not asked for; LPUSH rate not measured",
            "WAIT: \(replicasWaitedFor) replica(s) after every finish"
                + (replicasWaitedFor > 0 ? ", timeout \(waitTimeout); \(waitTimeouts) timed out" : ""),
        ]
    }

    /// The `--json` document: `jobs_per_s`, `round_trips_per_job`, `redis_commands_per_job`,
    /// `redis_benchmark_lpush_per_s` (null when not measured), `jobs`, `workers`, `take_batch`, `wait_replicas`,
    /// `wait_timeouts`.
    public func jsonDocument() throws -> String {
        try BenchJSON.document([
            "jobs_per_s": BenchJSON.rounded(jobsPerSecond, places: 1),
            "round_trips_per_job": BenchJSON.rounded(roundTripsPerJob, places: 3),
            "redis_commands_per_job": BenchJSON.rounded(commandsPerJob, places: 2),
            "redis_benchmark_lpush_per_s": redisBenchmarkLPUSH.map { BenchJSON.rounded($0, places: 1) } ?? NSNull(),
            "jobs": jobs, "workers": workers, "take_batch": takeBatch, "wait_replicas": replicasWaitedFor,
            "wait_timeouts": waitTimeouts,
        ])
    }
}

/// The instrument of `bench queue`: a generator that does no model work and makes no images, so that the figures
/// are the queue's alone (take → claim → finish → event). Like a real generator it checks for cancellation and
/// resolves the request's parameters, which the finish records.
public struct QueueBenchGenerator: JobGenerator {
    public init() {}

    public func generate(_ request: GenerationRequest, context: GenerationContext) throws -> GenerationOutput {
        try context.checkCancelled()
        var seeds = SystemRandomNumberGenerator()
        let parameters = request.resolved(defaults: context.defaults) { seeds.next() }
        return GenerationOutput(parameters: parameters, images: [], model: "queue-bench")
    }
}

/// `bench queue`: jobs/s through take → claim → finish → event with `QueueBenchGenerator`, Redis commands and round
/// trips per job, and redis-benchmark's LPUSH rate against the same server.
public enum QueueBench {
    /// Starts the private server(s) the options ask for, runs the warm-up and the timed jobs, and stops them.
    public static func run(_ options: QueueBenchOptions) throws -> QueueBenchResult {
        var servers: [LocalRedisServer] = []
        defer { for server in servers.reversed() { server.stop() } }
        var config: RedisConfiguration
        switch options.server {
        case .external(let external):
            config = external
        case .localWithReplica:
            // The replica follows over TCP (replicaof takes no Unix socket); the workers use the master's socket.
            let port = LocalRedisServer.freePort()
            let master = try LocalRedisServer(extraConfig: ["port \(port)", "bind 127.0.0.1"])
            servers.append(master)
            servers.append(try LocalRedisServer(extraConfig: ["replicaof 127.0.0.1 \(port)"]))
            try waitForTheReplica(of: RedisClient(RedisConfiguration(master.endpoint)))
            config = RedisConfiguration(master.endpoint)
        case .local:
            let local = try LocalRedisServer()
            servers.append(local)
            config = RedisConfiguration(local.endpoint)
        }
        if let waitReplicas = options.waitReplicas { config.waitReplicas = waitReplicas }
        let admin = RedisClient(config)
        let replicasWaitedFor = try admin.replicasToWaitFor()
        let keys = KeySpace(prefix: "kd-bench:")
        try admin.command(["DEL", keys.queue(queue), keys.events])

        let lpush = try options.redisBenchmarkRequests.flatMap { try redisBenchmarkLPUSH(config, requests: $0) }
        if options.warmUpJobs > 0 {
            _ = try pass(jobs: options.warmUpJobs, options: options, config: config, keys: keys, admin: admin, tag: "w")
            try admin.command(["DEL", keys.events])
        }
        let r = try pass(jobs: options.jobs, options: options, config: config, keys: keys, admin: admin, tag: "m")
        return QueueBenchResult(
            jobs: options.jobs, workers: options.workers, takeBatch: options.takeBatch, seconds: r.seconds,
            roundTripsPerJob: r.roundTripsPerJob, commandsPerJob: r.commandsPerJob, commandCalls: r.calls,
            replicasWaitedFor: replicasWaitedFor, waitTimeout: config.waitTimeout, waitTimeouts: r.waitTimeouts,
            redisBenchmarkLPUSH: lpush)
    }

    /// The queue the jobs go through.
    static let queue = "bench"

    /// Waits (up to 30 s) until the master lists its replica as online.
    static func waitForTheReplica(of master: RedisClient) throws {
        let deadline = ContinuousClock.now + .seconds(30)
        while try master.command(["INFO", "replication"]).text?.contains("state=online") != true {
            guard ContinuousClock.now < deadline else {
                throw BenchError(.replicaDidNotSync, "the replica did not sync in 30 s", benchmark: "bench queue")
            }
            usleep(20_000)
        }
    }

    /// One pass: `jobs` jobs submitted, then taken and finished by the worker loops, timed from their start.
    static func pass(
        jobs: Int, options: QueueBenchOptions, config: RedisConfiguration, keys: KeySpace, admin: RedisClient,
        tag: String
    ) throws -> Pass {
        let producer = JobProducer(client: admin, keys: keys)
        let payloads = (0..<jobs).map { Array("{\"id\":\"\(tag)\($0)\",\"prompt\":\"bench\"}".utf8) }
        try producer.submitMany(payloads, queue: queue)
        try admin.command(["CONFIG", "RESETSTAT"])
        var pool: [QueueWorker] = []
        for w in 0..<options.workers {
            var q = QueueConfiguration(queues: [queue], worker: "bench-\(tag)\(w)")
            q.keys = keys
            q.takeBatch = options.takeBatch
            q.blockTimeout = .milliseconds(100)
            pool.append(
                QueueWorker(
                    options: QueueWorker.Options(redis: config, queue: q), generator: QueueBenchGenerator(),
                    store: nil))
        }
        let start = ContinuousClock.now
        for w in pool { try w.start() }
        let deadline = start + .seconds(300)
        while pool.reduce(0, { $0 + $1.stats.finished.values.reduce(0, +) }) < jobs {
            guard ContinuousClock.now < deadline else {
                for w in pool { w.stop() }
                throw BenchError(
                    .jobsDidNotFinish, "\(jobs) jobs were not finished in 300 s", benchmark: "bench queue")
            }
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
        let trips = pool.reduce(0) { $0 + $1.stats.jobLoopRoundTrips }
        return Pass(
            seconds: elapsed.seconds, roundTripsPerJob: Double(trips) / Double(jobs),
            commandsPerJob: Double(calls.values.reduce(0, +)) / Double(jobs), calls: calls,
            waitTimeouts: pool.reduce(0) { $0 + $1.stats.waitShortfalls })
    }

    /// What one pass measured.
    struct Pass {
        var seconds: Double
        var roundTripsPerJob: Double
        var commandsPerJob: Double
        var calls: [String: Int]
        var waitTimeouts: Int
    }

    /// redis-benchmark's LPUSH requests/s against the same server (nil when it is not installed or says nothing).
    static func redisBenchmarkLPUSH(_ config: RedisConfiguration, requests: Int) throws -> Double? {
        guard let binary = LocalRedisServer.find("redis-benchmark") else { return nil }
        var arguments = ["-t", "lpush", "-n", String(requests), "-c", "50", "-q"]
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
