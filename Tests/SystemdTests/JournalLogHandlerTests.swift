import Foundation
import Logging
import TestSupport
import Testing

@testable import Systemd

// MARK: - Encoding (pure)

@Suite struct JournalEncodingTests {
    @Test(arguments: [
        ("job_id", "JOB_ID"), ("job-id", "JOB_ID"), ("job.id", "JOB_ID"), ("Batch", "BATCH"), ("worker", "WORKER"),
        ("batch size", "BATCH_SIZE"), ("_private", "PRIVATE"), ("__x_", "X_"), ("1st", "F1ST"), ("q2", "Q2"),
        ("clé", "CL_"),
    ])
    func fieldNamesAreSanitized(key: String, expected: String) {
        #expect(JournalEncoding.fieldName(key) == expected)
    }

    @Test func unusableKeysAreDroppedAndLongOnesCut() throws {
        #expect(JournalEncoding.fieldName("") == nil)
        #expect(JournalEncoding.fieldName("___") == nil)
        #expect(JournalEncoding.fieldName("ключ") == nil)  // every letter becomes "_", and leading "_" go
        let long = try #require(JournalEncoding.fieldName(String(repeating: "a", count: 100)))
        #expect(long == String(repeating: "A", count: 64))
    }

    @Test func everySanitizedNameIsAValidJournalFieldName() {
        var generator = SeededGenerator(seed: 7)
        let alphabet = Array("abcXYZ019_-. é/ж=\n")
        for _ in 0..<500 {
            let key = String(
                (0..<Int.random(in: 0...80, using: &generator)).map { _ in alphabet.randomElement(using: &generator)! })
            guard let name = JournalEncoding.fieldName(key) else { continue }
            #expect(name.range(of: "^[A-Z][A-Z0-9_]{0,63}$", options: .regularExpression) != nil, "\(key) → \(name)")
        }
    }

    @Test func prioritiesFollowSyslog() {
        let expected: [Logger.Level: Int] = [
            .trace: 7, .debug: 7, .info: 6, .notice: 5, .warning: 4, .error: 3, .critical: 2,
        ]
        for level in Logger.Level.allCases { #expect(JournalEncoding.priority(level) == expected[level], "\(level)") }
    }

    struct Boom: Error, CustomStringConvertible { var description: String { "redis went away" } }

    @Test func fieldsOfARecord() {
        let fields = JournalEncoding.fields(
            message: "job finished", level: .warning, identifier: "kandinsky-worker", label: "worker.queue",
            file: "Worker/Queue.swift", line: 42, function: "finish(_:)", error: Boom(),
            metadata: [
                "job_id": "abc-1", "batch": .stringConvertible(3), "message": "sneaky", "request": ["width": "512"],
                "seeds": [.stringConvertible(1), "two"],
            ])
        #expect(
            fields == [
                JournalField("MESSAGE", "job finished"), JournalField("PRIORITY", "4"),
                JournalField("SYSLOG_IDENTIFIER", "kandinsky-worker"), JournalField("LOGGER", "worker.queue"),
                JournalField("CODE_FILE", "Worker/Queue.swift"), JournalField("CODE_LINE", "42"),
                JournalField("CODE_FUNC", "finish(_:)"), JournalField("ERROR", "redis went away"),
                JournalField("BATCH", "3"), JournalField("JOB_ID", "abc-1"), JournalField("META_MESSAGE", "sneaky"),
                JournalField("REQUEST_WIDTH", "512"), JournalField("SEEDS", "[1, two]"),
            ])
    }

    @Test func iovecsHoldNameEqualsValue() {
        let fields = [
            JournalField("MESSAGE", "line one\nline two"), JournalField("PRIORITY", "6"),
            JournalField("PROMPT", "синий квадрат"), JournalField("EMPTY", ""),
        ]
        let seen: [[UInt8]] = JournalEncoding.withIOVecs(fields) { vectors in
            vectors.map { Array(UnsafeRawBufferPointer(start: $0.iov_base, count: $0.iov_len)) }
        }
        #expect(seen == fields.map { Array("\($0.name)=\($0.value)".utf8) })
        #expect(JournalEncoding.withIOVecs([]) { $0.count } == 0)
    }
}

// MARK: - Handler (in-memory journal)

@Suite struct JournalLogHandlerTests {
    @Test func recordsCarryMetadataWithLaterSourcesWinning() throws {
        let journal = MemoryJournal()
        let provider = Logger.MetadataProvider { ["worker": "host-cpu", "batch": "from-provider"] }
        var logger = Logger(label: "worker") { label in
            JournalLogHandler(label: label, identifier: "kandinsky-worker", sink: journal, metadataProvider: provider)
        }
        logger[metadataKey: "worker"] = "overridden-by-provider"
        logger[metadataKey: "model"] = "shapes-demo"
        logger.logLevel = .debug
        logger.trace("dropped: below the level")
        logger.debug("batch done", metadata: ["batch": "2", "job_id": "j1"])

        let records = journal.records
        try #require(records.count == 1)
        let fields = Dictionary(records[0].map { ($0.name, $0.value) }, uniquingKeysWith: { a, _ in a })
        #expect(fields["MESSAGE"] == "batch done")
        #expect(fields["PRIORITY"] == "7")
        #expect(fields["SYSLOG_IDENTIFIER"] == "kandinsky-worker")
        #expect(fields["LOGGER"] == "worker")
        #expect(fields["CODE_FILE"]?.hasSuffix("JournalLogHandlerTests.swift") == true)
        #expect(fields["CODE_FUNC"]?.hasPrefix("recordsCarryMetadata") == true)
        #expect(Int(fields["CODE_LINE"] ?? "") != nil)
        #expect(fields["MODEL"] == "shapes-demo")
        #expect(fields["WORKER"] == "host-cpu")  // the provider beats the handler's metadata
        #expect(fields["BATCH"] == "2")  // the call's metadata beats the provider
        #expect(fields["JOB_ID"] == "j1")
    }

    /// What `serve` logs for a finished job: the logger's WORKER and DEVICE, the job's own fields beside them.
    @Test func aFinishedJobRecordHasTheFieldsOperatorsSelectOn() throws {
        let journal = MemoryJournal()
        var logger = Logger(label: "kandinsky-worker.serve") { label in
            JournalLogHandler(label: label, identifier: "kandinsky-worker", sink: journal)
        }
        logger[metadataKey: "worker"] = "host-cpu"
        logger[metadataKey: "device"] = "cpu"
        logger.info(
            "job j-7 done: 1 attempt, 120 ms in the queue, ran 3400 ms, 2 images",
            metadata: [
                "job_id": "j-7", "batch": "j-7,j-8", "state": "done", "attempts": "1", "queued_ms": "120",
                "run_ms": "3400", "images": "2",
            ])
        try #require(journal.records.count == 1)
        let fields = Dictionary(journal.records[0].map { ($0.name, $0.value) }, uniquingKeysWith: { a, _ in a })
        #expect(fields["PRIORITY"] == "6")
        #expect(fields["WORKER"] == "host-cpu" && fields["DEVICE"] == "cpu")
        #expect(fields["JOB_ID"] == "j-7" && fields["BATCH"] == "j-7,j-8" && fields["STATE"] == "done")
        #expect(fields["ATTEMPTS"] == "1" && fields["QUEUED_MS"] == "120" && fields["RUN_MS"] == "3400")
        #expect(fields["IMAGES"] == "2")
    }

    struct RefusingJournal: JournalSink {
        func send(_ fields: [JournalField]) throws(SystemdError) { throw SystemdError("journal socket gone") }
    }

    final class Lines: @unchecked Sendable {
        let lock = NSLock()
        var lines: [String] = []
        func append(_ line: String) { lock.withLock { lines.append(line) } }
    }

    @Test func aRecordTheJournalRefusesGoesToTheFallback() {
        let lines = Lines()
        let logger = Logger(label: "worker") { label in
            JournalLogHandler(
                label: label, identifier: "kandinsky-worker", sink: RefusingJournal(), fallback: lines.append)
        }
        logger.error("model failed to load", metadata: ["path": "/models/x"])
        #expect(lines.lines.count == 1)
        let line = lines.lines.first ?? ""
        #expect(line.hasPrefix("model failed to load ["))
        #expect(line.contains("PRIORITY=3") && line.contains("PATH=/models/x"))
        #expect(line.contains("journal socket gone"))
    }
}

// MARK: - Choosing journald or stderr

@Suite(.serialized) struct LogDestinationTests {
    @Test func journalStreamMustNameStderr() {
        let stderrID: (device: UInt64, inode: UInt64) = (64769, 123_456)
        #expect(LogDestination.choose(journalStream: "64769:123456", standardError: stderrID) == .journal)
        #expect(LogDestination.choose(journalStream: "64769:123457", standardError: stderrID) == .standardError)
        #expect(LogDestination.choose(journalStream: "64770:123456", standardError: stderrID) == .standardError)
        #expect(LogDestination.choose(journalStream: nil, standardError: stderrID) == .standardError)
        #expect(LogDestination.choose(journalStream: "64769:123456", standardError: nil) == .standardError)
        for malformed in ["", "64769", "64769:", ":123456", "a:b", "64769:123456:1", "-1:123456"] {
            #expect(LogDestination.choose(journalStream: malformed, standardError: stderrID) == .standardError)
        }
    }

    @Test func thisProcessIsJudgedByItsRealStderr() {
        var info = stat()
        #expect(fstat(2, &info) == 0)
        let matching = "\(info.st_dev):\(info.st_ino)"
        #expect(LogDestination.current(environment: ["JOURNAL_STREAM": matching]) == .journal)
        #expect(
            LogDestination.current(environment: ["JOURNAL_STREAM": "\(info.st_dev):\(info.st_ino + 1)"])
                == .standardError)
        #expect(LogDestination.current(environment: [:]) == .standardError)
    }
}

// MARK: - sd_journal_sendv for real, into a stand-in for journald's socket

/// Binds a datagram socket at `/run/systemd/journal/socket`, where libsystemd sends journal records, when nothing
/// is there (no journald, as in a container) and this process may create it (root). The socket and any directory
/// made for it are removed afterwards. Where journald runs, the test is not enabled: it would write to the real
/// journal, and the encoding is covered by the pure tests above.
final class JournalSocketStandIn {
    static let path = "/run/systemd/journal/socket"
    static var available: Bool {
        getuid() == 0 && !FileManager.default.fileExists(atPath: path)
            && FileManager.default.fileExists(atPath: "/run")
    }

    private(set) var fd: Int32
    private var madeDirectories: [String] = []

    init() throws {
        for dir in ["/run/systemd", "/run/systemd/journal"] where !FileManager.default.fileExists(atPath: dir) {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false)
            madeDirectories.append(dir)
        }
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, byte) in Self.path.utf8.enumerated() { raw[i] = byte }
        }
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard fd >= 0, bound == 0 else { throw SystemdError("cannot bind \(Self.path): errno \(errno)") }
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Closes the socket but leaves its file, as a journald that died would.
    func stopListening() {
        close(fd)
        fd = -1
    }

    /// One datagram, or nil after the timeout.
    func receive() -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: 65536)
        let n = recv(fd, &buffer, buffer.count, 0)
        return n > 0 ? Array(buffer[0..<n]) : nil
    }

    deinit {
        if fd >= 0 { close(fd) }
        unlink(Self.path)
        for dir in madeDirectories.reversed() { rmdir(dir) }
    }

    /// Parses journald's native protocol: `NAME=value\n`, or `NAME\n` + little-endian 64-bit size + value + `\n` for
    /// values holding newlines (see systemd's JOURNAL_NATIVE_PROTOCOL.md).
    static func parse(_ bytes: [UInt8]) -> [JournalField]? {
        var fields: [JournalField] = []
        var i = 0
        while i < bytes.count {
            guard let end = bytes[i...].firstIndex(where: { $0 == UInt8(ascii: "=") || $0 == UInt8(ascii: "\n") })
            else { return nil }
            let name = String(decoding: bytes[i..<end], as: UTF8.self)
            if bytes[end] == UInt8(ascii: "=") {
                guard let newline = bytes[end...].firstIndex(of: UInt8(ascii: "\n")) else { return nil }
                fields.append(JournalField(name, String(decoding: bytes[(end + 1)..<newline], as: UTF8.self)))
                i = newline + 1
            } else {
                guard end + 9 <= bytes.count else { return nil }
                let size = bytes[(end + 1)..<(end + 9)].reversed().reduce(0) { $0 << 8 | Int($1) }
                let start = end + 9
                guard start + size < bytes.count, bytes[start + size] == UInt8(ascii: "\n") else { return nil }
                fields.append(JournalField(name, String(decoding: bytes[start..<(start + size)], as: UTF8.self)))
                i = start + size + 1
            }
        }
        return fields
    }
}

@Suite(.serialized) struct SystemJournalTests {
    @Test(.enabled(if: JournalSocketStandIn.available, "needs root and no journald socket (a container)"))
    func sdJournalSendvDeliversEveryField() throws {
        let standIn = try JournalSocketStandIn()
        let lines = JournalLogHandlerTests.Lines()
        let logger = Logger(label: "worker.test") { label in
            JournalLogHandler(label: label, identifier: "kd-test", sink: SystemJournal(), fallback: lines.append)
        }
        logger.notice("first line\nsecond line", metadata: ["job-id": "j-7", "prompt": "синий квадрат", "batch": "4"])

        let datagram = try #require(standIn.receive(), "nothing reached the stand-in socket")
        let fields = try #require(JournalSocketStandIn.parse(datagram), "not the native protocol")
        let expected = JournalEncoding.fields(
            message: "first line\nsecond line", level: .notice, identifier: "kd-test", label: "worker.test",
            file: fields.first { $0.name == "CODE_FILE" }?.value ?? "?",
            line: UInt(fields.first { $0.name == "CODE_LINE" }?.value ?? "") ?? 0,
            function: fields.first { $0.name == "CODE_FUNC" }?.value ?? "?",
            metadata: ["job-id": "j-7", "prompt": "синий квадрат", "batch": "4"])
        #expect(fields == expected)
        #expect(fields.contains(JournalField("JOB_ID", "j-7")))
        #expect(fields.contains(JournalField("PRIORITY", "5")))
        #expect(lines.lines.isEmpty, "the journal took the record; nothing should fall back")
    }

    @Test(.enabled(if: JournalSocketStandIn.available, "needs root and no journald socket (a container)"))
    func aRefusingJournalSocketSendsRecordsToTheFallback() throws {
        let lines = JournalLogHandlerTests.Lines()
        let logger = Logger(label: "worker.test") { label in
            JournalLogHandler(label: label, identifier: "kd-test", sink: SystemJournal(), fallback: lines.append)
        }
        do {
            // A socket file nobody reads any more (journald died): sendmsg gets ECONNREFUSED.
            let standIn = try JournalSocketStandIn()
            standIn.stopListening()
            #expect(throws: SystemdError.self) { try SystemJournal().send([JournalField("MESSAGE", "refused")]) }
            logger.info("nobody listens", metadata: ["job_id": "j-8"])
            #expect(lines.lines.count == 1)
            #expect(lines.lines.first?.contains("JOB_ID=j-8") == true)
        }
        // No socket file at all: libsystemd reports success and drops the record (journal-send.c, "fail silently
        // if the journal is not available"); nothing reaches the fallback.
        try SystemJournal().send([JournalField("MESSAGE", "dropped by libsystemd")])
        logger.info("dropped by libsystemd")
        #expect(lines.lines.count == 1)
    }
}
