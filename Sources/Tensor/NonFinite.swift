import Synchronization

/// Searches for NaN and infinity in stored values (the loaders' check of every weight).
public enum NonFinite {
    /// Elements per chunk of the parallel search.
    static let chunk = 1 << 16

    /// The first index in `0..<count` for which `isBad`, or nil. Chunks of 64 Ki elements are spread over the compute
    /// pool and first tested whole by `chunkHolds(start, end)` (a vector loop); only a chunk that holds a bad value is
    /// searched element by element (a plain loop over a full-size model's 8 GB took most of its loading time).
    ///
    /// The two vector loops (`first`, `firstHalf`) are written for their concrete lane types: one loop generic over
    /// `SIMD` was not specialised, even always inlined, and made loading more than ten times slower.
    static func firstIndex(count: Int, chunkHolds: (Int, Int) -> Bool, isBad: (Int) -> Bool) -> Int? {
        let found = Mutex<Int?>(nil)
        ComputePool.current.run(chunks: (count + chunk - 1) / chunk) { c in
            let (start, end) = (c * chunk, min(count, (c + 1) * chunk))
            guard chunkHolds(start, end), let first = (start..<end).first(where: isBad) else { return }
            found.withLock { if $0.map({ first < $0 }) ?? true { $0 = first } }
        }
        return found.withLock { $0 }
    }

    /// Index and value of the first NaN or ±∞ (all exponent bits set) among `count` floats, or nil.
    public static func first(_ p: UnsafePointer<Float>, count: Int) -> (Int, Float)? {
        let raw = UnsafeRawPointer(p)
        func bad(_ i: Int) -> Bool { !p[i].isFinite }
        let index = firstIndex(
            count: count,
            chunkHolds: { start, end in
                let exponent = SIMD8<UInt32>(repeating: 0x7F80_0000)
                var hits = SIMDMask<SIMD8<Int32>>(repeating: false)
                var i = start
                while i + 8 <= end {
                    hits .|= (raw.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<UInt32>.self) & exponent) .== exponent
                    i += 8
                }
                return any(hits) || (i..<end).contains(where: bad)
            }, isBad: bad)
        return index.map { ($0, p[$0]) }
    }

    /// The first of `count` little-endian 16-bit values at `raw` whose bits include all of `exponent`'s (F16's
    /// 0x7C00, BF16's 0x7F80: a NaN or ±∞), or nil.
    public static func firstHalf(_ raw: UnsafeRawPointer, count: Int, exponent: UInt16) -> Int? {
        func bad(_ i: Int) -> Bool {
            UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) & exponent == exponent
        }
        return firstIndex(
            count: count,
            chunkHolds: { start, end in
                let mask = SIMD16<UInt16>(repeating: exponent)
                var hits = SIMDMask<SIMD16<Int16>>(repeating: false)
                var i = start
                while i + 16 <= end {
                    hits .|= (raw.loadUnaligned(fromByteOffset: 2 * i, as: SIMD16<UInt16>.self) & mask) .== mask
                    i += 16
                }
                return any(hits) || (i..<end).contains(where: bad)
            }, isBad: bad)
    }
}
