import Foundation
import TestSupport
import Testing

@testable import JobQueue
@testable import Redis

/// hiredis against a real redis-server started by each test.
@Suite struct RedisConnectionTests {
    @Test func commandsOverUnixSocketAndTCP() throws {
        let server = try RedisServer(tcp: true)
        for endpoint in [RedisEndpoint.unix(path: server.socketPath), .tcp(host: "127.0.0.1", port: server.port!)] {
            let redis = try RedisConnection(endpoint)
            #expect(try redis.command(["PING"]) == .status("PONG"))
            #expect(try redis.command(["SET", "k", "värde"]) == .status("OK"))
            #expect(try redis.command(["GET", "k"]).text == "värde")
            #expect(try redis.command(["GET", "missing"]) == .null)
            #expect(try redis.command(["RPUSH", "l", "a", "", "c"]).integer == 3)
            #expect(
                try redis.command(["LRANGE", "l", "0", "-1"])
                    == .array([.string(Array("a".utf8)), .string([]), .string(Array("c".utf8))]))
            // Binary-safe arguments: NUL bytes survive.
            try redis.command([Array("SET".utf8), Array("bin".utf8), [0, 1, 0, 255]])
            #expect(try redis.command(["GET", "bin"]) == .string([0, 1, 0, 255]))
            try redis.command(["FLUSHDB"])
        }
    }

    @Test func pipelineKeepsOrderAndReportsErrorsInPlace() throws {
        let server = try RedisServer()
        let redis = try RedisConnection(.unix(path: server.socketPath))
        let replies = try redis.pipeline([["SET", "a", "1"], ["INCR", "a"], ["LPUSH", "a", "x"], ["GET", "a"]])
        #expect(replies[0] == .status("OK"))
        #expect(replies[1] == .integer(2))
        guard case .error(let message) = replies[2] else {
            Issue.record("expected a WRONGTYPE error, got \(replies[2])")
            return
        }
        #expect(RedisError.server(message).kind == "WRONGTYPE")
        #expect(replies[3].text == "2")
        do {
            try redis.command(["EVALSHA", String(repeating: "0", count: 40), "0"])
            Issue.record("EVALSHA of an unknown script succeeded")
        } catch {
            #expect(error.code == .server && error.kind == "NOSCRIPT")
        }
    }

    @Test func connectionFailuresAreTypedErrors() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        do {
            _ = try RedisConnection(.unix(path: dir.file("nothing.sock")))
            Issue.record("connected to a socket that does not exist")
        } catch {
            #expect(error.code == .connection && error.endpoint?.contains("nothing.sock") == true)
        }
        // A server that goes away: the next command fails with a connection error, not a crash.
        let server = try RedisServer()
        let redis = try RedisConnection(.unix(path: server.socketPath))
        #expect(try redis.command(["PING"]) == .status("PONG"))
        server.stop(hard: true)
        #expect(throws: RedisError.self) { try redis.command(["PING"]) }
        #expect(redis.isBroken)
    }
}
