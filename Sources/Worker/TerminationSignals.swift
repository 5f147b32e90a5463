import Foundation

/// SIGTERM and SIGINT turned into something a thread can wait for.
///
/// A real signal handler (not `SIG_IGN` plus a dispatch source): the process has threads that do not block these
/// signals (OpenBLAS starts its own at load time), and with `SIG_IGN` a signal the kernel hands to one of them is
/// simply dropped. The handler only posts a POSIX semaphore, which is async-signal-safe.
public enum TerminationSignals {
    // Raw memory, not Swift variables: the handler may run on the very thread that is inside `sem_wait`, and an
    // `inout` access to a Swift global from both would trip the exclusivity checks.
    nonisolated(unsafe) private static let semaphore: UnsafeMutablePointer<sem_t> = {
        let p = UnsafeMutablePointer<sem_t>.allocate(capacity: 1)
        sem_init(p, 0, 0)
        return p
    }()
    nonisolated(unsafe) private static let received: UnsafeMutablePointer<Int32> = {
        let p = UnsafeMutablePointer<Int32>.allocate(capacity: 1)
        p.initialize(to: 0)
        return p
    }()
    private static let installed: Void = {
        _ = semaphore
        _ = received
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { signal in
            TerminationSignals.received.pointee = signal
            sem_post(TerminationSignals.semaphore)
        }
        sigemptyset(&action.sa_mask)
        action.sa_flags = SA_RESTART
        sigaction(SIGTERM, &action, nil)
        sigaction(SIGINT, &action, nil)
        // A parent may have spawned us with these signals blocked (the mask is inherited): unblock them here, so the
        // installing thread and every thread started after it take them.
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGTERM)
        sigaddset(&set, SIGINT)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
    }()

    /// Installs the handlers (idempotent). Call before waiting.
    public static func install() { _ = installed }

    /// Blocks the calling thread until SIGTERM or SIGINT arrives; returns the signal number.
    @discardableResult
    public static func wait() -> Int32 {
        install()
        while sem_wait(semaphore) != 0 && errno == EINTR {}
        return received.pointee
    }

    /// Wakes `wait()` as if a signal had come (for a programmatic stop).
    public static func raiseStop() {
        install()
        sem_post(semaphore)
    }
}
