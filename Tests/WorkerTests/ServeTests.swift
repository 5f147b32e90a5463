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
            name: "serve", command: ["serve", "--state-dir", state, "--name", "t1"], logDirectory: dir.path,
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
        let event = try #require(try producer.event(for: "e2e-1"))
        let parsed = try JSONNode.parse(Array(event.utf8))
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

        // The health command sees a live worker and an empty queue.
        let health = try WorkerProcess(
            name: "health", command: ["health", "--redis", "unix://\(state)/redis/redis.sock"], logDirectory: dir.path)
        #expect(eventually(timeout: 30) { !health.isRunning })
        #expect(health.terminate() == 0, "health:\n\(health.log)")

        // The watchdog is fed while the loops run.
        #expect(notify.receive(until: "WATCHDOG=1", timeout: 5) != nil)

        // SIGTERM: STOPPING=1, then exit 0.
        #expect(worker.terminate(timeout: 60) == 0, "log:\n\(worker.log)")
        #expect(notify.receive(until: "STOPPING=1", timeout: 1) != nil)
    }

    @Test func badConfigurationStopsStartUpNamingTheKey() throws {
        let dir = try TemporaryDirectory(prefix: "kd-config")
        defer { dir.remove() }
        for (yaml, key) in [
            ("max_batch_images: lots\n", "max_batch_images"), ("colour: red\n", "colour"),
            ("defaults:\n  sampler: euler\n", "defaults.sampler"), ("http: nowhere\n", "http"),
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
                defaults:
                  steps: 30
                  dynamic_threshold: null
                """, source: "test.yaml")
        #expect(c.queues == ["high", "default"] && c.maxBatchImages == 8 && c.defaults.steps == 30)
        #expect(c.defaults.dynamicThreshold == nil)
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
