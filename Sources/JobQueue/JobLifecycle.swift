/// The life of one taken job, as a pure state machine: events in, actions out, no I/O. The worker performs the
/// actions (Redis scripts, the generator, the store) and feeds back what happened.
///
/// ```
/// taken ──decoded──▶ claiming ──claimed(run)──▶ running ──generated──▶ storing ──stored──▶ finishing(done)
///   │                   │                          │                      │
///   └─unidentifiable─▶ finishing(dead)             └──────attempt failed──┴──▶ finishing(failed/dead/cancelled)
///                       ├─already final─▶ ended                                 or retrying ─▶ ended
///                       ├─cancel flag──▶ finishing(cancelled)
///                       ├─too many attempts─▶ finishing(dead)
///                       └─invalid / past deadline─▶ finishing(failed)
/// ```
public struct JobLifecycle: Equatable, Sendable {
    public enum State: Equatable, Sendable {
        case taken
        case claiming(GenerationRequest?, invalid: JobError?)
        case running(GenerationRequest, Attempt)
        case storing(GenerationRequest, Attempt)
        case finishing(FinalState)
        case retrying
        /// Nothing more to do for this worker: finished (by this worker or another), or handed on.
        case ended
    }

    public enum Event: Equatable, Sendable {
        case decoded(JobDecoding)
        case claimed(ClaimResult, nowSeconds: Double)
        case generated
        case stored
        /// The generator or the store failed; `retryable` errors are tried again up to the attempt limit.
        case attemptFailed(JobError, retryable: Bool)
        /// The final transition was acknowledged (`made` false: another worker had finished it).
        case finishAcknowledged(made: Bool)
        case retryAcknowledged(scheduled: Bool)
    }

    public enum Action: Equatable, Sendable {
        case claim(id: String)
        case run(GenerationRequest, Attempt)
        case store
        /// Make the final transition, with this error when not done.
        case finish(FinalState, JobError?, attempts: Int)
        /// Send the job to the delayed set for another attempt after `delay`.
        case retry(JobError, attempt: Int, delay: Duration)
        /// Drop it: already final elsewhere.
        case drop
        case none
        /// An event that makes no sense in the current state (a worker bug): logged, the state kept.
        case rejected(String)
    }

    public private(set) var state: State = .taken
    public let maxAttempts: Int
    public let retryBackoff: Backoff
    private var attempts = 0

    public init(maxAttempts: Int, retryBackoff: Backoff) {
        self.maxAttempts = maxAttempts
        self.retryBackoff = retryBackoff
    }

    /// Applies `event`; `random` draws the retry jitter.
    public mutating func handle<R: RandomNumberGenerator>(_ event: Event, random: inout R) -> Action {
        switch (state, event) {
        case (.taken, .decoded(let decoding)):
            switch decoding {
            case .valid(let request):
                state = .claiming(request, invalid: nil)
                return .claim(id: request.id)
            case .invalid(let id, let error):
                state = .claiming(nil, invalid: error)
                return .claim(id: id)
            case .unidentifiable(let error):
                state = .finishing(.dead)
                return .finish(.dead, error, attempts: 0)
            }

        case (.claiming(let request, let invalid), .claimed(let result, let now)):
            switch result {
            case .alreadyFinal:
                state = .ended
                return .drop
            case .cancelRequested(let attempt):
                attempts = attempt.number
                state = .finishing(.cancelled)
                return .finish(.cancelled, JobError(.cancelled, "cancelled before it started"), attempts: attempts)
            case .exhausted(let attempt):
                attempts = attempt.number
                state = .finishing(.dead)
                return .finish(
                    .dead,
                    JobError(
                        .attemptsExhausted,
                        "started \(attempt.number) times, more than the \(maxAttempts) allowed (workers died running it)"
                    ), attempts: attempts)
            case .run(let attempt):
                attempts = attempt.number
                if let invalid {
                    state = .finishing(.failed)
                    return .finish(.failed, invalid, attempts: attempts)
                }
                guard let request else { return reject(event) }
                if let deadline = request.deadline, now > deadline {
                    state = .finishing(.failed)
                    return .finish(
                        .failed, JobError(.deadlineExceeded, "the deadline \(deadline) passed before it started"),
                        attempts: attempts)
                }
                state = .running(request, attempt)
                return .run(request, attempt)
            }

        case (.running(let request, let attempt), .generated):
            state = .storing(request, attempt)
            return .store

        case (.storing, .stored):
            state = .finishing(.done)
            return .finish(.done, nil, attempts: attempts)

        case (.running, .attemptFailed(let error, let retryable)), (.storing, .attemptFailed(let error, let retryable)):
            if error.code == .cancelled {
                state = .finishing(.cancelled)
                return .finish(.cancelled, error, attempts: attempts)
            }
            guard retryable else {
                state = .finishing(.failed)
                return .finish(.failed, error, attempts: attempts)
            }
            guard attempts < maxAttempts else {
                state = .finishing(.dead)
                return .finish(.dead, error, attempts: attempts)
            }
            state = .retrying
            return .retry(error, attempt: attempts, delay: retryBackoff.delay(attempt: attempts - 1, using: &random))

        case (.finishing, .finishAcknowledged), (.retrying, .retryAcknowledged):
            state = .ended
            return .none

        default:
            return reject(event)
        }
    }

    private func reject(_ event: Event) -> Action {
        .rejected("event \(event) in state \(state)")
    }
}
