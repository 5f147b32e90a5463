import Foundation
import TestSupport
import Testing

@testable import JobQueue
@testable import Redis

/// The client layer against a real redis-server: URLs, AUTH, SELECT, timeouts, reconnects, script reloads.
@Suite struct RedisClientTests {
    @Test func urlsParse() throws {
        let tcp = try RedisConfiguration(url: "redis://alice:p%40ss@127.0.0.1:6380/3")
        #expect(tcp.endpoint == .tcp(host: "127.0.0.1", port: 6380))
        #expect(tcp.username == "alice" && tcp.password == "p@ss" && tcp.database == 3)
        let unix = try RedisConfiguration(url: "unix:///run/kd/redis.sock?db=2&password=x")
        #expect(unix.endpoint == .unix(path: "/run/kd/redis.sock") && unix.database == 2 && unix.password == "x")
        #expect(unix.username == nil)
        #expect(try RedisConfiguration(url: "redis://localhost").endpoint == .tcp(host: "localhost", port: 6379))
        #expect(throws: RedisError.self) { try RedisConfiguration(url: "http://x") }
        #expect(throws: RedisError.self) { try RedisConfiguration(url: "redis://h/notanumber") }
    }

    @Test func authPasswordAndACLUserAndDatabase() throws {
        let server = try RedisServer(extraConfig: [
            "requirepass sesame", "user alice on >wonderland ~* &* +@all",
        ])
        var config = RedisConfiguration(.unix(path: server.socketPath))
        // No password: the server refuses commands with NOAUTH.
        do {
            try RedisClient(config).command(["PING"])
            Issue.record("a command without AUTH succeeded")
        } catch {
            #expect(error.code == .server && error.kind == "NOAUTH")
        }
        config.password = "wrong"
        do {
            try RedisClient(config).connect()
            Issue.record("a wrong password was accepted")
        } catch {
            #expect(error.kind == "WRONGPASS")
        }
        config.password = "sesame"
        config.database = 5
        let a = RedisClient(config)
        try a.command(["SET", "k", "in-db-5"])
        config.username = "alice"
        config.password = "wonderland"
        config.database = 0
        let b = RedisClient(config)
        #expect(try b.command(["ACL", "WHOAMI"]).text == "alice")
        #expect(try b.command(["GET", "k"]) == .null)
        try b.command(["SELECT", "5"])
        #expect(try b.command(["GET", "k"]).text == "in-db-5")
        // After a reconnect, AUTH and SELECT are replayed (hiredis does not).
        let c = RedisClient(try RedisConfiguration(url: "unix://\(server.socketPath)?db=5&password=sesame"))
        #expect(try c.command(["GET", "k"]).text == "in-db-5")
        let cid = try c.command(["CLIENT", "ID"]).integer!
        try a.command(["CLIENT", "KILL", "ID", String(cid)])
        #expect(throws: RedisError.self) { try c.command(["GET", "k"]) }
        #expect(try c.command(["GET", "k"]).text == "in-db-5")
        #expect(c.reconnects == 1)
    }

    @Test func commandTimeoutOnASilentServer() throws {
        // A listening socket that never answers: the connect succeeds (backlog), the command must time out.
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let path = dir.file("silent.sock")
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in for (i, b) in path.utf8.enumerated() { raw[i] = b } }
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        #expect(bound == 0 && listen(fd, 4) == 0)
        var config = RedisConfiguration(.unix(path: path))
        config.commandTimeout = .milliseconds(200)
        let client = RedisClient(config)
        let start = Date()
        do {
            try client.command(["PING"])
            Issue.record("a silent server answered")
        } catch {
            #expect(error.code == .connection && error.isTransient)
        }
        let waited = Date().timeIntervalSince(start)
        #expect(waited >= 0.15 && waited < 3, "waited \(waited) s")
        #expect(!client.isConnected)
    }

    @Test func retryingSurvivesUnblockedAndRestarts() throws {
        let server = try RedisServer()
        var config = RedisConfiguration(.unix(path: server.socketPath))
        config.backoff = Backoff(initial: .milliseconds(20), cap: .milliseconds(200), floor: .milliseconds(5))
        let client = RedisClient(config)
        let admin = RedisClient(RedisConfiguration(.unix(path: server.socketPath)))
        let id = try client.command(["CLIENT", "ID"]).integer!
        // Unblock the blocked client with an error, from another connection, while it waits.
        let unblocker = Thread {
            // Once the server lists the client as blocked in BLMOVE.
            _ = eventually(timeout: 10) {
                (try? admin.command(["CLIENT", "LIST", "ID", String(id)]).text)?.contains("cmd=blmove") == true
            }
            _ = try? admin.command(["CLIENT", "UNBLOCK", String(id), "ERROR"])
        }
        unblocker.start()
        var errors: [RedisError] = []
        let reply = try client.retrying(onRetry: { e, _ in errors.append(e) }) { c throws(RedisError) in
            try c.withCommandTimeout(.seconds(5)) { () throws(RedisError) in
                try c.command(["BLMOVE", "src", "dst", "RIGHT", "LEFT", errors.isEmpty ? "3" : "0.05"])
            }
        }
        #expect(reply == .null)
        #expect(errors.first?.kind == "UNBLOCKED")
        // A server restart: the next call reconnects with backoff.
        try client.command(["SET", "x", "1"])
        server.stop(hard: true)
        // Restarted once the client has failed to reach it at least once (so the retry path is what recovers).
        final class Failures: @unchecked Sendable {
            let condition = NSCondition()
            var count = 0
        }
        let failures = Failures()
        let restarter = Thread {
            failures.condition.lock()
            while failures.count == 0 { failures.condition.wait() }
            failures.condition.unlock()
            try? server.restart()
        }
        restarter.start()
        let value = try client.retrying(onRetry: { _, _ in
            failures.condition.lock()
            failures.count += 1
            failures.condition.signal()
            failures.condition.unlock()
        }) { c throws(RedisError) in
            try c.command(["INCR", "counter"])
        }
        let retries = failures.condition.withLock { failures.count }
        #expect(value == .integer(1))
        #expect(retries >= 1)
        #expect(client.reconnects >= 1)
    }

    @Test func scriptsAreReloadedAfterNOSCRIPT() throws {
        let server = try RedisServer()
        let client = RedisClient(RedisConfiguration(.unix(path: server.socketPath)))
        // Our SHA-1 names scripts the way the server does.
        for script in Scripts.all {
            #expect(try client.command(["SCRIPT", "LOAD", script.source]).text == script.sha, "\(script.name)")
        }
        try client.command(["SCRIPT", "FLUSH"])
        var q = QueueConfiguration(queues: ["a"], worker: "w")
        q.keys = KeySpace(prefix: "t:")
        let queue = ReliableQueue(client: client, configuration: q)
        try client.command(["LPUSH", "t:queue:a", "job"])
        #expect(try queue.take(max: 1, block: false) == [TakenJob(queue: "a", payload: Array("job".utf8))])
        #expect(try client.command(["SCRIPT", "EXISTS", Scripts.take.sha]) == .array([.integer(1)]))
    }

    @Test func clusterSlotsFollowTheHashTag() {
        // CRC16/XMODEM check value (Redis Cluster specification): "123456789" → 0x31C3 = 12739.
        #expect(KeySpace.clusterSlot("123456789") == 12739)
        #expect(KeySpace.clusterSlot("{user1000}.following") == KeySpace.clusterSlot("{user1000}.followers"))
        // An empty tag does not count: the whole key is hashed.
        #expect(KeySpace.clusterSlot("foo{}{bar}") != KeySpace.clusterSlot("foo{}{bar}x"))
        let keys = KeySpace(prefix: "kd:", hashTag: "img")
        let all = [
            keys.queue("a"), keys.queue("b"), keys.processing("w1"), keys.job("x"), keys.cancel("x"), keys.worker("w1"),
            keys.workers, keys.delayed, keys.dead, keys.events, keys.reaperLock, keys.workerQueues("w1"),
        ]
        #expect(Set(all.map(KeySpace.clusterSlot)).count == 1)
        #expect(keys.queue("a") == "kd:{img}:queue:a")
        #expect(KeySpace().queue("a") == "kd:queue:a")
    }
}
