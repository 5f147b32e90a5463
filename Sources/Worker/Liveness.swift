import Foundation

/// What the generation loop last reported, and whether it is overdue: the one source of the worker's liveness.
///
/// The systemd watchdog (`WATCHDOG=1`), the Redis heartbeat and `/readyz` all ask `stall()`; a timer that beats
/// whatever the loop does would keep a hung generation alive forever, its jobs never taken over. A batch reports
/// `began`, then each sampling step, then `ended`; while one runs, a step (the first one's text encoding, and the
/// last one's decoding, included) that does not return within `stepTimeout` is a stall.
public final class Liveness: @unchecked Sendable {
    /// A generation that stopped reporting: which step of which jobs, for how long.
    public struct Stall: Equatable, Sendable, CustomStringConvertible {
        public var jobs: [String]
        /// The step that has not returned (1-based), and the steps of the run.
        public var step: Int
        public var steps: Int
        public var seconds: Double
        public var timeoutSeconds: Double

        public var description: String {
            String(
                format: "stuck: step %d of %d (job %@) has not returned for %.0f s (step_timeout_s %.0f)", step,
                steps, jobs.joined(separator: ","), seconds, timeoutSeconds)
        }
    }

    public let stepTimeout: Duration
    private let now: @Sendable () -> ContinuousClock.Instant
    private let lock = NSLock()
    private var running: (jobs: [String], done: Int, steps: Int, since: ContinuousClock.Instant)?

    /// - Parameters:
    ///   - stepTimeout: how long one step may take before the worker counts as stuck.
    ///   - now: the clock (injected by tests).
    public init(
        stepTimeout: Duration, now: @escaping @Sendable () -> ContinuousClock.Instant = { ContinuousClock.now }
    ) {
        self.stepTimeout = stepTimeout
        self.now = now
    }

    /// A batch of `jobs` of `steps` sampling steps starts (its first step is under way).
    public func began(jobs: [String], steps: Int) {
        let t = now()
        lock.withLock { running = (jobs, 0, steps, t) }
    }

    /// Step `done` of `steps` returned; the next one starts now.
    public func stepped(done: Int, steps: Int) {
        let t = now()
        lock.withLock {
            guard let r = running else { return }
            running = (r.jobs, done, steps, t)
        }
    }

    /// The batch is over (finished, failed or cancelled): an idle worker is never stuck.
    public func ended() { lock.withLock { running = nil } }

    /// The stall, or nil while every step returns in time (or nothing runs).
    public func stall() -> Stall? {
        let t = now()
        return lock.withLock {
            guard let r = running else { return nil }
            let waited = r.since.duration(to: t)
            guard waited > stepTimeout else { return nil }
            return Stall(
                jobs: r.jobs, step: r.done + 1, steps: max(r.steps, r.done + 1), seconds: Self.seconds(waited),
                timeoutSeconds: Self.seconds(stepTimeout))
        }
    }

    static func seconds(_ d: Duration) -> Double {
        let (s, atto) = d.components
        return Double(s) + Double(atto) / 1e18
    }
}
