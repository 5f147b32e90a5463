import Foundation
import JobQueue

/// What `kandinsky-worker health` reports: workers and their heartbeat ages, queue depths, the oldest waiting job,
/// dead letters — and a verdict with an exit status (0 healthy, 1 degraded, 2 critical).
public struct FleetHealth: Sendable, Equatable {
    public struct WorkerInfo: Sendable, Equatable {
        public var name: String
        /// Milliseconds since its last heartbeat, nil when its heartbeat key has expired (the worker is gone).
        public var heartbeatAgeMs: Int64?
        public var state: String
        public var current: String
        public var host: String
        public var model: String
        /// The Redis master the worker uses, and its last failover followed (from its heartbeat hash).
        public var redisMaster: String? = nil
        public var lastFailoverMs: Int64? = nil
        public var previousMaster: String? = nil
        /// The device it runs on, and that device's memory in use and in all (MiB; nil on the CPU).
        public var device: String = ""
        public var deviceMemoryMB: (used: Int, total: Int)? = nil

        public static func == (a: WorkerInfo, b: WorkerInfo) -> Bool {
            (a.name, a.heartbeatAgeMs, a.state, a.current, a.host, a.model) == (
                b.name, b.heartbeatAgeMs, b.state, b.current, b.host, b.model
            )
                && (a.redisMaster, a.lastFailoverMs, a.previousMaster, a.device)
                    == (b.redisMaster, b.lastFailoverMs, b.previousMaster, b.device)
                && a.deviceMemoryMB?.used == b.deviceMemoryMB?.used
                && a.deviceMemoryMB?.total == b.deviceMemoryMB?.total
        }
    }

    /// The Redis servers behind the fleet, as the health command found them.
    public struct RedisInfo: Sendable, Equatable {
        /// How the master was found: the URL's target (`master "m" via sentinels …`, a cluster, or the server).
        public var target: String
        public var master: String
        /// As the master's `ROLE` lists them (with their replication offsets).
        public var replicas: [String]
    }

    public struct QueueInfo: Sendable, Equatable {
        public var name: String
        public var depth: Int
        /// The job next in line (the right end of the list) and, when its producer recorded it, how long it waited.
        public var oldestId: String?
        public var oldestWaitMs: Int64?
    }

    public enum Verdict: Int32, Sendable {
        case healthy = 0, degraded = 1, critical = 2
    }

    public var workers: [WorkerInfo]
    public var queues: [QueueInfo]
    public var dead: Int
    public var delayed: Int
    public var redis: RedisInfo? = nil

    /// The verdict, with the reasons behind it.
    /// - critical: no live worker while jobs wait (nothing will run them);
    /// - degraded: a registered worker stopped beating (its jobs are being handed back), dead letters exist, or the
    ///   oldest waiting job has waited longer than `maxWaitMs`.
    public func verdict(maxWaitMs: Int64 = 300_000) -> (Verdict, [String]) {
        var reasons: [String] = []
        let live = workers.filter { $0.heartbeatAgeMs != nil }
        let waiting = queues.reduce(0) { $0 + $1.depth }
        if live.isEmpty && waiting > 0 {
            return (.critical, ["no live worker while \(waiting) job(s) wait"])
        }
        let gone = workers.filter { $0.heartbeatAgeMs == nil }.map(\.name)
        if !gone.isEmpty { reasons.append("worker(s) without heartbeat: \(gone.joined(separator: ", "))") }
        if dead > 0 { reasons.append("\(dead) job(s) in the dead-letter list") }
        for q in queues {
            if let wait = q.oldestWaitMs, wait > maxWaitMs {
                reasons.append("queue \(q.name): oldest job waited \(wait / 1000) s")
            }
        }
        return (reasons.isEmpty ? .healthy : .degraded, reasons)
    }

    /// Reads the fleet's state from Redis.
    public static func read(
        client: RedisClient, keys: KeySpace, queues extraQueues: [String], nowMs: Int64
    ) throws(RedisError) -> FleetHealth {
        let names = (try client.command(["SMEMBERS", keys.workers]).array ?? []).compactMap(\.text).sorted()
        var workers: [WorkerInfo] = []
        var queueNames = Set(extraQueues)
        for name in names {
            let fields = try client.command(["HGETALL", keys.worker(name)]).fields
            let age = fields["last_beat_ms"].flatMap(Int64.init).map { nowMs - $0 }
            var info = WorkerInfo(
                name: name, heartbeatAgeMs: fields.isEmpty ? nil : age, state: fields["state"] ?? "gone",
                current: fields["current"] ?? "", host: fields["host"] ?? "", model: fields["model"] ?? "",
                redisMaster: fields["redis_master"],
                lastFailoverMs: fields["redis_last_failover_ms"].flatMap(Int64.init),
                previousMaster: fields["redis_previous_master"])
            info.device = fields["device"] ?? ""
            if let used = fields["device_memory_used_mb"].flatMap(Int.init),
                let total = fields["device_memory_total_mb"].flatMap(Int.init)
            {
                info.deviceMemoryMB = (used, total)
            }
            workers.append(info)
            if let q = try client.command(["GET", keys.workerQueues(name)]).text {
                queueNames.formUnion(q.split(separator: ",").map(String.init))
            }
        }
        var queues: [QueueInfo] = []
        for name in queueNames.sorted() {
            let depth = try client.command(["LLEN", keys.queue(name)]).integer ?? 0
            var info = QueueInfo(name: name, depth: depth, oldestId: nil, oldestWaitMs: nil)
            if depth > 0, let payload = try client.command(["LINDEX", keys.queue(name), "-1"]).text,
                let node = try? JSONValue.parse(Array(payload.utf8)), let id = node["id"]?.stringValue
            {
                info.oldestId = id
                let job = try client.command(["HGETALL", keys.job(id)]).fields
                info.oldestWaitMs = job["enqueued_ms"].flatMap(Int64.init).map { nowMs - $0 }
            }
            queues.append(info)
        }
        let dead = try client.command(["LLEN", keys.dead]).integer ?? 0
        let delayed = try client.command(["ZCARD", keys.delayed]).integer ?? 0
        var redis: RedisInfo?
        if let master = client.connectedEndpoint {
            var replicas: [String] = []
            if let items = try? client.command(["ROLE"]).array, items.first?.text == "master", items.count >= 3 {
                for r in items[2].array ?? [] {
                    guard let f = r.array, f.count >= 3, let host = f[0].text, let port = f[1].text else { continue }
                    replicas.append("\(host):\(port) (offset \(f[2].text ?? "?"))")
                }
            }
            redis = RedisInfo(target: client.configuration.target, master: master.description, replicas: replicas)
        }
        return FleetHealth(workers: workers, queues: queues, dead: dead, delayed: delayed, redis: redis)
    }

    /// A human report, one line per worker and queue.
    public var report: String {
        var lines: [String] = []
        lines.append("workers (\(workers.count)):")
        for w in workers {
            let beat = w.heartbeatAgeMs.map { String(format: "beat %.1f s ago", Double($0) / 1000) } ?? "no heartbeat"
            let current = w.current.isEmpty ? "" : " [\(w.current)]"
            var device = w.device.isEmpty ? "" : "  \(w.device)"
            if let m = w.deviceMemoryMB { device += " (\(m.used) of \(m.total) MiB in use, \(m.total - m.used) free)" }
            lines.append("  \(w.name)  \(w.state)\(current)  \(beat)  \(w.host)\(device)  \(w.model)")
        }
        lines.append("queues:")
        for q in queues {
            var line = "  \(q.name)  \(q.depth) waiting"
            if let id = q.oldestId {
                line += ", next \(id)" + (q.oldestWaitMs.map { " (waited \($0 / 1000) s)" } ?? "")
            }
            lines.append(line)
        }
        lines.append("delayed retries: \(delayed)   dead letters: \(dead)")
        if let redis {
            lines.append("redis: master \(redis.master) (\(redis.target))")
            lines.append("  replicas: " + (redis.replicas.isEmpty ? "none" : redis.replicas.joined(separator: ", ")))
        }
        if let last = workers.filter({ $0.lastFailoverMs != nil }).max(by: { $0.lastFailoverMs! < $1.lastFailoverMs! }),
            let at = last.lastFailoverMs
        {
            let when = ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: Double(at) / 1000))
            lines.append(
                "  last failover followed: \(when), \(last.previousMaster ?? "?") → \(last.redisMaster ?? "?") "
                    + "(worker \(last.name))")
        } else {
            lines.append("  last failover followed: none (by the workers registered now)")
        }
        return lines.joined(separator: "\n")
    }
}
