import CKernels
import Foundation

/// Figures for `kandinsky-worker bench kernels`: sgemm throughput and 3×3 convolution throughput at the UNet's
/// shapes, measured in the same run so their ratio is meaningful on any machine.
public enum KernelBenchmark {
    public struct ConvCase: Sendable {
        public var name: String
        public var batch: Int, channels: Int, size: Int
        /// The algorithm to force, or nil for the one `conv2d` picks.
        public var algorithm: ConvAlgorithm? = nil
        /// Multiply-adds × 2 of a direct 3×3 convolution with padding 1.
        public var flops: Double { 2.0 * Double(batch * channels * channels * 9 * size * size) }
    }

    public struct Result: Sendable {
        public var name: String
        public var bestSeconds: Double
        public var medianSeconds: Double
        public var gflops: Double
    }

    /// The UNet's 3×3 shapes at each level, batch 2 (one guided step) and 4 and 8 at the innermost, and the VAE decoder's
    /// three largest planes, through `conv2d`'s choice of algorithm and through the other; GFLOP/s are effective
    /// (direct-method FLOPs over time).
    public static let convCases =
        [
            (384, 64, 2), (768, 32, 2), (1152, 16, 2), (1536, 8, 2), (1536, 8, 4), (1536, 8, 8), (512, 128, 1),
            (256, 256, 1), (128, 512, 1),
        ].flatMap { channels, size, batch in
            let picked = Kernels.convAlgorithm(
                kernel: (3, 3), stride: 1, padding: .uniform(1), batch: batch, outH: size, outW: size,
                inChannels: channels, outChannels: channels)
            let forced = ConvAlgorithm.allCases.filter { $0 != picked }
            return ([nil] + forced).map { algorithm in
                ConvCase(
                    name:
                        "conv3x3 \(channels)→\(channels) \(size)×\(size) b\(batch) \(algorithm?.rawValue ?? "(\(picked.rawValue))")",
                    batch: batch, channels: channels, size: size, algorithm: algorithm)
            }
        }

    /// One attention shape: `slices` heads (over the batch) of `width` channels, `queries` against `keys`.
    public struct AttentionCase: Sendable {
        public var name: String
        public var slices: Int, width: Int, queries: Int, keys: Int
        /// Multiply-adds × 2 of the two products (scores, then the weighted values).
        public var flops: Double { 4.0 * Double(slices * queries * keys * width) }
    }

    /// The UNet's attention at 32×32, 16×16 and 8×8 (batch 2, heads of 64 channels, 77 text keys before the
    /// image's) and the VAE's single head of 512 channels over a 64×64 latent, channels first as the models call it.
    public static let attentionCases = [
        (24, 64, 1024, 1024 + 77), (36, 64, 256, 256 + 77), (48, 64, 64, 64 + 77), (1, 512, 4096, 4096),
    ].map { slices, width, queries, keys in
        AttentionCase(
            name: "attention \(slices)×\(width) \(queries)→\(keys)", slices: slices, width: width, queries: queries,
            keys: keys)
    }

    /// The UNet's largest kernel-1 convolutions (batch 2): the attention blocks' qkv and proj_out at 32×32 and 16×16.
    public static let pointwiseCases = [(768, 2304, 1024), (768, 768, 1024), (1152, 3456, 256)].map {
        cin, cout, length in
        (name: "conv1d \(cin)→\(cout) L\(length) b2", cin: cin, cout: cout, length: length)
    }

    /// One kernel-1 convolution case through `Kernels.conv1x1`.
    public static func pointwise(
        _ c: (name: String, cin: Int, cout: Int, length: Int), repeats: Int = 5
    ) -> Result {
        let x = random([2, c.cin, c.length], seed: 9)
        let w = random([c.cout, c.cin, 1], seed: 10)
        let bias = random([c.cout], seed: 11)
        let (best, median) = time(repeats: repeats) { _ = Kernels.conv1x1(x, weight: w, bias: bias) }
        let flops = 2.0 * Double(2 * c.length * c.cin * c.cout)
        return Result(name: c.name, bestSeconds: best, medianSeconds: median, gflops: flops / best / 1e9)
    }

    /// One attention case through `Kernels.attentionChannelsFirst`.
    public static func attention(_ c: AttentionCase, repeats: Int = 5) -> Result {
        let q = random([c.slices, c.width, c.queries], seed: 6)
        let k = random([c.slices, c.width, c.keys], seed: 7)
        let v = random([c.slices, c.width, c.keys], seed: 8)
        let scale = 1 / Float(c.width).squareRoot()
        let (best, median) = time(repeats: repeats) {
            _ = Kernels.attentionChannelsFirst(q: q, k: k, v: v, scale: scale)
        }
        return Result(name: c.name, bestSeconds: best, medianSeconds: median, gflops: c.flops / best / 1e9)
    }

    /// Times `body` `repeats` times, after one warm-up run unless `warmUp` is false; returns the best and the median
    /// seconds.
    public static func time(repeats: Int, warmUp: Bool = true, _ body: () -> Void) -> (best: Double, median: Double) {
        if warmUp { body() }
        var samples: [Double] = []
        for _ in 0..<max(1, repeats) {
            let start = DispatchTime.now().uptimeNanoseconds
            body()
            samples.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        samples.sort()
        return (samples[0], samples[samples.count / 2])
    }

    /// The machine's speed at a moment: sgemm `n`³ (best of `repeats`) on operands kept between samples, so a
    /// benchmark can take one before and after each of its runs and pair each run with the speed of the cores while
    /// it ran (on shared cores that speed wanders by a fifth within minutes; one sample at the end of a benchmark
    /// can miss a slow or fast period of its runs).
    public final class SgemmProbe {
        let n: Int
        let a: Tensor, b: Tensor, c: Tensor

        public init(n: Int = 2048) {
            self.n = n
            (a, b, c) = (
                KernelBenchmark.random([n, n], seed: 1), KernelBenchmark.random([n, n], seed: 2), Tensor(zeros: [n, n])
            )
            _ = gflops(repeats: 1)  // every page of the operands touched now, not during a benchmark's runs
        }

        /// GFLOP/s of the best of `repeats` products (no warm-up: the operands stay warm between samples).
        public func gflops(repeats: Int = 2) -> Double {
            let (best, _) = KernelBenchmark.time(repeats: repeats, warmUp: false) {
                BLAS.sgemm(
                    m: n, n: n, k: n, a: a.storage.pointer, lda: n, b: b.storage.pointer, ldb: n,
                    c: c.storage.pointer, ldc: n)
            }
            return 2 * Double(n) * Double(n) * Double(n) / best / 1e9
        }
    }

    /// Whether the Winograd products take pairs of whole panels in sixteen-lane vectors (`PanelGEMM.sixteenLanes`).
    public static var sixteenLaneProducts: Bool { PanelGEMM.sixteenLanes }

    /// The cores' multiply-add peak in GFLOP/s: `threads` threads started together, each on register-only fused
    /// multiply-adds in the widest vectors the processor has (16 lanes with AVX-512, else 8; `kw_fma_peak`, ≈ 0.2 s a
    /// run on a core of 100 GFLOP/s), the best of `repeats` runs; nil where the
    /// processor has no AVX2 and FMA. No kernel that reads memory can pass it: what a kernel leaves below it is what
    /// there is left to win.
    public static func fmaPeak(threads: Int, repeats: Int = 3) -> Double? {
        let lanes: Int32 = PanelGEMM.wide ? 16 : 8
        let iterations = 100_000_000 / Int(lanes / 8)
        let best = (0..<max(1, repeats)).map { _ in kw_fma_peak(Int32(threads), iterations, lanes) }.max() ?? -1
        return best > 0 ? best : nil
    }

    /// sgemm of `n`×`n`×`n`.
    public static func sgemm(n: Int = 2048, repeats: Int = 5) -> Result {
        var r = sgemm(m: n, n: n, k: n, repeats: repeats)
        r.name = "sgemm \(n)³"
        return r
    }

    /// sgemm of one shape: C[m, n] = A[m, k] · B[k, n], optionally with A or B transposed in memory.
    public static func sgemm(
        m: Int, n: Int, k: Int, transA: Bool = false, transB: Bool = false, repeats: Int = 5
    ) -> Result {
        let a = random([m, k], seed: 1)
        let b = random([k, n], seed: 2)
        let c = Tensor(zeros: [m, n])
        let (best, median) = time(repeats: repeats) {
            // C[m, n] = op(A) · op(B)
            BLAS.sgemm(
                transA: transA, transB: transB, m: m, n: n, k: k, a: a.storage.pointer, lda: transA ? m : k,
                b: b.storage.pointer, ldb: transB ? k : n, c: c.storage.pointer, ldc: n)
        }
        let flops = 2 * Double(m) * Double(n) * Double(k)
        let name = "sgemm \(m)×\(n)×\(k)\(transA ? " Aᵀ" : "")\(transB ? " Bᵀ" : "")"
        return Result(name: name, bestSeconds: best, medianSeconds: median, gflops: flops / best / 1e9)
    }

    /// One 3×3 convolution case through `Kernels.conv2d`.
    public static func conv(_ c: ConvCase, repeats: Int = 5) -> Result {
        let x = random([c.batch, c.channels, c.size, c.size], seed: 3)
        let w = random([c.channels, c.channels, 3, 3], seed: 4)
        let bias = random([c.channels], seed: 5)
        let (best, median) = time(repeats: repeats) {
            switch c.algorithm {
            case nil: _ = Kernels.conv2d(x, weight: w, bias: bias, stride: 1, padding: .uniform(1))
            case .im2col?: _ = Kernels.conv2dDirect(x, weight: w, bias: bias, stride: 1, padding: .uniform(1))
            case let winograd?: _ = Kernels.winogradConv3x3(x, weight: w, bias: bias, algorithm: winograd)
            }
        }
        return Result(name: c.name, bestSeconds: best, medianSeconds: median, gflops: c.flops / best / 1e9)
    }

    /// A tensor of uniform values in [-1, 1) from a fixed seed (SplitMix64).
    public static func random(_ shape: [Int], seed: UInt64) -> Tensor {
        var state = seed &* 0x9E37_79B9_7F4A_7C15
        var t = Tensor(uninitialized: shape)
        t.withUnsafeMutableBufferPointer { p in
            for i in 0..<p.count {
                state &+= 0x9E37_79B9_7F4A_7C15
                var z = state
                z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
                z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
                z ^= z >> 31
                p[i] = Float(z >> 40) / Float(1 << 23) - 1
            }
        }
        return t
    }
}
