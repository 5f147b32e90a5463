import CHiredis
import Foundation

/// A reply from Redis, typed.
public enum RedisReply: Equatable, Sendable {
    case string([UInt8])
    case status(String)
    case integer(Int)
    case array([RedisReply])
    case null
    case error(String)

    /// The reply as text (bulk strings and status replies).
    public var text: String? {
        switch self {
        case .string(let bytes): return String(decoding: bytes, as: UTF8.self)
        case .status(let s): return s
        default: return nil
        }
    }

    public var integer: Int? { if case .integer(let n) = self { return n } else { return nil } }
    public var array: [RedisReply]? { if case .array(let a) = self { return a } else { return nil } }

    /// An `HGETALL` reply (field, value, field, value, …) as a dictionary; empty for anything else.
    public var fields: [String: String] {
        let items = array ?? []
        var out: [String: String] = [:]
        for i in stride(from: 0, to: items.count - 1, by: 2) {
            if let k = items[i].text, let v = items[i + 1].text { out[k] = v }
        }
        return out
    }
}

/// An error talking to Redis. `server` errors carry the reply's prefix as `kind` (`READONLY`, `NOSCRIPT`, `LOADING`,
/// `UNBLOCKED`, `WRONGTYPE`, `NOAUTH`, …) so callers can react to each.
public struct RedisError: Error, CustomStringConvertible, Equatable {
    public enum Code: String, Sendable {
        /// Could not connect, or the connection broke (EOF, reset, timeout): reconnecting may help.
        case connection
        /// The server answered with an error reply.
        case server
        /// A reply the client could not read.
        case protocolError
        /// What the configuration names does not exist or is refused (a URL that does not parse, a master name no
        /// sentinel knows): trying again will not help.
        case configuration
    }

    public var code: Code
    public var message: String
    /// For server errors: the first word of the error reply.
    public var kind: String?
    /// The endpoint, for connection errors.
    public var endpoint: String?

    public init(_ code: Code, _ message: String, kind: String? = nil, endpoint: String? = nil) {
        (self.code, self.message, self.kind, self.endpoint) = (code, message, kind, endpoint)
    }

    /// An error reply, its kind taken from the first word.
    public static func server(_ message: String) -> RedisError {
        RedisError(.server, message, kind: message.split(separator: " ", maxSplits: 1).first.map(String.init))
    }

    public var description: String {
        switch code {
        case .connection: return "redis connection\(endpoint.map { " to \($0)" } ?? ""): \(message)"
        case .server: return "redis error: \(message)"
        case .protocolError: return "redis protocol: \(message)"
        case .configuration: return "redis configuration: \(message)"
        }
    }
}

/// Where a Redis server listens.
public enum RedisEndpoint: Equatable, Sendable, CustomStringConvertible {
    case tcp(host: String, port: Int)
    case unix(path: String)

    public var description: String {
        switch self {
        case let .tcp(host, port): return "\(host):\(port)"
        case let .unix(path): return "unix:\(path)"
        }
    }
}

/// One blocking connection to Redis over hiredis (a `redisContext`), used from one thread at a time.
///
/// Blocking: every call waits for the server, bounded by the command timeout. Callers run it on threads of their
/// own, never on Swift's cooperative pool.
public final class RedisConnection: @unchecked Sendable {
    public let endpoint: RedisEndpoint
    private var context: UnsafeMutablePointer<redisContext>

    /// Connects, within `connectTimeout`, and sets `commandTimeout` on every later read and write.
    public init(
        _ endpoint: RedisEndpoint, connectTimeout: Duration = .seconds(2), commandTimeout: Duration = .seconds(5)
    ) throws(RedisError) {
        self.endpoint = endpoint
        Self.ignoreBrokenPipes
        let connectMs = Self.milliseconds(connectTimeout)
        let raw: UnsafeMutablePointer<redisContext>?
        switch endpoint {
        case let .tcp(host, port): raw = kd_redis_connect_tcp(host, Int32(port), connectMs)
        case let .unix(path): raw = kd_redis_connect_unix(path, connectMs)
        }
        guard let context = raw else {
            throw RedisError(.connection, "cannot allocate a hiredis context", endpoint: endpoint.description)
        }
        if context.pointee.err != 0 {
            let message = Self.contextMessage(context)
            redisFree(context)
            throw RedisError(.connection, message, endpoint: endpoint.description)
        }
        self.context = context
        if kd_redis_set_timeout(context, Self.milliseconds(commandTimeout)) != REDIS_OK {
            let message = Self.contextMessage(context)
            redisFree(context)
            throw RedisError(.connection, "cannot set the command timeout: \(message)", endpoint: endpoint.description)
        }
    }

    deinit { redisFree(context) }

    /// hiredis writes with write(2), so a server that went away raises SIGPIPE, whose default action kills the
    /// process. Ignored once, process-wide: the write then fails with EPIPE, reported as a connection error.
    private static let ignoreBrokenPipes: Void = { _ = signal(SIGPIPE, SIG_IGN) }()

    /// Runs one command and returns its reply; an error reply is thrown as a `.server` error.
    @discardableResult
    public func command(_ arguments: [String]) throws(RedisError) -> RedisReply {
        try command(arguments.map { Array($0.utf8) })
    }

    /// Runs one command with binary-safe arguments.
    @discardableResult
    public func command(_ arguments: [[UInt8]]) throws(RedisError) -> RedisReply {
        let replies = try pipeline([arguments])
        if case .error(let message) = replies[0] { throw RedisError.server(message) }
        return replies[0]
    }

    /// Sends several commands in one write and reads their replies in order (one round trip). Error replies are
    /// returned in place, not thrown, so the caller sees which command failed.
    public func pipeline(_ commands: [[String]]) throws(RedisError) -> [RedisReply] {
        try pipeline(commands.map { $0.map { Array($0.utf8) } })
    }

    /// Binary-safe form of `pipeline(_:)`.
    public func pipeline(_ commands: [[[UInt8]]]) throws(RedisError) -> [RedisReply] {
        for arguments in commands {
            precondition(!arguments.isEmpty, "empty Redis command")
            let status = Self.withArgv(arguments) { argc, argv, lengths in
                redisAppendCommandArgv(context, argc, argv, lengths)
            }
            if status != REDIS_OK { throw connectionError() }
        }
        var replies: [RedisReply] = []
        replies.reserveCapacity(commands.count)
        for _ in commands {
            var raw: UnsafeMutableRawPointer?
            if redisGetReply(context, &raw) != REDIS_OK { throw connectionError() }
            guard let reply = raw?.assumingMemoryBound(to: redisReply.self) else {
                throw RedisError(.protocolError, "no reply", endpoint: endpoint.description)
            }
            defer { freeReplyObject(reply) }
            replies.append(Self.convert(reply))
        }
        return replies
    }

    /// Changes the read/write timeout (hiredis 0.14 keeps no copy of it: set again after any reconnect).
    public func setTimeout(_ timeout: Duration) throws(RedisError) {
        if kd_redis_set_timeout(context, Self.milliseconds(timeout)) != REDIS_OK { throw connectionError() }
    }

    /// Whether the context has seen an I/O or protocol error (it cannot be used again).
    public var isBroken: Bool { context.pointee.err != 0 }

    private func connectionError() -> RedisError {
        RedisError(.connection, Self.contextMessage(context), endpoint: endpoint.description)
    }

    private static func contextMessage(_ context: UnsafeMutablePointer<redisContext>) -> String {
        let message = withUnsafeBytes(of: context.pointee.errstr) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        return message.isEmpty ? "error \(context.pointee.err)" : message
    }

    private static func convert(_ reply: UnsafeMutablePointer<redisReply>) -> RedisReply {
        let r = reply.pointee
        switch Int32(r.type) {
        case kd_redis_reply_string():
            return .string(Array(UnsafeRawBufferPointer(start: r.str, count: Int(r.len))))
        case kd_redis_reply_status():
            return .status(String(decoding: UnsafeRawBufferPointer(start: r.str, count: Int(r.len)), as: UTF8.self))
        case kd_redis_reply_error():
            return .error(String(decoding: UnsafeRawBufferPointer(start: r.str, count: Int(r.len)), as: UTF8.self))
        case kd_redis_reply_integer():
            return .integer(Int(r.integer))
        case kd_redis_reply_array():
            return .array((0..<Int(r.elements)).map { convert(r.element[$0]!) })
        default:
            return .null
        }
    }

    private static func withArgv<R>(
        _ arguments: [[UInt8]], _ body: (Int32, UnsafeMutablePointer<UnsafePointer<CChar>?>, UnsafePointer<Int>) -> R
    ) -> R {
        // One buffer holds every argument; argv points into it.
        var flat: [UInt8] = []
        flat.reserveCapacity(arguments.reduce(0) { $0 + $1.count })
        var offsets: [Int] = []
        for a in arguments {
            offsets.append(flat.count)
            flat += a
        }
        flat.append(0)  // never empty, so the buffer has an address even when every argument is ""
        let lengths = arguments.map(\.count)
        return flat.withUnsafeBufferPointer { buffer in
            let base = UnsafeRawPointer(buffer.baseAddress!)
            var argv: [UnsafePointer<CChar>?] = offsets.map { (base + $0).assumingMemoryBound(to: CChar.self) }
            return argv.withUnsafeMutableBufferPointer { argvBuffer in
                lengths.withUnsafeBufferPointer { lengthBuffer in
                    body(Int32(arguments.count), argvBuffer.baseAddress!, lengthBuffer.baseAddress!)
                }
            }
        }
    }

    private static func milliseconds(_ d: Duration) -> Int {
        let (seconds, attoseconds) = d.components
        return Int(seconds) * 1000 + Int(attoseconds / 1_000_000_000_000_000)
    }
}
