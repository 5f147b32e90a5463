/// Vectorised elementary functions for the kernels' inner loops (libm's `expf` is scalar and was a third of the
/// attention blocks' time).
enum VectorMath {
    /// Eight lanes, one AVX2 register: with SIMD16 the optimiser passed vectors to `exp` in four 128-bit registers,
    /// did its arithmetic in 128-bit halves and called it instead of inlining it (`perf annotate`); with SIMD8 it is
    /// inlined and 256 bits wide, and a VAE decode's norms (GroupNorm + SiLU) take about a quarter less time.
    typealias Vector = SIMD8<Float>

    /// eˣ on eight lanes: Cephes `expf` (range reduction by n·ln 2 in two parts, a degree-6 polynomial, 2ⁿ built in the
    /// exponent bits), within 2 ulp of `expf` on [ln FLT_MIN, 88]; below ln FLT_MIN (−87.34, where `expf` turns
    /// subnormal) exactly 0, above 88 +∞ is not produced (the kernels only exponentiate x − max ≤ 0 and −x for SiLU,
    /// where the clamp is harmless). Never subnormal: it returned 1.6e−38 for every x below −87, so a softmax gave
    /// each masked key (score −FLT_MAX) a subnormal weight instead of PyTorch's 0, and on Intel cores every
    /// multiply-add on those weights took a microcode assist, which made the XLM-R encoder's attention about thirty
    /// times slower. Range reduction and polynomial are fused multiply-adds (`addingProduct`: Swift does not contract
    /// `a * b + c`, and the separate multiplies and adds made the attention's softmax wait on their latency).
    @inline(__always)
    static func exp(_ x: Vector) -> Vector {
        let clamped = minimum(maximum(x, Vector(repeating: lowest)), Vector(repeating: 88))
        // n = round(x / ln 2) via the 1.5·2²³ shift: the low bits of t's significand hold n.
        let shift: Float = 12_582_912
        let t = Vector(repeating: shift).addingProduct(clamped, Vector(repeating: 1.442_695_04))
        let n = t - shift
        let r = clamped.addingProduct(n, Vector(repeating: -0.693_359_375)).addingProduct(
            n, Vector(repeating: 2.121_944_40e-4))
        var p = Vector(repeating: 1.987_569_150e-4)
        p = Vector(repeating: 1.398_199_950_7e-3).addingProduct(p, r)
        p = Vector(repeating: 8.333_451_907_3e-3).addingProduct(p, r)
        p = Vector(repeating: 4.166_579_589_4e-2).addingProduct(p, r)
        p = Vector(repeating: 1.666_666_545_9e-1).addingProduct(p, r)
        p = Vector(repeating: 5.000_000_120_1e-1).addingProduct(p, r)
        p = (r + 1).addingProduct(p, r * r)
        let bits =
            unsafeBitCast(t, to: SIMD8<Int32>.self) &- unsafeBitCast(Vector(repeating: shift), to: SIMD8<Int32>.self)
        let scale = unsafeBitCast((bits &+ 127) &<< 23, to: Vector.self)
        return (p * scale).replacing(with: 0, where: x .< lowest)
    }

    /// ln FLT_MIN: the smallest argument whose eˣ is a normal float.
    static let lowest: Float = -87.336_54

    /// GELU, exact form, `0.5·x·(1 + erf(x/√2))`, with erf by Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e−7):
    /// erfc(|z|) ≈ t·(a₁ + t·(a₂ + …)))·e^(−z²), t = 1/(1 + p·|z|), and 1 + erf(z) taken as erfc(−z) below zero, so
    /// the negative tail is not a difference of nearly equal numbers. libm's scalar `erff` was 5 % of the XLM-R
    /// encoder's time.
    @inline(__always)
    static func gelu(_ x: Vector) -> Vector {
        let z = x * 0.707_106_78
        let a = maximum(z, -z)
        let t = 1 / Vector(repeating: 1).addingProduct(a, Vector(repeating: 0.327_591_1))
        var p = Vector(repeating: 1.061_405_429)
        p = Vector(repeating: -1.453_152_027).addingProduct(p, t)
        p = Vector(repeating: 1.421_413_741).addingProduct(p, t)
        p = Vector(repeating: -0.284_496_736).addingProduct(p, t)
        p = Vector(repeating: 0.254_829_592).addingProduct(p, t)
        let complement = p * t * exp(-(a * a))
        let onePlusErf = (2 - complement).replacing(with: complement, where: z .< 0)
        return 0.5 * x * onePlusErf
    }

    /// GELU, tanh form, `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`, with 1 + tanh(u) = 2 / (1 + e^(−2u)) (libm's
    /// scalar `tanhf` was a quarter of the mT5 encoder's time outside its products).
    @inline(__always)
    static func geluTanh(_ x: Vector) -> Vector {
        let u = 0.797_884_56 * x.addingProduct(0.044_715 * x, x * x)
        return x / (1 + exp(-2 * u))
    }

    /// eˣ for one float, by the same method (tails of vectorised loops, so every element gets the same rounding).
    @inline(__always)
    static func exp(_ x: Float) -> Float { exp(Vector(repeating: x))[0] }

    /// Lane-wise maximum (a compare and a blend; the standard library's `pointwiseMax` and `clamped` run lane by
    /// lane through the stack and made the softmax three times slower than libm's scalar `expf`).
    @inline(__always)
    static func maximum(_ a: Vector, _ b: Vector) -> Vector { a.replacing(with: b, where: a .< b) }

    /// Lane-wise minimum.
    @inline(__always)
    static func minimum(_ a: Vector, _ b: Vector) -> Vector { a.replacing(with: b, where: b .< a) }

    /// Loads eight floats from `p` (no alignment needed).
    @inline(__always)
    static func load(_ p: UnsafePointer<Float>) -> Vector {
        UnsafeRawPointer(p).loadUnaligned(as: Vector.self)
    }

    /// Stores eight floats at `p`.
    @inline(__always)
    static func store(_ v: Vector, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: Vector.self)
    }

    /// In-place softmax of one row: max, exponentials and their sum, then the scaling, eight lanes at a time.
    static func softmaxRow(_ row: UnsafeMutablePointer<Float>, width: Int) {
        let whole = width & ~7
        var peaks = Vector(repeating: -.infinity)
        var i = 0
        while i < whole {
            peaks = maximum(peaks, load(row + i))
            i += 8
        }
        var peak = peaks.max()
        for j in whole..<width { peak = Swift.max(peak, row[j]) }
        if peak == -.infinity {
            // Every position masked: PyTorch gives NaN; a uniform row keeps the output finite.
            row.update(repeating: 1 / Float(width), count: width)
            return
        }
        let peakVector = Vector(repeating: peak)
        var sums = Vector.zero
        i = 0
        while i < whole {
            let e = exp(load(row + i) - peakVector)
            store(e, row + i)
            sums += e
            i += 8
        }
        var sum = sums.sum()
        for j in whole..<width {
            let e = exp(row[j] - peak)
            row[j] = e
            sum += e
        }
        let inverse = 1 / sum
        let inverseVector = Vector(repeating: inverse)
        i = 0
        while i < whole {
            store(load(row + i) * inverseVector, row + i)
            i += 8
        }
        for j in whole..<width { row[j] *= inverse }
    }

    /// Σ(x − shift) and Σ(x − shift)² over `count` floats: each block of 256 summed in eight single-precision lanes,
    /// the blocks in double precision.
    @inline(__always)
    static func shiftedSums(_ p: UnsafePointer<Float>, count: Int, shift: Float) -> (Double, Double) {
        var (first, second) = (0.0, 0.0)
        let shifts = Vector(repeating: shift)
        var i = 0
        let whole = count & ~7
        while i < whole {
            let end = min(whole, i + 256)
            var (lanes, squares) = (Vector.zero, Vector.zero)
            while i < end {
                let d = load(p + i) - shifts
                lanes += d
                squares += d * d
                i += 8
            }
            first += Double(lanes.sum())
            second += Double(squares.sum())
        }
        for j in whole..<count {
            let d = Double(p[j] - shift)
            first += d
            second += d * d
        }
        return (first, second)
    }

    /// dst = src·scale + shift, then SiLU (v·σ(v)) when `silu`.
    @inline(__always)
    static func scaleShift(
        _ src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>, count: Int, scale: Float, shift: Float,
        silu: Bool
    ) {
        let (scales, shifts, ones) = (Vector(repeating: scale), Vector(repeating: shift), Vector(repeating: 1))
        let whole = count & ~7
        var i = 0
        if silu {
            while i < whole {
                let v = load(src + i) * scales + shifts
                store(v / (ones + exp(-v)), dst + i)
                i += 8
            }
            for j in whole..<count {
                let v = src[j] * scale + shift
                dst[j] = v / (1 + exp(-v))
            }
        } else {
            while i < whole {
                store(load(src + i) * scales + shifts, dst + i)
                i += 8
            }
            for j in whole..<count { dst[j] = src[j] * scale + shift }
        }
    }
}
