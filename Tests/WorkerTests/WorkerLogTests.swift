import Foundation
import Logging
import Testing

@testable import Worker

/// The worker's log lines carry structured fields (what journald records as JOB_ID, BATCH, WORKER).
@Suite struct WorkerLogTests {
    final class Collecting: LogHandler, @unchecked Sendable {
        var records: [(String, Logger.Metadata)] = []
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            records.append(("\(event.message)", metadata.merging(event.metadata ?? [:]) { _, new in new }))
        }
    }

    @Test func jobLinesCarryTheJobId() {
        let handler = Collecting()
        var logger = Logger(label: "test") { _ in handler }
        logger[metadataKey: "worker"] = "w1"
        let daemon = WorkerDaemon(configuration: ServeConfiguration(), logger: logger) { _ in }
        daemon.logFromWorker("job img-42.a attempt 1 failed (generation_failed: boom); retry in 1000 ms")
        daemon.logFromWorker("reaper handed back 2 job(s) of workers whose heartbeat expired")
        #expect(handler.records.count == 2)
        #expect(handler.records[0].1["job_id"] == "img-42.a" && handler.records[0].1["worker"] == "w1")
        #expect(handler.records[1].1["job_id"] == nil)
    }
}
