import Foundation
import JobQueue
import TestSupport
import Testing

@testable import Worker

/// The real binary's `serve` with the embedded demo model and its private redis-server.
@Suite(.serialized) struct ServeTests {
    @Test func servesAJobUnderANotifySocketAndStopsOnSIGTERM() throws {
        let dir = try TemporaryDirectory(prefix: "kd-serve")
        defer { dir.remove() }
        let notify = try NotifySocket(path: dir.file("notify.sock"))
        let state = dir.file("state")
        let worker = try WorkerProcess(
            name: "serve", command: ["serve", "--state-dir", state, "--name", "t1", "--http", "127.0.0.1:0"],
            logDirectory: dir.path,
            environment: ["NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"])
        defer { worker.kill9() }

        // READY=1 only after the prelude (private Redis, model load, warm-up).
        let beforeReady = try #require(
            notify.receive(until: "READY=1", timeout: 120), "no READY=1; log:\n\(worker.log)")
        #expect(beforeReady.contains { $0.contains("STATUS=loading the model") })

        let client = RedisClient(RedisConfiguration(.unix(path: "\(state)/redis/redis.sock")))
        try client.connect()
        let producer = JobProducer(client: client)
        try producer.submit(
            Array(#"{"id":"e2e-1","prompt":"a red circle","seed":5,"num_images":2}"#.utf8), queue: "default")
        #expect(eventually(timeout: 120) { (try? producer.status("e2e-1")["state"]) == "done" }, "log:\n\(worker.log)")
        // The demo model states ddim with 30 steps; the release's ddim30 spacing runs ⌈1000/33⌉ = 31 of them. The job
        // hash shows the last one.
        #expect(try producer.status("e2e-1")["progress"] == "31/31", "progress in the job hash")
        let event = try #require(try producer.event(for: "e2e-1"))
        let parsed = try JSONValue.parse(Array(event.utf8))
        #expect(parsed["state"] == .string("done") && parsed["worker"] == .string("t1"))
        guard case .array(let images)? = parsed["images"] else {
            Issue.record("no images in \(event)")
            return
        }
        #expect(images.count == 2)
        for image in images {
            let path = "\(state)/store/" + (image["path"]?.stringValue ?? "?")
            #expect(FileManager.default.fileExists(atPath: path), "\(path)")
        }

        // HTTP: the bound port is in the heartbeat hash; health, readiness and metrics answer.
        let fields = try client.command(["HGET", "kd:worker:t1", "http"]).text ?? ""
        let port = try #require(ServeConfiguration.hostPort(fields)?.port, "no http field: \(fields)")
        #expect(try httpGet(port: port, path: "/healthz").0 == 200)
        #expect(try httpGet(port: port, path: "/readyz").0 == 200)
        let (status, metrics) = try httpGet(port: port, path: "/metrics")
        #expect(status == 200 && metrics.contains("kd_ready 1"), "\(metrics)")
        #expect(
            eventually(timeout: 5) {
                (try? httpGet(port: port, path: "/metrics").1.contains(#"kd_jobs_total{state="done"} 1"#)) == true
            })
        #expect(metrics.contains("kd_model_load_seconds") && metrics.contains("kd_step_seconds_bucket"))
        #expect(metrics.contains("kd_queue_wait_seconds_count"))
        #expect(try httpGet(port: port, path: "/nothing").0 == 404)

        // The health command sees a live worker and an empty queue.
        let health = try WorkerProcess(
            name: "health",
            command: ["health", "--redis", "unix://\(state)/redis/redis.sock", "--url", "http://127.0.0.1:\(port)"],
            logDirectory: dir.path)
        #expect(eventually(timeout: 30) { !health.isRunning })
        #expect(health.terminate() == 0, "health:\n\(health.log)")

        // The watchdog is fed while the loops run, with a status line (jobs done, the batch running, images/s).
        let beats = try #require(notify.receive(until: "STATUS=1 jobs done, idle", timeout: 10), "no status line")
        #expect(beats.last?.contains("WATCHDOG=1") == true && beats.last?.contains("images/s") == true, "\(beats)")

        // SIGTERM: STOPPING=1, then exit 0.
        #expect(worker.terminate(timeout: 60) == 0, "log:\n\(worker.log)")
        #expect(notify.receive(until: "STOPPING=1", timeout: 1) != nil)
    }

    /// One generation service: the same request through `serve` (Redis, batching, the store) and through
    /// `generate` gives the same PNG bytes, text chunks included.
    @Test func serveAndGenerateWriteTheSamePNGBytes() throws {
        let dir = try TemporaryDirectory(prefix: "kd-same")
        defer { dir.remove() }
        let redis = try RedisServer()
        let client = RedisClient(RedisConfiguration(.unix(path: redis.socketPath)))
        try client.connect()
        let producer = JobProducer(client: client)
        let worker = try WorkerProcess(
            name: "same",
            command: [
                "serve", "--state-dir", dir.file("state"), "--name", "same", "--http", "127.0.0.1:0", "--redis",
                "unix://\(redis.socketPath)", "--store", dir.file("store"),
            ], logDirectory: dir.path)
        defer { worker.kill9() }
        // A Latin-1 prompt (tEXt), a negative prompt, two images (seeds 11 and 12), ddim with its eta.
        try producer.submit(
            Array(
                #"{"id":"same","prompt":"une diplômée verte","negative_prompt":"flou","seed":11,"steps":5,"num_images":2,"guidance_scale":3.5,"eta":0.25}"#
                    .utf8), queue: "default")
        #expect(eventually(timeout: 120) { (try? producer.status("same")["state"]) == "done" }, "\(worker.log)")
        let event = try JSONValue.parse(Array(try #require(try producer.event(for: "same")).utf8))
        guard case .array(let images)? = event["images"], images.count == 2 else {
            Issue.record("images in \(event)")
            return
        }
        let generate = try WorkerProcess(
            name: "generate",
            command: [
                "generate", "une diplômée verte", "--negative-prompt", "flou", "--seed", "11", "--steps", "5",
                "--num-images", "2", "--guidance-scale", "3.5", "--eta", "0.25", "--output", dir.file("cli.png"),
            ], logDirectory: dir.path)
        #expect(eventually(timeout: 120) { !generate.isRunning })
        #expect(generate.terminate() == 0, "\(generate.log)")
        for (k, image) in images.enumerated() {
            let served = try Data(
                contentsOf: URL(fileURLWithPath: dir.file("store/\(image["path"]?.stringValue ?? "?")")))
            let generated = try Data(contentsOf: URL(fileURLWithPath: dir.file("cli-\(k + 1).png")))
            #expect(served == generated, "image \(k): serve and generate wrote different bytes")
        }
        #expect(worker.terminate(timeout: 60) == 0)
    }

    @Test func readinessFollowsRedis() throws {
        let dir = try TemporaryDirectory(prefix: "kd-ready")
        defer { dir.remove() }
        let redis = try RedisServer()
        let worker = try WorkerProcess(
            name: "ready",
            command: [
                "serve", "--state-dir", dir.file("state"), "--name", "r1", "--http", "127.0.0.1:0", "--redis",
                "unix://\(redis.socketPath)",
            ], logDirectory: dir.path)
        defer { worker.kill9() }
        let client = RedisClient(RedisConfiguration(.unix(path: redis.socketPath)))
        try client.connect()
        let port = httpPort(of: "r1", client, timeout: 120)
        #expect(port > 0, "log:\n\(worker.log)")
        #expect(try httpGet(port: port, path: "/readyz").0 == 200)
        // Redis down: not ready (503) within a few ticks; back up: ready again.
        redis.stop(hard: true)
        #expect(eventually(timeout: 10) { (try? httpGet(port: port, path: "/readyz").0) == 503 })
        #expect(try httpGet(port: port, path: "/healthz").0 == 200)
        try redis.restart()
        #expect(eventually(timeout: 20) { (try? httpGet(port: port, path: "/readyz").0) == 200 }, "log:\n\(worker.log)")
        #expect(worker.terminate(timeout: 60) == 0)
    }

    @Test func compatibleJobsShareABatch() throws {
        let dir = try TemporaryDirectory(prefix: "kd-batch")
        defer { dir.remove() }
        let redis = try RedisServer()
        let client = RedisClient(RedisConfiguration(.unix(path: redis.socketPath)))
        try client.connect()
        let producer = JobProducer(client: client)
        // Queued before the worker starts: one take sees them all. Three compatible jobs (4 images in all) and one
        // of another size.
        let jobs = [
            #"{"id":"b1","prompt":"a red circle","seed":1,"steps":4}"#,
            #"{"id":"b2","prompt":"a blue square","seed":2,"steps":4,"num_images":2}"#,
            #"{"id":"odd","prompt":"a green circle","seed":3,"steps":4,"width":128}"#,
            #"{"id":"b3","prompt":"синий квадрат","seed":4,"steps":4}"#,
        ]
        for job in jobs { try producer.submit(Array(job.utf8), queue: "default") }
        let config = dir.file("worker.yaml")
        try "max_batch_images: 4\nmax_batch_wait_ms: 100\n".write(toFile: config, atomically: true, encoding: .utf8)
        let worker = try WorkerProcess(
            name: "batch",
            command: [
                "serve", "--config", config, "--state-dir", dir.file("state"), "--name", "b", "--http", "127.0.0.1:0",
                "--redis", "unix://\(redis.socketPath)",
            ], logDirectory: dir.path)
        defer { worker.kill9() }
        for id in ["b1", "b2", "b3", "odd"] {
            #expect(eventually(timeout: 120) { (try? producer.status(id)["state"]) == "done" }, "\(id): \(worker.log)")
        }
        let port = httpPort(of: "b", client)
        let metrics = try httpGet(port: port, path: "/metrics").1
        // Two model batches: the three compatible jobs (4 images) and the odd one (1 image).
        #expect(metrics.contains("kd_batch_images_count 2"), "\(metrics)")
        #expect(metrics.contains("kd_batch_images_sum 5"), "\(metrics)")
        #expect(worker.terminate(timeout: 60) == 0)
    }

    @Test func aKilledWorkersJobIsFinishedByAnother() throws {
        let fleet = try Fleet(prefix: "kd-kill", config: "heartbeat_ms: 300\n")
        defer { fleet.dir.remove() }
        let (client, producer) = (fleet.client, fleet.producer)
        let first = try fleet.start("k1")
        defer { first.kill9() }
        try producer.submit(
            Array(#"{"id":"killed","prompt":"a red circle","seed":1,"steps":200}"#.utf8), queue: "default")
        #expect(eventually(timeout: 120) { (try? producer.status("killed")["worker"]) == "k1" }, "\(first.log)")
        first.kill9()
        let second = try fleet.start("k2")
        defer { second.kill9() }
        // The reaper hands the dead worker's job back within 3 heartbeat intervals; the other worker finishes it.
        #expect(eventually(timeout: 180) { (try? producer.status("killed")["state"]) == "done" }, "\(second.log)")
        #expect(try producer.status("killed")["worker"] == "k2")
        let event = try JSONValue.parse(Array(try #require(try producer.event(for: "killed")).utf8))
        #expect(event["attempts"] == .integer(2))
        let stream = try client.command(["XLEN", "kd:events"]).integer
        #expect(stream == 1, "exactly one final event")
        #expect(second.terminate(timeout: 60) == 0)
    }

    /// Liveness is what the generation loop reports: a step that never returns (the fault switch) stops the watchdog
    /// pings and the heartbeat, /readyz names the stuck step, and another worker takes the job over and finishes it.
    @Test func aHungStepStopsWatchdogAndHeartbeatAndAnotherWorkerFinishesTheJob() throws {
        let fleet = try Fleet(prefix: "kd-hung", config: "heartbeat_ms: 300\nstep_timeout_s: 2\n")
        defer { fleet.dir.remove() }
        let (client, producer) = (fleet.client, fleet.producer)
        let notify = try NotifySocket(path: fleet.dir.file("notify.sock"))
        let hung = try fleet.start(
            "h1", ["NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000", "KD_FAULT_HANG_AFTER_STEP": "2"])
        defer { hung.kill9() }
        #expect(notify.receive(until: "READY=1", timeout: 120) != nil, "no READY=1; log:\n\(hung.log)")
        let port = httpPort(of: "h1", client, timeout: 10)
        #expect(port > 0, "no heartbeat; log:\n\(hung.log)")
        #expect(try httpGet(port: port, path: "/readyz").0 == 200)
        try producer.submit(Array(#"{"id":"hung","prompt":"a red circle","seed":1,"steps":6}"#.utf8), queue: "default")

        // The third step never returns (of 7: the release's ddim spacing for 6 steps): after step_timeout_s the
        // status says so and the pings stop.
        let untilStuck = try #require(
            notify.receive(until: "STATUS=stuck: step 3 of 7 (job hung)", timeout: 60), "log:\n\(hung.log)")
        #expect(untilStuck.contains { $0.contains("WATCHDOG=1") }, "the watchdog was fed before: \(untilStuck)")
        var after: [String] = []
        let quiet = Date().addingTimeInterval(2)
        while Date() < quiet { if let m = notify.receive(timeout: 0.1) { after.append(m) } }
        #expect(!after.isEmpty && !after.contains { $0.contains("WATCHDOG=1") }, "pings after the stall: \(after)")
        let (status, body) = try httpGet(port: port, path: "/readyz")
        #expect(status == 503 && body.contains("step 3 of 7") && body.contains("hung"), "\(status) \(body)")
        // No more heartbeats: the worker's key expires (3 heartbeat intervals).
        #expect(eventually(timeout: 10) { (try? client.command(["EXISTS", "kd:worker:h1"]).integer) == 0 })
        #expect(hung.log.contains("withholding the heartbeat"), "\(hung.log)")

        // Another worker's reaper hands the job back; it finishes it, with exactly one final event.
        let rescuer = try fleet.start("h2")
        defer { rescuer.kill9() }
        #expect(eventually(timeout: 120) { (try? producer.status("hung")["state"]) == "done" }, "\(rescuer.log)")
        #expect(try producer.status("hung")["worker"] == "h2")
        #expect(try client.command(["XLEN", "kd:events"]).integer == 1, "exactly one final event")
        #expect(rescuer.terminate(timeout: 60) == 0)
    }

    /// A job longer than `shutdown_grace_s` does not hold the worker past it: SIGTERM, the grace ends, the worker
    /// exits 0 with the job still in its processing list, and another worker's reaper hands it back.
    @Test func aStopEndsAfterTheGracePeriodWithTheJobLeftForAnotherWorker() throws {
        let fleet = try Fleet(prefix: "kd-grace", config: "heartbeat_ms: 300\nshutdown_grace_s: 1\n")
        defer { fleet.dir.remove() }
        let (client, producer) = (fleet.client, fleet.producer)
        let slow = try fleet.start("g1", ["KD_FAULT_HANG_AFTER_STEP": "1"])
        defer { slow.kill9() }
        try producer.submit(Array(#"{"id":"long","prompt":"a red circle","seed":1,"steps":6}"#.utf8), queue: "default")
        #expect(
            eventually(timeout: 120) { (try? producer.status("long")["state"]) == "running" }, "log:\n\(slow.log)")
        let start = Date()
        #expect(slow.terminate(timeout: 30) == 0, "log:\n\(slow.log)")
        #expect(Date().timeIntervalSince(start) < 30, "the stop waited for the job")
        #expect(slow.log.contains("did not finish within the grace period (1 s)"), "\(slow.log)")
        #expect(try client.command(["LRANGE", "kd:processing:g1", "0", "-1"]).array?.count == 1)

        let rescuer = try fleet.start("g2")
        defer { rescuer.kill9() }
        #expect(eventually(timeout: 120) { (try? producer.status("long")["state"]) == "done" }, "\(rescuer.log)")
        #expect(try producer.status("long")["worker"] == "g2")
        #expect(rescuer.terminate(timeout: 60) == 0)
    }

    @Test func sigtermFinishesTheRunningJobAndHandsBackTheRest() throws {
        let dir = try TemporaryDirectory(prefix: "kd-sigterm")
        defer { dir.remove() }
        let redis = try RedisServer()
        let client = RedisClient(RedisConfiguration(.unix(path: redis.socketPath)))
        try client.connect()
        let producer = JobProducer(client: client)
        // Different step counts: three separate batches, run one after the other.
        for k in 0..<3 {
            try producer.submit(
                Array(#"{"id":"t\#(k)","prompt":"a red circle","seed":\#(k),"steps":\#(40 + k)}"#.utf8),
                queue: "default")
        }
        let worker = try WorkerProcess(
            name: "sigterm",
            command: [
                "serve", "--state-dir", dir.file("state"), "--name", "s", "--http", "127.0.0.1:0", "--redis",
                "unix://\(redis.socketPath)",
            ], logDirectory: dir.path)
        defer { worker.kill9() }
        // Stop while the first batch runs.
        #expect(eventually(timeout: 120) { (try? producer.status("t0")["state"]) == "running" }, "\(worker.log)")
        #expect(worker.terminate(timeout: 120) == 0, "\(worker.log)")
        let states = try ["t0", "t1", "t2"].map { try producer.status($0)["state"] ?? "none" }
        // The running batch finished; whatever had not started is back in the queue, not lost.
        #expect(states.contains("done"), "\(states)")
        let queued = try client.command(["LLEN", "kd:queue:default"]).integer ?? -1
        let finished = states.filter { $0 == "done" }.count
        #expect(queued + finished == 3 && queued >= 1, "states \(states), queued \(queued)")
        #expect(try client.command(["LLEN", "kd:processing:s"]).integer == 0)
    }

    @Test func badConfigurationStopsStartUpNamingTheKey() throws {
        let dir = try TemporaryDirectory(prefix: "kd-config")
        defer { dir.remove() }
        for (yaml, key) in [
            ("max_batch_images: lots\n", "max_batch_images"), ("colour: red\n", "colour"),
            ("defaults:\n  sampler: euler\n", "defaults.sampler"), ("http: nowhere\n", "http"),
            ("device: cuda:0\n", "device"), ("precision: f8\n", "precision"),
            // Well-formed, but not what this host runs: refused at start, before Redis or the model.
            ("device: vulkan:7\n", "device vulkan:7 is not available"),
            ("precision: bf16\n", "precision bf16 is not available on device cpu"),
        ] {
            let file = dir.file("bad.yaml")
            try yaml.write(toFile: file, atomically: true, encoding: .utf8)
            let worker = try WorkerProcess(
                name: "bad", command: ["serve", "--config", file, "--state-dir", dir.file("state")],
                logDirectory: dir.path)
            #expect(eventually(timeout: 30) { !worker.isRunning })
            let status = worker.terminate()
            #expect(status != 0, "\(key): exit \(status)")
            #expect(worker.log.contains(key), "\(key) not named in:\n\(worker.log)")
        }
    }
}

/// Configuration sources and their order, without a process.
@Suite struct ConfigurationTests {
    @Test func fileThenEnvironment() throws {
        var c = ServeConfiguration()
        try c.apply(
            yaml: """
                queues: [high, default]
                max_batch_images: 8
                half_weights: true
                defaults:
                  steps: 30
                  dynamic_threshold: null
                """, source: "test.yaml")
        #expect(c.queues == ["high", "default"] && c.maxBatchImages == 8 && c.defaults.steps == 30)
        #expect(c.defaults.dynamicThreshold == nil && c.halfWeights)
        #expect(throws: ServeConfiguration.Problem.self) { try c.apply(environment: ["KD_HALF_WEIGHTS": "half"]) }
        try c.apply(environment: ["KD_MAX_BATCH_IMAGES": "2", "KD_MODEL": "/models/k", "HOME": "/root"])
        #expect(c.maxBatchImages == 2 && c.model == "/models/k")
        #expect(throws: ServeConfiguration.Problem.self) { try c.apply(environment: ["KD_HEARTBEAT_MS": "0"]) }
        #expect(throws: ServeConfiguration.Problem.self) { try c.apply(yaml: "- a\n- b\n", source: "list.yaml") }
        #expect(ServeConfiguration.hostPort("127.0.0.1:0")! == ("127.0.0.1", 0))
        #expect(ServeConfiguration.hostPort("[::1]:9464")! == ("::1", 9464))
    }

    @Test func theDocumentedExampleFileLoads() throws {
        let path = Fixtures.root.deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Config/worker.yaml").path
        var c = ServeConfiguration()
        try c.apply(yaml: try String(contentsOfFile: path, encoding: .utf8), source: path)
        #expect(c == ServeConfiguration(), "the example must state the built-in defaults")
    }
}

/// Workers sharing a real redis-server, a configuration file and a store, each with a state directory of its own.
struct Fleet {
    let dir: TemporaryDirectory
    let redis: RedisServer
    let client: RedisClient
    let producer: JobProducer
    let config: String

    init(prefix: String, config yaml: String) throws {
        dir = try TemporaryDirectory(prefix: prefix)
        redis = try RedisServer()
        client = RedisClient(RedisConfiguration(.unix(path: redis.socketPath)))
        try client.connect()
        producer = JobProducer(client: client)
        config = dir.file("worker.yaml")
        try yaml.write(toFile: config, atomically: true, encoding: .utf8)
    }

    /// Starts `serve` as worker `name`.
    func start(_ name: String, _ environment: [String: String] = [:]) throws -> WorkerProcess {
        try WorkerProcess(
            name: name,
            command: [
                "serve", "--config", config, "--state-dir", dir.file("state-\(name)"), "--name", name, "--http",
                "127.0.0.1:0", "--redis", "unix://\(redis.socketPath)", "--store", dir.file("store"),
            ], logDirectory: dir.path, environment: environment)
    }
}

/// The HTTP port worker `name` states in its heartbeat hash, once it has beaten (0 if it does not within `timeout`).
func httpPort(of name: String, _ client: RedisClient, timeout: Double = 10) -> Int {
    var port = 0
    _ = eventually(timeout: timeout) {
        port =
            (try? client.command(["HGET", "kd:worker:\(name)", "http"]).text).flatMap {
                ServeConfiguration.hostPort($0)?.port
            } ?? 0
        return port > 0
    }
    return port
}

/// A plain HTTP/1.1 GET on 127.0.0.1 (status, body).
func httpGet(port: Int, path: String) throws -> (Int, String) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    var tv = timeval(tv_sec: 5, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    let connected = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    guard connected == 0 else { throw NSError(domain: "httpGet", code: Int(errno)) }
    let request = Array("GET \(path) HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".utf8)
    _ = request.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    var response: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = read(fd, &buffer, buffer.count)
        if n <= 0 { break }
        response += buffer[0..<n]
    }
    let text = String(decoding: response, as: UTF8.self)
    let status = Int(text.split(separator: " ").dropFirst().first ?? "") ?? 0
    let body = text.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n")
    return (status, body)
}
