import Foundation
import JobQueue
import Redis
import TestSupport
import Testing

@testable import Bench

/// `bench queue` through the library, against a real redis-server the test starts.
@Suite struct QueueBenchTests {
    @Test func jobsGoThroughTheQueue() throws {
        let server = try RedisServer()
        let config = RedisConfiguration(.unix(path: server.socketPath))
        let result = try QueueBench.run(
            QueueBenchOptions(
                server: .external(config), jobs: 300, workers: 2, takeBatch: 16, warmUpJobs: 50,
                redisBenchmarkRequests: nil))
        #expect((result.jobs, result.workers, result.takeBatch) == (300, 2, 16))
        #expect(result.seconds > 0 && result.jobsPerSecond > 0)
        // Taken 16 at a time by two loops: far fewer round trips than jobs, but some.
        #expect(result.roundTripsPerJob > 0 && result.roundTripsPerJob < 1, "\(result.roundTripsPerJob)")
        #expect(result.commandsPerJob > 1, "\(result.commandCalls)")
        #expect(
            result.commandCalls["info"] == nil && (result.commandCalls["evalsha"] ?? 0) > 0, "\(result.commandCalls)")
        #expect(result.replicasWaitedFor == 0 && result.waitTimeouts == 0)
        #expect(result.redisBenchmarkLPUSH == nil)

        // Every timed job done, with its event (the warm-up's events were deleted), and nothing left queued.
        let client = RedisClient(config)
        let keys = KeySpace(prefix: "kd-bench:")
        #expect(try client.command(["XLEN", keys.events]).integer == 300)
        #expect(try client.command(["LLEN", keys.queue("bench")]).integer == 0)
        #expect(try client.command(["HGET", keys.job("m299"), "state"]).text == "done")

        let object = try #require(
            try JSONSerialization.jsonObject(with: Data(result.jsonDocument().utf8)) as? [String: Any])
        #expect(
            Set(object.keys) == [
                "jobs_per_s", "round_trips_per_job", "redis_commands_per_job", "redis_benchmark_lpush_per_s", "jobs",
                "workers", "take_batch", "wait_replicas", "wait_timeouts",
            ], "\(object)")
        #expect(object["redis_benchmark_lpush_per_s"] is NSNull, "\(object)")
        #expect(object["jobs"] as? Int == 300 && object["wait_replicas"] as? Int == 0, "\(object)")
        #expect(result.lines.count == 4 && result.lines[0].hasPrefix("queue: 300 jobs, 2 worker loop(s)"))
    }
}
