import Foundation

/// A private `redis-server` on a Unix socket in a directory of its own (the embedded default for one machine, and
/// what `bench queue` measures against). Stopped when released.
public final class LocalRedisServer: @unchecked Sendable {
    public let directory: String
    public let socketPath: String
    private let process: Process
    private let ownsDirectory: Bool

    /// Starts `redis-server` (found on PATH) with `appendonly yes` and the extra configuration lines, and waits up to
    /// 10 s for its socket. With no `directory`, a temporary one is made and removed at the end.
    public init(directory: String? = nil, extraConfig: [String] = []) throws(RedisError) {
        guard let binary = Self.find("redis-server") else {
            throw RedisError(.connection, "redis-server was not found on PATH (Debian: apt-get install redis-server)")
        }
        if let directory {
            self.directory = directory
            ownsDirectory = false
            try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } else {
            var template = Array((NSTemporaryDirectory() + "/kd-redis.XXXXXX").utf8CString)
            guard let made = mkdtemp(&template) else { throw RedisError(.connection, "mkdtemp failed") }
            self.directory = String(cString: made)
            ownsDirectory = true
        }
        socketPath = self.directory + "/redis.sock"
        let config =
            [
                "dir \(self.directory)", "unixsocket \(socketPath)", "unixsocketperm 700", "port 0",
                "appendonly yes", "save \"\"", "daemonize no", "logfile \(self.directory)/redis.log",
            ] + extraConfig
        let configPath = self.directory + "/redis.conf"
        do {
            try config.joined(separator: "\n").write(toFile: configPath, atomically: true, encoding: .utf8)
        } catch {
            throw RedisError(.connection, "cannot write \(configPath): \(error)")
        }
        process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = [configPath]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        do { try process.run() } catch { throw RedisError(.connection, "cannot start redis-server: \(error)") }
        let deadline = Date().addingTimeInterval(10)
        while (try? RedisConnection(.unix(path: socketPath)).command(["PING"])) != .status("PONG") {
            if !process.isRunning || Date() > deadline {
                stop()
                let log = (try? String(contentsOfFile: self.directory + "/redis.log", encoding: .utf8)) ?? ""
                throw RedisError(.connection, "redis-server did not start: \(log.suffix(2000))")
            }
            usleep(10_000)
        }
    }

    public var endpoint: RedisEndpoint { .unix(path: socketPath) }

    /// SIGTERM (redis-server saves and exits), then SIGKILL if it is still running after 10 s (a parent may have
    /// started us with SIGTERM blocked, and the child inherits that).
    public func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGTERM)
            let deadline = Date().addingTimeInterval(10)
            while process.isRunning && Date() < deadline { usleep(10_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
        }
    }

    deinit {
        stop()
        if ownsDirectory { try? FileManager.default.removeItem(atPath: directory) }
    }

    /// An executable on PATH (or in the usual system directories).
    public static func find(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for dir in path.split(separator: ":").map(String.init) + ["/usr/sbin", "/usr/bin"] {
            let candidate = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    /// A loopback TCP port that was free a moment ago (bound to port 0, then released): for a server of our own
    /// (a replica, a test's nodes) that must listen on TCP.
    public static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) }
        }
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        return Int(UInt16(bigEndian: addr.sin_port))
    }
}
