import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// The worker's HTTP endpoint on a loopback address: `/healthz` (the process is alive), `/readyz` (model loaded,
/// Redis reachable, loops beating: 200, else 503 with the reason), `/metrics` (Prometheus text).
///
/// Runs on one NIO event-loop thread of its own; handlers only read state that the daemon's threads keep current,
/// so no request ever waits on Redis or the model.
public final class HealthServer: @unchecked Sendable {
    /// Answers for the three paths, supplied by the daemon.
    public struct Endpoints: Sendable {
        /// nil when ready, else why not.
        public var notReady: @Sendable () -> String?
        public var metrics: @Sendable () -> String

        public init(notReady: @escaping @Sendable () -> String?, metrics: @escaping @Sendable () -> String) {
            self.notReady = notReady
            self.metrics = metrics
        }
    }

    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private var channel: Channel?
    /// The port actually bound (useful when asked for port 0).
    public private(set) var port = 0

    public init() {}

    /// Binds `host:port` and starts serving.
    public func start(host: String, port: Int, endpoints: Endpoints) throws {
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 64)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline().flatMap {
                    channel.pipeline.addHandler(Handler(endpoints: endpoints))
                }
            }
        let channel = try bootstrap.bind(host: host, port: port).wait()
        self.channel = channel
        self.port = channel.localAddress?.port ?? port
    }

    public func stop() {
        try? channel?.close().wait()
        try? group.syncShutdownGracefully()
    }

    final class Handler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let endpoints: Endpoints
        var head: HTTPRequestHead?

        init(endpoints: Endpoints) { self.endpoints = endpoints }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let h): head = h
            case .body: break
            case .end:
                guard let head else { return }
                let (status, type, body) = respond(head)
                var headers = HTTPHeaders()
                headers.add(name: "Content-Type", value: type)
                headers.add(name: "Content-Length", value: String(body.utf8.count))
                headers.add(name: "Connection", value: "close")
                context.write(
                    wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))),
                    promise: nil)
                var buffer = context.channel.allocator.buffer(capacity: body.utf8.count)
                buffer.writeString(body)
                context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
                let channel = context.channel
                context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
                self.head = nil
            }
        }

        func respond(_ head: HTTPRequestHead) -> (HTTPResponseStatus, String, String) {
            guard head.method == .GET || head.method == .HEAD else {
                return (.methodNotAllowed, "text/plain", "GET only\n")
            }
            switch head.uri.split(separator: "?").first.map(String.init) ?? "" {
            case "/healthz": return (.ok, "text/plain", "ok\n")
            case "/readyz":
                if let reason = endpoints.notReady() {
                    return (.serviceUnavailable, "text/plain", "not ready: \(reason)\n")
                }
                return (.ok, "text/plain", "ready\n")
            case "/metrics": return (.ok, "text/plain; version=0.0.4", endpoints.metrics())
            default: return (.notFound, "text/plain", "not found: /healthz, /readyz, /metrics\n")
            }
        }
    }
}
