import Foundation
import TestSupport
import Testing

@testable import Tensor

/// Winograd F(4×4, 3×3) and F(6×6, 3×3) against a direct convolution in double precision, on sizes that leave
/// partial tiles (sides not multiples of the tile, 1×1 and 2×3 planes), odd channel counts, several blocks of output
/// channels, and tiles taken in bands of tile rows.
///
/// Tolerance: the F(4×4) transforms multiply values by up to 8 (Aᵀ) and 5 (Bᵀ) before the float32 products are summed,
/// which costs about one decimal digit against the direct method (Lavin & Gray report ≈ 1e-6 → 1e-5 relative error
/// for F(4×4, 3×3) in float32); 1e-5 of max|reference| is asserted, ten times below the direct kernels' 1e-4. F(6×6)'s
/// scale by up to 32 and 5.25: 2e-5.
@Suite struct WinogradTests {
    static func tolerance(_ algorithm: ConvAlgorithm) -> Double { algorithm == .winograd6 ? 2e-5 : 1e-5 }
    static let tolerance = 1e-5
    static let algorithms: [ConvAlgorithm] = [.winograd, .winograd6]
    /// Without the AVX-512VL products, and with them where the processor has them (`PanelGEMM.wide`): with eight-lane
    /// and with sixteen-lane tiles (the latter used only where they are faster, but they run on any AVX-512
    /// processor). (wide, sixteen)
    static let tileSets = PanelGEMM.wide ? [(false, false), (true, false), (true, true)] : [(false, false)]

    /// The cases' budgets are written for F(4×4)'s 36 points (`36 · channels · …`); F(6×6) needs 64 for the same
    /// blocks and bands.
    static func budget(_ floats: Int, _ algorithm: ConvAlgorithm, default: Int) -> Int {
        floats == `default` || algorithm != .winograd6 ? floats : floats / 36 * 64
    }

    func tensor(_ shape: [Int], _ rng: inout SeededGenerator) -> Tensor {
        Tensor(shape: shape, values: rng.floats(shape.reduce(1, *), in: -1...1))
    }

    /// Direct 3×3 convolution, stride 1, zero padding 1, in double precision.
    func reference(_ x: Tensor, _ w: Tensor, _ b: Tensor?) -> [Double] {
        let (batch, cin, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let cout = w.shape[0]
        let xs = x.scalars.map(Double.init)
        let ws = w.scalars.map(Double.init)
        var out = [Double](repeating: 0, count: batch * cout * h * wd)
        for n in 0..<batch {
            for co in 0..<cout {
                for i in 0..<h {
                    for j in 0..<wd {
                        var s = b.map { Double($0[co]) } ?? 0
                        for ci in 0..<cin {
                            for ki in 0..<3 {
                                let y = i - 1 + ki
                                if y < 0 || y >= h { continue }
                                for kj in 0..<3 {
                                    let xx = j - 1 + kj
                                    if xx < 0 || xx >= wd { continue }
                                    s +=
                                        xs[((n * cin + ci) * h + y) * wd + xx] * ws[((co * cin + ci) * 3 + ki) * 3 + kj]
                                }
                            }
                        }
                        out[((n * cout + co) * h + i) * wd + j] = s
                    }
                }
            }
        }
        return out
    }

    func relativeError(_ a: Tensor, _ ref: [Double]) -> Double {
        let scale = max(1e-30, ref.map(abs).max() ?? 0)
        return (zip(a.scalars, ref).map { abs(Double($0) - $1) }.max() ?? 0) / scale
    }

    static let cases = [
        // (batch, cin, cout, h, w, weight budget in floats)
        (1, 1, 1, 1, 1, Kernels.winogradWeightBudget),
        (2, 3, 5, 2, 3, Kernels.winogradWeightBudget),
        (3, 5, 7, 9, 11, Kernels.winogradWeightBudget),
        (2, 17, 6, 13, 16, 36 * 17 * 4),  // 32 tiles, two blocks of output channels (3 + 3), one per thread
        (1, 64, 9, 17, 18, 36 * 64),  // one output channel per block
        (2, 20, 7, 20, 20, 36 * 20 * 3),  // 50 tiles (more than `fewTiles`): blocks of 3 shared by the threads
        (2, 130, 3, 8, 8, Kernels.winogradWeightBudget),
        // All weights at once, tiles in bands of two tile rows (10 tiles wide: a group of eight and a partial one),
        // the bands crossing from one image into the next.
        (2, 5, 4, 10, 37, 36 * 5 * 10 * 2),
        // Bands of one tile row, six of them: each thread takes whole bands with a V and an M of its own.
        (2, 5, 4, 10, 37, 36 * 5 * 10),
        // A tile row over the budget: bands of eight tiles within a row (8 + 8 + 2 tiles, the last with a partial
        // tile), whose outputs must stop where the next band's begin.
        (1, 3, 2, 8, 70, 36 * 4 * 8),
        (1, 9, 3, 33, 64, Kernels.winogradWeightBudget),
        // 40 tiles: a full panel of 24 columns and one of 16; ten output channels, the last of three row panels
        // half empty.
        (1, 6, 10, 16, 40, Kernels.winogradWeightBudget),
        // Blocks of sixteen output channels (two groups of eight) over 3 · 5 · 7 = 105 tiles: four full panels and a
        // partial one of 16, rows of seven tiles crossing the panels' ends.
        (3, 11, 40, 20, 28, 36 * 11 * 16),
        // 162 tiles (more than `fewTiles`): blocks of seven output channels shared by the threads, the weight
        // transform's last group of eight partial in each.
        (2, 6, 20, 36, 36, 36 * 6 * 8),
        // Whole groups of eight output channels over 36 input channels: the weight transform interleaves 32 of them
        // by 8 × 8 transposes, the last four one float at a time.
        (1, 36, 16, 8, 8, Kernels.winogradWeightBudget),
        // 8 tiles (8×8 at batch 2) over 300 input channels, U over its budget: with AVX-512VL blocks of 24 and 20
        // output channels (three pairs of rows, the last half empty), each in chunks of 128, 128 and 44 input
        // channels added up in M; without, blocks of eight.
        (2, 300, 44, 8, 8, 36 * 300 * 24),
        // 32 tiles (16×16 at batch 2): a panel of 24 and one of 8; blocks of 16 and 14 output channels, in chunks of
        // 128 and 22 input channels.
        (2, 150, 30, 16, 16, 36 * 150 * 24),
        // 16 tiles (8×8 at batch 4): one panel of 16, taken by the chunked products eight columns at a time; blocks
        // of 24 and 20 output channels in chunks of 128, 128 and 44 input channels.
        (4, 300, 44, 8, 8, 36 * 300 * 24),
        // 12 tiles: a panel of 16 with four columns of padding.
        (3, 140, 30, 8, 8, 36 * 140 * 24),
        // 20 tiles: a last panel of 24 with four columns of padding; 24 tiles: one whole panel and none after it.
        (5, 140, 30, 8, 8, 36 * 140 * 24),
        (6, 140, 30, 8, 8, 36 * 140 * 24),
        // With the sixteen-lane tiles: 8 tiles, two blocks of 48 output channels (six pairs of rows, three vectors)
        // in chunks of 128, 128 and 44 input channels; 32 tiles, blocks of 32 (four pairs, two vectors) over a panel
        // of 24 and one of 8, in chunks of 128 and 2. (Blocks of 24 and 8 with the eight-lane ones.)
        (2, 300, 96, 8, 8, Kernels.winogradWeightBudget),
        (2, 130, 64, 16, 16, 36 * 130 * 32),
    ]

    @Test(arguments: algorithms, cases + f6Cases)
    func matchesDirectReference(_ algorithm: ConvAlgorithm, _ c: (Int, Int, Int, Int, Int, Int)) {
        var rng = SeededGenerator(seed: 7)
        let x = tensor([c.0, c.1, c.3, c.4], &rng)
        let w = tensor([c.2, c.1, 3, 3], &rng)
        let b = tensor([c.2], &rng)
        let budget = Self.budget(c.5, algorithm, default: Kernels.winogradWeightBudget)
        let tolerance = Self.tolerance(algorithm)
        let (withBias, withoutBias) = (reference(x, w, b), reference(x, w, nil))
        for (wide, sixteen) in Self.tileSets {
            let y = Kernels.winogradConv3x3(
                x, weight: w, bias: b, weightBudget: budget, algorithm: algorithm, wide: wide, sixteen: sixteen)
            #expect(y.shape == [c.0, c.2, c.3, c.4])
            let error = relativeError(y, withBias)
            #expect(
                error <= tolerance,
                "Winograd \(algorithm) \(c) wide \(wide) sixteen \(sixteen): max error / max|reference| = \(error)")
            let noBias = Kernels.winogradConv3x3(
                x, weight: w, bias: nil, weightBudget: budget, algorithm: algorithm, wide: wide, sixteen: sixteen)
            let errorNoBias = relativeError(noBias, withoutBias)
            #expect(
                errorNoBias <= tolerance,
                "Winograd \(algorithm) \(c) wide \(wide) sixteen \(sixteen) without bias: \(errorNoBias)")
        }
    }

    /// Geometries for F(6×6)'s tiles in particular (with F(4×4) too).
    static let f6Cases = [
        // 11 tiles a row (64 columns, as the UNet's outer level): a group of eight and a partial one of three, whose
        // outputs end two columns into the last tile.
        (2, 3, 5, 12, 64, Kernels.winogradWeightBudget),
        // Bands of eight tiles within a row (8 + 8 + 1 of 17, 100 columns), each stopping where the next begins.
        (1, 3, 2, 8, 100, 36 * 4 * 8),
        // Exactly 48 columns: one full group, the stores reaching the right edge.
        (1, 4, 3, 7, 48, Kernels.winogradWeightBudget),
    ]

    /// Weights over their budget and V over its own: all of U at once, the tiles in shared bands of tile rows.
    @Test(arguments: [
        // (batch, cin, cout, h, w, weight budget, input budget in floats)
        (2, 12, 20, 18, 22, 36 * 12 * 8, 36 * 12 * 10),  // bands of one tile row (six tiles), ten of them
        (1, 7, 9, 30, 9, 36 * 16 * 3 * 2, 36 * 7 * 4),  // bands of two tile rows of three tiles, partial tiles
    ])
    func bandsWithAllWeightsWhenTheInputIsOverItsBudget(_ c: (Int, Int, Int, Int, Int, Int, Int)) {
        var rng = SeededGenerator(seed: 11)
        let x = tensor([c.0, c.1, c.3, c.4], &rng)
        let w = tensor([c.2, c.1, 3, 3], &rng)
        let b = tensor([c.2], &rng)
        let ref = reference(x, w, b)
        for algorithm in Self.algorithms {
            let y = Kernels.winogradConv3x3(
                x, weight: w, bias: b, weightBudget: Self.budget(c.5, algorithm, default: -1),
                inputBudget: Self.budget(c.6, algorithm, default: -1), algorithm: algorithm)
            let error = relativeError(y, ref)
            #expect(
                error <= Self.tolerance(algorithm), "Winograd \(algorithm) \(c): max error / max|reference| = \(error)")
        }
    }

    /// The upsampled input read by the input transform, against a direct convolution of the upsampled tensor, on
    /// every path: bands of their own (whole rows, and tiles within a row starting at odd input columns), shared
    /// bands, blocks of output channels, bands with all weights, and im2col on a plane too small for Winograd.
    @Test(arguments: [
        // (batch, cin, cout, source h, source w, weight budget, input budget)
        (1, 3, 4, 3, 5, Kernels.winogradWeightBudget, Kernels.winogradInputBudget),
        (2, 5, 4, 5, 19, 36 * 5 * 10, Kernels.winogradInputBudget),
        (1, 3, 2, 4, 35, 36 * 4 * 8, Kernels.winogradInputBudget),
        (2, 5, 4, 5, 19, 36 * 5 * 10 * 2, Kernels.winogradInputBudget),
        (2, 17, 6, 7, 8, 36 * 17 * 4, Kernels.winogradInputBudget),
        (2, 12, 20, 9, 11, 36 * 12 * 8, 36 * 12 * 10),
    ])
    func upsampledInputMatchesConvolutionOfTheUpsampledTensor(_ c: (Int, Int, Int, Int, Int, Int, Int)) {
        var rng = SeededGenerator(seed: 13)
        let x = tensor([c.0, c.1, c.3, c.4], &rng)
        let w = tensor([c.2, c.1, 3, 3], &rng)
        let b = tensor([c.2], &rng)
        let ref = reference(Kernels.upsampleNearest2x(x), w, b)
        for algorithm in Self.algorithms {
            let y = Kernels.winogradConv3x3(
                x, weight: w, bias: b, weightBudget: Self.budget(c.5, algorithm, default: Kernels.winogradWeightBudget),
                inputBudget: Self.budget(c.6, algorithm, default: Kernels.winogradInputBudget), upsampled: true,
                algorithm: algorithm)
            #expect(y.shape == [c.0, c.2, 2 * c.3, 2 * c.4])
            let error = relativeError(y, ref)
            #expect(
                error <= Self.tolerance(algorithm),
                "upsampled Winograd \(algorithm) \(c): max error / max|reference| = \(error)")
        }
        let viaConv = Kernels.conv3x3Upsampled(x, weight: w, bias: b)
        #expect(relativeError(viaConv, ref) <= Self.tolerance, "conv3x3Upsampled \(c)")
    }

    @Test func upsampledConvolutionOnAPlaneTooSmallForWinograd() {
        var rng = SeededGenerator(seed: 17)
        let x = tensor([1, 4, 1, 2], &rng)  // 2×4 after upsampling: two tiles, im2col
        let w = tensor([3, 4, 3, 3], &rng)
        let y = Kernels.conv3x3Upsampled(x, weight: w, bias: nil)
        #expect(y.shape == [1, 3, 2, 4])
        #expect(relativeError(y, reference(Kernels.upsampleNearest2x(x), w, nil)) <= 1e-5)
    }

    @Test func fewTilesTakeBlocksOfEightOrTwentyFourOutputChannels() {
        // 16×16 at batch 2 (32 tiles): one group of eight, whatever the input channels; three with AVX-512VL, six
        // with its sixteen-lane tiles.
        // Within the budget: 3·2²⁰ / (36 · 2688) is 32.
        for (wide, sixteen, group) in [(false, false, 8), (false, true, 8), (true, false, 24), (true, true, 48)] {
            for (cin, most) in [(1152, 75), (2688, 32)] {
                let block = Kernels.winogradBlockChannels(
                    inChannels: cin, tiles: 32, budget: 3 << 20, points: 36, wide: wide, sixteen: sixteen)
                #expect(block == min(group, most), "wide \(wide), sixteen \(sixteen), \(cin) input channels")
            }
        }
        // 32×32 (128 tiles): the budget decides (3·2²⁰ / (36 · 768)).
        #expect(Kernels.winogradBlockChannels(inChannels: 768, tiles: 128, budget: 3 << 20, points: 36) == 113)
        // 64×64 (512 tiles): the budget decides (3·2²⁰ / (36 · 384)).
        #expect(Kernels.winogradBlockChannels(inChannels: 384, tiles: 512, budget: 3 << 20, points: 36) == 227)
        // A budget under eight channels still holds with few tiles (the tests below force several blocks with it).
        #expect(Kernels.winogradBlockChannels(inChannels: 17, tiles: 32, budget: 36 * 17 * 4, points: 36) == 4)
    }

    @Test func conv2dPicksTheAlgorithmByTileCount() {
        func pick(
            _ kernel: (Int, Int), stride: Int = 1, padding: Padding = .uniform(1), batch: Int = 2, channels: Int = 384,
            _ size: Int
        )
            -> ConvAlgorithm
        {
            Kernels.convAlgorithm(
                kernel: kernel, stride: stride, padding: padding, batch: batch, outH: size, outW: size,
                inChannels: channels, outChannels: channels)
        }
        #expect(pick((3, 3), 64) == .winograd)
        #expect(pick((3, 3), 16) == .winograd)
        #expect(pick((3, 3), 8) == .winograd)
        #expect(pick((3, 3), 4) == .im2col)
        #expect(pick((3, 3), batch: 8, 8) == .winograd)
        #expect(pick((3, 3), stride: 2, 64) == .im2col)
        #expect(pick((3, 3), padding: .zero, 64) == .im2col)
        #expect(pick((1, 1), 64) == .im2col)
    }

    @Test func largePlanesTakeF6UnlessItsWeightsLeaveTheirPath() {
        func pick(_ channels: (Int, Int), _ size: Int, batch: Int = 1) -> ConvAlgorithm {
            Kernels.convAlgorithm(
                kernel: (3, 3), stride: 1, padding: .uniform(1), batch: batch, outH: size, outW: size,
                inChannels: channels.0, outChannels: channels.1)
        }
        // The VAE: both U within the weight budget, or both over it.
        #expect(pick((128, 128), 512) == .winograd6)
        #expect(pick((256, 128), 512) == .winograd6)
        #expect(pick((512, 512), 128) == .winograd6)
        #expect(pick((512, 256), 256) == .winograd6)
        // 256 → 256: F(4×4)'s U within the budget (36 · 256 · 256), F(6×6)'s over it.
        #expect(pick((256, 256), 256) == .winograd)
        // 64×64 planes: 11 tiles a row in two groups of eight lanes.
        #expect(pick((512, 512), 64) == .winograd)
        #expect(pick((384, 384), 64, batch: 2) == .winograd)
        // 32×32 and smaller: more work than F(4×4).
        #expect(pick((128, 128), 32) == .winograd)
    }
}
