import Foundation
import Tensor

/// Where a sampler's Gaussian draws come from, one stream per image.
public protocol NoiseSource: Sendable {
    /// The next draw of `shape` (`[4, h, w]` for one image) for image `image` of the batch.
    mutating func next(image: Int, shape: [Int]) -> Tensor
}

/// PyTorch's CPU generator: `torch.manual_seed(S); torch.randn(shape)` bit for bit in its uniforms (mt19937), with
/// the Box–Muller transform of `normal_fill` (tensors of at least 16 elements) evaluated as PyTorch's AVX2 path
/// does: the Cephes single-precision log and sin/cos polynomials (`CephesFloat`), so draws agree to an ulp.
public struct TorchRandom: Sendable {
    private var state = [UInt32](repeating: 0, count: 624)
    private var index = 624

    public init(seed: UInt64) {
        state[0] = UInt32(truncatingIfNeeded: seed)
        for i in 1..<624 {
            state[i] = 1_812_433_253 &* (state[i - 1] ^ (state[i - 1] >> 30)) &+ UInt32(i)
        }
    }

    /// The next 32-bit output of mt19937.
    public mutating func nextUInt32() -> UInt32 {
        if index >= 624 { twist() }
        var y = state[index]
        index += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C_5680
        y ^= (y << 15) & 0xEFC6_0000
        y ^= y >> 18
        return y
    }

    private mutating func twist() {
        for i in 0..<624 {
            let y = (state[i] & 0x8000_0000) | (state[(i + 1) % 624] & 0x7FFF_FFFF)
            var next = state[(i + 397) % 624] ^ (y >> 1)
            if y & 1 != 0 { next ^= 0x9908_B0DF }
            state[i] = next
        }
        index = 0
    }

    /// A float in [0, 1): the low 24 bits of one output over 2²⁴ (`uniform_real_distribution<float>`).
    mutating func uniformFloat() -> Float {
        Float(Double(nextUInt32() & 0xFF_FFFF) / Double(1 << 24))
    }

    /// `torch.randn(count)` for count ≥ 16: uniforms for every element, Box–Muller over blocks of 16 (pairs j and
    /// j + 8), and a tail that is not a multiple of 16 redrawn as the last 16 elements.
    public mutating func randn(count: Int) -> [Float] {
        precondition(count >= 16, "torch-compatible draws need at least 16 elements (got \(count))")
        var data = (0..<count).map { _ in uniformFloat() }
        func fill16(_ base: Int) {
            for j in 0..<8 {
                let u1 = 1 - data[base + j]
                let u2 = data[base + j + 8]
                let radius = (-2 * CephesFloat.log(u1)).squareRoot()
                let (sine, cosine) = CephesFloat.sincos(CephesFloat.twoPi * u2)
                data[base + j] = radius * cosine
                data[base + j + 8] = radius * sine
            }
        }
        var i = 0
        while i + 16 <= count {
            fill16(i)
            i += 16
        }
        if count % 16 != 0 {
            let base = count - 16
            for j in 0..<16 { data[base + j] = uniformFloat() }
            fill16(base)
        }
        return data
    }

    /// `torch.randn(shape)`.
    public mutating func randn(_ shape: [Int]) -> Tensor {
        Tensor(shape: shape, values: randn(count: shape.reduce(1, *)))
    }
}

/// Per-image torch-compatible streams: image k of a request with seed S draws from `torch.manual_seed(S + k)`,
/// first its starting noise, then each step's noise, so an image depends only on its own seed.
public struct SeededNoise: NoiseSource {
    private var generators: [TorchRandom]

    public init(seeds: [UInt64]) {
        generators = seeds.map { TorchRandom(seed: $0) }
    }

    public mutating func next(image: Int, shape: [Int]) -> Tensor {
        generators[image].randn(shape)
    }
}

/// Replays recorded draws: `draws[i]` is the list of tensors image i receives, in order (the fixtures record
/// every draw the release samplers made).
public struct RecordedNoise: NoiseSource {
    private var draws: [[Tensor]]
    private var positions: [Int]

    public init(draws: [[Tensor]]) {
        self.draws = draws
        positions = Array(repeating: 0, count: draws.count)
    }

    public mutating func next(image: Int, shape: [Int]) -> Tensor {
        precondition(positions[image] < draws[image].count, "image \(image) ran out of recorded draws")
        let t = draws[image][positions[image]]
        positions[image] += 1
        precondition(t.count == shape.reduce(1, *), "recorded draw \(t.shape) for \(shape)")
        return t.reshaped(shape)
    }
}

/// The Cephes single-precision approximations of log, sin and cos, as vectorized by PyTorch's AVX2 random normal
/// fill: the same range reduction, polynomials and operation order, one lane at a time.
enum CephesFloat {
    static let twoPi = Float(2 * Double.pi)

    /// Natural logarithm of a positive normal float.
    static func log(_ value: Float) -> Float {
        var x = max(value, Float.leastNormalMagnitude)
        let bits = x.bitPattern
        var e = Float(Int32(bitPattern: bits >> 23) - 0x7F) + 1
        x = Float(bitPattern: (bits & ~0x7F80_0000) | Float(0.5).bitPattern)
        if x < 0.707_106_781_186_547_524 {
            e -= 1
            x = x - 1 + x
        } else {
            x = x - 1
        }
        let z = x * x
        var y: Float = 7.037_683_629_2e-2
        for c: Float in [
            -1.151_461_031_0e-1, 1.167_699_874_0e-1, -1.242_014_084_6e-1, 1.424_932_278_7e-1,
            -1.666_805_766_5e-1, 2.000_071_476_5e-1, -2.499_999_399_3e-1, 3.333_333_117_4e-1,
        ] {
            y = y * x + c
        }
        y = y * x
        y = y * z
        y = y + e * -2.121_944_40e-4
        y = y + -0.5 * z
        x = x + y
        x = x + e * 0.693_359_375
        return x
    }

    /// (sin, cos) of `value`.
    static func sincos(_ value: Float) -> (Float, Float) {
        var x = abs(value)
        var sinSign: UInt32 = value.sign == .minus ? 0x8000_0000 : 0
        var j = Int32(x * 1.273_239_544_735_16)  // 4/π, truncated
        j = (j + 1) & ~1
        let y = Float(j)
        sinSign ^= UInt32(bitPattern: (j & 4) << 29)
        let usePolynomialSwap = (j & 2) == 0
        x = x + y * -0.785_156_25
        x = x + y * -2.418_756_484_985_351_562_5e-4
        x = x + y * -3.774_894_977_445_941_08e-8
        let cosSign = UInt32(bitPattern: (~(j - 2) & 4) << 29)
        let z = x * x
        var c: Float = 2.443_315_711_809_948e-5
        c = c * z + -1.388_731_625_493_765e-3
        c = c * z + 4.166_664_568_298_827e-2
        c = c * z
        c = c * z
        c = c - z * 0.5
        c = c + 1
        var s: Float = -1.951_529_589_1e-4
        s = s * z + 8.332_160_873_6e-3
        s = s * z + -1.666_665_461_1e-1
        s = s * z
        s = s * x
        s = s + x
        let sine = usePolynomialSwap ? s : c
        let cosine = usePolynomialSwap ? c : s
        return (Float(bitPattern: sine.bitPattern ^ sinSign), Float(bitPattern: cosine.bitPattern ^ cosSign))
    }
}
