import ArgumentParser
import Bench
import Redis

extension BenchCommand {
    /// `bench queue`: `QueueBench` against a private redis-server (or the one `--redis` names).
    struct Queue: ParsableCommand {
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

        @OptionGroup var output: JSONOutputOption

        func validate() throws {
            guard jobs >= 1, workers >= 1, batch >= 1 else { throw ValidationError("--jobs, --workers, --batch ≥ 1") }
            guard waitReplicas.map({ $0 >= 0 }) ?? true else { throw ValidationError("--wait-replicas ≥ 0") }
            guard !(replica && redis != nil) else { throw ValidationError("--replica is for the private redis-server") }
        }

        func run() throws {
            let server: QueueBenchOptions.Server =
                try redis.map { .external(try RedisConfiguration(url: $0)) } ?? (replica ? .localWithReplica : .local)
            let result = try QueueBench.run(
                QueueBenchOptions(
                    server: server, jobs: jobs, workers: workers, takeBatch: batch, waitReplicas: waitReplicas))
            try output.print(lines: result.lines, document: result.jsonDocument)
        }
    }
}
