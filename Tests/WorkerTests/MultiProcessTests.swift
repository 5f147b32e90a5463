import Foundation
import TestSupport
import Testing

@testable import JobQueue
@testable import Redis

/// Worker processes (`kd-test-worker`, the scripted test worker) killed with SIGKILL, a redis-server killed and restarted,
/// and a mixed load across three processes. Every promise is checked from what Redis and the store hold.
@Suite(.serialized) struct MultiProcessTests {
    func workerArguments(_ h: QueueHarness, heartbeatMs: Int = 300, extra: [String] = []) -> [String] {
        [
            "--redis", "unix://\(h.server.socketPath)", "--store", h.storeDir.path, "--heartbeat-ms",
            String(heartbeatMs),
            "--retry-ms", "20", "--max-attempts", "3",
        ] + extra
    }

    func start(
        _ name: String, _ h: QueueHarness, logs: TemporaryDirectory, extra: [String] = []
    ) throws -> WorkerProcess {
        try WorkerProcess(name: name, arguments: workerArguments(h, extra: extra), logDirectory: logs.path)
    }

    /// Exactly the files of one run: n PNGs and job.json, no temporary files.
    func expectOneSetOfFiles(_ h: QueueHarness, id: String, images: Int) {
        let files = h.storedFiles().filter { $0.contains("/\(id)/") }
        let expected = (0..<images).map { "\($0).png" } + ["job.json"]
        #expect(files.map { ($0 as NSString).lastPathComponent }.sorted() == expected.sorted(), "\(files)")
    }

    @Test(arguments: ["other worker", "same worker restarted"])
    func workerKilledMidJob(recovery: String) throws {
        let h = try QueueHarness()
        let logs = try TemporaryDirectory(prefix: "kd-logs")
        defer { logs.remove() }
        let a = try start("a", h, logs: logs)
        try h.submit(#"{"id":"k1","prompt":"p","num_images":2,"metadata":{"test":{"sleep_ms":1500}}}"#)
        #expect(try h.waitForState("k1", "running"), "\(a.log)")
        #expect(try h.producer.status("k1")["worker"] == "a")
        a.kill9()
        #expect(try h.length(h.keys.processing("a")) == 1)  // the job is still held in Redis, not lost
        let b = try start(recovery == "other worker" ? "b" : "a", h, logs: logs)
        defer { b.terminate() }
        #expect(try h.waitForState("k1", "done", timeout: 15), "\(b.log)")
        let hash = try h.producer.status("k1")
        #expect(hash["recovered_by"] == (recovery == "other worker" ? "reaper:b" : "self"))
        #expect(hash["attempts"] == "2")
        #expect(try h.events(for: "k1").count == 1)
        expectOneSetOfFiles(h, id: "k1", images: 2)
        #expect(try h.length(h.keys.processing("a")) == 0)
        #expect(try h.length(h.keys.processing(b.name)) == 0)
    }

    /// A job that kills its worker every time is not retried forever: after the allowed attempts it is dead.
    @Test func jobThatCrashesEveryWorkerEndsDead() throws {
        let h = try QueueHarness()
        let logs = try TemporaryDirectory(prefix: "kd-logs")
        defer { logs.remove() }
        try h.submit(#"{"id":"crasher","prompt":"p","metadata":{"test":{"crash":true}}}"#)
        try h.submit(#"{"id":"after","prompt":"p"}"#)
        var processes: [WorkerProcess] = []
        defer { for p in processes { p.terminate() } }
        // Each restart under the same name hands the job back at once and the claim counts the attempt.
        for _ in 0..<4 {
            let p = try start("c", h, logs: logs)
            processes.append(p)
            _ = eventually(timeout: 5) { !p.isRunning || ((try? h.state("after")) == "done") }
            if try h.state("crasher") == "dead" { break }
        }
        #expect(try h.waitForState("crasher", "dead", timeout: 5))
        let error = try JSONValue.parse(Array((h.producer.status("crasher")["error"] ?? "").utf8))
        #expect(error["code"] == .string("attempts_exhausted"))
        #expect(try h.events(for: "crasher").count == 1)
        #expect(try h.waitForState("after", "done", timeout: 10))
    }

    @Test func redisKilledAndRestartedMidRun() throws {
        // appendfsync always: every acknowledged write survives the SIGKILL of the server.
        let h = try QueueHarness(extraConfig: ["appendfsync always"])
        let logs = try TemporaryDirectory(prefix: "kd-logs")
        defer { logs.remove() }
        let ids = (0..<120).map { "r\($0)" }
        for id in ids { try h.submit(#"{"id":"\#(id)","prompt":"p","metadata":{"test":{"sleep_ms":15}}}"#) }
        let workers = try ["x", "y"].map { try start($0, h, logs: logs) }
        defer { for w in workers { w.terminate() } }
        #expect(try eventually(timeout: 10) { try h.events().count >= 25 })
        h.server.stop(hard: true)
        // Restarted once a worker has seen the outage (it logs its retry), not after a guessed delay.
        #expect(eventually(timeout: 10) { workers.contains { $0.log.contains("retrying in") } })
        try h.server.restart()
        _ = try? h.admin.command(["PING"])  // the test's own connection broke too: this call replaces it
        #expect(
            try eventually(timeout: 40) { try ids.allSatisfy { try h.state($0) == "done" } },
            "not done: \(ids.filter { (try? h.state($0)) != "done" }); \(workers.map(\.log))")
        for id in ids { #expect(try h.events(for: id).count == 1, "\(id)") }
        #expect(try h.length(h.keys.queue("default")) == 0)
        for w in workers { #expect(try h.length(h.keys.processing(w.name)) == 0) }
        for w in workers { #expect(w.isRunning, "worker \(w.name) died: \(w.log)") }
        #expect(workers.contains { $0.log.contains("retrying in") }, "no worker saw the outage")
    }

    /// 1,000 jobs across three worker processes: valid, invalid and poison jobs mixed.
    @Test func thousandJobsAcrossThreeProcesses() throws {
        let h = try QueueHarness()
        let logs = try TemporaryDirectory(prefix: "kd-logs")
        defer { logs.remove() }
        var valid: [String] = []
        var invalid: [(id: String, code: String, field: String)] = []
        var poison: [String] = []
        var payloads: [[UInt8]] = []
        var random = SeededGenerator(seed: 1000)
        let badFields: [(String, String, String)] = [
            (#""width":4000"#, "out_of_range", "width"), (#""steps":"many""#, "wrong_type", "steps"),
            (#""colour":1"#, "unknown_field", "colour"), (#""init_image":"/abs.png""#, "path_traversal", "init_image"),
            (#""sampler":"euler""#, "invalid_value", "sampler"),
        ]
        for i in 0..<1000 {
            let id = "m\(i)"
            switch i % 6 {
            case 0, 3:
                let (fragment, code, field) = badFields.randomElement(using: &random)!
                invalid.append((id, code, field))
                payloads.append(Array(#"{"id":"\#(id)","prompt":"p",\#(fragment)}"#.utf8))
            case 1:
                poison.append(id)
                payloads.append(Array(#"{"id":"\#(id)","prompt":"p","metadata":{"test":{"fail":"poison"}}}"#.utf8))
            default:
                valid.append(id)
                payloads.append(Array(#"{"id":"\#(id)","prompt":"p","width":64,"height":64}"#.utf8))
            }
        }
        let workers = try ["p1", "p2", "p3"].map { try start($0, h, logs: logs, extra: ["--take-batch", "4"]) }
        defer { for w in workers { w.terminate() } }
        try h.producer.submitMany(payloads, queue: "default")
        let all = valid + invalid.map(\.id) + poison
        #expect(
            try eventually(timeout: 60) {
                let states = try h.admin.pipeline(all.map { ["HGET", h.keys.job($0), "state"] })
                return states.allSatisfy { ["done", "failed", "dead"].contains($0.text ?? "") }
            }, "\(workers.map(\.log))")
        let states = Dictionary(
            uniqueKeysWithValues: zip(all, try h.admin.pipeline(all.map { ["HGET", h.keys.job($0), "state"] })))
        for id in valid { #expect(states[id]?.text == "done", "\(id)") }
        for id in poison { #expect(states[id]?.text == "dead", "\(id)") }
        for bad in invalid {
            #expect(states[bad.id]?.text == "failed")
            let error = try JSONValue.parse(Array((h.producer.status(bad.id)["error"] ?? "").utf8))
            #expect(error["code"] == .string(bad.code) && error["field"] == .string(bad.field), "\(bad.id)")
        }
        // Exactly one event per job, each in the state of its hash.
        let events = try h.events()
        #expect(events.count == all.count)
        var perJob: [String: Int] = [:]
        for e in events { perJob[e["id"]?.stringValue ?? "?", default: 0] += 1 }
        #expect(perJob.values.allSatisfy { $0 == 1 } && perJob.count == all.count)
        // Every valid job ran exactly once to completion: one set of files each.
        #expect(h.storedFiles().count == valid.count * 2)
        let dead = try h.admin.command(["LRANGE", h.keys.dead, "0", "-1"]).array ?? []
        #expect(dead.count == poison.count)
        for w in workers { #expect(try h.length(h.keys.processing(w.name)) == 0) }
        #expect(try h.length(h.keys.queue("default")) == 0)
        #expect(try h.admin.command(["ZCARD", h.keys.delayed]) == .integer(0))
        // Work was spread: each process finished some jobs (its name is in the events).
        for w in workers { #expect(events.contains { $0["worker"] == .string(w.name) }, "\(w.name) did nothing") }
    }
}
