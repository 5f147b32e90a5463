import TestSupport
import Testing

@testable import JobQueue
@testable import Redis

/// The per-job state machine, without any I/O.
@Suite struct JobLifecycleTests {
    let backoff = Backoff(initial: .seconds(1), cap: .seconds(10), floor: .milliseconds(100))
    let request = GenerationRequest(id: "j", prompt: "p")
    func attempt(_ n: Int) -> Attempt { Attempt(number: n, firstSeenMs: 1000, startedMs: 2000) }

    @Test func happyPath() {
        var random = SeededGenerator(seed: 1)
        var m = JobLifecycle(maxAttempts: 3, retryBackoff: backoff)
        #expect(m.handle(.decoded(.valid(request)), random: &random) == .claim(id: "j"))
        #expect(m.handle(.claimed(.run(attempt(1)), nowSeconds: 0), random: &random) == .run(request, attempt(1)))
        #expect(m.handle(.generated, random: &random) == .store)
        #expect(m.handle(.stored, random: &random) == .finish(.done, nil, attempts: 1))
        #expect(m.handle(.finishAcknowledged(made: true), random: &random) == .none)
        #expect(m.state == .ended)
    }

    @Test func retryableFailuresRetryWithGrowingDelayThenDie() {
        var random = SeededGenerator(seed: 2)
        let failure = JobError(.generationFailed, "boom")
        for n in 1...3 {
            var m = JobLifecycle(maxAttempts: 3, retryBackoff: backoff)
            _ = m.handle(.decoded(.valid(request)), random: &random)
            _ = m.handle(.claimed(.run(attempt(n)), nowSeconds: 0), random: &random)
            let action = m.handle(.attemptFailed(failure, retryable: true), random: &random)
            if n < 3 {
                guard case .retry(let e, let a, let delay) = action else {
                    Issue.record("attempt \(n): \(action)")
                    continue
                }
                #expect(e == failure && a == n)
                // Full jitter below the capped exponential ceiling (1 s, 2 s).
                #expect(delay >= .milliseconds(100) && delay <= backoff.ceiling(attempt: n - 1))
                #expect(m.state == .retrying)
                #expect(m.handle(.retryAcknowledged(scheduled: true), random: &random) == .none)
            } else {
                #expect(action == .finish(.dead, failure, attempts: 3))
            }
        }
    }

    @Test func nonRetryableAndStoreFailures() {
        var random = SeededGenerator(seed: 3)
        var m = JobLifecycle(maxAttempts: 3, retryBackoff: backoff)
        _ = m.handle(.decoded(.valid(request)), random: &random)
        _ = m.handle(.claimed(.run(attempt(1)), nowSeconds: 0), random: &random)
        let fatal = JobError(.generationFailed, "bad")
        #expect(
            m.handle(.attemptFailed(fatal, retryable: false), random: &random) == .finish(.failed, fatal, attempts: 1))
        // A store failure after generation retries.
        var s = JobLifecycle(maxAttempts: 3, retryBackoff: backoff)
        _ = s.handle(.decoded(.valid(request)), random: &random)
        _ = s.handle(.claimed(.run(attempt(1)), nowSeconds: 0), random: &random)
        _ = s.handle(.generated, random: &random)
        guard case .retry = s.handle(.attemptFailed(JobError(.storeFailed, "ENOSPC"), retryable: true), random: &random)
        else {
            Issue.record("store failure did not retry")
            return
        }
    }

    @Test func claimOutcomes() {
        var random = SeededGenerator(seed: 4)
        var m = JobLifecycle(maxAttempts: 3, retryBackoff: backoff)
        _ = m.handle(.decoded(.valid(request)), random: &random)
        #expect(m.handle(.claimed(.alreadyFinal(state: "done"), nowSeconds: 0), random: &random) == .drop)

        m = JobLifecycle(maxAttempts: 3, retryBackoff: backoff)
        _ = m.handle(.decoded(.valid(request)), random: &random)
        guard
            case .finish(.cancelled, let e?, 1) = m.handle(
                .claimed(.cancelRequested(attempt(1)), nowSeconds: 0), random: &random)
        else {
            Issue.record("cancel before start")
            return
        }
        #expect(e.code == .cancelled)

        m = JobLifecycle(maxAttempts: 3, retryBackoff: backoff)
        _ = m.handle(.decoded(.valid(request)), random: &random)
        guard
            case .finish(.dead, let e2?, 4) = m.handle(.claimed(.exhausted(attempt(4)), nowSeconds: 0), random: &random)
        else {
            Issue.record("exhausted")
            return
        }
        #expect(e2.code == .attemptsExhausted)

        var late = request
        late.deadline = 100
        m = JobLifecycle(maxAttempts: 3, retryBackoff: backoff)
        _ = m.handle(.decoded(.valid(late)), random: &random)
        guard case .finish(.failed, let e3?, 1) = m.handle(.claimed(.run(attempt(1)), nowSeconds: 101), random: &random)
        else {
            Issue.record("deadline")
            return
        }
        #expect(e3.code == .deadlineExceeded)

        let invalid = JobError(.outOfRange, "width must be in 64...1024", field: "width")
        m = JobLifecycle(maxAttempts: 3, retryBackoff: backoff)
        #expect(m.handle(.decoded(.invalid(id: "j", invalid)), random: &random) == .claim(id: "j"))
        #expect(
            m.handle(.claimed(.run(attempt(1)), nowSeconds: 0), random: &random)
                == .finish(.failed, invalid, attempts: 1))

        m = JobLifecycle(maxAttempts: 3, retryBackoff: backoff)
        let garbage = JobError(.invalidJSON, "not JSON")
        #expect(m.handle(.decoded(.unidentifiable(garbage)), random: &random) == .finish(.dead, garbage, attempts: 0))
    }

    @Test func cancellationWhileRunningIsFinalNotRetried() {
        var random = SeededGenerator(seed: 5)
        var m = JobLifecycle(maxAttempts: 3, retryBackoff: backoff)
        _ = m.handle(.decoded(.valid(request)), random: &random)
        _ = m.handle(.claimed(.run(attempt(1)), nowSeconds: 0), random: &random)
        let cancelled = JobError(.cancelled, "cancelled while running")
        #expect(
            m.handle(.attemptFailed(cancelled, retryable: false), random: &random)
                == .finish(.cancelled, cancelled, attempts: 1))
    }

    @Test func eventsOutOfOrderAreRejectedNotFatal() {
        var random = SeededGenerator(seed: 6)
        var m = JobLifecycle(maxAttempts: 3, retryBackoff: backoff)
        guard case .rejected = m.handle(.stored, random: &random) else {
            Issue.record("stored before anything was accepted")
            return
        }
        #expect(m.state == .taken)
        _ = m.handle(.decoded(.valid(request)), random: &random)
        guard case .rejected = m.handle(.generated, random: &random) else {
            Issue.record("generated before the claim was accepted")
            return
        }
    }

    @Test func backoffIsCappedAndJittered() {
        var random = SeededGenerator(seed: 7)
        let b = Backoff(initial: .milliseconds(50), cap: .seconds(2), floor: .milliseconds(5))
        #expect(b.ceiling(attempt: 0) == .milliseconds(50))
        #expect(b.ceiling(attempt: 3) == .milliseconds(400))
        #expect(b.ceiling(attempt: 10) == .seconds(2))
        #expect(b.ceiling(attempt: 1000) == .seconds(2))
        var distinct = Set<Int64>()
        for attempt in 0..<200 {
            let d = b.delay(attempt: attempt % 12, using: &random)
            #expect(d >= .milliseconds(5) && d <= b.ceiling(attempt: attempt % 12))
            distinct.insert(ReliableQueue.milliseconds(d))
        }
        #expect(distinct.count > 50)  // jittered, not a fixed schedule
    }
}
