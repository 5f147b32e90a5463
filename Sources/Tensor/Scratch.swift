import Foundation

/// Per-thread scratch memory for kernels' temporary buffers (im2col columns, attention scores).
///
/// Allocating tens of megabytes per call costs more in page faults than the copy itself; each thread keeps its
/// buffers and reuses them, growing them when a larger one is asked for. Buffers are per thread, so concurrent
/// callers never share one.
final class Scratch: @unchecked Sendable {
    /// Slots 0–2: the kernels' temporaries; slot 3: the float32 expansion of a half-precision weight; slot 4: the
    /// Winograd weight transform's interleaved filters.
    private var buffers: [TensorStorage?] = [nil, nil, nil, nil, nil]

    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key) { raw in if let raw { Unmanaged<Scratch>.fromOpaque(raw).release() } }
        return key
    }()

    /// This thread's scratch.
    static var current: Scratch {
        if let raw = pthread_getspecific(key) { return Unmanaged<Scratch>.fromOpaque(raw).takeUnretainedValue() }
        let scratch = Scratch()
        pthread_setspecific(key, Unmanaged.passRetained(scratch).toOpaque())
        return scratch
    }

    /// Drops this thread's buffers (they are allocated again, at the size then needed, on next use).
    func release() { for i in buffers.indices { buffers[i] = nil } }

    /// Buffer `slot` (0 to 4) with room for at least `count` floats; its contents are undefined.
    func buffer(_ slot: Int, count: Int) -> UnsafeMutablePointer<Float> { storage(slot, count: count).pointer }

    /// The storage behind buffer `slot`, for a tensor that views it.
    func storage(_ slot: Int, count: Int) -> TensorStorage {
        if let b = buffers[slot], b.count >= count { return b }
        buffers[slot] = nil  // release the old one before allocating the larger
        let storage = TensorStorage(count: count, zeroed: false)
        buffers[slot] = storage
        return storage
    }
}
