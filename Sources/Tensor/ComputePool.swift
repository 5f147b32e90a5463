import CKernels
import Foundation
import Synchronization

/// A small pool of dedicated threads for all the kernels' work: element-wise parts (norms, activations, im2col,
/// softmax…) and GEMMs, which `BLAS.sgemm` cuts into one single-threaded OpenBLAS call per thread.
///
/// Compute never runs on Swift's cooperative pool (two threads here, needed by the event loops). The calling thread
/// takes part in the work, so a pool of `threads` uses `threads − 1` workers plus the caller. One parallel region
/// runs at a time; a region started from inside another runs serially on the calling thread.
public final class ComputePool: @unchecked Sendable {
    /// The pool the kernels called on this thread use: that of the current `CPUResources` (the backend running the
    /// operation, else `CPUBackend.shared`).
    public static var current: ComputePool { CPUResources.current.pool }

    /// Whether the calling thread is running a chunk of a region (a region started here runs serially).
    public var isInsideRegion: Bool { Self.insideRegion.value }

    /// Threads taking part in a region, the caller included.
    public let threadCount: Int

    private var mutex = pthread_mutex_t()
    private var wake = pthread_cond_t()
    private var finished = pthread_cond_t()
    private var regionLock = pthread_mutex_t()

    // The current region, guarded by `mutex`.
    private var generation = 0
    private var body: ((Int) -> Void)?
    private var chunkCount = 0
    /// The caller's current `CPUResources` binding, taken by the workers for the region.
    private var binding: UnsafeMutableRawPointer?
    /// Regions run in parallel so far, guarded by `regionLock` (for tests: which pool a kernel ran on).
    public private(set) var regionsRun = 0
    private var nextChunk = 0
    private var shuttingDown = false
    /// `generation`, readable without the mutex: idle workers spin on it for a while before they sleep.
    private let published = Atomic<Int>(0)
    /// Workers still running the current region; the caller spins on it for a while before it sleeps.
    private let activeWorkers = Atomic<Int>(0)

    /// Rounds of `pause` a thread spins before it sleeps on a condition variable (≈ 0.5 ms where a pause takes 25 ns):
    /// parallel regions follow each other within microseconds during a forward pass, and waking a sleeping thread
    /// costs a futex call and the scheduler's latency every time (without the spin a UNet step switched contexts
    /// about eight times as often).
    static let spinRounds = 20_000

    /// Spins while `waiting()` holds, at most `spinRounds` rounds (the caller then sleeps if it still holds).
    @inline(__always)
    private static func spin(while waiting: () -> Bool) {
        var rounds = 0
        while waiting() && rounds < spinRounds {
            kw_spin_pause()
            rounds += 1
        }
    }

    private static let insideRegion = ThreadLocalFlag()

    /// Creates a pool of `threads` threads in all (the caller counts as one).
    public init(threads: Int) {
        threadCount = max(1, threads)
        pthread_mutex_init(&mutex, nil)
        pthread_mutex_init(&regionLock, nil)
        pthread_cond_init(&wake, nil)
        pthread_cond_init(&finished, nil)
        for index in 1..<threadCount {
            // Each worker holds the pool until `shutDown` lets it end.
            let thread = Thread { self.workerLoop() }
            thread.name = "kd-compute-\(index)"
            thread.stackSize = 1 << 20
            thread.start()
        }
    }

    /// Lets the worker threads end once they are idle (the pool goes with the last of them); for a pool that runs
    /// no more regions (its `CPUResources` are gone).
    public func shutDown() {
        pthread_mutex_lock(&mutex)
        shuttingDown = true
        pthread_cond_broadcast(&wake)
        pthread_mutex_unlock(&mutex)
    }

    /// Runs `body(chunk)` for every chunk in `0..<count`, spread over the pool's threads, and returns when all are done.
    public func run(chunks count: Int, _ body: (Int) -> Void) {
        if count <= 0 { return }
        if count == 1 || threadCount == 1 || Self.insideRegion.value {
            for i in 0..<count { body(i) }
            return
        }
        pthread_mutex_lock(&regionLock)
        defer { pthread_mutex_unlock(&regionLock) }
        withoutActuallyEscaping(body) { escaping in
            pthread_mutex_lock(&mutex)
            self.body = escaping
            chunkCount = count
            nextChunk = 0
            binding = CPUResources.currentBinding
            regionsRun += 1
            activeWorkers.store(threadCount - 1, ordering: .sequentiallyConsistent)
            generation &+= 1
            published.store(generation, ordering: .sequentiallyConsistent)
            pthread_cond_broadcast(&wake)
            pthread_mutex_unlock(&mutex)

            Self.insideRegion.value = true
            drain(escaping)
            Self.insideRegion.value = false

            Self.spin { self.activeWorkers.load(ordering: .acquiring) > 0 }
            pthread_mutex_lock(&mutex)
            while activeWorkers.load(ordering: .acquiring) > 0 { pthread_cond_wait(&finished, &mutex) }
            self.body = nil
            pthread_mutex_unlock(&mutex)
        }
    }

    /// Splits `0..<count` into about `4 × threads` contiguous ranges of at least `minimumChunk` items and runs
    /// `body` on each range in parallel.
    public func parallelFor(_ count: Int, minimumChunk: Int = 1, _ body: (Range<Int>) -> Void) {
        if count <= 0 { return }
        let pieces = max(1, min(threadCount * 4, count / max(1, minimumChunk)))
        let step = (count + pieces - 1) / pieces
        let chunks = (count + step - 1) / step
        run(chunks: chunks) { chunk in
            let start = chunk * step
            body(start..<min(count, start + step))
        }
    }

    private func drain(_ body: (Int) -> Void) {
        while true {
            pthread_mutex_lock(&mutex)
            let chunk = nextChunk
            if chunk < chunkCount { nextChunk += 1 }
            pthread_mutex_unlock(&mutex)
            if chunk >= chunkCount { return }
            body(chunk)
        }
    }

    private func workerLoop() {
        Self.insideRegion.value = true
        var seen = 0
        while true {
            Self.spin { self.published.load(ordering: .acquiring) == seen }
            pthread_mutex_lock(&mutex)
            while generation == seen && !shuttingDown { pthread_cond_wait(&wake, &mutex) }
            if shuttingDown { break }
            seen = generation
            var body = self.body
            let binding = self.binding
            pthread_mutex_unlock(&mutex)
            CPUResources.bind(binding)
            if let region = body { drain(region) }
            CPUResources.bind(nil)
            // Released before the caller may see the region finished: it leaves `withoutActuallyEscaping`, which
            // checks that no reference to the body is left.
            body = nil
            if activeWorkers.subtract(1, ordering: .sequentiallyConsistent).newValue == 0 {
                pthread_mutex_lock(&mutex)
                pthread_cond_signal(&finished)
                pthread_mutex_unlock(&mutex)
            }
        }
        pthread_mutex_unlock(&mutex)
    }
}

/// A per-thread boolean (pthread key), used to run nested regions serially.
final class ThreadLocalFlag: @unchecked Sendable {
    private var key = pthread_key_t()

    init() { pthread_key_create(&key, nil) }

    var value: Bool {
        get { pthread_getspecific(key) != nil }
        set { pthread_setspecific(key, newValue ? UnsafeRawPointer(bitPattern: 1) : nil) }
    }
}
