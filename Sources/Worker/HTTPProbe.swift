import Foundation

/// A blocking HTTP/1.1 GET for `health --url`: one request over a plain TCP socket, `Connection: close`.
///
/// Not `URLSession`: on Linux that lives in FoundationNetworking, which links libcurl, and a fleet host would then need
/// `libcurl.so.4` for a binary that otherwise carries its Swift runtime with it. The probe only ever reads a worker's
/// `/readyz` on a loopback or fleet address, so plain HTTP with a deadline is all it needs.
public enum HTTPProbe {
    /// The answer: the status code and the body (nil status when no HTTP answer came, with why in `body`).
    public struct Response: Equatable, Sendable {
        public var status: Int?
        public var body: String
    }

    /// `http://host[:port][/path]` split into its parts (port 80 by default, path `/` by default).
    public static func parse(_ url: String) -> (host: String, port: Int, path: String)? {
        guard url.hasPrefix("http://") else { return nil }
        let rest = url.dropFirst("http://".count)
        let authority = rest.prefix { $0 != "/" }
        let path = rest.dropFirst(authority.count)
        var host = String(authority)
        var port = 80
        if host.hasPrefix("[") {  // [::1]:9464
            guard let close = host.firstIndex(of: "]") else { return nil }
            let after = host[host.index(after: close)...]
            if after.hasPrefix(":") {
                guard let p = Int(after.dropFirst()) else { return nil }
                port = p
            } else if !after.isEmpty {
                return nil
            }
            host = String(host[host.index(after: host.startIndex)..<close])
        } else if let colon = host.lastIndex(of: ":") {
            guard let p = Int(host[host.index(after: colon)...]) else { return nil }
            port = p
            host = String(host[..<colon])
        }
        guard !host.isEmpty, (1...65535).contains(port) else { return nil }
        return (host, port, path.isEmpty ? "/" : String(path))
    }

    /// GETs `url` and waits at most `timeout` for the whole answer.
    public static func get(_ url: String, timeout: Duration = .seconds(5)) -> Response {
        guard let (host, port, path) = parse(url) else {
            return Response(status: nil, body: "not an http://host:port/path URL: \(url)")
        }
        let deadline = ContinuousClock.now + timeout
        let fd: Int32
        do {
            fd = try connect(host: host, port: port, deadline: deadline)
        } catch {
            return Response(status: nil, body: "\(error)")
        }
        defer { close(fd) }
        let hostHeader = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        let request = Array("GET \(path) HTTP/1.1\r\nHost: \(hostHeader)\r\nConnection: close\r\n\r\n".utf8)
        var sent = 0
        while sent < request.count {
            guard wait(fd, for: Int16(POLLOUT), until: deadline) else {
                return Response(status: nil, body: "timed out sending to \(hostHeader)")
            }
            let n = request[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                return Response(status: nil, body: "sending to \(hostHeader): \(String(cString: strerror(errno)))")
            }
            sent += n
        }
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16 * 1024)
        while answer.count < 1 << 20 {
            guard wait(fd, for: Int16(POLLIN), until: deadline) else {
                return Response(status: nil, body: "timed out waiting for \(hostHeader)")
            }
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                return Response(status: nil, body: "reading from \(hostHeader): \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            answer += buffer[0..<n]
        }
        return interpret(answer)
    }

    /// The status line's code and the body of a raw HTTP/1.1 answer (a chunked body is returned as sent).
    static func interpret(_ answer: [UInt8]) -> Response {
        let text = String(decoding: answer, as: UTF8.self)
        guard let headEnd = text.range(of: "\r\n\r\n") else {
            return Response(status: nil, body: "no complete HTTP answer (\(answer.count) bytes)")
        }
        let statusLine = text[..<headEnd.lowerBound].prefix { $0 != "\r" }
        let words = statusLine.split(separator: " ")
        guard words.count >= 2, words[0].hasPrefix("HTTP/"), let status = Int(words[1]) else {
            return Response(status: nil, body: "not an HTTP status line: \(statusLine)")
        }
        return Response(status: status, body: String(text[headEnd.upperBound...]))
    }

    struct ConnectError: Error, CustomStringConvertible {
        var description: String
    }

    /// A connected, non-blocking socket to the first address of `host` that accepts within the deadline.
    private static func connect(host: String, port: Int, deadline: ContinuousClock.Instant) throws -> Int32 {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &list)
        guard rc == 0, let first = list else {
            throw ConnectError(description: "cannot resolve \(host): \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(first) }
        var why = "no address for \(host)"
        var entry: UnsafeMutablePointer<addrinfo>? = first
        while let info = entry {
            entry = info.pointee.ai_next
            let fd = socket(info.pointee.ai_family, info.pointee.ai_socktype | Int32(SOCK_NONBLOCK.rawValue), 0)
            if fd < 0 { continue }
            if Glibc.connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 { return fd }
            if errno == EINPROGRESS, wait(fd, for: Int16(POLLOUT), until: deadline) {
                var error: Int32 = 0
                var length = socklen_t(MemoryLayout<Int32>.size)
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length)
                if error == 0 { return fd }
                why = "connecting to \(host):\(port): \(String(cString: strerror(error)))"
            } else {
                let e = errno
                why =
                    "connecting to \(host):\(port): " + (e == EINPROGRESS ? "timed out" : String(cString: strerror(e)))
            }
            close(fd)
        }
        throw ConnectError(description: why)
    }

    /// Polls `fd` for `events` until the deadline; true when ready (or in error, which the next call reports).
    private static func wait(_ fd: Int32, for events: Int16, until deadline: ContinuousClock.Instant) -> Bool {
        while true {
            let left = ContinuousClock.now.duration(to: deadline)
            guard left > .zero else { return false }
            let (seconds, atto) = left.components
            let ms = Int32(clamping: seconds * 1000 + atto / 1_000_000_000_000_000 + 1)
            var entry = pollfd(fd: fd, events: events, revents: 0)
            let n = poll(&entry, 1, ms)
            if n > 0 { return true }
            if n < 0, errno != EINTR { return true }
        }
    }
}
