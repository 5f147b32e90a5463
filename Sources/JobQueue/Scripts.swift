import Crypto
import ResultStore

/// The Lua scripts behind every state change of a job. Each touches only keys passed in `KEYS` (so, with a hash
/// tag, one Cluster slot) and is atomic on the server: a worker killed at any instant leaves each job either still in
/// its processing list or fully moved on.
///
/// States in `kd:job:<id>`: `queued` (waiting, maybe in `kd:delayed`), `running`, and the final ones `done`,
/// `failed`, `cancelled`, `dead`. A final state is never left, and only the transition into it emits an event; that
/// is what makes the final event unique when a job runs twice.
enum Scripts {
    static let isFinal = """
        local function final(s) return s == 'done' or s == 'failed' or s == 'cancelled' or s == 'dead' end
        """

    /// Takes up to ARGV[1] jobs, queues scanned in priority order, each moved atomically into the processing list.
    /// KEYS: processing, queue1, queue2, …  Returns {queueIndex, payload, queueIndex, payload, …}.
    static let take = Script(
        name: "take",
        source: """
            local want = tonumber(ARGV[1])
            local out = {}
            for i = 2, #KEYS do
              while #out < 2 * want do
                local v = redis.call('LMOVE', KEYS[i], KEYS[1], 'RIGHT', 'LEFT')
                if not v then break end
                out[#out + 1] = i - 1
                out[#out + 1] = v
              end
              if #out >= 2 * want then break end
            end
            return out
            """)

    /// Starts an attempt of a job already in the processing list.
    /// KEYS: processing, job hash, cancel flag. ARGV: payload, worker, queue name, now ms, max attempts.
    /// Returns {'final', state} (already finished: dropped from the list), {'cancel', attempts, first_seen,
    /// enqueued}, {'exhausted', …} (more attempts than allowed: workers died running it) or {'run', …}.
    static let claim = Script(
        name: "claim",
        source: isFinal + """

            local state = redis.call('HGET', KEYS[2], 'state')
            if final(state) then
              redis.call('LREM', KEYS[1], -1, ARGV[1])
              return {'final', state}
            end
            local attempts = redis.call('HINCRBY', KEYS[2], 'attempts', 1)
            redis.call('HSETNX', KEYS[2], 'first_seen_ms', ARGV[4])
            redis.call('HSET', KEYS[2], 'state', 'running', 'worker', ARGV[2], 'queue', ARGV[3], 'started_ms', ARGV[4])
            redis.call('PERSIST', KEYS[2])
            local first = redis.call('HGET', KEYS[2], 'first_seen_ms')
            local enq = redis.call('HGET', KEYS[2], 'enqueued_ms') or ''
            if redis.call('EXISTS', KEYS[3]) == 1 then return {'cancel', attempts, first, enq} end
            if attempts > tonumber(ARGV[5]) then return {'exhausted', attempts, first, enq} end
            return {'run', attempts, first, enq}
            """)

    /// Moves a job into a final state and emits its one event, unless it is final already.
    /// KEYS: processing, job hash, events (stream and channel), cancel flag, dead list.
    /// ARGV: payload, state, event JSON, result JSON or '', error JSON or '', now ms, retention ms, stream max
    /// length, dead entry or ''. Returns 1 when this call made the transition, 0 when the job was final already.
    static let finish = Script(
        name: "finish",
        source: isFinal + """

            redis.call('LREM', KEYS[1], -1, ARGV[1])
            if final(redis.call('HGET', KEYS[2], 'state')) then return 0 end
            redis.call('HSET', KEYS[2], 'state', ARGV[2], 'finished_ms', ARGV[6])
            if ARGV[4] ~= '' then redis.call('HSET', KEYS[2], 'result', ARGV[4]) end
            if ARGV[5] ~= '' then redis.call('HSET', KEYS[2], 'error', ARGV[5]) end
            redis.call('PEXPIRE', KEYS[2], ARGV[7])
            redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[8], '*', 'event', ARGV[3])
            redis.call('PUBLISH', KEYS[3], ARGV[3])
            redis.call('DEL', KEYS[4])
            if ARGV[9] ~= '' then redis.call('LPUSH', KEYS[5], ARGV[9]) end
            return 1
            """)

    /// Schedules another attempt through the delayed set, if this worker still holds the job.
    /// KEYS: processing, job hash, delayed. ARGV: payload, delayed member, due ms, error JSON.
    /// Returns 1 when scheduled, 0 when the job was no longer ours or already final.
    static let retry = Script(
        name: "retry",
        source: isFinal + """

            if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 0 then return 0 end
            if final(redis.call('HGET', KEYS[2], 'state')) then return 0 end
            redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
            redis.call('HSET', KEYS[2], 'state', 'queued', 'retry_at_ms', ARGV[3], 'last_error', ARGV[4])
            return 1
            """)

    /// Hands a job from a processing list back to the front of its queue (a dead worker's, or this worker's own
    /// leftovers after a restart or reconnect). KEYS: processing, queue, job hash. ARGV: payload, recovered by.
    /// Returns 1 when handed back, 2 when it was final already (dropped), 0 when it was not in the list.
    static let requeue = Script(
        name: "requeue",
        source: isFinal + """

            if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 0 then return 0 end
            local state = redis.call('HGET', KEYS[3], 'state')
            if final(state) then return 2 end
            redis.call('RPUSH', KEYS[2], ARGV[1])
            if state then
              redis.call('HSET', KEYS[3], 'state', 'queued', 'recovered_by', ARGV[2])
              redis.call('HINCRBY', KEYS[3], 'recoveries', 1)
            end
            return 1
            """)

    /// Moves one due job from the delayed set to the back of its queue. KEYS: delayed, queue. ARGV: member,
    /// payload. Returns 1 when moved (0: another worker moved it first).
    static let promote = Script(
        name: "promote",
        source: """
            if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
              redis.call('LPUSH', KEYS[2], ARGV[2])
              return 1
            end
            return 0
            """)

    /// Sends a payload with no usable id to the dead list with its one event (it has no job hash).
    /// KEYS: processing, events, dead. ARGV: payload, event JSON, dead entry, stream max length.
    /// Returns 1 when this call took it out of the processing list (and emitted the event), else 0.
    static let bury = Script(
        name: "bury",
        source: """
            if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 0 then return 0 end
            redis.call('LPUSH', KEYS[3], ARGV[3])
            redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'event', ARGV[2])
            redis.call('PUBLISH', KEYS[2], ARGV[2])
            return 1
            """)

    static let all = [take, claim, finish, retry, requeue, promote, bury]
}

/// A Lua script, run by SHA with `EVALSHA` and loaded again whenever the server answers `NOSCRIPT` (after a
/// restart, a failover or `SCRIPT FLUSH`).
struct Script: Sendable {
    var name: String
    var source: String
    /// The name Redis gives the script (SHA-1 of its source, for EVALSHA; not a security use).
    var sha: String { Digests.hex(Insecure.SHA1.hash(data: Array(source.utf8))) }
}
