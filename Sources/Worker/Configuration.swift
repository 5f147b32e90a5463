import Foundation
import JobQueue
import Tensor
import Yams

/// The worker's configuration: built-in defaults, then the YAML file (`Config/worker.yaml` documents every key),
/// then environment variables (`KD_…`), then command-line flags. An unknown key or a bad value stops start-up with
/// an error naming it.
public struct ServeConfiguration: Equatable, Sendable {
    public var name: String?
    public var device = "cpu"
    /// Empty: a private redis-server on a Unix socket in the state directory.
    public var redisURL: String?
    /// Replicas a finish waits for (`WAIT`); nil: one where the master has a replica, else none.
    public var redisWaitReplicas: Int?
    public var redisWaitTimeoutMs = 1000
    public var queues = ["default"]
    public var keyPrefix = "kd:"
    public var hashTag: String?
    /// Empty: the embedded shapes demo model.
    public var model: String?
    public var stateDirectory = "/var/lib/kandinsky-worker"
    public var store: String?
    public var inputRoot: String?
    public var http = "127.0.0.1:9464"
    public var maxBatchImages = 4
    public var maxBatchWaitMs = 200
    public var heartbeatMs = 5000
    public var maxAttempts = 3
    public var retentionSeconds = 86_400
    public var shutdownGraceSeconds = 60
    /// A sampling step that does not return within this many seconds makes the worker stop its watchdog pings and
    /// heartbeat (systemd restarts it, another worker takes its jobs over).
    public var stepTimeoutSeconds = 300
    /// The weights' number format on the device (`precision`): on the CPU, `f16` keeps F16/BF16-stored layer weights
    /// in half precision, expanded at each use (about half the resident memory, about a fifth more time per UNet
    /// step). Whether the device runs it is checked at start (`Devices.select`).
    public var precision = Precision.f32
    /// The older name of `precision: f16`.
    public var halfWeights: Bool { precision == .f16 }
    public var defaults = GenerationDefaults()

    public init() {}

    /// The worker's name: configured, or `<host>-<device>`.
    public var workerName: String {
        if let name { return name }
        let host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "worker"
        return "\(host)-\(device.replacingOccurrences(of: ":", with: ""))"
    }

    /// The Redis configuration of `redis_url` with the WAIT settings applied (nil: none configured).
    public func redisConfiguration() throws(RedisError) -> RedisConfiguration? {
        guard let redisURL else { return nil }
        var c = try RedisConfiguration(url: redisURL)
        if let n = redisWaitReplicas { c.waitReplicas = n }
        if redisWaitTimeoutMs != 1000 { c.waitTimeout = .milliseconds(redisWaitTimeoutMs) }
        return c
    }

    /// The key space: the configured prefix and hash tag; in cluster mode made single-slot (`KeySpace.forCluster`).
    public func keySpace(cluster: Bool) -> KeySpace {
        let keys = KeySpace(prefix: keyPrefix, hashTag: hashTag)
        return cluster ? keys.forCluster() : keys
    }

    /// The store root: configured, or `<state_dir>/store`.
    public var storeRoot: String { store ?? (stateDirectory as NSString).appendingPathComponent("store") }
    /// The input root: configured, or `<state_dir>/inputs`.
    public var inputDirectory: String { inputRoot ?? (stateDirectory as NSString).appendingPathComponent("inputs") }

    /// A configuration error naming the key (and where it came from).
    public struct Problem: Error, CustomStringConvertible, Equatable {
        public var key: String
        public var message: String
        public var source: String
        public var description: String { "\(source): \(key): \(message)" }
    }

    // MARK: - Sources

    /// Applies a YAML document (the file's text).
    public mutating func apply(yaml text: String, source: String) throws(Problem) {
        let root: Any?
        do {
            root = try Yams.load(yaml: text)
        } catch {
            throw Problem(key: "(file)", message: "not valid YAML: \(error)", source: source)
        }
        guard let root else { return }  // an empty file
        guard let map = root as? [String: Any] else {
            throw Problem(key: "(file)", message: "the top level must be a mapping of keys", source: source)
        }
        for (key, value) in map.sorted(by: { $0.key < $1.key }) {
            if key == "defaults" {
                guard let defaults = value as? [String: Any] else {
                    throw Problem(key: key, message: "must be a mapping", source: source)
                }
                for (k, v) in defaults.sorted(by: { $0.key < $1.key }) {
                    try set("defaults.\(k)", yamlString(v, key: "defaults.\(k)", source: source), source: source)
                }
            } else if key == "queues", let list = value as? [Any] {
                queues = try list.map { item throws(Problem) in try yamlString(item, key: key, source: source) }
                guard !queues.isEmpty else {
                    throw Problem(key: key, message: "needs at least one queue", source: source)
                }
            } else {
                try set(key, yamlString(value, key: key, source: source), source: source)
            }
        }
    }

    /// Applies `KD_<KEY>` environment variables (`KD_REDIS_URL`, `KD_MODEL`, `KD_QUEUES=a,b`, …).
    public mutating func apply(environment: [String: String]) throws(Problem) {
        for (variable, value) in environment.sorted(by: { $0.key < $1.key }) where variable.hasPrefix("KD_") {
            let key = variable.dropFirst(3).lowercased()
            guard Self.keys.contains(key) else { continue }
            try set(key, value, source: "environment \(variable)")
        }
    }

    /// Every settable key (the file's keys; `defaults.*` are the generation defaults).
    public static let keys: Set<String> = [
        "name", "device", "redis_url", "redis_wait_replicas", "redis_wait_timeout_ms", "queues", "key_prefix",
        "hash_tag", "model", "state_dir", "store", "input_root",
        "http", "max_batch_images", "max_batch_wait_ms", "heartbeat_ms", "max_attempts", "retention_s",
        "shutdown_grace_s", "step_timeout_s", "half_weights", "precision",
    ]

    static let defaultKeys: Set<String> = [
        "width", "height", "num_images", "steps", "guidance_scale", "sampler", "eta", "dynamic_threshold", "strength",
    ]

    /// Sets one key from its text form.
    public mutating func set(_ key: String, _ value: String, source: String) throws(Problem) {
        func bad(_ message: String) -> Problem { Problem(key: key, message: message, source: source) }
        func int(_ range: ClosedRange<Int>) throws(Problem) -> Int {
            guard let v = Int(value.trimmingCharacters(in: .whitespaces)), range.contains(v) else {
                throw bad("must be an integer in \(range.lowerBound)…\(range.upperBound) (got \"\(value)\")")
            }
            return v
        }
        func double(_ range: ClosedRange<Double>) throws(Problem) -> Double {
            guard let v = Double(value.trimmingCharacters(in: .whitespaces)), v.isFinite, range.contains(v) else {
                throw bad("must be a number in \(range.lowerBound)…\(range.upperBound) (got \"\(value)\")")
            }
            return v
        }
        func optional(_ v: String) -> String? { v.isEmpty ? nil : v }
        switch key {
        case "name":
            guard value.isEmpty || value.range(of: #"^[A-Za-z0-9._@-]{1,128}$"#, options: .regularExpression) != nil
            else {
                throw bad("must be 1-128 characters of A-Z a-z 0-9 . _ @ -")
            }
            name = optional(value)
        case "device":
            do {
                device = try Device(parsing: value).description
            } catch {
                throw bad("must be cpu or vulkan:N (got \"\(value)\")")
            }
        case "precision":
            guard let p = Precision(rawValue: value.trimmingCharacters(in: .whitespaces).lowercased()) else {
                throw bad("must be f32, f16 or bf16 (got \"\(value)\")")
            }
            precision = p
        case "redis_url":
            if !value.isEmpty {
                do { _ = try RedisConfiguration(url: value) } catch { throw bad("\(error)") }
            }
            redisURL = optional(value)
        case "queues":
            let list = value.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter {
                !$0.isEmpty
            }
            guard !list.isEmpty else { throw bad("needs at least one queue") }
            queues = list
        case "redis_wait_replicas": redisWaitReplicas = value.isEmpty || value == "auto" ? nil : try int(0...100)
        case "redis_wait_timeout_ms": redisWaitTimeoutMs = try int(1...600_000)
        case "key_prefix": keyPrefix = value
        case "hash_tag": hashTag = optional(value)
        case "model": model = optional(value)
        case "state_dir":
            guard !value.isEmpty else { throw bad("must not be empty") }
            stateDirectory = value
        case "store": store = optional(value)
        case "input_root": inputRoot = optional(value)
        case "http":
            guard Self.hostPort(value) != nil else {
                throw bad("must be HOST:PORT (port 0: any free port), got \"\(value)\"")
            }
            http = value
        case "max_batch_images": maxBatchImages = try int(1...64)
        case "max_batch_wait_ms": maxBatchWaitMs = try int(0...60_000)
        case "heartbeat_ms": heartbeatMs = try int(100...600_000)
        case "max_attempts": maxAttempts = try int(1...100)
        case "retention_s": retentionSeconds = try int(1...31_536_000)
        case "shutdown_grace_s": shutdownGraceSeconds = try int(0...3600)
        case "step_timeout_s": stepTimeoutSeconds = try int(1...86_400)
        case "half_weights":
            switch value.trimmingCharacters(in: .whitespaces).lowercased() {
            case "true", "yes", "on", "1": precision = .f16
            case "false", "no", "off", "0": precision = .f32
            default: throw bad("must be true or false (got \"\(value)\")")
            }
        // Defaults obey the limits jobs do (the one table, DESIGN §3).
        case "defaults.width": defaults.width = try int(JobLimits().size)
        case "defaults.height": defaults.height = try int(JobLimits().size)
        case "defaults.num_images": defaults.numImages = try int(JobLimits().numImages)
        case "defaults.steps": defaults.steps = try int(JobLimits().steps)
        case "defaults.guidance_scale": defaults.guidanceScale = try double(JobLimits().guidanceScale)
        case "defaults.sampler":
            guard let s = Sampler(rawValue: value) else {
                throw bad("must be one of \(Sampler.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            defaults.sampler = s
        case "defaults.eta": defaults.eta = try double(0...1)
        case "defaults.dynamic_threshold":
            defaults.dynamicThreshold =
                value == "null" || value == "none" || value.isEmpty ? nil : try double(0.001...100)
        case "defaults.strength": defaults.strength = try double(0.001...1)
        default:
            throw bad(
                "unknown key (known: \((Self.keys.sorted() + Self.defaultKeys.sorted().map { "defaults.\($0)" }).joined(separator: ", ")))"
            )
        }
    }

    /// `HOST:PORT` split, or nil.
    public static func hostPort(_ text: String) -> (host: String, port: Int)? {
        guard let colon = text.lastIndex(of: ":") else { return nil }
        let host = String(text[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        guard !host.isEmpty, let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
            return nil
        }
        return (host, port)
    }

    private func yamlString(_ value: Any, key: String, source: String) throws(Problem) -> String {
        switch value {
        case let s as String: return s
        case let b as Bool: return b ? "true" : "false"
        case let i as Int: return String(i)
        case let d as Double: return String(d)
        case is NSNull: return ""
        default: throw Problem(key: key, message: "must be a single value, not a list or mapping", source: source)
        }
    }
}
