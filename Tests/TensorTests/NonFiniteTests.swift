import Testing

@testable import Tensor

/// The loaders' search for NaN and infinity (`NonFinite`): the first bad value wherever it lies (inside a vector, in a
/// later chunk than another, in the scalar tail), for float32 and both half-precision formats, whose exponents differ.
@Suite struct NonFiniteTests {
    static let count = 3 * NonFinite.chunk + 21

    /// `HalfWeight.firstNonFinite` over `count` zeros with `bad` bit patterns placed.
    func firstHalf(_ dtype: DType, _ bad: [(Int, UInt16)]) -> (Int, Float)? {
        var bits = [UInt16](repeating: 0, count: Self.count)
        for (i, b) in bad { bits[i] = b }
        return bits.withUnsafeBytes { raw in
            HalfWeight(shape: [Self.count], dtype: dtype, raw: raw, owner: NonFiniteTests.Owner()).firstNonFinite()
        }
    }

    final class Owner {}

    @Test func halfPrecisionFormats() {
        let n = Self.count
        #expect(firstHalf(.f16, []) == nil)
        // f16: exponent 0x7C00 all ones is ±∞ or NaN; 0x7BFF is its largest finite value.
        #expect(firstHalf(.f16, [(n - 1, 0x7BFF), (7, 0xFBFF)]) == nil)
        let f16 = firstHalf(.f16, [(140_001, 0x7E00), (70_003, 0xFC00), (190_000, 0x7C00)])!
        #expect(f16.0 == 70_003 && f16.1 == -.infinity)
        #expect(firstHalf(.f16, [(n - 2, 0x7C00)])!.0 == n - 2)
        // bf16: 0x7C00 is a finite 5.3e36; 0x7F80 is +∞, 0x7FC0 a NaN.
        #expect(firstHalf(.bf16, [(3, 0x7C00)]) == nil)
        let bf16 = firstHalf(.bf16, [(100_000, 0x7FC0), (150_000, 0x7F80)])!
        #expect(bf16.0 == 100_000 && bf16.1.isNaN)
    }

    @Test func float32() {
        let n = Self.count
        func first(_ bad: [(Int, Float)]) -> (Int, Float)? {
            var values = [Float](repeating: 1, count: n)
            for (i, v) in bad { values[i] = v }
            return values.withUnsafeBufferPointer { NonFinite.first($0.baseAddress!, count: n) }
        }
        #expect(first([(9, .greatestFiniteMagnitude)]) == nil)
        let found = first([(131_073, .nan), (65_535, .infinity)])!
        #expect(found.0 == 65_535 && found.1 == .infinity)
        #expect(first([(n - 1, -.infinity)])!.0 == n - 1)
    }
}
