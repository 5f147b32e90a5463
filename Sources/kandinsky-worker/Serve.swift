import ArgumentParser
import Foundation
import Logging
import Systemd
import Worker

/// `serve`: the daemon. Configuration from the file, then `KD_…` environment variables, then these flags.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a worker: take jobs from Redis, generate, store PNGs, publish events (see Config/worker.yaml).")

    @Option(help: "Configuration file (YAML; every key documented in Config/worker.yaml).") var config: String?
    @OptionGroup var placement: DeviceOptions
    @Option(
        help: """
            Redis URL: redis://[user:password@]host:port/db, unix:///path?db=N, redis-sentinel://h:p[,h:p…]/MASTER, \
            redis://h:p[,h:p…]?cluster=1; none: a private redis-server.
            """)
    var redis: String?
    @Option(help: "Model directory (default: the embedded shapes demo model).") var model: String?
    @Option(help: "Result store root.") var store: String?
    @Option(help: "Worker name (default: <host>-<device>).") var name: String?
    @Option(help: "Health and metrics HTTP address, HOST:PORT (port 0: a free port).") var http: String?
    @Option(help: "State directory (the private redis-server lives here).") var stateDir: String?
    @Option(parsing: .upToNextOption, help: "Queues in priority order.") var queue: [String] = []

    func run() async throws {
        let settings = try resolve()
        // journald with structured fields when systemd started us ($JOURNAL_STREAM is our stderr), else stderr.
        SystemdLogging.bootstrap(identifier: "kandinsky-worker")
        var logger = Logger(label: "kandinsky-worker.serve")
        logger[metadataKey: "worker"] = "\(settings.workerName)"
        logger[metadataKey: "device"] = "\(settings.device)"
        let daemon = WorkerDaemon(configuration: settings, logger: logger) { [logger] line in logger.info("\(line)") }
        let status = try await daemon.run()
        if status != 0 { throw ExitCode(status) }
    }

    /// File, then environment, then flags; any problem names the key.
    func resolve() throws -> ServeConfiguration {
        var c = ServeConfiguration()
        do {
            if let config {
                guard let text = try? String(contentsOfFile: config, encoding: .utf8) else {
                    throw ValidationError("--config \(config): cannot read the file")
                }
                try c.apply(yaml: text, source: config)
            }
            try c.apply(environment: ProcessInfo.processInfo.environment)
            let flags: [(String, String?)] = [
                ("device", placement.device), ("precision", placement.precision), ("redis_url", redis),
                ("model", model), ("store", store), ("name", name),
                ("http", http), ("state_dir", stateDir), ("queues", queue.isEmpty ? nil : queue.joined(separator: ",")),
            ]
            for case let (key, value?) in flags { try c.set(key, value, source: "--\(key)") }
        } catch let problem as ServeConfiguration.Problem {
            throw ValidationError("configuration: \(problem)")
        }
        return c
    }
}
