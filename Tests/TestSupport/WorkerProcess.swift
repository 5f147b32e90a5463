import Foundation

/// A `kandinsky-worker` (or `kd-test-worker`) process started by a test, so it can be killed with SIGKILL mid-job.
///
/// A binary is found, in order: `$KD_WORKER_BINARY` (for `kandinsky-worker`) or `$KD_TEST_WORKER_BINARY`; beside the
/// running test bundle (the build directory of whatever scratch path `swift test` used); `.build/debug` under the
/// repository root.
public final class WorkerProcess: @unchecked Sendable {
    public struct BinaryMissing: Error, CustomStringConvertible {
        public var name: String
        public var searched: [String]
        public var description: String {
            "\(name) was not found (looked at \(searched.joined(separator: ", "))): build it first "
                + "(swift build --build-tests), or set \(WorkerProcess.environmentVariable(name))"
        }
    }

    public let name: String
    public let logPath: String
    public let outputPath: String
    private let process: Process

    /// Starts `kd-test-worker --name NAME` plus `arguments` (the scripted generator); its stderr goes to `logPath`.
    public convenience init(name: String, arguments: [String], logDirectory: String) throws {
        try self.init(
            name: name, command: ["--name", name] + arguments, logDirectory: logDirectory, binary: "kd-test-worker")
    }

    /// Starts `kandinsky-worker` with `command` (any subcommand and its arguments) and extra environment
    /// variables; its stderr goes to `logPath`, its stdout to `outputPath` (nowhere unless `captureOutput`).
    public init(
        name: String, command: [String], logDirectory: String, environment: [String: String] = [:],
        captureOutput: Bool = false, binary binaryName: String = "kandinsky-worker"
    ) throws {
        let binary = try Self.binary(binaryName)
        self.name = name
        logPath = (logDirectory as NSString).appendingPathComponent(
            "worker-\(name)-\(UInt32.random(in: 0...UInt32.max)).log")
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = command
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        }
        outputPath = logPath + ".out"
        if captureOutput { _ = FileManager.default.createFile(atPath: outputPath, contents: nil) }
        process.standardOutput = captureOutput ? FileHandle(forWritingAtPath: outputPath) : FileHandle.nullDevice
        process.standardError = FileHandle(forWritingAtPath: logPath)
        try process.run()
    }

    public var pid: Int32 { process.processIdentifier }
    public var isRunning: Bool { process.isRunning }

    /// SIGKILL: no chance to clean up, as in an OOM kill or a power cut of the process.
    public func kill9() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    /// SIGTERM, then waits (up to `timeout` seconds, then SIGKILL). Returns the exit status.
    @discardableResult
    public func terminate(timeout: Double = 10) -> Int32 {
        if process.isRunning {
            kill(process.processIdentifier, SIGTERM)
            let deadline = Date().addingTimeInterval(timeout)
            while process.isRunning, Date() < deadline { usleep(10_000) }
            if process.isRunning { kill9() }
        }
        process.waitUntilExit()
        return process.terminationStatus
    }

    public var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }
    /// What it printed, when started with `captureOutput`.
    public var output: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }

    deinit { kill9() }

    static func environmentVariable(_ name: String) -> String {
        name == "kandinsky-worker" ? "KD_WORKER_BINARY" : "KD_TEST_WORKER_BINARY"
    }

    public static func binary(_ name: String = "kandinsky-worker") throws -> String {
        var candidates: [String] = []
        if let explicit = ProcessInfo.processInfo.environment[environmentVariable(name)] { candidates.append(explicit) }
        if let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            // …/<scratch>/<config>/kandinsky-workerPackageTests.xctest (or inside a bundle on other systems)
            var dir = (exe as NSString).deletingLastPathComponent
            for _ in 0..<3 {
                candidates.append((dir as NSString).appendingPathComponent(name))
                dir = (dir as NSString).deletingLastPathComponent
            }
        }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
        candidates.append(root + "/.build/debug/" + name)
        for c in candidates where FileManager.default.isExecutableFile(atPath: c) { return c }
        throw BinaryMissing(name: name, searched: candidates)
    }
}

/// Polls `condition` every 10 ms until it holds or `timeout` seconds pass; returns whether it held.
public func eventually(timeout: Double, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if try condition() { return true }
        usleep(10_000)
    }
    return try condition()
}
