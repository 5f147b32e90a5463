import Foundation
import JobQueue
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

    func daemon(_ handler: Collecting) -> WorkerDaemon {
        var logger = Logger(label: "test") { _ in handler }
        logger[metadataKey: "worker"] = "w1"
        logger[metadataKey: "device"] = "cpu"
        return WorkerDaemon(configuration: ServeConfiguration(), logger: logger) { _ in }
    }

    @Test func jobLinesCarryTheJobIdTheLoopGave() {
        let handler = Collecting()
        let daemon = daemon(handler)
        daemon.logFromWorker(
            QueueWorker.Note(
                "job img-42.a attempt 1 failed (generation_failed: boom); retry in 1000 ms", jobId: "img-42.a"))
        daemon.logFromWorker(QueueWorker.Note("reaper handed back 2 job(s) of workers whose heartbeat expired"))
        // Text that merely looks like a job is not parsed back into a field.
        daemon.logFromWorker(QueueWorker.Note("handed back 1 job(s) left in kd:processing:w1 by an earlier run"))
        #expect(handler.records.count == 3)
        #expect(handler.records[0].1["job_id"] == "img-42.a" && handler.records[0].1["worker"] == "w1")
        #expect(handler.records[1].1["job_id"] == nil)
        #expect(handler.records[2].1["job_id"] == nil)
    }

    @Test func aFinishedJobIsOneLineWithItsFields() throws {
        let handler = Collecting()
        let daemon = daemon(handler)
        daemon.logFinished(
            QueueWorker.FinishedJob(
                id: "j-7", state: .done, attempts: 1, queuedMs: 120, runMs: 3400, images: 2, batch: ["j-7", "j-8"]))
        try #require(handler.records.count == 1)
        let (message, fields) = handler.records[0]
        #expect(message == "job j-7 done: 1 attempt, 120 ms in the queue, ran 3400 ms, 2 images")
        #expect(fields["job_id"] == "j-7" && fields["batch"] == "j-7,j-8" && fields["state"] == "done")
        #expect(fields["attempts"] == "1" && fields["queued_ms"] == "120" && fields["run_ms"] == "3400")
        #expect(fields["images"] == "2" && fields["worker"] == "w1" && fields["device"] == "cpu")
        #expect(fields["error_code"] == nil)
    }

    @Test func aFailedJobLineNamesTheError() {
        let (message, fields) = WorkerDaemon.finishedLine(
            QueueWorker.FinishedJob(
                id: "j-9", state: .dead, attempts: 3, queuedMs: 5, runMs: 40,
                error: JobError(.attemptsExhausted, "3 attempts failed"), batch: ["j-9"]))
        #expect(
            message == "job j-9 dead: 3 attempts, 5 ms in the queue, ran 40 ms (attempts_exhausted: 3 attempts failed)")
        #expect(fields["error_code"] == "attempts_exhausted" && fields["state"] == "dead")

        let (invalid, invalidFields) = WorkerDaemon.finishedLine(
            QueueWorker.FinishedJob(id: nil, state: .failed, attempts: 0, error: JobError(.invalidJSON, "bad")))
        #expect(invalid == "job (no id) failed: 0 attempts (invalid_json: bad)")
        #expect(invalidFields["job_id"] == nil && invalidFields["batch"] == nil && invalidFields["run_ms"] == nil)
    }

    @Test func theStopLineIsWordsNotAStructDump() {
        var stats = QueueWorker.Stats()
        stats.finished = [.done: 3, .failed: 1]
        stats.handedBack = 2
        let line = WorkerDaemon.summary(stats)
        #expect(line == "jobs 3 done, 1 failed, 0 cancelled, 0 dead; 0 retried; 2 handed back")
        #expect(!line.contains("Stats(") && !line.contains("[:]"))
    }
}
