import Foundation
import ResultStore
import TestSupport
import Testing
import WorkerTesting

@testable import JobQueue
@testable import Redis
@testable import Worker

/// A real redis-server, a store directory, and helpers to read back what workers did.
final class QueueHarness: @unchecked Sendable {
    let server: RedisServer
    let storeDir: TemporaryDirectory
    let keys: KeySpace
    let admin: RedisClient
    let producer: JobProducer

    init(keys: KeySpace = KeySpace(), extraConfig: [String] = []) throws {
        server = try RedisServer(extraConfig: extraConfig)
        storeDir = try TemporaryDirectory(prefix: "kd-store")
        self.keys = keys
        admin = RedisClient(RedisConfiguration(.unix(path: server.socketPath)))
        producer = JobProducer(client: admin, keys: keys)
    }

    deinit { storeDir.remove() }

    var redisConfig: RedisConfiguration {
        var c = RedisConfiguration(.unix(path: server.socketPath))
        c.backoff = Backoff(initial: .milliseconds(20), cap: .milliseconds(300), floor: .milliseconds(5))
        return c
    }

    func options(worker: String, queues: [String] = ["default"]) -> QueueWorker.Options {
        var q = QueueConfiguration(queues: queues, worker: worker)
        q.keys = keys
        q.heartbeatInterval = .milliseconds(300)
        q.blockTimeout = .milliseconds(200)
        q.multiQueuePoll = .milliseconds(50)
        q.retryBackoff = Backoff(initial: .milliseconds(30), cap: .milliseconds(120), floor: .milliseconds(10))
        q.cancelCheckInterval = .milliseconds(20)
        var o = QueueWorker.Options(redis: redisConfig, queue: q)
        o.defaults.width = 64
        o.defaults.height = 64
        return o
    }

    func worker(
        _ name: String, queues: [String] = ["default"], store: ResultStore? = nil,
        configure: (inout QueueWorker.Options) -> Void = { _ in }
    ) throws -> QueueWorker {
        var o = options(worker: name, queues: queues)
        configure(&o)
        let w = QueueWorker(
            options: o, generator: ScriptedGenerator(), store: store ?? ResultStore(root: storeDir.path))
        try w.start()
        return w
    }

    func submit(_ json: String, queue: String = "default") throws {
        try producer.submit(Array(json.utf8), queue: queue)
    }

    /// Every event in the stream, parsed.
    func events() throws -> [JSONValue] {
        let entries = try admin.command(["XRANGE", keys.events, "-", "+"]).array ?? []
        return entries.compactMap { entry in
            guard let fields = entry.array?[1].array, fields.count == 2, let text = fields[1].text else { return nil }
            return try? JSONValue.parse(Array(text.utf8))
        }
    }

    func events(for id: String) throws -> [JSONValue] { try events().filter { $0["id"] == .string(id) } }

    func state(_ id: String) throws -> String? { try producer.status(id)["state"] }

    func waitForState(_ id: String, _ state: String, timeout: Double = 10) throws -> Bool {
        try eventually(timeout: timeout) { try self.state(id) == state }
    }

    func length(_ key: String) throws -> Int { try admin.command(["LLEN", key]).integer ?? -1 }

    /// Files under the store root, relative.
    func storedFiles() -> [String] {
        let root = storeDir.path
        let all = FileManager.default.enumerator(atPath: root)?.allObjects as? [String] ?? []
        return all.filter { !$0.isEmpty && !FileManager.default.isDirectory(atPath: root + "/" + $0) }.sorted()
    }
}

extension FileManager {
    func isDirectory(atPath path: String) -> Bool {
        var isDir: ObjCBool = false
        return fileExists(atPath: path, isDirectory: &isDir) && isDir.boolValue
    }
}

/// The reliable queue in one process: real Redis, real store, workers on their own threads.
@Suite(.serialized) struct QueueTests {
    @Test func jobsRunWithFilesEventAndHash() throws {
        let h = try QueueHarness()
        let w = try h.worker("w1")
        defer {
            w.stop()
            w.wait()
        }
        try h.submit(#"{"id":"j1","prompt":"кот","num_images":2,"seed":100,"metadata":{"ticket":7}}"#)
        #expect(try h.waitForState("j1", "done"))
        let events = try h.events(for: "j1")
        #expect(events.count == 1)
        guard let e = events.first else { return }
        #expect(e["state"] == .string("done") && e["worker"] == .string("w1") && e["attempts"] == .number("1"))
        #expect(e["metadata"] == .object(["ticket": .number("7")]))
        #expect(e["error"] == nil && e["run_ms"] != nil && e["queued_ms"] != nil)
        guard case .array(let images)? = e["images"], images.count == 2 else {
            Issue.record("images: \(String(describing: e["images"]))")
            return
        }
        for (n, image) in images.enumerated() {
            let path = image["path"]!.stringValue!
            #expect(path.hasSuffix("/j1/\(n).png"))
            #expect(image["seed"] == .integer(100 + n) && image["width"] == .number("64"))
            let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: h.storeDir.path + "/" + path)))
            #expect(image["sha256"] == .string(Digests.sha256Hex(bytes)))
            let (decoded, text) = try PNGCodec.decode(bytes)
            #expect(decoded.width == 64)
            #expect(text.first { $0.key == "parameters" }?.value.contains("Seed: \(100 + n), Size: 64x64") == true)
        }
        let files = h.storedFiles()
        #expect(files.count == 3 && files.contains { $0.hasSuffix("j1/job.json") }, "\(files)")
        let hash = try h.producer.status("j1")
        #expect(hash["state"] == "done" && hash["result"] != nil && hash["queue"] == "default")
        let ttl = try h.admin.command(["PTTL", h.keys.job("j1")]).integer ?? -1
        #expect(ttl > 0 && ttl <= 86_400_000)
        #expect(try h.length(h.keys.processing("w1")) == 0)
    }

    @Test func queuesAreTakenInPriorityOrder() throws {
        let h = try QueueHarness()
        for i in 0..<5 { try h.submit(#"{"id":"low\#(i)","prompt":"p"}"#, queue: "low") }
        for i in 0..<5 { try h.submit(#"{"id":"high\#(i)","prompt":"p"}"#, queue: "high") }
        let w = try h.worker("w1", queues: ["high", "low"]) { $0.queue.takeBatch = 1 }
        defer {
            w.stop()
            w.wait()
        }
        #expect(try eventually(timeout: 10) { try h.events().count == 10 })
        let order = try h.events().compactMap { $0["id"]?.stringValue }
        #expect(order == (0..<5).map { "high\($0)" } + (0..<5).map { "low\($0)" })
    }

    @Test func invalidAndUnparseableJobsFailAtOnceAndTheWorkerGoesOn() throws {
        let h = try QueueHarness()
        let w = try h.worker("w1")
        defer {
            w.stop()
            w.wait()
        }
        try h.submit(#"{"id":"bad-width","prompt":"p","width":4096}"#)
        try h.submit(#"{"id":"bad-path","prompt":"p","init_image":"../../etc/passwd"}"#)
        try h.producer.submit(
            Array(#"{"id":"bad-utf8","prompt":"x"#.utf8) + [0xFF] + Array(#""}"#.utf8), queue: "default")
        try h.producer.submit([0x7B, 0xFF, 0xFE], queue: "default")  // no id at all
        // Not JSON as a whole, but the id is readable: each fails under it with one final event.
        try h.submit(#"{"id":"bad-nan","prompt":"p","steps":NaN}"#)
        try h.submit(#"{"id":"bad-dup","prompt":"p","prompt":"q"}"#)
        try h.submit(#"{"id":"bad-cut","prompt":"p","metadata":{"k":["#)
        try h.submit(#"{"id":"good","prompt":"p"}"#)
        #expect(try h.waitForState("good", "done"))
        #expect(try eventually(timeout: 5) { try h.events().count == 8 })
        for id in ["bad-nan", "bad-dup", "bad-cut"] {
            #expect(try h.state(id) == "failed", "\(id)")
            let events = try h.events(for: id)
            #expect(events.count == 1 && events.first?["error"]?["code"] == .string("invalid_json"), "\(events)")
        }
        for (id, code, field) in [("bad-width", "out_of_range", "width"), ("bad-path", "path_traversal", "init_image")]
        {
            #expect(try h.state(id) == "failed")
            let error = try JSONValue.parse(Array((h.producer.status(id)["error"] ?? "").utf8))
            #expect(error["code"] == .string(code) && error["field"] == .string(field))
            let events = try h.events(for: id)
            #expect(events.count == 1 && events.first?["error"]?["code"] == .string(code))
        }
        // Invalid UTF-8 after a readable id: failed under its own id.
        #expect(try h.state("bad-utf8") == "failed")
        #expect(try h.events(for: "bad-utf8").first?["error"]?["code"] == .string("invalid_utf8"))
        // No id: the dead list, with an event whose id is null.
        let dead = try h.admin.command(["LRANGE", h.keys.dead, "0", "-1"]).array ?? []
        #expect(dead.count == 1)
        let entry = try JSONValue.parse(Array((dead.first?.text ?? "").utf8))
        #expect(entry["id"] == .null && entry["error"]?["code"] == .string("invalid_utf8"))
        #expect(entry["payload_bytes"] == .number("3"))
        #expect(try h.events().filter { $0["id"] == .null && $0["state"] == .string("dead") }.count == 1)
        #expect(try h.length(h.keys.processing("w1")) == 0)
    }

    @Test func poisonJobsRetryWithBackoffThenGoDead() throws {
        let h = try QueueHarness()
        let w = try h.worker("w1")
        defer {
            w.stop()
            w.wait()
        }
        try h.submit(#"{"id":"poison","prompt":"p","metadata":{"test":{"fail":"poison"}}}"#)
        try h.submit(#"{"id":"flaky","prompt":"p","metadata":{"test":{"fail":"once"}}}"#)
        try h.submit(#"{"id":"fatal","prompt":"p","metadata":{"test":{"fail":"fatal"}}}"#)
        #expect(try h.waitForState("poison", "dead"))
        #expect(try h.waitForState("flaky", "done"))
        #expect(try h.waitForState("fatal", "failed"))
        let hash = try h.producer.status("poison")
        #expect(hash["attempts"] == "3")
        #expect(try h.events(for: "poison").count == 1)
        #expect(try h.events(for: "flaky").first?["attempts"] == .number("2"))
        #expect(try h.events(for: "fatal").first?["attempts"] == .number("1"))
        let dead = try h.admin.command(["LRANGE", h.keys.dead, "0", "-1"]).array ?? []
        #expect(dead.count == 1 && dead.first?.text?.contains("\"poison\"") == true)
        #expect(try h.admin.command(["ZCARD", h.keys.delayed]) == .integer(0))
        #expect(w.stats.retried == 3)
    }

    /// A real write failure: a regular file sits where the job's day directory must go. The attempt fails (never a
    /// "done" for files that are not there), is retried, and succeeds once the obstacle is gone.
    @Test func storeFailureFailsTheAttemptAndRetries() throws {
        let h = try QueueHarness()
        let day = ResultStore.relativeDirectory(jobId: "x", firstSeenMs: ReliableQueue.nowMs()).split(separator: "/")[0]
        let blocker = h.storeDir.file(String(day))
        _ = FileManager.default.createFile(atPath: blocker, contents: Data("not a directory".utf8))
        let w = try h.worker("w1") {
            $0.queue.retryBackoff = Backoff(
                initial: .milliseconds(400), cap: .milliseconds(400), floor: .milliseconds(400))
        }
        defer {
            w.stop()
            w.wait()
        }
        try h.submit(#"{"id":"st","prompt":"p"}"#)
        #expect(eventually(timeout: 5) { w.stats.retried >= 1 })
        #expect(try h.state("st") != "done")
        let lastError = try JSONValue.parse(Array((h.producer.status("st")["last_error"] ?? "").utf8))
        #expect(lastError["code"] == .string("store_failed"))
        try FileManager.default.removeItem(atPath: blocker)
        #expect(try h.waitForState("st", "done"))
        #expect(try h.producer.status("st")["attempts"] == "2")
        #expect(h.storedFiles().filter { $0.contains("/st/") }.count == 2)
    }

    @Test func cancellationBeforeStartAndWhileRunning() throws {
        let h = try QueueHarness()
        try h.producer.cancel("early")
        try h.submit(#"{"id":"early","prompt":"p"}"#)
        let w = try h.worker("w1")
        defer {
            w.stop()
            w.wait()
        }
        #expect(try h.waitForState("early", "cancelled"))
        #expect(try h.events(for: "early").first?["error"]?["code"] == .string("cancelled"))
        try h.submit(#"{"id":"long","prompt":"p","metadata":{"test":{"sleep_ms":20000}}}"#)
        #expect(try h.waitForState("long", "running"))
        try h.producer.cancel("long")
        #expect(try h.waitForState("long", "cancelled", timeout: 5))
        let e = try h.events(for: "long")
        #expect(e.count == 1 && e.first?["state"] == .string("cancelled"))
        #expect(h.storedFiles().isEmpty)
        #expect(try h.admin.command(["EXISTS", h.keys.cancel("long")]) == .integer(0))
    }

    @Test func duplicateDeliveryYieldsOneEventAndOneSetOfFiles() throws {
        let h = try QueueHarness()
        let job = #"{"id":"dup","prompt":"p","seed":5}"#
        try h.submit(job)
        try h.submit(job)
        let w = try h.worker("w1")
        defer {
            w.stop()
            w.wait()
        }
        #expect(try h.waitForState("dup", "done"))
        #expect(try eventually(timeout: 5) { try h.length(h.keys.queue("default")) == 0 && w.stats.alreadyFinal == 1 })
        #expect(try h.events(for: "dup").count == 1)
        #expect(h.storedFiles().filter { $0.contains("/dup/") }.count == 2)
    }

    /// A worker that died (its heartbeat gone) with jobs in its processing list: the reaper of a live worker hands
    /// them back, including one taken but never claimed (its origin comes from the dead worker's queue list).
    @Test func reaperHandsBackJobsOfExpiredWorkers() throws {
        let h = try QueueHarness()
        let ghost = "ghost"
        try h.admin.command(["SADD", h.keys.workers, ghost])
        try h.admin.command(["SET", h.keys.workerQueues(ghost), "default"])
        try h.admin.command(["LPUSH", h.keys.processing(ghost), #"{"id":"orphan1","prompt":"p"}"#])
        try h.admin.command(["LPUSH", h.keys.processing(ghost), #"{"id":"orphan2","prompt":"p"}"#])
        try h.admin.command(["HSET", h.keys.job("orphan1"), "state", "running", "queue", "default", "attempts", "1"])
        let w = try h.worker("w1")
        defer {
            w.stop()
            w.wait()
        }
        #expect(try h.waitForState("orphan1", "done"))
        #expect(try h.waitForState("orphan2", "done"))
        #expect(try h.producer.status("orphan1")["recovered_by"] == "reaper:w1")
        #expect(try h.producer.status("orphan1")["attempts"] == "2")
        #expect(try h.length(h.keys.processing(ghost)) == 0)
        #expect(
            try eventually(timeout: 3) { try h.admin.command(["SISMEMBER", h.keys.workers, ghost]) == .integer(0) })
        // The live worker's own heartbeat is there, with a TTL.
        let ttl = try h.admin.command(["PTTL", h.keys.worker("w1")]).integer ?? -1
        #expect(ttl > 0 && ttl <= 600)
    }

    /// Keys under one hash tag work on a real (single-node) Redis Cluster, which refuses any multi-key command or
    /// script whose keys span slots with CROSSSLOT.
    @Test func hashTaggedKeysRunOnRedisCluster() throws {
        let h = try QueueHarness(
            keys: KeySpace(prefix: "kd:", hashTag: "img"),
            extraConfig: ["cluster-enabled yes", "cluster-config-file nodes.conf"])
        try h.admin.command(["CLUSTER", "ADDSLOTSRANGE", "0", "16383"])
        #expect(
            try eventually(timeout: 10) {
                try h.admin.command(["CLUSTER", "INFO"]).text?.contains("cluster_state:ok") == true
            })
        // Untagged keys of this layout would span slots: the server would refuse them.
        do {
            try h.admin.command(["LMOVE", "kd:queue:a", "kd:processing:w", "RIGHT", "LEFT"])
            Issue.record("the cluster accepted a cross-slot LMOVE")
        } catch {
            #expect(error.kind == "CROSSSLOT")
        }
        let w = try h.worker("w1", queues: ["a", "b"])
        defer {
            w.stop()
            w.wait()
        }
        try h.submit(#"{"id":"c1","prompt":"p"}"#, queue: "b")
        try h.submit(#"{"id":"c2","prompt":"p","metadata":{"test":{"fail":"once"}}}"#, queue: "a")
        #expect(try h.waitForState("c1", "done"))
        #expect(try h.waitForState("c2", "done"))
        #expect(w.stats.redisErrors == 0)
    }

    @Test func stopHandsBackTakenJobsAndDeregisters() throws {
        let h = try QueueHarness()
        for i in 0..<4 { try h.submit(#"{"id":"s\#(i)","prompt":"p","metadata":{"test":{"sleep_ms":300}}}"#) }
        let w = try h.worker("w1") { $0.queue.takeBatch = 4 }
        #expect(try h.waitForState("s0", "running"))
        w.stop()
        w.wait()
        #expect(try h.state("s0") == "done")
        #expect(try h.length(h.keys.processing("w1")) == 0)
        #expect(try h.length(h.keys.queue("default")) == 3)
        #expect(try h.admin.command(["SISMEMBER", h.keys.workers, "w1"]) == .integer(0))
        #expect(try h.admin.command(["EXISTS", h.keys.worker("w1")]) == .integer(0))
    }
}
