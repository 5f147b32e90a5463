import Foundation

/// Freed tensor buffers of a megabyte and more, kept for the next tensor of the same size.
///
/// A UNet step or a VAE decode allocates the same large activations in the same order every time; glibc serves
/// anything over 32 MiB with a fresh `mmap`, so every one of them was page-faulted and zeroed by the kernel again
/// (17 % of a 512×512 VAE decode in `clear_page` and page-fault handling). The cache hands back the most recently
/// freed block of the same rounded size; past `limitBytes` the oldest blocks are returned to the system, so the cache
/// never holds more than that. A workload with larger activations raises the limit for itself (`keep(upTo:)`) until
/// the next `trim()`. Each `CPUResources` (each CPU backend) has its own, of `CPUResources.defaultCacheBytes`:
///
/// 512 MiB: with 256 a UNet step at batch 2 still missed dozens of times, each miss page-faulting and zeroing its
/// block again; with 512 it misses none after the first step and spends about 0.05 s less a step in the kernel,
/// for 70–130 MiB more peak resident memory in the UNet.
final class BlockCache: @unchecked Sendable {
    /// Blocks smaller than this go straight to `malloc` (its own free lists serve them well).
    static let minimumBytes = 1 << 20
    /// Sizes are rounded up to a multiple of this, so tensors of nearly equal size share blocks.
    static let granularity = 64 << 10

    /// The limit a `trim()` goes back to.
    let defaultLimitBytes: Int
    /// The most bytes kept while unused.
    var limitBytes: Int {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return limit
    }
    private var limit: Int
    private var mutex = pthread_mutex_t()
    /// Free blocks, oldest first.
    private var blocks: [(bytes: Int, pointer: UnsafeMutableRawPointer)] = []
    private var cachedBytes = 0

    init(limitBytes: Int) {
        defaultLimitBytes = limitBytes
        limit = limitBytes
        pthread_mutex_init(&mutex, nil)
    }

    /// The size a request of `bytes` is served with.
    static func blockSize(_ bytes: Int) -> Int {
        bytes < minimumBytes ? bytes : (bytes + granularity - 1) / granularity * granularity
    }

    /// A 64-byte-aligned block of at least `bytes`, reused when one of the same size is free.
    ///
    /// When none is, the oldest cached blocks are first given back until the cache and the new block together fit
    /// in `limitBytes`: a run whose sizes change (the VAE decoder going up a level, after the UNet) does not hold
    /// blocks of the old sizes on top of its new ones. UNet steps missed as often either way (41 times a step at
    /// batch 2 with a 256 MiB limit, counted with and without).
    func allocate(bytes: Int) -> UnsafeMutableRawPointer {
        let size = Self.blockSize(bytes)
        if size >= Self.minimumBytes {
            var evicted: [UnsafeMutableRawPointer] = []
            pthread_mutex_lock(&mutex)
            let index = blocks.lastIndex { $0.bytes == size }
            let reused = index.map { blocks.remove(at: $0).pointer }
            if reused != nil {
                cachedBytes -= size
            } else {
                while cachedBytes + size > limit, !blocks.isEmpty {
                    let oldest = blocks.removeFirst()
                    cachedBytes -= oldest.bytes
                    evicted.append(oldest.pointer)
                }
            }
            pthread_mutex_unlock(&mutex)
            if let reused { return reused }
            for block in evicted { block.deallocate() }
        }
        return UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
    }

    /// Bytes held in free blocks (for tests).
    var heldBytes: Int {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return cachedBytes
    }

    /// Takes back a block from `allocate(bytes:)`.
    func release(_ pointer: UnsafeMutableRawPointer, bytes: Int) {
        let size = Self.blockSize(bytes)
        guard size >= Self.minimumBytes else {
            pointer.deallocate()
            return
        }
        var evicted: [UnsafeMutableRawPointer] = []
        pthread_mutex_lock(&mutex)
        if size > limit {
            evicted.append(pointer)
        } else {
            blocks.append((size, pointer))
            cachedBytes += size
        }
        while cachedBytes > limit, !blocks.isEmpty {
            let oldest = blocks.removeFirst()
            cachedBytes -= oldest.bytes
            evicted.append(oldest.pointer)
        }
        pthread_mutex_unlock(&mutex)
        for block in evicted { block.deallocate() }
    }

    /// Raises the limit to `bytes` (never lowers it) until the next `trim()`.
    func keep(upTo bytes: Int) {
        pthread_mutex_lock(&mutex)
        limit = max(limit, bytes)
        pthread_mutex_unlock(&mutex)
    }

    /// Returns every cached block to the system (after a generation, so an idle worker holds only its weights) and
    /// the limit to its default.
    func trim() {
        pthread_mutex_lock(&mutex)
        let all = blocks
        blocks.removeAll()
        cachedBytes = 0
        limit = defaultLimitBytes
        pthread_mutex_unlock(&mutex)
        for block in all { block.pointer.deallocate() }
    }
}
