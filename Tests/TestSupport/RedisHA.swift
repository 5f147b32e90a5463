import Foundation

/// A `redis-server` process on a loopback TCP port (a master, a replica, a sentinel or a cluster node) that a test
/// starts for itself in a temporary directory, waits for, and kills, even when the test fails.
public final class RedisNode: @unchecked Sendable {
    public let port: Int
    public let directory: TemporaryDirectory
    public let isSentinel: Bool
    private let password: String?
    private let process: Process

    /// Starts `redis-server` (with `--sentinel` when `sentinel`) on a free loopback port with `config` lines added,
    /// and waits (up to 10 s) until it answers `PING`.
    public init(sentinel: Bool = false, config: [String] = [], password: String? = nil) throws {
        guard let binary = RedisServer.find("redis-server") else { throw RedisServer.Missing() }
        directory = try TemporaryDirectory(prefix: sentinel ? "kd-sentinel" : "kd-node")
        port = RedisServer.freePort()
        isSentinel = sentinel
        self.password = password
        var lines = [
            "port \(port)", "bind 127.0.0.1", "dir \(directory.path)", "daemonize no",
            "logfile \(directory.file("redis.log"))",
        ]
        if !sentinel { lines += ["appendonly yes", "save \"\""] }
        lines += config
        let path = directory.file(sentinel ? "sentinel.conf" : "redis.conf")
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = sentinel ? [path, "--sentinel"] : [path]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(10)
        while (try? command(["PING"])) == nil {
            if !process.isRunning || Date() > deadline {
                let log = self.log
                kill9()
                throw NSError(
                    domain: "RedisNode", code: 1, userInfo: [NSLocalizedDescriptionKey: "redis did not start: \(log)"])
            }
            usleep(20_000)
        }
    }

    public var address: String { "127.0.0.1:\(port)" }
    public var isRunning: Bool { process.isRunning }
    public var log: String { (try? String(contentsOfFile: directory.file("redis.log"), encoding: .utf8)) ?? "" }

    /// SIGKILL, as a crash or a power cut of the server.
    public func kill9() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    deinit {
        kill9()
        directory.remove()
    }

    /// Runs one command over a fresh connection (with AUTH when the node has a password) and returns the reply as
    /// RESP text: a tiny client of its own, so the tests do not check the product's client with itself.
    public func command(_ arguments: [String], timeout: Double = 2) throws -> RESP {
        let connection = try RESPConnection(port: port, timeout: timeout)
        if let password {
            _ = try? connection.send(["AUTH", password])
        }
        return try connection.send(arguments)
    }
}

/// A RESP2 reply, parsed by `RESPConnection`.
public indirect enum RESP: Equatable, Sendable {
    case simple(String)
    case error(String)
    case integer(Int)
    case bulk(String?)
    case array([RESP]?)

    public var text: String? {
        switch self {
        case .simple(let s): return s
        case .bulk(let s): return s
        default: return nil
        }
    }
    public var integer: Int? { if case .integer(let n) = self { return n } else { return nil } }
    public var array: [RESP]? { if case .array(let a) = self { return a } else { return nil } }
}

/// A minimal blocking RESP2 client over a loopback TCP socket (tests only).
public final class RESPConnection {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    private let fd: Int32
    private var buffer: [UInt8] = []

    public init(port: Int, timeout: Double) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket() failed") }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - Double(Int(timeout))) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = UInt16(port).bigEndian
        let status = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        if status != 0 {
            close(fd)
            throw Failure(description: "cannot connect to 127.0.0.1:\(port)")
        }
    }

    deinit { close(fd) }

    public func send(_ arguments: [String]) throws -> RESP {
        var out = "*\(arguments.count)\r\n"
        for a in arguments { out += "$\(a.utf8.count)\r\n\(a)\r\n" }
        let bytes = Array(out.utf8)
        guard write(fd, bytes, bytes.count) == bytes.count else { throw Failure(description: "write failed") }
        return try read()
    }

    private func line() throws -> String {
        while true {
            if let i = buffer.firstIndex(of: 10), i > 0, buffer[i - 1] == 13 {
                let text = String(decoding: buffer[..<(i - 1)], as: UTF8.self)
                buffer.removeFirst(i + 1)
                return text
            }
            try fill()
        }
    }

    private func fill() throws {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = Foundation.read(fd, &chunk, chunk.count)
        guard n > 0 else { throw Failure(description: "connection closed or timed out") }
        buffer += chunk[..<n]
    }

    private func read() throws -> RESP {
        let l = try line()
        let body = String(l.dropFirst())
        switch l.first {
        case "+": return .simple(body)
        case "-": return .error(body)
        case ":": return .integer(Int(body) ?? 0)
        case "$":
            let n = Int(body) ?? -1
            if n < 0 { return .bulk(nil) }
            while buffer.count < n + 2 { try fill() }
            let text = String(decoding: buffer[..<n], as: UTF8.self)
            buffer.removeFirst(n + 2)
            return .bulk(text)
        case "*":
            let n = Int(body) ?? -1
            if n < 0 { return .array(nil) }
            return .array(try (0..<n).map { _ in try read() })
        default: throw Failure(description: "unexpected reply line \(l)")
        }
    }
}

/// A master, a replica and three sentinels (quorum 2) on loopback ports, with quick failure detection
/// (`down-after-milliseconds` 1000).
public final class SentinelSet: @unchecked Sendable {
    public let masterName = "kdmaster"
    public let master: RedisNode
    public let replica: RedisNode
    public let sentinels: [RedisNode]
    public let password: String?

    /// - Parameters:
    ///   - password: the master's and replica's `requirepass` (and the sentinels' `auth-pass`).
    ///   - sentinelPassword: the sentinels' own `requirepass`.
    public init(password: String? = nil, sentinelPassword: String? = nil, downAfterMs: Int = 1000) throws {
        self.password = password
        let auth = password.map { ["requirepass \($0)", "masterauth \($0)"] } ?? []
        master = try RedisNode(config: auth, password: password)
        replica = try RedisNode(config: auth + ["replicaof 127.0.0.1 \(master.port)"], password: password)
        var started: [RedisNode] = []
        let masterName = masterName
        for _ in 0..<3 {
            started.append(
                try RedisNode(
                    sentinel: true,
                    config: [
                        "sentinel monitor \(masterName) 127.0.0.1 \(master.port) 2",
                        "sentinel down-after-milliseconds \(masterName) \(downAfterMs)",
                        "sentinel failover-timeout \(masterName) 10000",
                        "sentinel parallel-syncs \(masterName) 1",
                    ] + (password.map { ["sentinel auth-pass \(masterName) \($0)"] } ?? [])
                        + (sentinelPassword.map { ["requirepass \($0)"] } ?? []),
                    password: sentinelPassword))
        }
        sentinels = started
        let (master, replica) = (master, replica)
        // Ready when the replica is in sync, the master lists it as online (what ROLE reports to clients), and every
        // sentinel has found it (so a failover can promote it).
        let ok = eventually(timeout: 30) {
            let info = (try? replica.command(["INFO", "replication"]).text) ?? ""
            guard info.contains("master_link_status:up") else { return false }
            let masterInfo = (try? master.command(["INFO", "replication"]).text) ?? ""
            guard masterInfo.contains("state=online") else { return false }
            return started.allSatisfy { s in
                let replicas = (try? s.command(["SENTINEL", "REPLICAS", masterName]))?.array
                return (replicas?.count ?? 0) >= 1
            }
        }
        guard ok else {
            throw NSError(domain: "SentinelSet", code: 1, userInfo: [NSLocalizedDescriptionKey: "not ready"])
        }
    }

    /// `host:port,host:port,host:port` of the sentinels.
    public var sentinelList: String { sentinels.map(\.address).joined(separator: ",") }

    /// The master's address as the first sentinel that answers names it.
    public func masterAddress() -> String? {
        for s in sentinels where s.isRunning {
            if let a = (try? s.command(["SENTINEL", "GET-MASTER-ADDR-BY-NAME", masterName]))?.array, a.count == 2,
                let host = a[0].text, let port = a[1].text
            {
                return "\(host):\(port)"
            }
        }
        return nil
    }

    /// The node now at `address`.
    public func node(at address: String) -> RedisNode? { [master, replica].first { $0.address == address } }
}

/// A Redis Cluster of three masters with one replica each (`redis-cli --cluster create … --cluster-replicas 1`),
/// `cluster-node-timeout` 1000 ms.
public final class ClusterSet: @unchecked Sendable {
    public let nodes: [RedisNode]

    public init() throws {
        var started: [RedisNode] = []
        for _ in 0..<6 {
            started.append(
                try RedisNode(config: [
                    "cluster-enabled yes", "cluster-config-file nodes.conf", "cluster-node-timeout 1000",
                    // The bus port defaults to port + 10000, too high for an ephemeral port: one of its own.
                    "cluster-port \(RedisServer.freePort())",
                ]))
        }
        nodes = started
        let nodes = started
        guard let cli = RedisServer.find("redis-cli") else { throw RedisServer.Missing() }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: cli)
        process.arguments =
            ["--cluster", "create"] + nodes.map(\.address) + ["--cluster-replicas", "1", "--cluster-yes"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw NSError(domain: "ClusterSet", code: 1, userInfo: [NSLocalizedDescriptionKey: "cluster create failed"])
        }
        let ok = eventually(timeout: 30) {
            nodes.allSatisfy { n in (try? n.command(["CLUSTER", "INFO"]).text)?.contains("cluster_state:ok") == true }
                && nodes.filter { n in
                    (try? n.command(["ROLE"]))?.array?.first?.text == "slave"
                        && (try? n.command(["INFO", "replication"]).text)?.contains("master_link_status:up") == true
                }.count == 3
        }
        guard ok else { throw NSError(domain: "ClusterSet", code: 2, userInfo: [NSLocalizedDescriptionKey: "not ok"]) }
    }

    public var seeds: String { nodes.prefix(3).map(\.address).joined(separator: ",") }

    /// The master (and its replicas) serving `slot`, from `CLUSTER SLOTS` asked of a running node.
    public func master(ofSlot slot: Int) -> String? {
        for n in nodes where n.isRunning {
            guard let ranges = (try? n.command(["CLUSTER", "SLOTS"]))?.array else { continue }
            for r in ranges {
                guard let items = r.array, items.count >= 3, let lo = items[0].integer, let hi = items[1].integer,
                    (lo...hi).contains(slot), let node = items[2].array, node.count >= 2, let host = node[0].text,
                    let port = node[1].integer
                else { continue }
                return "\(host):\(port)"
            }
        }
        return nil
    }

    public func node(at address: String) -> RedisNode? { nodes.first { $0.address == address } }
}
