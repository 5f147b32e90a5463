import Foundation
import Redis

/// A real `redis-server` that a test starts for itself: its own temporary directory, a Unix socket, no TCP port
/// unless asked, `appendonly yes`. Starting fails loudly when `redis-server` is not installed.
public final class RedisServer: @unchecked Sendable {
    public struct Missing: Error, CustomStringConvertible {
        public var description: String {
            "redis-server was not found on PATH: install it (Debian: apt-get install redis-server); the Redis tests need a real server"
        }
    }

    public let directory: TemporaryDirectory
    public let socketPath: String
    /// The TCP port, when started with `tcp: true`.
    public let port: Int?
    private var process: Process
    private let configPath: String

    /// Starts a server and waits (up to 10 s) until it answers on its socket.
    public init(tcp: Bool = false, extraConfig: [String] = []) throws {
        guard let binary = Self.find("redis-server") else { throw Missing() }
        directory = try TemporaryDirectory(prefix: "kd-redis")
        socketPath = directory.file("redis.sock")
        port = tcp ? Self.freePort() : nil
        var config = [
            "dir \(directory.path)", "unixsocket \(socketPath)", "unixsocketperm 700", "port \(port ?? 0)",
            "bind 127.0.0.1", "appendonly yes", "save \"\"", "daemonize no", "logfile \(directory.file("redis.log"))",
        ]
        config += extraConfig
        configPath = directory.file("redis.conf")
        try config.joined(separator: "\n").write(toFile: configPath, atomically: true, encoding: .utf8)
        process = Self.launch(binary, configPath)
        try process.run()
        try waitForSocket()
    }

    /// Starts the server again after `stop`, with the same configuration, socket, port and data directory (so an
    /// append-only file brings its data back), and waits until it accepts connections.
    public func restart() throws {
        stop(hard: true)
        guard let binary = Self.find("redis-server") else { throw Missing() }
        unlink(socketPath)  // a server killed hard leaves its socket file behind
        process = Self.launch(binary, configPath)
        try process.run()
        try waitForSocket()
    }

    /// The server's process id, while it runs.
    public var pid: Int32? { process.isRunning ? process.processIdentifier : nil }

    private static func launch(_ binary: String, _ configPath: String) -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = [configPath]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        return process
    }

    /// Waits (up to 10 s) until the Unix socket accepts a connection.
    private func waitForSocket() throws {
        let deadline = Date().addingTimeInterval(10)
        // Accepting connections is not enough after a restart: until the append-only file is loaded, commands get
        // LOADING. Ready means PING answers PONG.
        while !Self.answersPing(socketPath) {
            if !process.isRunning || Date() > deadline {
                let log = (try? String(contentsOfFile: directory.file("redis.log"), encoding: .utf8)) ?? ""
                stop()
                throw NSError(
                    domain: "RedisServer", code: 1,
                    userInfo: [NSLocalizedDescriptionKey: "redis-server did not start: \(log)"])
            }
            usleep(10_000)
        }
    }

    /// Whether a server on the Unix socket at `path` answers `PING` with anything but `-LOADING`.
    static func answersPing(_ path: String) -> Bool {
        let fd = connectUnix(path)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 1, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let ping = Array("PING\r\n".utf8)
        guard write(fd, ping, ping.count) == ping.count else { return false }
        var reply = [UInt8](repeating: 0, count: 64)
        let n = read(fd, &reply, reply.count)
        // +PONG, or -NOAUTH from a server that wants a password: either way it serves commands. Only -LOADING
        // (the append-only file still loading) or silence means not yet.
        guard n >= 1 else { return false }
        let text = String(decoding: reply[0..<n], as: UTF8.self)
        return !text.hasPrefix("-LOADING")
    }

    /// A connected Unix stream socket, or -1.
    static func connectUnix(_ path: String) -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return -1 }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            close(fd)
            return -1
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        let len = socklen_t(MemoryLayout<sockaddr_un>.size)
        let status = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, len) }
        }
        if status != 0 {
            close(fd)
            return -1
        }
        return fd
    }

    /// Kills the server (SIGKILL when `hard`, else SIGTERM, then SIGKILL after 5 s: a test runner may have
    /// spawned it with SIGTERM blocked) and waits for it to exit.
    public func stop(hard: Bool = false) {
        if process.isRunning {
            kill(process.processIdentifier, hard ? SIGKILL : SIGTERM)
            let deadline = Date().addingTimeInterval(5)
            while process.isRunning && Date() < deadline { usleep(10_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
        }
    }

    deinit {
        stop(hard: true)
        directory.remove()
    }

    static func find(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for dir in path.split(separator: ":") + ["/usr/sbin", "/usr/bin"] {
            let candidate = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    /// A TCP port that was free a moment ago (the product's own probe).
    public static func freePort() -> Int { LocalRedisServer.freePort() }
}
