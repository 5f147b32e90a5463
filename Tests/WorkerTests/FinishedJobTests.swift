import Foundation
import TestSupport
import Testing
import WorkerTesting

@testable import JobQueue
@testable import Worker

/// `Options.onFinished`: one report per job whose final transition this worker made, with what the daemon logs.
@Suite(.serialized) struct FinishedJobTests {
    final class Reports: @unchecked Sendable {
        private let lock = NSLock()
        private var list: [QueueWorker.FinishedJob] = []
        func append(_ job: QueueWorker.FinishedJob) { lock.withLock { list.append(job) } }
        var all: [QueueWorker.FinishedJob] { lock.withLock { list } }
    }

    @Test func everyFinalTransitionIsReportedOnceWithItsFigures() throws {
        let h = try QueueHarness()
        let reports = Reports()
        let w = try h.worker("w1") { $0.onFinished = reports.append }
        defer {
            w.stop()
            w.wait()
        }
        try h.submit(#"{"id":"ok-1","prompt":"кот","num_images":2,"seed":1}"#)
        try h.submit(#"{"id":"bad-1","prompt":"x","width":-3}"#)
        #expect(try h.waitForState("ok-1", "done"))
        #expect(try h.waitForState("bad-1", "failed"))
        #expect(eventually(timeout: 5) { reports.all.count == 2 })

        let done = try #require(reports.all.first { $0.id == "ok-1" })
        #expect(done.state == .done && done.attempts == 1 && done.images == 2 && done.error == nil)
        #expect(done.batch == ["ok-1"])
        #expect((done.queuedMs ?? -1) >= 0 && (done.runMs ?? -1) >= 0)
        // The report says what the event says.
        let event = try #require(try h.events(for: "ok-1").first)
        #expect(event["run_ms"]?.int64Value == done.runMs && event["queued_ms"]?.int64Value == done.queuedMs)

        let failed = try #require(reports.all.first { $0.id == "bad-1" })
        #expect(failed.state == .failed && failed.images == 0 && failed.batch.isEmpty && failed.runMs == nil)
        #expect(failed.error?.code == .outOfRange)
    }
}
