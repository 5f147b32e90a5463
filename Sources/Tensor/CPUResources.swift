import Foundation

/// What one `CPUBackend` owns: the threads its kernels compute on (a `ComputePool`, whose threads also run the
/// single-threaded OpenBLAS products `BLAS.sgemm` cuts a GEMM into), the cache of freed activation blocks
/// (`BlockCache`) and the kernel profile (`KernelProfile`).
///
/// DESIGN: why the kernels find these as the calling thread's *current* resources rather than as a parameter.
///
/// - The kernels (`Kernels`, `BLAS`, the Winograd and panel GEMMs) are static functions over tensors, called from
///   each other and from their tests; every one of them allocates its output, and most start parallel regions and
///   record their time. Passing the resources down would add a parameter to 28 kernels, their helpers and each of
///   their 40 allocations, and the arithmetic would not change.
/// - So the backend binds its resources to the calling thread for the duration of each operation (`enter`), as a
///   CUDA stream is current to a thread, and the kernels read `CPUResources.current`: a thread-local read, a few
///   nanoseconds against operations of microseconds to seconds. A parallel region runs with its caller's current
///   resources on every thread of the pool, so an allocation or a nested kernel inside it uses them too.
/// - A tensor's storage remembers the cache it came from and goes back to it, whichever thread drops it.
/// - Outside any backend operation (a test calling a kernel, `bench kernels`, host-side conversions) the current
///   resources are `CPUBackend.shared`'s: the process's default CPU backend, created on first use.
public final class CPUResources: @unchecked Sendable {
    /// The threads the kernels run on.
    public let pool: ComputePool
    /// Freed activation blocks kept for the next tensor of the same size.
    let blocks: BlockCache
    /// Time per kernel kind, recorded while `KernelProfile.enabled` is on for the calling thread.
    public let profile = KernelProfile()

    /// The default limit of the block cache (see `BlockCache`).
    static let defaultCacheBytes = 512 << 20

    /// Resources with a pool of `threads` threads (the caller included) and a block cache of `cacheBytes`.
    init(threads: Int, cacheBytes: Int = defaultCacheBytes) {
        pool = ComputePool(threads: threads)
        blocks = BlockCache(limitBytes: cacheBytes)
    }

    deinit { pool.shutDown() }

    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    /// The resources the kernels called on this thread use: those bound by the backend operation running here (or
    /// by the parallel region this thread is working for), else `CPUBackend.shared`'s.
    public static var current: CPUResources {
        if let raw = pthread_getspecific(key) { return Unmanaged<CPUResources>.fromOpaque(raw).takeUnretainedValue() }
        return CPUBackend.shared.resources
    }

    /// The calling thread's binding, opaque: what `enter` replaces and `Binding.leave` restores.
    static var currentBinding: UnsafeMutableRawPointer? { pthread_getspecific(key) }

    /// Binds a raw binding (from `currentBinding`) to the calling thread; a pool's workers take their caller's.
    static func bind(_ raw: UnsafeMutableRawPointer?) { pthread_setspecific(key, raw) }

    /// A binding made by `enter`, undone by `leave` (in a `defer`).
    public struct Binding {
        fileprivate let previous: UnsafeMutableRawPointer?
        @inline(__always) public func leave() { CPUResources.bind(previous) }
    }

    /// Makes these the calling thread's current resources until the returned binding's `leave`.
    @inline(__always)
    public func enter() -> Binding {
        let previous = pthread_getspecific(Self.key)
        pthread_setspecific(Self.key, Unmanaged.passUnretained(self).toOpaque())
        return Binding(previous: previous)
    }

    /// Runs `body` with these as the calling thread's current resources.
    @inline(__always)
    public func bound<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        let binding = enter()
        defer { binding.leave() }
        return try body()
    }

    /// Bytes of freed blocks the cache holds now.
    public var cachedBytes: Int { blocks.heldBytes }

    /// Keeps up to `bytes` of freed blocks (512 MiB otherwise) until the next `releaseCachedMemory`.
    public func keepFreedBlocks(upTo bytes: Int) { blocks.keep(upTo: bytes) }

    /// Gives the cached blocks, and the calling thread's kernel scratch buffers, back to the system.
    public func releaseCachedMemory() {
        Scratch.current.release()
        blocks.trim()
    }
}
