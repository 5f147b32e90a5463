import Foundation
import Testing

@testable import Worker

/// `health --url`'s HTTP client (no URLSession, so no libcurl), against the worker's own HTTP server.
@Suite struct HTTPProbeTests {
    final class Flag: @unchecked Sendable {
        private let lock = NSLock()
        private var reason: String?
        var notReady: String? {
            get { lock.withLock { reason } }
            set { lock.withLock { reason = newValue } }
        }
    }

    @Test func readsStatusAndBodyFromTheHealthServer() throws {
        let flag = Flag()
        let server = HealthServer()
        try server.start(
            host: "127.0.0.1", port: 0,
            endpoints: .init(notReady: { flag.notReady }, metrics: { "kd_up 1\n" }))
        defer { server.stop() }
        let base = "http://127.0.0.1:\(server.port)"
        #expect(HTTPProbe.get(base + "/readyz") == .init(status: 200, body: "ready\n"))
        flag.notReady = "generation stuck in step 3"
        #expect(HTTPProbe.get(base + "/readyz") == .init(status: 503, body: "not ready: generation stuck in step 3\n"))
        #expect(HTTPProbe.get("http://localhost:\(server.port)/metrics").body == "kd_up 1\n")
        #expect(HTTPProbe.get(base + "/nothing").status == 404)
    }

    @Test func saysWhyWhenNoAnswerComes() throws {
        // A port that was free a moment ago: connection refused.
        let server = HealthServer()
        try server.start(host: "127.0.0.1", port: 0, endpoints: .init(notReady: { nil }, metrics: { "" }))
        let port = server.port
        server.stop()
        let refused = HTTPProbe.get("http://127.0.0.1:\(port)/readyz", timeout: .seconds(2))
        #expect(refused.status == nil && refused.body.contains("refused"), "\(refused)")

        // A listener that never answers: the deadline ends the wait.
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && listen(fd, 1) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        try #require(bound)
        let silent = HTTPProbe.get(
            "http://127.0.0.1:\(UInt16(bigEndian: address.sin_port))/readyz", timeout: .milliseconds(300))
        #expect(silent.status == nil && silent.body.contains("timed out"), "\(silent)")

        #expect(HTTPProbe.get("https://example.invalid/").body.hasPrefix("not an http://"))
    }

    @Test(arguments: [
        ("http://127.0.0.1:9464", "127.0.0.1", 9464, "/"), ("http://h/readyz", "h", 80, "/readyz"),
        ("http://[::1]:81/a?b", "::1", 81, "/a?b"), ("http://w1.fleet:9464/readyz", "w1.fleet", 9464, "/readyz"),
    ])
    func urlsAreSplit(url: String, host: String, port: Int, path: String) throws {
        let parts = try #require(HTTPProbe.parse(url))
        #expect(parts.host == host && parts.port == port && parts.path == path)
    }

    @Test func badUrlsAreRefused() {
        for url in ["ftp://h/", "http://", "http://h:0/", "http://h:x/", "http://[::1/", "http://[::1]x/"] {
            #expect(HTTPProbe.parse(url) == nil, "\(url)")
        }
    }

    @Test func rawAnswersAreInterpreted() {
        let ok = HTTPProbe.interpret(Array("HTTP/1.1 503 Service Unavailable\r\nA: b\r\n\r\nnot ready\n".utf8))
        #expect(ok == .init(status: 503, body: "not ready\n"))
        #expect(HTTPProbe.interpret(Array("HTTP/1.1 200 OK\r\n".utf8)).status == nil)
        #expect(HTTPProbe.interpret(Array("SSH-2.0\r\n\r\n".utf8)).status == nil)
    }
}
