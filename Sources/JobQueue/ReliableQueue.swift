import Foundation

/// How a worker uses the queue: which queues, its name, and the timing of heartbeats, retries and retention.
public struct QueueConfiguration: Equatable, Sendable {
    public var keys = KeySpace()
    /// Queues in priority order: a job from an earlier queue is always taken before one from a later queue.
    public var queues: [String]
    /// This worker's name: the suffix of its processing list and heartbeat key. A restart under the same name takes
    /// its own leftovers back at once.
    public var worker: String
    /// Heartbeats every interval; the heartbeat key lives two intervals; a reaper runs every interval, so a dead
    /// worker's jobs are back in their queue within three intervals.
    public var heartbeatInterval: Duration = .seconds(5)
    /// How long one blocking take waits on the server (kept short so stopping is noticed).
    public var blockTimeout: Duration = .seconds(2)
    /// With several queues, how long an idle worker blocks on the first before scanning all again.
    public var multiQueuePoll: Duration = .milliseconds(250)
    /// Jobs taken per round trip.
    public var takeBatch = 1
    /// Attempts before a failing job goes to the dead list.
    public var maxAttempts = 3
    /// Delay before retry n (1-based): capped exponential with jitter.
    public var retryBackoff = Backoff(initial: .seconds(1), cap: .seconds(300), floor: .milliseconds(100))
    /// How long finished job hashes are kept.
    public var retention: Duration = .seconds(86_400)
    /// Approximate cap on the events stream (`XADD … MAXLEN ~`).
    public var eventsMaxLength = 100_000
    /// How often a running job's cancel flag is read (between sampling steps, at most this often).
    public var cancelCheckInterval: Duration = .milliseconds(250)

    public init(queues: [String], worker: String) {
        self.queues = queues
        self.worker = worker
    }

    /// Checks names and numbers; the worker refuses to start otherwise.
    public func validate() throws(JobError) {
        guard !queues.isEmpty else { throw JobError(.invalidValue, "at least one queue is needed", field: "queues") }
        for q in queues where !KeySpace.isValidName(q) {
            throw JobError(.invalidValue, "queue name \"\(q)\" must match [A-Za-z0-9._:@-]{1,128}", field: "queues")
        }
        guard KeySpace.isValidName(worker) else {
            throw JobError(
                .invalidValue, "worker name \"\(worker)\" must match [A-Za-z0-9._:@-]{1,128}", field: "worker")
        }
        guard maxAttempts >= 1 else { throw JobError(.outOfRange, "max attempts must be ≥ 1", field: "max_attempts") }
        guard takeBatch >= 1 else { throw JobError(.outOfRange, "take batch must be ≥ 1", field: "take_batch") }
        guard heartbeatInterval >= .milliseconds(10), blockTimeout >= .milliseconds(10) else {
            throw JobError(.outOfRange, "intervals must be at least 10 ms", field: "heartbeat_interval")
        }
    }
}

/// A job moved into this worker's processing list: its queue and its payload, byte for byte.
public struct TakenJob: Equatable, Sendable {
    public var queue: String
    public var payload: [UInt8]
}

/// What the claim script said about a job.
public enum ClaimResult: Equatable, Sendable {
    /// Finished already (a duplicate delivery): dropped from the processing list.
    case alreadyFinal(state: String)
    /// A cancel flag was set before it started.
    case cancelRequested(Attempt)
    /// Started more often than allowed (workers died running it).
    case exhausted(Attempt)
    case run(Attempt)
}

/// One attempt of a job, as the claim recorded it.
public struct Attempt: Equatable, Sendable {
    public var number: Int
    /// When a worker first took the job (ms since the epoch); fixes its store directory across attempts.
    public var firstSeenMs: Int64
    /// When a producer using `JobProducer` queued it, if known.
    public var enqueuedMs: Int64?
    /// When this attempt was claimed.
    public var startedMs: Int64

    public init(number: Int, firstSeenMs: Int64, enqueuedMs: Int64? = nil, startedMs: Int64) {
        (self.number, self.firstSeenMs, self.enqueuedMs, self.startedMs) = (number, firstSeenMs, enqueuedMs, startedMs)
    }
}

/// A final transition to make: the state, its event, and what the hash and dead list get.
public struct Finish: Sendable {
    public var jobKeyId: String?
    public var payload: [UInt8]
    public var state: FinalState
    public var event: JSONValue
    public var result: JSONValue?
    public var error: JobError?
    public var deadEntry: JSONValue?

    public init(
        jobKeyId: String? = nil, payload: [UInt8], state: FinalState, event: JSONValue, result: JSONValue? = nil,
        error: JobError? = nil, deadEntry: JSONValue? = nil
    ) {
        (self.jobKeyId, self.payload, self.state, self.event) = (jobKeyId, payload, state, event)
        (self.result, self.error, self.deadEntry) = (result, error, deadEntry)
    }
}

public enum FinalState: String, Sendable, CaseIterable {
    case done, failed, cancelled, dead
}

/// One `EVALSHA` of a pipeline: the script, its keys, its binary-safe arguments.
struct ScriptCall {
    var script: Script
    var keys: [String]
    var args: [[UInt8]]
    init(_ script: Script, _ keys: [String], _ args: [[UInt8]]) {
        (self.script, self.keys, self.args) = (script, keys, args)
    }
}

func utf8(_ strings: [String]) -> [[UInt8]] { strings.map { Array($0.utf8) } }

/// The Redis side of the reliable queue for one worker thread: every call is blocking and goes through one
/// `RedisClient`. Scripts run by SHA and are reloaded after `NOSCRIPT`.
public final class ReliableQueue: @unchecked Sendable {
    public let client: RedisClient
    public let configuration: QueueConfiguration
    private var keys: KeySpace { configuration.keys }

    public init(client: RedisClient, configuration: QueueConfiguration) {
        self.client = client
        self.configuration = configuration
    }

    // MARK: - Scripts

    /// Runs scripts in one pipeline; those the server does not know are loaded and run again.
    func eval(_ calls: [ScriptCall]) throws(RedisError) -> [RedisReply] {
        let commands = calls.map { call in
            (["EVALSHA", call.script.sha, String(call.keys.count)] + call.keys).map { Array($0.utf8) } + call.args
        }
        var replies = try client.pipeline(bytes: commands)
        let missing = replies.indices.filter {
            if case .error(let m) = replies[$0] { return m.hasPrefix("NOSCRIPT") }
            return false
        }
        if !missing.isEmpty {
            let scripts = Dictionary(
                missing.map { (calls[$0].script.name, calls[$0].script) }, uniquingKeysWith: { a, _ in a })
            let loads = try client.pipeline(scripts.values.map { ["SCRIPT", "LOAD", $0.source] })
            for reply in loads { if case .error(let m) = reply { throw RedisError.server(m) } }
            let again = try client.pipeline(bytes: missing.map { commands[$0] })
            for (i, reply) in zip(missing, again) { replies[i] = reply }
        }
        return replies
    }

    func evalOne(_ script: Script, keys: [String], args: [[UInt8]]) throws(RedisError) -> RedisReply {
        let reply = try eval([ScriptCall(script, keys, args)])[0]
        if case .error(let m) = reply { throw RedisError.server(m) }
        return reply
    }

    // MARK: - Taking

    /// Takes up to `max` jobs, queues in priority order. When all are empty and `block` is set, waits on the
    /// server (at most `blockTimeout`) for the first queue, or briefly when there are several queues.
    public func take(max: Int, block: Bool) throws(RedisError) -> [TakenJob] {
        let processing = keys.processing(configuration.worker)
        let reply = try evalOne(
            Scripts.take, keys: [processing] + configuration.queues.map(keys.queue), args: utf8([String(max)]))
        var taken: [TakenJob] = []
        let items = reply.array ?? []
        var i = 0
        while i + 1 < items.count {
            if let index = items[i].integer, case .string(let payload) = items[i + 1],
                configuration.queues.indices.contains(index - 1)
            {
                taken.append(TakenJob(queue: configuration.queues[index - 1], payload: payload))
            }
            i += 2
        }
        guard taken.isEmpty, block else { return taken }
        let wait = configuration.queues.count == 1 ? configuration.blockTimeout : configuration.multiQueuePoll
        let queue = configuration.queues[0]
        let moved = try client.withCommandTimeout(wait + client.configuration.commandTimeout) { () throws(RedisError) in
            try client.command(["BLMOVE", keys.queue(queue), processing, "RIGHT", "LEFT", Self.secondsText(wait)])
        }
        if case .string(let payload) = moved { return [TakenJob(queue: queue, payload: payload)] }
        return []
    }

    /// Starts attempts of taken jobs (one round trip for all). `jobIds[i]` is nil for a payload with no usable id.
    public func claim(_ jobs: [(id: String, taken: TakenJob)], nowMs: Int64) throws(RedisError) -> [ClaimResult] {
        guard !jobs.isEmpty else { return [] }
        let processing = keys.processing(configuration.worker)
        let replies = try eval(
            jobs.map { job in
                ScriptCall(
                    Scripts.claim, [processing, keys.job(job.id), keys.cancel(job.id)],
                    [job.taken.payload]
                        + utf8([
                            configuration.worker, job.taken.queue, String(nowMs), String(configuration.maxAttempts),
                        ]))
            })
        var results: [ClaimResult] = []
        for reply in replies {
            if case .error(let m) = reply { throw RedisError.server(m) }
            guard let items = reply.array, let kind = items.first?.text else {
                throw RedisError(.protocolError, "unexpected claim reply \(reply)")
            }
            if kind == "final" {
                results.append(.alreadyFinal(state: items.count > 1 ? items[1].text ?? "" : ""))
                continue
            }
            guard items.count >= 4 else { throw RedisError(.protocolError, "unexpected claim reply \(reply)") }
            let attempt = Attempt(
                number: items[1].integer ?? 0, firstSeenMs: Int64(items[2].text ?? "") ?? nowMs,
                enqueuedMs: Int64(items[3].text ?? ""), startedMs: nowMs)
            switch kind {
            case "cancel": results.append(.cancelRequested(attempt))
            case "exhausted": results.append(.exhausted(attempt))
            default: results.append(.run(attempt))
            }
        }
        return results
    }

    // MARK: - Outcomes

    /// Makes final transitions (one round trip for all). Returns, for each, whether this call made it (false: the
    /// job was final already, so no second event was emitted).
    @discardableResult
    public func finish(_ finishes: [Finish], nowMs: Int64) throws(RedisError) -> [Bool] {
        guard !finishes.isEmpty else { return [] }
        let processing = keys.processing(configuration.worker)
        let replies = try eval(
            finishes.map { f in
                guard let id = f.jobKeyId else {
                    return ScriptCall(
                        Scripts.bury, [processing, keys.events, keys.dead],
                        [f.payload]
                            + utf8([
                                f.event.serialized, f.deadEntry?.serialized ?? "{}",
                                String(configuration.eventsMaxLength),
                            ]))
                }
                return ScriptCall(
                    Scripts.finish, [processing, keys.job(id), keys.events, keys.cancel(id), keys.dead],
                    [f.payload]
                        + utf8([
                            f.state.rawValue, f.event.serialized, f.result?.serialized ?? "",
                            f.error?.json.serialized ?? "",
                            String(nowMs), String(Self.milliseconds(configuration.retention)),
                            String(configuration.eventsMaxLength), f.deadEntry?.serialized ?? "",
                        ]))
            })
        var made: [Bool] = []
        for reply in replies {
            if case .error(let m) = reply { throw RedisError.server(m) }
            made.append(reply.integer == 1)
        }
        // Durable on the replicas before the events count as published: a failover now keeps them. A WAIT that
        // times out is counted (`RedisClient.waitShortfalls`), not retried: should the master die before its
        // replicas caught up, the jobs are still in this worker's processing list on the promoted replica and are
        // finished again there (see `QueueWorker`).
        try client.waitForReplicas()
        return made
    }

    /// Schedules another attempt after `delay`, if this worker still holds the job. Returns whether it did.
    @discardableResult
    public func retry(
        id: String, taken: TakenJob, error: JobError, delay: Duration, nowMs: Int64
    ) throws(RedisError) -> Bool {
        let due = nowMs + Self.milliseconds(delay)
        let member = Self.delayedMember(queue: taken.queue, payload: taken.payload)
        let reply = try evalOne(
            Scripts.retry, keys: [keys.processing(configuration.worker), keys.job(id), keys.delayed],
            args: [taken.payload] + utf8([member, String(due), error.json.serialized]))
        return reply.integer == 1
    }

    /// Moves jobs whose retry time has come back to their queues; returns how many moved.
    @discardableResult
    public func promoteDue(nowMs: Int64, limit: Int = 100) throws(RedisError) -> Int {
        let due = try client.command([
            "ZRANGEBYSCORE", keys.delayed, "-inf", String(nowMs), "LIMIT", "0", String(limit),
        ])
        let members = (due.array ?? []).compactMap(\.text)
        guard !members.isEmpty else { return 0 }
        var calls: [ScriptCall] = []
        for member in members {
            guard let node = try? JSONValue.parse(Array(member.utf8)), let queue = node["q"]?.stringValue,
                let payload = node["p"]?.stringValue, KeySpace.isValidName(queue)
            else {
                // Not written by this code: keep it visible in the dead list rather than dropping it.
                calls.append(ScriptCall(Scripts.promote, [keys.delayed, keys.dead], utf8([member, member])))
                continue
            }
            calls.append(ScriptCall(Scripts.promote, [keys.delayed, keys.queue(queue)], utf8([member, payload])))
        }
        return try eval(calls).reduce(0) { $0 + ($1.integer ?? 0) }
    }

    static func delayedMember(queue: String, payload: [UInt8]) -> String {
        JSONValue.object(["q": .string(queue), "p": .string(String(decoding: payload, as: UTF8.self))]).serialized
    }

    // MARK: - Recovery

    /// Hands back the jobs in `worker`'s processing list (all but `keeping`) to the front of their queues.
    /// Returns how many were handed back.
    @discardableResult
    public func handBack(
        worker: String, keeping: [[UInt8]] = [], recoveredBy: String, fallbackQueues: [String]
    ) throws(RedisError) -> Int {
        let processing = keys.processing(worker)
        let entries = (try client.command(["LRANGE", processing, "0", "-1"]).array ?? []).compactMap { reply in
            if case .string(let bytes) = reply { return bytes }
            return nil
        }
        var keep = keeping
        var pending: [(payload: [UInt8], id: String?)] = []
        for entry in entries {
            if let i = keep.firstIndex(of: entry) {
                keep.remove(at: i)
                continue
            }
            pending.append((entry, Self.jobId(of: entry)))
        }
        guard !pending.isEmpty else { return 0 }
        let ids = pending.compactMap(\.id)
        var origin: [String: String] = [:]
        if !ids.isEmpty {
            let queues = try client.pipeline(ids.map { ["HGET", keys.job($0), "queue"] })
            for (id, reply) in zip(ids, queues) { if let q = reply.text, KeySpace.isValidName(q) { origin[id] = q } }
        }
        let fallback = fallbackQueues.first ?? configuration.queues[0]
        let replies = try eval(
            pending.map { p in
                let queue = p.id.flatMap { origin[$0] } ?? fallback
                return ScriptCall(
                    Scripts.requeue, [processing, keys.queue(queue), keys.job(p.id ?? "")],
                    [p.payload, Array(recoveredBy.utf8)])
            })
        return replies.reduce(0) { $0 + ($1.integer == 1 ? 1 : 0) }
    }

    /// The `id` of a payload, if it is a JSON object with a valid id.
    static func jobId(of payload: [UInt8]) -> String? {
        guard payload.count <= 4 * 1024 * 1024, let node = try? JSONValue.parse(payload, invalidUTF8: .replace),
            let id = node["id"]?.stringValue,
            JobDecoder.isValidId(id)
        else { return nil }
        return id
    }

    /// Writes this worker's heartbeat (hash with a TTL of two intervals) and registers it.
    public func heartbeat(fields: [String: String]) throws(RedisError) {
        let key = keys.worker(configuration.worker)
        let ttl = Self.milliseconds(configuration.heartbeatInterval) * 2
        var hset = ["HSET", key]
        for (k, v) in fields.sorted(by: { $0.key < $1.key }) { hset += [k, v] }
        let replies = try client.pipeline([
            hset, ["PEXPIRE", key, String(ttl)], ["SADD", keys.workers, configuration.worker],
            ["SET", keys.workerQueues(configuration.worker), configuration.queues.joined(separator: ",")],
        ])
        for reply in replies { if case .error(let m) = reply { throw RedisError.server(m) } }
    }

    /// If this worker wins the reaper lock: hands back the jobs of every registered worker whose heartbeat has
    /// expired, and forgets those workers. Returns how many jobs were handed back.
    @discardableResult
    public func reap() throws(RedisError) -> Int {
        let lockTTL = Self.milliseconds(configuration.heartbeatInterval)
        let won = try client.command(["SET", keys.reaperLock, configuration.worker, "NX", "PX", String(lockTTL)])
        guard won == .status("OK") else { return 0 }
        let names = (try client.command(["SMEMBERS", keys.workers]).array ?? []).compactMap(\.text)
            .filter { $0 != configuration.worker && KeySpace.isValidName($0) }
        guard !names.isEmpty else { return 0 }
        let alive = try client.pipeline(names.map { ["EXISTS", keys.worker($0)] })
        var handed = 0
        for (name, reply) in zip(names, alive) where reply.integer == 0 {
            let stored = try client.command(["GET", keys.workerQueues(name)]).text ?? ""
            let queues = stored.split(separator: ",").map(String.init).filter(KeySpace.isValidName)
            handed += try handBack(worker: name, recoveredBy: "reaper:\(configuration.worker)", fallbackQueues: queues)
            // Forget the worker only once its list is empty (a job could have arrived meanwhile).
            let left = try client.command(["LLEN", keys.processing(name)]).integer ?? 0
            if left == 0, try client.command(["EXISTS", keys.worker(name)]).integer == 0 {
                _ = try client.pipeline([["SREM", keys.workers, name], ["DEL", keys.workerQueues(name)]])
            }
        }
        return handed
    }

    /// Removes this worker's heartbeat and registration (on a clean stop, with an empty processing list).
    public func deregister() throws(RedisError) {
        let left = try client.command(["LLEN", keys.processing(configuration.worker)]).integer ?? 0
        var commands = [["DEL", keys.worker(configuration.worker)]]
        if left == 0 {
            commands += [
                ["SREM", keys.workers, configuration.worker], ["DEL", keys.workerQueues(configuration.worker)],
            ]
        }
        _ = try client.pipeline(commands)
    }

    /// Whether a cancel flag is set for `id`.
    public func isCancelRequested(_ id: String) throws(RedisError) -> Bool {
        try client.command(["EXISTS", keys.cancel(id)]).integer == 1
    }

    // MARK: - Helpers

    public static func milliseconds(_ d: Duration) -> Int64 {
        Int64(d.components.seconds) * 1000 + Int64(d.components.attoseconds / 1_000_000_000_000_000)
    }

    static func secondsText(_ d: Duration) -> String {
        String(format: "%.3f", d.seconds)
    }

    /// Milliseconds since the epoch.
    public static func nowMs() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }
}

/// The producer side: queue jobs, cancel them, read their state.
public final class JobProducer: @unchecked Sendable {
    public let client: RedisClient
    public let keys: KeySpace

    public init(client: RedisClient, keys: KeySpace = KeySpace()) {
        self.client = client
        self.keys = keys
    }

    /// Queues job JSON on `queue` (LPUSH), recording the time it was queued in its hash when it has an id.
    public func submit(_ payload: [UInt8], queue: String) throws(RedisError) {
        var commands: [[[UInt8]]] = []
        if let id = ReliableQueue.jobId(of: payload) {
            commands.append(
                ["HSETNX", keys.job(id), "enqueued_ms", String(ReliableQueue.nowMs())].map { Array($0.utf8) })
        }
        commands.append([Array("LPUSH".utf8), Array(keys.queue(queue).utf8), payload])
        for reply in try client.pipeline(bytes: commands) {
            if case .error(let m) = reply { throw RedisError.server(m) }
        }
        // A push the master acknowledged but had not replicated is lost in a failover: wait for the replicas, and
        // say so when they did not all confirm (the caller may push again; the id keeps it to one run).
        if let acked = try client.waitForReplicas(), acked < (try client.replicasToWaitFor()) {
            throw RedisError(
                .connection,
                "job pushed, but only \(acked) replica(s) confirmed it within \(client.configuration.waitTimeout): "
                    + "a failover now could lose it; push it again (same id) if it never runs")
        }
    }

    /// Queues many payloads in pipelines of `chunk` (no hash writes: for loads and benchmarks).
    public func submitMany(_ payloads: [[UInt8]], queue: String, chunk: Int = 500) throws(RedisError) {
        var start = 0
        while start < payloads.count {
            let end = min(start + chunk, payloads.count)
            try client.command(bytes: utf8(["LPUSH", keys.queue(queue)]) + payloads[start..<end])
            start = end
        }
    }

    /// Asks for `id` to be cancelled: before it starts, or between its sampling steps.
    public func cancel(_ id: String, ttl: Duration = .seconds(86_400)) throws(RedisError) {
        try client.command(["SET", keys.cancel(id), "1", "PX", String(ReliableQueue.milliseconds(ttl))])
        try client.waitForReplicas()  // so a failover now keeps the flag
    }

    /// The job hash of `id` (empty when unknown).
    public func status(_ id: String) throws(RedisError) -> [String: String] {
        try client.command(["HGETALL", keys.job(id)]).fields
    }

    /// The final event of `id`, looked up among the newest `scan` entries of the events stream (nil when not there).
    public func event(for id: String, scan: Int = 10_000) throws(RedisError) -> String? {
        let entries = try client.command(["XREVRANGE", keys.events, "+", "-", "COUNT", String(scan)]).array ?? []
        for entry in entries {
            guard let fields = entry.array?.last?.array else { continue }
            var i = 0
            while i + 1 < fields.count {
                if fields[i].text == "event", let text = fields[i + 1].text,
                    let node = try? JSONValue.parse(Array(text.utf8)), node["id"] == .string(id)
                {
                    return text
                }
                i += 2
            }
        }
        return nil
    }
}
