import Synchronization

/// Searches for NaN and infinity in stored values (the loaders' check of every weight).
public enum NonFinite {
    /// Elements per chunk of the parallel search.
    static let chunk = 1 << 16

    /// The first index in `0..<count` where the value at `bits(i)` has all of `exponent`'s bits set (a NaN or an
    /// infinity in that format), or nil. Chunks of 64 Ki elements are spread over the compute pool and tested
    /// `Lanes.scalarCount` at a time; only a chunk that holds one is searched element by element (a plain loop over a
    /// full-size model's 8 GB took most of its loading time).
    static func firstIndex<Lanes: SIMD>(
        _ base: UnsafeRawPointer, count: Int, exponent: Lanes.Scalar, as _: Lanes.Type
    ) -> Int? where Lanes.Scalar: FixedWidthInteger & UnsignedInteger {
        let width = Lanes.scalarCount
        let stride = MemoryLayout<Lanes.Scalar>.stride
        func bad(_ i: Int) -> Bool {
            let bits = Lanes.Scalar(littleEndian: base.loadUnaligned(fromByteOffset: stride * i, as: Lanes.Scalar.self))
            return bits & exponent == exponent
        }
        let found = Mutex<Int?>(nil)
        ComputePool.shared.run(chunks: (count + chunk - 1) / chunk) { c in
            let (start, end) = (c * chunk, min(count, (c + 1) * chunk))
            let mask = Lanes(repeating: exponent)
            var hits = SIMDMask<Lanes.MaskStorage>(repeating: false)
            var i = start
            while i + width <= end {
                hits .|= (base.loadUnaligned(fromByteOffset: stride * i, as: Lanes.self) & mask) .== mask
                i += width
            }
            guard any(hits) || (i..<end).contains(where: bad), let first = (start..<end).first(where: bad) else {
                return
            }
            found.withLock { if $0.map({ first < $0 }) ?? true { $0 = first } }
        }
        return found.withLock { $0 }
    }

    /// Index and value of the first NaN or ±∞ among `count` floats, or nil.
    public static func first(_ p: UnsafePointer<Float>, count: Int) -> (Int, Float)? {
        firstIndex(UnsafeRawPointer(p), count: count, exponent: UInt32(0x7F80_0000), as: SIMD8<UInt32>.self)
            .map { ($0, p[$0]) }
    }
}
