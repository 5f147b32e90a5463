import Foundation

// MARK: - Configuration

/// How to reach Redis: endpoint, credentials, database, timeouts and the reconnect policy.
public struct RedisConfiguration: Equatable, Sendable {
    public var endpoint: RedisEndpoint
    /// ACL user name (`AUTH user password`); nil with a password means `AUTH password`.
    public var username: String?
    public var password: String?
    public var database = 0
    public var connectTimeout: Duration = .seconds(2)
    public var commandTimeout: Duration = .seconds(5)
    public var backoff = Backoff()

    public init(_ endpoint: RedisEndpoint) { self.endpoint = endpoint }

    /// Parses `redis://[user:password@]host[:port][/db]` or `unix:///path/to/redis.sock[?db=N&user=U&password=P]`
    /// (also `redis+unix://`). Percent-escapes in the user and password are decoded.
    public init(url: String) throws(RedisError) {
        guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased() else {
            throw RedisError(.connection, "not a Redis URL: \(url)")
        }
        let query = Dictionary(
            (components.queryItems ?? []).map { ($0.name, $0.value ?? "") }, uniquingKeysWith: { _, last in last })
        switch scheme {
        case "redis":
            guard let host = components.host, !host.isEmpty else { throw RedisError(.connection, "no host in \(url)") }
            self.init(.tcp(host: host, port: components.port ?? 6379))
            let path = components.path.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
            if !path.isEmpty {
                guard let db = Int(path), db >= 0 else {
                    throw RedisError(.connection, "database index \"\(path)\" in \(url) is not a number")
                }
                database = db
            }
        case "unix", "redis+unix":
            guard !components.path.isEmpty else { throw RedisError(.connection, "no socket path in \(url)") }
            self.init(.unix(path: components.path))
        default:
            throw RedisError(.connection, "unsupported scheme \(scheme) in \(url) (redis:// or unix://)")
        }
        if let user = components.user, !user.isEmpty { username = user.removingPercentEncoding ?? user }
        if let password = components.password { self.password = password.removingPercentEncoding ?? password }
        if let user = query["user"] { username = user }
        if let password = query["password"] { self.password = password }
        if let db = query["db"] {
            guard let n = Int(db), n >= 0 else { throw RedisError(.connection, "db=\(db) in \(url) is not a number") }
            database = n
        }
        if username != nil, password == nil {
            throw RedisError(.connection, "a user name without a password in \(url)")
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
        case .server:
            return ["READONLY", "UNBLOCKED", "LOADING", "MASTERDOWN", "NOREPLICAS", "TRYAGAIN", "CLUSTERDOWN", "BUSY"]
                .contains(kind ?? "")
        }
    }

    /// Errors after which the connection itself should be dropped: it is broken, or points at a replica.
    public var dropsConnection: Bool {
        code != .server || ["READONLY", "UNBLOCKED", "MASTERDOWN"].contains(kind ?? "")
    }
}

// MARK: - Client

/// A Redis connection that connects on demand (AUTH, SELECT, timeouts), replaces itself after a failure, and counts
/// its round trips. One thread at a time; blocking.
public final class RedisClient: @unchecked Sendable {
    public let configuration: RedisConfiguration
    private var connection: RedisConnection?
    private var random = SystemRandomNumberGenerator()
    /// Writes-then-reads made through this client (a pipeline counts once).
    public private(set) var roundTrips = 0
    /// Connections made after the first.
    public private(set) var reconnects = 0
    private var everConnected = false

    public init(_ configuration: RedisConfiguration) { self.configuration = configuration }

    /// Connects now if not connected (one attempt).
    public func connect() throws(RedisError) {
        if let connection, !connection.isBroken { return }
        connection = nil
        let c = try RedisConnection(
            configuration.endpoint, connectTimeout: configuration.connectTimeout,
            commandTimeout: configuration.commandTimeout)
        var setup: [[String]] = []
        if let password = configuration.password {
            setup.append(configuration.username.map { ["AUTH", $0, password] } ?? ["AUTH", password])
        }
        if configuration.database != 0 { setup.append(["SELECT", String(configuration.database)]) }
        if !setup.isEmpty {
            let replies = try c.pipeline(setup)
            for reply in replies {
                if case .error(let message) = reply {
                    var e = RedisError.server(message)
                    e.endpoint = configuration.endpoint.description
                    throw e
                }
            }
        }
        if everConnected { reconnects += 1 }
        everConnected = true
        connection = c
    }

    /// Drops the connection; the next command reconnects.
    public func disconnect() { connection = nil }

    public var isConnected: Bool { connection.map { !$0.isBroken } ?? false }

    /// Sets the read timeout of the current connection (for blocking commands: block time plus a margin).
    func withCommandTimeout<T>(_ timeout: Duration, _ body: () throws(RedisError) -> T) throws(RedisError) -> T {
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

    /// Binary-safe form of `pipeline(_:)`.
    public func pipeline(bytes commands: [[[UInt8]]]) throws(RedisError) -> [RedisReply] {
        try connect()
        do {
            roundTrips += 1
            return try connection!.pipeline(commands)
        } catch {
            connection = nil
            throw error
        }
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
