import Foundation

/// A datagram socket standing in for systemd's notification socket: point `NOTIFY_SOCKET` at `path` and read the
/// messages a process sends with sd_notify.
public final class NotifySocket: @unchecked Sendable {
    public let path: String
    private let fd: Int32
    private let lock = NSLock()
    private var queue: [String] = []
    private let arrived = DispatchSemaphore(value: 0)

    public init(path: String) throws {
        self.path = path
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
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
        guard fd >= 0, bound == 0 else {
            throw NSError(
                domain: "NotifySocket", code: Int(errno), userInfo: [NSLocalizedDescriptionKey: "cannot bind \(path)"])
        }
        startReading()
    }

    deinit { close(fd) }

    /// Reads continuously, as the service manager does (a sender blocks when nobody reads).
    private func startReading() {
        let fd = self.fd
        Thread.detachNewThread { [weak self] in
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = recv(fd, &buffer, buffer.count, 0)
                guard n > 0, let self else { return }
                self.lock.withLock { self.queue.append(String(decoding: buffer[0..<n], as: UTF8.self)) }
                self.arrived.signal()
            }
        }
    }

    /// The next message, or nil after `timeout` seconds without one.
    public func receive(timeout: Double) -> String? {
        guard arrived.wait(timeout: .now() + timeout) == .success else { return nil }
        return lock.withLock { queue.removeFirst() }
    }

    /// Messages until one contains `needle` (returned last), or nil when `timeout` passes first.
    public func receive(until needle: String, timeout: Double) -> [String]? {
        let deadline = Date().addingTimeInterval(timeout)
        var messages: [String] = []
        while Date() < deadline {
            guard let m = receive(timeout: max(0.05, deadline.timeIntervalSinceNow)) else { continue }
            messages.append(m)
            if m.contains(needle) { return messages }
        }
        return nil
    }
}
