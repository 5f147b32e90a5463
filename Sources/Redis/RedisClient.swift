import Foundation

// MARK: - Configuration

/// How to reach Redis: endpoint (or sentinels, or cluster seeds), credentials, database, timeouts, durability and
/// the reconnect policy.
public struct RedisConfiguration: Equatable, Sendable {
    /// The server (standalone), the first sentinel, or the first cluster seed.
    public var endpoint: RedisEndpoint
    public var mode: RedisMode = .standalone
    /// ACL user name (`AUTH user password`); nil with a password means `AUTH password`.
    public var username: String?
    public var password: String?
    public var database = 0
    /// Credentials for the sentinels (`sentinel_user`, `sentinel_password`), which have their own.
    public var sentinelUsername: String?
    public var sentinelPassword: String?
    /// Replicas a finish (and a producer's push) waits for with `WAIT`. nil: one where the master had a replica
    /// when the client connected, else none.
    public var waitReplicas: Int?
    /// How long one `WAIT` may block.
    public var waitTimeout: Duration = .milliseconds(1000)
    /// In cluster mode: the slot whose master the client connects to first (the key space's hash slot), so keyless
    /// commands (`WAIT`, `SCRIPT LOAD`) run where the keyed ones do.
    public var clusterSlot: Int?
    public var connectTimeout: Duration = .seconds(2)
    public var commandTimeout: Duration = .seconds(5)
    public var backoff = Backoff()

    public init(_ endpoint: RedisEndpoint) { self.endpoint = endpoint }

    /// Parses
    /// - `redis://[user:password@]host[:port][/db]` (`?cluster=1`: a Redis Cluster, seeds `host:port[,host:port…]`),
    /// - `unix:///path/to/redis.sock[?db=N&user=U&password=P]` (also `redis+unix://`),
    /// - `redis-sentinel://[user:password@]host[:port][,host:port…]/MASTER_NAME[?db=N&sentinel_password=…]`.
    ///
    /// Every form takes `wait_replicas=N` and `wait_timeout_ms=T`. Percent-escapes in users and passwords are decoded.
    public init(url: String) throws(RedisError) {
        guard let split = url.range(of: "://") else { throw RedisError(.configuration, "not a Redis URL: \(url)") }
        let scheme = url[..<split.lowerBound].lowercased()
        var rest = Substring(url[split.upperBound...])
        var query: [String: String] = [:]
        if let mark = rest.firstIndex(of: "?") {
            for pair in rest[rest.index(after: mark)...].split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                let value = kv.count > 1 ? String(kv[1]) : ""
                query[String(kv[0])] = value.removingPercentEncoding ?? value
            }
            rest = rest[..<mark]
        }
        var authority = rest
        var path = Substring("")
        if let slash = rest.firstIndex(of: "/") {
            authority = rest[..<slash]
            path = rest[rest.index(after: slash)...]
        }
        var userInfo: Substring?
        if let at = authority.lastIndex(of: "@") {
            userInfo = authority[..<at]
            authority = authority[authority.index(after: at)...]
        }
        func decode(_ s: Substring) -> String { String(s).removingPercentEncoding ?? String(s) }
        var user: String?
        var secret: String?
        if let info = userInfo {
            if let colon = info.firstIndex(of: ":") {
                if colon > info.startIndex { user = decode(info[..<colon]) }
                secret = decode(info[info.index(after: colon)...])
            } else if !info.isEmpty {
                user = decode(info)
            }
        }
        func hosts(defaultPort: Int) throws(RedisError) -> [RedisEndpoint] {
            var out: [RedisEndpoint] = []
            for item in authority.split(separator: ",", omittingEmptySubsequences: false) {
                guard let endpoint = TopologyReplies.parseHostPort(String(item), defaultPort: defaultPort) else {
                    throw RedisError(.configuration, "\"\(item)\" in \(Self.redacted(url)) is not HOST[:PORT]")
                }
                out.append(endpoint)
            }
            return out
        }
        switch scheme {
        case "redis":
            let seeds = try hosts(defaultPort: 6379)
            self.init(seeds[0])
            if let flag = query["cluster"], ["1", "true", "yes"].contains(flag.lowercased()) {
                mode = .cluster(seeds: seeds)
            } else if seeds.count > 1 {
                throw RedisError(
                    .configuration, "several hosts in \(Self.redacted(url)) need ?cluster=1 (or redis-sentinel://)")
            }
            let db = path.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
            if !db.isEmpty {
                guard let n = Int(db), n >= 0 else {
                    throw RedisError(
                        .configuration, "database index \"\(db)\" in \(Self.redacted(url)) is not a number")
                }
                database = n
            }
        case "redis-sentinel", "redis+sentinel":
            let sentinels = try hosts(defaultPort: 26379)
            let name = decode(path.split(separator: "/").first ?? "")
            guard !name.isEmpty else {
                throw RedisError(
                    .configuration, "no master name in \(Self.redacted(url)) (redis-sentinel://host:port/MASTER_NAME)")
            }
            self.init(sentinels[0])
            mode = .sentinel(masterName: name, sentinels: sentinels)
        case "unix", "redis+unix":
            let socket = "/" + path
            guard authority.isEmpty, path.count > 0 else {
                throw RedisError(.configuration, "no socket path in \(url) (unix:///path/redis.sock)")
            }
            self.init(.unix(path: socket))
        default:
            throw RedisError(
                .configuration,
                "unsupported scheme \(scheme) in \(Self.redacted(url)) (redis://, unix:// or redis-sentinel://)")
        }
        username = user
        password = secret
        if let user = query["user"] { username = user }
        if let password = query["password"] { self.password = password }
        if let user = query["sentinel_user"] { sentinelUsername = user }
        if let password = query["sentinel_password"] { sentinelPassword = password }
        func number(_ key: String, _ range: ClosedRange<Int>) throws(RedisError) -> Int? {
            guard let text = query[key] else { return nil }
            guard let n = Int(text), range.contains(n) else {
                throw RedisError(
                    .configuration,
                    "\(key)=\(text) in \(Self.redacted(url)) must be an integer in \(range.lowerBound)…\(range.upperBound)"
                )
            }
            return n
        }
        if let db = try number("db", 0...1_000_000) { database = db }
        waitReplicas = try number("wait_replicas", 0...100)
        if let ms = try number("wait_timeout_ms", 1...600_000) { waitTimeout = .milliseconds(ms) }
        if username != nil, password == nil {
            throw RedisError(.configuration, "a user name without a password in \(Self.redacted(url))")
        }
        if mode.isCluster, database != 0 {
            throw RedisError(.configuration, "a Redis Cluster has database 0 only (\(Self.redacted(url)))")
        }
    }

    /// The URL with its passwords replaced by `***`, for messages and logs.
    public static func redacted(_ url: String) -> String {
        var out = url
        if let split = out.range(of: "://"), let at = out[split.upperBound...].firstIndex(of: "@") {
            let info = out[split.upperBound..<at]
            if let colon = info.firstIndex(of: ":") {
                out.replaceSubrange(out.index(after: colon)..<at, with: "***")
            } else {
                out.replaceSubrange(split.upperBound..<at, with: "***")
            }
        }
        return out.replacingOccurrences(
            of: #"(password|sentinel_password)=[^&]*"#, with: "$1=***", options: .regularExpression)
    }

    /// Where the client looks, for messages: the server, the sentinels and master name, or the cluster seeds.
    public var target: String {
        switch mode {
        case .standalone: return endpoint.description
        case let .sentinel(name, sentinels):
            return "master \"\(name)\" via sentinels \(sentinels.map(\.description).joined(separator: ","))"
        case let .cluster(seeds): return "cluster via \(seeds.map(\.description).joined(separator: ","))"
        }
    }
}

/// Capped exponential backoff with full jitter: attempt n waits a random time in
/// `[0, min(cap, initial · 2ⁿ)]`, at least `floor`.
public struct Backoff: Equatable, Sendable {
    public var initial: Duration = .milliseconds(50)
    public var cap: Duration = .seconds(2)
    public var floor: Duration = .milliseconds(5)

    public init(initial: Duration = .milliseconds(50), cap: Duration = .seconds(2), floor: Duration = .milliseconds(5))
    {
        (self.initial, self.cap, self.floor) = (initial, cap, floor)
    }

    /// The upper bound of the wait before attempt `attempt` (0-based).
    public func ceiling(attempt: Int) -> Duration {
        let factor = 1 << min(max(attempt, 0), 30)
        let grown = initial * factor
        return grown > cap ? cap : grown
    }

    /// The wait before attempt `attempt`, drawn with `random` in `[floor, ceiling]`.
    public func delay<R: RandomNumberGenerator>(attempt: Int, using random: inout R) -> Duration {
        let top = ceiling(attempt: attempt)
        guard top > floor else { return floor }
        let span = Double((top - floor).components.seconds) + Double((top - floor).components.attoseconds) * 1e-18
        return floor + .seconds(Double.random(in: 0...span, using: &random))
    }
}

extension RedisError {
    /// Errors after which the same command may succeed on a fresh connection (or once the server has loaded):
    /// broken connections, and the replies servers give around failovers and restarts.
    public var isTransient: Bool {
        switch code {
        case .connection, .protocolError: return true
        case .configuration: return false
        case .server:
            return ["READONLY", "UNBLOCKED", "LOADING", "MASTERDOWN", "NOREPLICAS", "TRYAGAIN", "CLUSTERDOWN", "BUSY"]
                .contains(kind ?? "")
        }
    }

    /// Errors after which the connection itself should be dropped: it is broken, points at a replica, or at a server
    /// still loading (with sentinels, the next connect asks them again where the master is).
    public var dropsConnection: Bool {
        code != .server || ["READONLY", "UNBLOCKED", "MASTERDOWN", "LOADING", "CLUSTERDOWN"].contains(kind ?? "")
    }
}

// MARK: - Client

/// A Redis connection that connects on demand (AUTH, SELECT, timeouts), replaces itself after a failure, and counts
/// its round trips. One thread at a time; blocking.
///
/// With sentinels, every connect asks them (in order, the first that answers) for the master's address and checks
/// it with `ROLE`; with a cluster, it asks `CLUSTER SLOTS` for the master of its slot and follows `MOVED`/`ASK`.
/// Clients sharing one `RedisTopologyState` follow a new master together.
public final class RedisClient: @unchecked Sendable {
    public let configuration: RedisConfiguration
    /// What this client (and those sharing it) know of the master, its replicas and failovers.
    public let topology: RedisTopologyState
    private var connection: RedisConnection?
    private var connectedEpoch = 0
    private var random = SystemRandomNumberGenerator()
    /// Writes-then-reads made through this client (a pipeline counts once).
    public private(set) var roundTrips = 0
    /// Connections made after the first.
    public private(set) var reconnects = 0
    /// `WAIT`s that timed out with fewer replicas than asked for.
    public private(set) var waitShortfalls = 0
    private var everConnected = false
    /// The master's replicas when this client connected (nil: not asked yet).
    public private(set) var replicasAtConnect: Int?
    /// Cluster nodes seen in `CLUSTER SLOTS` replies, asked after the seeds.
    private var clusterNodes: [RedisEndpoint] = []

    public init(_ configuration: RedisConfiguration, topology: RedisTopologyState = RedisTopologyState()) {
        self.configuration = configuration
        self.topology = topology
    }

    /// The server this client is connected to.
    public var connectedEndpoint: RedisEndpoint? { connection.flatMap { $0.isBroken ? nil : $0.endpoint } }

    /// Connects now if not connected (one attempt; with sentinels or a cluster, one round of discovery).
    public func connect() throws(RedisError) {
        if let connection, !connection.isBroken, connectedEpoch == topology.epoch { return }
        connection = nil
        let found: (connection: RedisConnection, replicas: [String]?)
        do {
            switch configuration.mode {
            case .standalone:
                // Replicas are looked up (ROLE) only when a WAIT needs to know: a plain server costs no extra trip.
                found = (try open(configuration.endpoint, select: true), nil)
            case let .sentinel(name, sentinels):
                found = try connectThroughSentinels(name: name, sentinels: sentinels)
            case let .cluster(seeds):
                found = try connectToCluster(seeds: seeds)
            }
        } catch {
            topology.lost()
            throw error
        }
        if everConnected { reconnects += 1 }
        everConnected = true
        replicasAtConnect = found.replicas?.count
        connectedEpoch = topology.connected(to: found.connection.endpoint, replicas: found.replicas ?? [])
        connection = found.connection
    }

    /// A connection to `endpoint` with AUTH (and SELECT) done.
    private func open(
        _ endpoint: RedisEndpoint, select: Bool, username: String?? = nil, password: String?? = nil,
        connectTimeout: Duration? = nil
    ) throws(RedisError) -> RedisConnection {
        let c = try RedisConnection(
            endpoint, connectTimeout: connectTimeout ?? configuration.connectTimeout,
            commandTimeout: configuration.commandTimeout)
        let user = username ?? configuration.username
        let pass = password ?? configuration.password
        var setup: [[String]] = []
        if let pass { setup.append(user.map { ["AUTH", $0, pass] } ?? ["AUTH", pass]) }
        if select, configuration.database != 0 { setup.append(["SELECT", String(configuration.database)]) }
        if !setup.isEmpty {
            for reply in try c.pipeline(setup) {
                if case .error(let message) = reply {
                    var e = RedisError.server(message)
                    e.endpoint = endpoint.description
                    throw e
                }
            }
        }
        return c
    }

    /// Asks the sentinels, in order, for the master of `name`; connects to it and checks that it is a master.
    private func connectThroughSentinels(
        name: String, sentinels: [RedisEndpoint]
    ) throws(RedisError) -> (connection: RedisConnection, replicas: [String]) {
        var problems: [String] = []
        var unknownName: [String] = []
        var refused: [RedisError] = []
        for sentinel in sentinels {
            let address: RedisEndpoint?
            do {
                let s = try open(
                    sentinel, select: false, username: .some(configuration.sentinelUsername),
                    password: .some(configuration.sentinelPassword),
                    connectTimeout: min(configuration.connectTimeout, .seconds(1)))
                address = try TopologyReplies.masterAddress(s.command(["SENTINEL", "GET-MASTER-ADDR-BY-NAME", name]))
            } catch {
                if error.code == .server { refused.append(error) }
                problems.append("sentinel \(sentinel): \(error.message)")
                continue
            }
            guard let address else {
                unknownName.append(sentinel.description)
                problems.append("sentinel \(sentinel) knows no master named \"\(name)\"")
                continue
            }
            do {
                let c = try open(address, select: true)
                let role = try TopologyReplies.role(c.command(["ROLE"]))
                guard role.role == "master" else {
                    // A sentinel that has not yet seen the failover, or one the old master just rejoined as replica.
                    problems.append("\(address) (named by sentinel \(sentinel)) is a \(role.role), not the master")
                    continue
                }
                return (c, role.replicas)
            } catch {
                if error.code == .server, !error.isTransient {
                    // The master refuses our credentials: asking another sentinel will not change that.
                    throw RedisError(
                        .server, "master \"\(name)\" at \(address): \(error.message)", kind: error.kind,
                        endpoint: address.description)
                }
                problems.append("master \"\(name)\" at \(address) (named by sentinel \(sentinel)): \(error.message)")
            }
        }
        if unknownName.count == sentinels.count {
            throw RedisError(
                .configuration,
                "no sentinel monitors a master named \"\(name)\" (asked \(unknownName.joined(separator: ", "))); "
                    + "check the name after the last / of the URL (SENTINEL MASTERS lists them)")
        }
        if refused.count + unknownName.count == sentinels.count, let first = refused.first {
            throw RedisError(
                .server,
                "every sentinel refused us: \(problems.joined(separator: "; ")) (sentinel_user / sentinel_password in "
                    + "the URL are the sentinels' credentials)", kind: first.kind)
        }
        throw RedisError(.connection, "no master for \"\(name)\": \(problems.joined(separator: "; "))")
    }

    /// Asks the seeds and every node seen so far for `CLUSTER SLOTS`; connects to the master of the client's slot (or
    /// to the first node that answers, when the slot is not known yet).
    private func connectToCluster(
        seeds: [RedisEndpoint]
    ) throws(RedisError) -> (connection: RedisConnection, replicas: [String]) {
        var candidates: [RedisEndpoint] = []
        for n in seeds + clusterNodes where !candidates.contains(n) { candidates.append(n) }
        var problems: [String] = []
        for node in candidates {
            do {
                let c = try open(node, select: false, connectTimeout: min(configuration.connectTimeout, .seconds(1)))
                let ranges = try TopologyReplies.clusterSlots(c.command(["CLUSTER", "SLOTS"]))
                for r in ranges {
                    for n in [r.master] + r.replicas where !clusterNodes.contains(n) { clusterNodes.append(n) }
                }
                guard let slot = configuration.clusterSlot else { return (c, []) }
                guard let range = ranges.first(where: { $0.slots.contains(slot) }) else {
                    problems.append("\(node): no node serves slot \(slot)")
                    continue
                }
                let replicas = range.replicas.map(\.description)
                if range.master == node { return (c, replicas) }
                do {
                    return (try open(range.master, select: false), replicas)
                } catch {
                    problems.append("master \(range.master) of slot \(slot) (named by \(node)): \(error.message)")
                }
            } catch {
                if error.code == .server, !error.isTransient { throw error }
                problems.append("\(node): \(error.message)")
            }
        }
        throw RedisError(.connection, "no cluster master found: \(problems.joined(separator: "; "))")
    }

    /// Drops the connection; the next command reconnects.
    public func disconnect() { connection = nil }

    public var isConnected: Bool { connection.map { !$0.isBroken } ?? false }

    /// With sentinels: asks them where the master is now and, when it has moved, makes every client of this
    /// topology reconnect (a failover noticed before any command failed). Does nothing in other modes.
    public func checkSentinels() {
        guard case let .sentinel(name, sentinels) = configuration.mode, let current = topology.snapshot.master else {
            return
        }
        for sentinel in sentinels {
            guard
                let s = try? open(
                    sentinel, select: false, username: .some(configuration.sentinelUsername),
                    password: .some(configuration.sentinelPassword), connectTimeout: .milliseconds(500)),
                let reply = try? s.command(["SENTINEL", "GET-MASTER-ADDR-BY-NAME", name]),
                let address = try? TopologyReplies.masterAddress(reply)
            else { continue }
            if address != current { topology.invalidate(current: current) }
            return
        }
    }

    /// Sets the read timeout of the current connection (for blocking commands: block time plus a margin).
    public func withCommandTimeout<T>(_ timeout: Duration, _ body: () throws(RedisError) -> T) throws(RedisError) -> T {
        try connect()
        let c = connection!
        try c.setTimeout(timeout)
        defer { if !c.isBroken { try? c.setTimeout(configuration.commandTimeout) } }
        return try body()
    }

    /// One command, one attempt; an error reply is thrown. A broken connection is dropped.
    @discardableResult
    public func command(_ arguments: [String]) throws(RedisError) -> RedisReply {
        let replies = try pipeline([arguments])
        if case .error(let message) = replies[0] { throw RedisError.server(message) }
        return replies[0]
    }

    /// Several commands in one round trip; error replies come back in place.
    public func pipeline(_ commands: [[String]]) throws(RedisError) -> [RedisReply] {
        try pipeline(bytes: commands.map { $0.map { Array($0.utf8) } })
    }

    /// One command with binary-safe arguments; an error reply is thrown.
    @discardableResult
    public func command(bytes arguments: [[UInt8]]) throws(RedisError) -> RedisReply {
        let replies = try pipeline(bytes: [arguments])
        if case .error(let message) = replies[0] { throw RedisError.server(message) }
        return replies[0]
    }

    /// Binary-safe form of `pipeline(_:)`. In cluster mode, commands answered with `MOVED` are sent again to the
    /// node named (which becomes this client's node), those answered with `ASK` once to theirs after `ASKING`.
    public func pipeline(bytes commands: [[[UInt8]]]) throws(RedisError) -> [RedisReply] {
        try connect()
        do {
            roundTrips += 1
            var replies = try connection!.pipeline(commands)
            if configuration.mode.isCluster { try followRedirections(commands, &replies) }
            return replies
        } catch {
            connection = nil
            if error.code == .connection { topology.lost() }
            throw error
        }
    }

    private func followRedirections(_ commands: [[[UInt8]]], _ replies: inout [RedisReply]) throws(RedisError) {
        for _ in 0..<5 {
            let redirected = replies.indices.compactMap { i in
                TopologyReplies.redirection(replies[i]).map { (index: i, ask: $0.ask, target: $0.target) }
            }
            guard let first = redirected.first else { return }
            if !clusterNodes.contains(first.target) { clusterNodes.append(first.target) }
            let moved = redirected.filter { !$0.ask }
            if !moved.isEmpty {
                // The slot lives elsewhere now: that node becomes this client's.
                let target = moved[0].target
                let c = try open(target, select: false)
                connection = c
                connectedEpoch = topology.connected(to: target, replicas: [])
                roundTrips += 1
                let again = try c.pipeline(moved.map { commands[$0.index] })
                for (m, reply) in zip(moved, again) { replies[m.index] = reply }
            }
            for a in redirected where a.ask {
                // The slot is migrating: this one command goes to the importing node, once.
                let c = try open(a.target, select: false)
                roundTrips += 1
                replies[a.index] = try c.pipeline([[Array("ASKING".utf8)], commands[a.index]])[1]
            }
        }
    }

    /// `WAIT`s until `replicas` replicas (by default: `waitReplicas`, else one if the master had one at connect)
    /// have every write this client made, for at most `waitTimeout`. Returns how many acknowledged them (nil when
    /// there was nothing to wait for); a shortfall is counted in `waitShortfalls`.
    @discardableResult
    public func waitForReplicas(_ replicas: Int? = nil) throws(RedisError) -> Int? {
        guard isConnected else { return nil }
        let wanted: Int
        if let replicas { wanted = replicas } else { wanted = try replicasToWaitFor() }
        guard wanted > 0 else { return nil }
        let ms = RedisTime.milliseconds(configuration.waitTimeout)
        let acked =
            try withCommandTimeout(configuration.waitTimeout + configuration.commandTimeout) {
                () throws(RedisError) in
                try command(["WAIT", String(wanted), String(ms)])
            }.integer ?? 0
        if acked < wanted { waitShortfalls += 1 }
        return acked
    }

    /// The replica count `waitForReplicas()` asks for: `waitReplicas`, else one where the master has a replica.
    public func replicasToWaitFor() throws(RedisError) -> Int {
        if let n = configuration.waitReplicas { return n }
        if replicasAtConnect == nil {
            let role = try? TopologyReplies.role(command(["ROLE"]))
            replicasAtConnect = role?.replicas.count ?? 0
        }
        return min(1, replicasAtConnect ?? 0)
    }

    /// Runs `body` until it succeeds or fails with a non-transient error, reconnecting with backoff between
    /// attempts; gives up (rethrowing the last error) once `shouldStop` says so.
    public func retrying<T>(
        shouldStop: () -> Bool = { false }, onRetry: (RedisError, Duration) -> Void = { _, _ in },
        _ body: (RedisClient) throws(RedisError) -> T
    ) throws(RedisError) -> T {
        var attempt = 0
        while true {
            do {
                return try body(self)
            } catch {
                guard error.isTransient, !shouldStop() else { throw error }
                if error.dropsConnection { connection = nil }
                let wait = configuration.backoff.delay(attempt: attempt, using: &random)
                onRetry(error, wait)
                Thread.sleep(forTimeInterval: wait.seconds)
                attempt += 1
            }
        }
    }
}

extension Duration {
    /// The duration in seconds, as a double.
    public var seconds: Double { Double(components.seconds) + Double(components.attoseconds) * 1e-18 }
}
