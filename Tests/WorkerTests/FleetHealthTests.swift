import Foundation
import JobQueue
import TestSupport
import Testing

@testable import Worker

@Suite struct FleetHealthTests {
    func worker(_ name: String, age: Int64?) -> FleetHealth.WorkerInfo {
        .init(name: name, heartbeatAgeMs: age, state: "idle", current: "", host: "h", model: "m")
    }

    @Test func verdicts() {
        let idle = FleetHealth(workers: [worker("a", age: 100)], queues: [], dead: 0, delayed: 0)
        #expect(idle.verdict().0 == .healthy)
        let nobody = FleetHealth(
            workers: [worker("a", age: nil)],
            queues: [.init(name: "default", depth: 3, oldestId: "x", oldestWaitMs: 10)],
            dead: 0, delayed: 0)
        #expect(nobody.verdict().0 == .critical)
        let emptyFleet = FleetHealth(workers: [], queues: [.init(name: "q", depth: 0)], dead: 0, delayed: 0)
        #expect(emptyFleet.verdict().0 == .healthy)
        let deadLetters = FleetHealth(workers: [worker("a", age: 100)], queues: [], dead: 2, delayed: 0)
        #expect(deadLetters.verdict().0 == .degraded)
        let slow = FleetHealth(
            workers: [worker("a", age: 100)],
            queues: [.init(name: "default", depth: 1, oldestId: "x", oldestWaitMs: 600_000)], dead: 0, delayed: 0)
        let (verdict, reasons) = slow.verdict(maxWaitMs: 300_000)
        #expect(verdict == .degraded && reasons.first?.contains("600 s") == true)
    }

    @Test func readsTheFleetFromRedis() throws {
        let server = try RedisServer()
        let client = RedisClient(RedisConfiguration(.unix(path: server.socketPath)))
        try client.connect()
        let keys = KeySpace()
        // One live worker, one whose heartbeat key expired, two waiting jobs (one submitted with its enqueue time).
        _ = try client.pipeline([
            ["SADD", keys.workers, "live", "gone"],
            ["HSET", keys.worker("live"), "last_beat_ms", "1000", "state", "running", "current", "j0", "host", "h1"],
            ["SET", keys.workerQueues("live"), "high,default"],
            ["LPUSH", keys.queue("high"), #"{"id":"j2","prompt":"p"}"#, #"{"id":"j1","prompt":"p"}"#],
            ["HSET", keys.job("j2"), "enqueued_ms", "400"], ["HSET", keys.job("j1"), "enqueued_ms", "900"],
            ["RPUSH", keys.dead, "x"],
        ])
        let health = try FleetHealth.read(client: client, keys: keys, queues: ["default"], nowMs: 1500)
        #expect(health.workers.map(\.name) == ["gone", "live"])
        #expect(health.workers[0].heartbeatAgeMs == nil && health.workers[1].heartbeatAgeMs == 500)
        #expect(health.queues.map(\.name) == ["default", "high"])
        #expect(
            health.queues[1].depth == 2 && health.queues[1].oldestId == "j2" && health.queues[1].oldestWaitMs == 1100)
        #expect(health.dead == 1)
        #expect(health.verdict().0 == .degraded)
        #expect(health.report.contains("no heartbeat") && health.report.contains("next j2"))
    }
}
