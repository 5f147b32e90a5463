import Foundation
import TestSupport
import Testing

@testable import Systemd

/// sd_notify to a datagram socket the test binds, standing in for the service manager.
@Suite(.serialized) struct NotifierTests {
    @Test func messagesReachTheNotifySocket() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let path = dir.file("notify.sock")
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        #expect(fd >= 0)
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, byte) in path.utf8.enumerated() { raw[i] = byte }
        }
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        #expect(bound == 0)
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))

        setenv("NOTIFY_SOCKET", path, 1)
        defer { unsetenv("NOTIFY_SOCKET") }
        let notifier = SystemdNotifier()
        #expect(notifier.isEnabled)
        #expect(try notifier.ready(status: "loaded"))
        #expect(try notifier.watchdog())
        #expect(try notifier.status("3 jobs done\nbatch 2"))
        #expect(try notifier.stopping())

        var received: [String] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        for _ in 0..<4 {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { break }
            received.append(String(decoding: buffer[0..<n], as: UTF8.self))
        }
        #expect(received == ["READY=1\nSTATUS=loaded", "WATCHDOG=1", "STATUS=3 jobs done batch 2", "STOPPING=1"])
    }

    @Test func outsideSystemdNothingIsSent() throws {
        unsetenv("NOTIFY_SOCKET")
        let notifier = SystemdNotifier()
        #expect(!notifier.isEnabled)
        #expect(try notifier.ready() == false)
        #expect(notifier.watchdogInterval == nil)
    }
}
