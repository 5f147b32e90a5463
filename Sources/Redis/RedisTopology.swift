import Foundation

// MARK: - Where the master is

/// How a client finds the server it talks to.
public enum RedisMode: Equatable, Sendable {
    /// One server at `RedisConfiguration.endpoint`.
    case standalone
    /// The master of `masterName`, asked of the sentinels in order (any that answers) on every connect.
    case sentinel(masterName: String, sentinels: [RedisEndpoint])
    /// A Redis Cluster: the master of the client's slot, found with `CLUSTER SLOTS` from the seeds (and every node
    /// seen since); `MOVED` and `ASK` replies are followed.
    case cluster(seeds: [RedisEndpoint])

    public var isStandalone: Bool { self == .standalone }
    public var isCluster: Bool { if case .cluster = self { return true } else { return false } }
}

/// What the client learned about the servers behind one configuration, shared by every client of a process (the
/// job loop's, the maintenance loop's, the health probe's): the master in use, its replicas, the failovers followed
/// and the time spent without a master. When one client finds a new master, the others drop their connection
/// before their next command and find it too.
public final class RedisTopologyState: @unchecked Sendable {
    public struct Snapshot: Equatable, Sendable {
        /// The master in use (nil before the first connect).
        public var master: RedisEndpoint?
        /// Its replicas as `ROLE` (or `CLUSTER SLOTS`) listed them when a client last connected.
        public var replicas: [String] = []
        /// Times a client found the master at another address than before.
        public var failovers = 0
        /// When the last of those happened (ms since the epoch).
        public var lastFailoverMs: Int64?
        /// The address before the last failover.
        public var previousMaster: RedisEndpoint?
        /// Since when no client has had a master (ms since the epoch); nil while one has.
        public var withoutMasterSinceMs: Int64?
        /// Seconds without a master, over every outage that ended.
        public var withoutMasterSeconds = 0.0
    }

    private let lock = NSLock()
    private var state = Snapshot()
    private var generation = 0

    public init() {}

    public var snapshot: Snapshot { lock.withLock { state } }

    /// Bumped whenever the master changes (or is suspected to): clients connected under an older generation reconnect.
    var epoch: Int { lock.withLock { generation } }

    /// A client connected to `master` (verified with `ROLE`). Returns the generation it is now current for.
    @discardableResult
    func connected(to master: RedisEndpoint, replicas: [String], nowMs: Int64 = RedisTime.nowMs()) -> Int {
        lock.withLock {
            if let since = state.withoutMasterSinceMs {
                state.withoutMasterSeconds += Double(max(0, nowMs - since)) / 1000
                state.withoutMasterSinceMs = nil
            }
            if let old = state.master, old != master {
                state.failovers += 1
                state.lastFailoverMs = nowMs
                state.previousMaster = old
                generation += 1
            }
            state.master = master
            state.replicas = replicas
            return generation
        }
    }

    /// A client lost its master or could not find one.
    func lost(nowMs: Int64 = RedisTime.nowMs()) {
        lock.withLock { if state.withoutMasterSinceMs == nil { state.withoutMasterSinceMs = nowMs } }
    }

    /// The sentinels name another master than `current`: every client drops its connection and asks them again.
    func invalidate(current: RedisEndpoint) {
        lock.withLock { if state.master == current { generation += 1 } }
    }
}

// MARK: - Replies of the discovery commands

enum TopologyReplies {
    /// `SENTINEL GET-MASTER-ADDR-BY-NAME`: the address, or nil when the sentinel monitors no master by that name.
    static func masterAddress(_ reply: RedisReply) throws(RedisError) -> RedisEndpoint? {
        if reply == .null { return nil }
        guard let items = reply.array, items.count == 2, let host = items[0].text,
            let port = items[1].text.flatMap(Int.init)
        else { throw RedisError(.protocolError, "unexpected SENTINEL GET-MASTER-ADDR-BY-NAME reply \(reply)") }
        return .tcp(host: host, port: port)
    }

    /// `ROLE`: the role's name and, for a master, its replicas as `host:port`.
    static func role(_ reply: RedisReply) throws(RedisError) -> (role: String, replicas: [String]) {
        guard let items = reply.array, let role = items.first?.text else {
            throw RedisError(.protocolError, "unexpected ROLE reply \(reply)")
        }
        var replicas: [String] = []
        if role == "master", items.count >= 3 {
            for replica in items[2].array ?? [] {
                if let r = replica.array, r.count >= 2, let host = r[0].text, let port = r[1].text {
                    replicas.append("\(host):\(port)")
                }
            }
        }
        return (role, replicas)
    }

    /// One range of `CLUSTER SLOTS`.
    struct SlotRange: Equatable {
        var slots: ClosedRange<Int>
        var master: RedisEndpoint
        var replicas: [RedisEndpoint]
    }

    /// `CLUSTER SLOTS`: the slot ranges with their master and replicas.
    static func clusterSlots(_ reply: RedisReply) throws(RedisError) -> [SlotRange] {
        guard let ranges = reply.array else { throw RedisError(.protocolError, "unexpected CLUSTER SLOTS reply") }
        var out: [SlotRange] = []
        for range in ranges {
            guard let r = range.array, r.count >= 3, let start = r[0].integer, let end = r[1].integer, start <= end
            else { throw RedisError(.protocolError, "unexpected CLUSTER SLOTS entry \(range)") }
            let nodes = r[2...].compactMap { node -> RedisEndpoint? in
                guard let n = node.array, n.count >= 2, let host = n[0].text, let port = n[1].integer, !host.isEmpty
                else { return nil }
                return .tcp(host: host, port: port)
            }
            guard let master = nodes.first else { continue }
            out.append(SlotRange(slots: start...end, master: master, replicas: Array(nodes.dropFirst())))
        }
        return out
    }

    /// A `MOVED slot host:port` or `ASK slot host:port` error reply: whether it asks for one command only, and where.
    static func redirection(_ reply: RedisReply) -> (ask: Bool, target: RedisEndpoint)? {
        guard case .error(let message) = reply else { return nil }
        let words = message.split(separator: " ")
        guard words.count == 3, words[0] == "MOVED" || words[0] == "ASK",
            let endpoint = parseHostPort(String(words[2]), defaultPort: 6379)
        else { return nil }
        return (words[0] == "ASK", endpoint)
    }

    /// `host:port`, `[v6]:port` or `host` (with the default port).
    static func parseHostPort(_ text: String, defaultPort: Int) -> RedisEndpoint? {
        var host = Substring(text)
        var port = defaultPort
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else { return nil }
            let rest = host[host.index(after: close)...]
            host = host[host.index(after: host.startIndex)..<close]
            if !rest.isEmpty {
                guard rest.hasPrefix(":"), let p = Int(rest.dropFirst()) else { return nil }
                port = p
            }
        } else if let colon = host.lastIndex(of: ":") {
            guard let p = Int(host[host.index(after: colon)...]) else { return nil }
            port = p
            host = host[..<colon]
        }
        guard !host.isEmpty, (1...65535).contains(port) else { return nil }
        return .tcp(host: String(host), port: port)
    }
}

/// Wall-clock milliseconds since the epoch, and whole milliseconds of a duration (what Redis's `PX`, `WAIT` and the
/// topology's timestamps take).
enum RedisTime {
    static func nowMs() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }
    static func milliseconds(_ d: Duration) -> Int64 {
        Int64(d.components.seconds) * 1000 + Int64(d.components.attoseconds / 1_000_000_000_000_000)
    }
}
