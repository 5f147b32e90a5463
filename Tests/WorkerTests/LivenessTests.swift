import Foundation
import Testing

@testable import Worker

/// The stall rule on an injected clock, without a process.
@Suite struct LivenessTests {
    final class FakeClock: @unchecked Sendable {
        let start = ContinuousClock.now
        private let lock = NSLock()
        private var offset: Duration = .zero
        var now: ContinuousClock.Instant { lock.withLock { start + offset } }
        func advance(_ d: Duration) { lock.withLock { offset += d } }
    }

    @Test func aStepLongerThanTheTimeoutIsAStallAndIdleNeverIs() {
        let clock = FakeClock()
        let liveness = Liveness(stepTimeout: .seconds(10), now: { clock.now })
        clock.advance(.seconds(3600))
        #expect(liveness.stall() == nil, "idle is not stuck")

        liveness.began(jobs: ["a", "b"], steps: 30)
        clock.advance(.seconds(10))
        #expect(liveness.stall() == nil, "exactly the timeout is still in time")
        clock.advance(.milliseconds(1))
        let first = liveness.stall()
        #expect(first?.step == 1 && first?.steps == 30 && first?.jobs == ["a", "b"])
        #expect(first?.description.hasPrefix("stuck: step 1 of 30 (job a,b) has not returned for 10 s") == true)

        // Each returned step restarts the wait; the one after it is the one reported.
        liveness.stepped(done: 1, steps: 31)
        #expect(liveness.stall() == nil)
        clock.advance(.seconds(9))
        liveness.stepped(done: 2, steps: 31)
        clock.advance(.seconds(9))
        #expect(liveness.stall() == nil, "steps of 9 s each under a 10 s timeout")
        clock.advance(.seconds(2))
        #expect(liveness.stall()?.step == 3 && liveness.stall()?.steps == 31)
        #expect(liveness.stall()?.seconds == 11)

        liveness.ended()
        #expect(liveness.stall() == nil, "an ended batch is not stuck")
    }

    @Test func stepTimeoutIsAConfigurationKey() throws {
        var c = ServeConfiguration()
        #expect(c.stepTimeoutSeconds == 300)
        try c.apply(yaml: "step_timeout_s: 20\n", source: "test.yaml")
        #expect(c.stepTimeoutSeconds == 20)
        try c.apply(environment: ["KD_STEP_TIMEOUT_S": "45"])
        #expect(c.stepTimeoutSeconds == 45)
        #expect(throws: ServeConfiguration.Problem.self) { try c.apply(environment: ["KD_STEP_TIMEOUT_S": "0"]) }
    }
}
