import Foundation

/// Per-thread scratch memory for kernels' temporary buffers (im2col columns, attention scores).
///
/// Allocating tens of megabytes per call costs more in page faults than the copy itself; each thread keeps its
/// buffers and reuses them, growing them when a larger one is asked for. Buffers are per thread, so concurrent
/// callers never share one.
final class Scratch: @unchecked Sendable {
    private var buffers: [TensorStorage?] = [nil, nil, nil]

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

    /// Buffer `slot` (0, 1 or 2) with room for at least `count` floats; its contents are undefined.
    func buffer(_ slot: Int, count: Int) -> UnsafeMutablePointer<Float> {
        if let b = buffers[slot], b.count >= count { return b.pointer }
        buffers[slot] = nil  // release the old one before allocating the larger
        let storage = TensorStorage(count: count, zeroed: false)
        buffers[slot] = storage
        return storage.pointer
    }
}
