import CSystemd
import Foundation
import Logging

// MARK: - Fields

/// One journal field: a name of `[A-Z0-9_]` (not starting with `_` or a digit) and a value of any bytes.
public struct JournalField: Equatable, Sendable, CustomStringConvertible {
    public var name: String
    public var value: String

    public init(_ name: String, _ value: String) {
        self.name = name
        self.value = value
    }

    /// `NAME=value`, the form `sd_journal_sendv` takes for each `iovec` (the value may hold newlines).
    public var bytes: [UInt8] { Array(name.utf8) + [UInt8(ascii: "=")] + Array(value.utf8) }

    public var description: String { "\(name)=\(value)" }
}

/// How log records become journal fields: pure functions, so the encoding is tested without a journal.
public enum JournalEncoding {
    /// The longest field name journald keeps (`JOURNAL_FIELD_NAME_MAX` is 64 bytes).
    public static let maxNameLength = 64

    /// The fields the handler writes itself; a metadata key that sanitizes to one of them gets a `META_` prefix
    /// instead of overriding the message, its priority or its origin.
    public static let reservedNames: Set<String> = [
        "MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "CODE_FILE", "CODE_LINE", "CODE_FUNC", "LOGGER", "ERROR",
    ]

    /// A journal field name for a metadata key: upper-cased, every character outside `[A-Z0-9_]` turned into `_`,
    /// leading `_` dropped (those are journald's trusted fields), a leading digit prefixed with `F`, at most
    /// `maxNameLength` bytes. Returns nil when nothing usable is left (the key was only `_` or empty).
    public static func fieldName(_ key: String) -> String? {
        var name = String(
            key.uppercased().unicodeScalars.map { scalar -> Character in
                switch scalar {
                case "A"..."Z", "0"..."9", "_": Character(scalar)
                default: "_"
                }
            })
        while name.hasPrefix("_") { name.removeFirst() }
        guard let first = name.first else { return nil }
        if first.isNumber { name = "F" + name }
        return String(name.prefix(maxNameLength))
    }

    /// The syslog priority for a swift-log level: critical 2 (crit), error 3 (err), warning 4, notice 5, info 6,
    /// debug and trace 7 (debug). Emergency and alert are never produced: a worker's trouble is not the host's.
    public static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .critical: 2
        case .error: 3
        case .warning: 4
        case .notice: 5
        case .info: 6
        case .debug, .trace: 7
        }
    }

    /// Every field of one record, in order: `MESSAGE`, `PRIORITY`, `SYSLOG_IDENTIFIER`, `LOGGER`, `CODE_FILE`,
    /// `CODE_LINE`, `CODE_FUNC`, `ERROR` (when the event carries one), then the metadata sorted by key. Nested
    /// dictionaries are flattened with `_` (`request.width` and `["request": ["width": …]]` both give
    /// `REQUEST_WIDTH`); arrays and other values are written as their description.
    public static func fields(
        message: String, level: Logger.Level, identifier: String, label: String, file: String, line: UInt,
        function: String, error: (any Error)? = nil, metadata: Logger.Metadata
    ) -> [JournalField] {
        var fields = [
            JournalField("MESSAGE", message),
            JournalField("PRIORITY", String(priority(level))),
            JournalField("SYSLOG_IDENTIFIER", identifier),
            JournalField("LOGGER", label),
            JournalField("CODE_FILE", file),
            JournalField("CODE_LINE", String(line)),
            JournalField("CODE_FUNC", function),
        ]
        if let error { fields.append(JournalField("ERROR", String(describing: error))) }
        appendMetadata(metadata, prefix: nil, to: &fields)
        return fields
    }

    private static func appendMetadata(_ metadata: Logger.Metadata, prefix: String?, to fields: inout [JournalField]) {
        for (key, value) in metadata.sorted(by: { $0.key < $1.key }) {
            let fullKey = prefix.map { "\($0)_\(key)" } ?? key
            if case .dictionary(let nested) = value {
                appendMetadata(nested, prefix: fullKey, to: &fields)
                continue
            }
            guard var name = fieldName(fullKey) else { continue }
            if reservedNames.contains(name) { name = String(("META_" + name).prefix(maxNameLength)) }
            fields.append(JournalField(name, render(value)))
        }
    }

    /// A metadata value as text: strings as they are (no quotes), arrays as `[a, b]`.
    static func render(_ value: Logger.Metadata.Value) -> String {
        switch value {
        case .string(let text): text
        case .stringConvertible(let convertible): convertible.description
        case .array(let values): "[" + values.map(render).joined(separator: ", ") + "]"
        case .dictionary(let map):
            "[" + map.sorted { $0.key < $1.key }.map { "\($0.key): \(render($0.value))" }.joined(separator: ", ") + "]"
        }
    }

    /// Calls `body` with one `iovec` per field (`NAME=value`, no terminator), as `sd_journal_sendv` takes them.
    /// The memory lives only for the call.
    public static func withIOVecs<R>(
        _ fields: [JournalField], _ body: (UnsafeBufferPointer<iovec>) throws -> R
    ) rethrows
        -> R
    {
        // One contiguous buffer holds every field; the iovecs point into it.
        let encoded = fields.map(\.bytes)
        var storage = [UInt8](repeating: 0, count: max(1, encoded.reduce(0) { $0 + $1.count }))
        return try storage.withUnsafeMutableBufferPointer { buffer in
            var vectors: [iovec] = []
            vectors.reserveCapacity(encoded.count)
            var offset = 0
            for field in encoded {
                let start = buffer.baseAddress! + offset
                field.withUnsafeBufferPointer { start.update(from: $0.baseAddress!, count: field.count) }
                vectors.append(iovec(iov_base: UnsafeMutableRawPointer(start), iov_len: field.count))
                offset += field.count
            }
            return try vectors.withUnsafeBufferPointer { try body($0) }
        }
    }
}

// MARK: - Sinks

/// Where journal records go: the system journal, or (in tests) memory.
public protocol JournalSink: Sendable {
    /// Sends one record. Throws when it could not be delivered.
    func send(_ fields: [JournalField]) throws(SystemdError)
}

/// The system journal through `sd_journal_sendv` (its socket is `/run/systemd/journal/socket`).
public struct SystemJournal: JournalSink {
    public init() {}

    public func send(_ fields: [JournalField]) throws(SystemdError) {
        let result = JournalEncoding.withIOVecs(fields) { vectors in
            sd_journal_sendv(vectors.baseAddress, Int32(vectors.count))
        }
        if result < 0 {
            throw SystemdError("sd_journal_sendv failed: \(String(cString: strerror(-result)))")
        }
    }
}

/// Keeps every record in memory: the in-memory twin of `SystemJournal` for tests.
public final class MemoryJournal: JournalSink, @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [[JournalField]] = []

    public init() {}

    public func send(_ fields: [JournalField]) throws(SystemdError) {
        lock.withLock { stored.append(fields) }
    }

    /// The records sent so far, oldest first.
    public var records: [[JournalField]] { lock.withLock { stored } }
}

// MARK: - Handler

/// A swift-log handler that writes each record to the journal with structured fields: `MESSAGE`, `PRIORITY`,
/// `SYSLOG_IDENTIFIER`, `LOGGER` (the logger's label), `CODE_FILE`/`CODE_LINE`/`CODE_FUNC`, `ERROR`, and one field per
/// metadata key, upper-cased (`job_id` → `JOB_ID`), so `journalctl JOB_ID=abc` finds a job's lines.
///
/// When `sd_journal_sendv` reports a failure (journald's socket refuses the record), the line goes to stderr instead,
/// which systemd also collects. Note libsystemd's own rule: with no journal socket at all it drops records and reports
/// success, so choose this handler only where journald runs (`LogDestination.current()` does).
public struct JournalLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?

    /// The logger's label.
    public let label: String
    /// `SYSLOG_IDENTIFIER`: what `journalctl -t` selects on.
    public let identifier: String
    private let sink: any JournalSink
    private let fallback: @Sendable (String) -> Void

    /// - Parameters:
    ///   - label: the logger's label, written as `LOGGER`.
    ///   - identifier: `SYSLOG_IDENTIFIER` (the program's name).
    ///   - sink: where records go; the system journal by default.
    ///   - metadataProvider: metadata added to every record (task-local context).
    ///   - fallback: takes a record as one line when the sink fails; stderr by default.
    public init(
        label: String, identifier: String, sink: any JournalSink = SystemJournal(),
        metadataProvider: Logger.MetadataProvider? = nil,
        fallback: @escaping @Sendable (String) -> Void = { FileHandle.standardError.write(Data("\($0)\n".utf8)) }
    ) {
        self.label = label
        self.identifier = identifier
        self.sink = sink
        self.metadataProvider = metadataProvider
        self.fallback = fallback
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        // Later wins: the handler's metadata, then the provider's, then the call's own.
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { $1 } }
        if let own = event.metadata { merged.merge(own) { $1 } }
        let fields = JournalEncoding.fields(
            message: event.message.description, level: event.level, identifier: identifier, label: label,
            file: event.file, line: event.line, function: event.function, error: event.error, metadata: merged)
        do {
            try sink.send(fields)
        } catch {
            let rest = fields.dropFirst().map(\.description).joined(separator: " ")
            fallback("\(event.message) [\(rest)] (journal: \(error))")
        }
    }
}

// MARK: - Choosing the destination

/// Where a process's logs should go.
public enum LogDestination: Equatable, Sendable {
    /// Started by systemd with stderr connected to the journal: structured records through `sd_journal_sendv`.
    case journal
    /// Anything else (a terminal, a pipe, a file): plain lines on stderr.
    case standardError

    /// Decides as systemd documents for `$JOURNAL_STREAM`: the journal only when the variable names the device and
    /// inode (`DEVICE:INODE`, decimal) of the stream stderr is connected to now. A child whose stderr was redirected
    /// keeps the variable but not the match.
    /// - Parameters:
    ///   - journalStream: the value of `JOURNAL_STREAM`, or nil when unset.
    ///   - standardError: the device and inode numbers of file descriptor 2, or nil when it is closed.
    public static func choose(journalStream: String?, standardError: (device: UInt64, inode: UInt64)?) -> LogDestination
    {
        guard let journalStream, let standardError else { return .standardError }
        let parts = journalStream.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let device = UInt64(parts[0]), let inode = UInt64(parts[1]) else {
            return .standardError
        }
        return device == standardError.device && inode == standardError.inode ? .journal : .standardError
    }

    /// The destination for this process: `$JOURNAL_STREAM` compared with `fstat(2)`.
    public static func current(environment: [String: String] = ProcessInfo.processInfo.environment) -> LogDestination {
        var info = stat()
        let identity = fstat(2, &info) == 0 ? (UInt64(info.st_dev), UInt64(info.st_ino)) : nil
        return choose(journalStream: environment["JOURNAL_STREAM"], standardError: identity)
    }
}

/// Sets swift-log up for a daemon: journald with structured fields when systemd connected stderr to the journal,
/// plain lines on stderr otherwise.
public enum SystemdLogging {
    /// A handler factory for `LoggingSystem.bootstrap` that writes to `destination`.
    /// - Parameters:
    ///   - identifier: `SYSLOG_IDENTIFIER` for journal records.
    ///   - destination: where to write; by default decided from `$JOURNAL_STREAM`.
    ///   - logLevel: the level every new logger starts with.
    public static func factory(
        identifier: String, destination: LogDestination = .current(), logLevel: Logger.Level = .info
    ) -> @Sendable (String, Logger.MetadataProvider?) -> any LogHandler {
        { label, provider in
            switch destination {
            case .journal:
                var handler = JournalLogHandler(label: label, identifier: identifier, metadataProvider: provider)
                handler.logLevel = logLevel
                return handler
            case .standardError:
                var handler = StreamLogHandler.standardError(label: label, metadataProvider: provider)
                handler.logLevel = logLevel
                return handler
            }
        }
    }

    /// Bootstraps the process-wide logging system once (swift-log allows a single bootstrap per process).
    public static func bootstrap(
        identifier: String, logLevel: Logger.Level = .info, metadataProvider: Logger.MetadataProvider? = nil
    ) {
        LoggingSystem.bootstrap(
            factory(identifier: identifier, logLevel: logLevel), metadataProvider: metadataProvider)
    }
}
