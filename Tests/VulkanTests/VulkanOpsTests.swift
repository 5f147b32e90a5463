import Foundation
import Tensor
import TestSupport
import Testing

@testable import VulkanBackend

/// Each normalisation, element-wise, layout and sampler operation of the Vulkan backend against `CPUBackend` (the
/// reference arithmetic) on awkward shapes: odd sizes, several channels per group, rows wider than a workgroup,
/// batches with different per-image coefficients. Layout operations, clamp, the masked blend and every operation
/// whose shader does the CPU's correctly rounded adds and multiplies in its order must agree exactly; the others
/// within a tolerance relative to the output's spread (`relativeMaxError`), each stated with the error measured on
/// lavapipe (Mesa 22.3.6, LLVM 15).
@Suite("Vulkan operations", .enabled(if: VulkanTesting.enabled), .serialized)
struct VulkanOpsTests {
    let cpu = CPUBackend.shared

    // MARK: - Helpers

    /// Deterministic values in `offset + scale·[−1, 1)` (SplitMix64).
    static func values(_ count: Int, seed: UInt64, scale: Float = 1, offset: Float = 0) -> [Float] {
        var state = seed &* 0x9E37_79B9_7F4A_7C15 &+ 1
        return (0..<count).map { _ in
            state = state &+ 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            z ^= z >> 31
            return offset + scale * (Float(z >> 40) / Float(1 << 23) - 1)
        }
    }

    /// A host tensor of deterministic values and the same on the device.
    static func pair(
        _ vk: VulkanBackend, _ shape: [Int], seed: UInt64, scale: Float = 1, offset: Float = 0
    ) -> (host: Tensor, device: Tensor) {
        let v = values(shape.reduce(1, *), seed: seed, scale: scale, offset: offset)
        return (Tensor(shape: shape, values: v), vk.upload(v, shape: shape))
    }

    /// The device tensor's elements as a host tensor.
    static func host(_ vk: VulkanBackend, _ t: Tensor) -> Tensor {
        Tensor(shape: t.shape, values: vk.download(t))
    }

    /// Expects the device result to equal the CPU's element for element.
    static func expectExact(
        _ vk: VulkanBackend, _ got: Tensor, _ want: Tensor, _ what: String,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        #expect(got.shape == want.shape, "\(what): shape", sourceLocation: sourceLocation)
        #expect(got.device == vk.device, "\(what): device", sourceLocation: sourceLocation)
        guard got.shape == want.shape else { return }
        let g = vk.download(got)
        let w = want.scalars
        let differing = zip(g, w).filter { $0.0.bitPattern != $0.1.bitPattern }.count
        #expect(differing == 0, "\(what): \(differing) of \(w.count) elements differ", sourceLocation: sourceLocation)
    }

    /// Expects `max|got − want| / std(want)` within `tolerance`; prints and returns it.
    @discardableResult
    static func expectClose(
        _ vk: VulkanBackend, _ got: Tensor, _ want: Tensor, _ what: String, tolerance: Double,
        sourceLocation: SourceLocation = #_sourceLocation
    ) -> Double {
        #expect(got.shape == want.shape, "\(what): shape", sourceLocation: sourceLocation)
        guard got.shape == want.shape else { return .infinity }
        let error = host(vk, got).relativeMaxError(to: want)
        print("vulkan ops: \(what): relative max error \(error)")
        #expect(error <= tolerance, "\(what): \(error) > \(tolerance)", sourceLocation: sourceLocation)
        return error
    }

    /// Values rounded to half precision, for the CPU reference of an f16 weight.
    static func halfRounded(_ t: Tensor) -> Tensor {
        Tensor(shape: t.shape, values: t.scalars.map { Float(Float16($0)) })
    }

    // MARK: - Normalisation

    /// Measured on lavapipe: at most 1.7e-6 of the spread (1.2e-6 without modulation and SiLU): float32 two-pass
    /// statistics, 1–2 ulp from the CPU's double-precision ones, magnified by the folded `x·scale + shift` on inputs
    /// that sit on an offset of 3 (to exercise the variance's cancellation).
    @Test func groupNormMatchesTheCPUInEveryForm() throws {
        let vk = try TestBackend.backend()
        let mark = TestBackend.messageMark
        defer { TestBackend.expectNoValidationMessages(since: mark) }
        // 12 channels in 4 groups of 3, 5×7 positions; groups of 1188 elements (> 256 per pass); one position per
        // channel; groups of 9216 elements (36 per invocation).
        for (shape, groups) in [([3, 12, 5, 7], 4), ([2, 8, 9, 33], 2), ([2, 6, 1], 6), ([1, 8, 48, 48], 2)] {
            let channels = shape[1]
            let x = Self.pair(vk, shape, seed: 1, scale: 2, offset: 3)
            let w = Self.pair(vk, [channels], seed: 2, scale: 0.5, offset: 1)
            let b = Self.pair(vk, [channels], seed: 3)
            let m = Self.pair(vk, [shape[0], 2 * channels], seed: 4, scale: 0.3)
            for (weighted, modulated, silu) in [
                (true, false, false), (true, true, true), (false, false, true),
                (false, true, false),
            ] {
                let want = cpu.groupNorm(
                    x.host, groups: groups, weight: weighted ? w.host : nil, bias: weighted ? b.host : nil, eps: 1e-5,
                    modulation: modulated ? m.host : nil, silu: silu)
                let got = vk.groupNorm(
                    x.device, groups: groups, weight: weighted ? w.device : nil, bias: weighted ? b.device : nil,
                    eps: 1e-5, modulation: modulated ? m.device : nil, silu: silu)
                Self.expectClose(
                    vk, got, want, "groupNorm \(shape)/\(groups) w\(weighted) m\(modulated) silu\(silu)",
                    tolerance: 4e-6)
            }
        }
    }

    /// Measured on lavapipe: 7.6e-7 of the spread (the weights rounded to f16 in the reference too).
    @Test func groupNormReadsHalfPrecisionWeights() throws {
        let vk = try TestBackend.backend()
        let mark = TestBackend.messageMark
        defer { TestBackend.expectNoValidationMessages(since: mark) }
        let x = Self.pair(vk, [2, 10, 3, 5], seed: 5)
        let w = Tensor(shape: [10], values: Self.values(10, seed: 6, offset: 1))
        let b = Tensor(shape: [10], values: Self.values(10, seed: 7))
        let wh = try #require(vk.uploadHalf(w))
        let bh = try #require(vk.uploadHalf(b))
        let want = cpu.groupNorm(
            x.host, groups: 5, weight: Self.halfRounded(w), bias: Self.halfRounded(b), eps: 1e-6, modulation: nil,
            silu: true)
        let got = vk.groupNorm(x.device, groups: 5, weight: wh, bias: bh, eps: 1e-6, modulation: nil, silu: true)
        Self.expectClose(vk, got, want, "groupNorm f16 weights", tolerance: 4e-6)
    }

    /// A tensor given as its last use is normalized in its own storage, with the same result.
    @Test func groupNormOfALastUseWritesInPlace() throws {
        let vk = try TestBackend.backend()
        let mark = TestBackend.messageMark
        defer { TestBackend.expectNoValidationMessages(since: mark) }
        let x = Self.pair(vk, [2, 6, 5, 9], seed: 8, offset: 1)
        let m = Self.pair(vk, [2, 12], seed: 9, scale: 0.3)
        let want = vk.groupNorm(
            x.device, groups: 3, weight: nil, bias: nil, eps: 1e-5, modulation: m.device, silu: true)
        let last = vk.upload(x.host)
        let storage = ObjectIdentifier(last.storage)
        let got = vk.groupNorm(
            consume last, groups: 3, weight: nil, bias: nil, eps: 1e-5, modulation: m.device, silu: true)
        #expect(ObjectIdentifier(got.storage) == storage, "normalized in its own storage")
        #expect(ObjectIdentifier(want.storage) != ObjectIdentifier(x.device.storage), "a shared input is kept")
        Self.expectExact(vk, got, Self.host(vk, want), "groupNorm in place")
        Self.expectExact(vk, x.device, x.host, "the shared input")
    }

    /// Measured on lavapipe: at most 6.3e-7 of the spread (layer norm), 5.8e-7 (RMS norm), the same with f16 weights.
    @Test func layerNormAndRMSNormMatchTheCPU() throws {
        let vk = try TestBackend.backend()
        let mark = TestBackend.messageMark
        defer { TestBackend.expectNoValidationMessages(since: mark) }
        // Rows narrower and wider (300, 513) than the workgroup of 256.
        for shape in [[3, 5, 37], [2, 300], [7, 513]] {
            let width = shape.last ?? 1
            let x = Self.pair(vk, shape, seed: 11, scale: 3, offset: -2)
            let w = Self.pair(vk, [width], seed: 12, offset: 1)
            let b = Self.pair(vk, [width], seed: 13)
            for (weighted, biased) in [(true, true), (false, false), (true, false), (false, true)] {
                let want = cpu.layerNorm(
                    x.host, weight: weighted ? w.host : nil, bias: biased ? b.host : nil, eps: 1e-5)
                let got = vk.layerNorm(
                    x.device, weight: weighted ? w.device : nil, bias: biased ? b.device : nil, eps: 1e-5)
                Self.expectClose(vk, got, want, "layerNorm \(shape) w\(weighted) b\(biased)", tolerance: 2e-6)
            }
            Self.expectClose(
                vk, vk.rmsNorm(x.device, weight: w.device, eps: 1e-6), cpu.rmsNorm(x.host, weight: w.host, eps: 1e-6),
                "rmsNorm \(shape)", tolerance: 2e-6)
            // Half-precision weights: the row_norm_f16 variant.
            let wh = try #require(vk.uploadHalf(w.host))
            let bh = try #require(vk.uploadHalf(b.host))
            Self.expectClose(
                vk, vk.layerNorm(x.device, weight: wh, bias: bh, eps: 1e-5),
                cpu.layerNorm(x.host, weight: Self.halfRounded(w.host), bias: Self.halfRounded(b.host), eps: 1e-5),
                "layerNorm f16 \(shape)", tolerance: 2e-6)
            Self.expectClose(
                vk, vk.rmsNorm(x.device, weight: wh, eps: 1e-6),
                cpu.rmsNorm(x.host, weight: Self.halfRounded(w.host), eps: 1e-6), "rmsNorm f16 \(shape)",
                tolerance: 2e-6)
        }
    }

    // MARK: - Activations and element-wise

    /// Measured on lavapipe: GELU 6.1e-8, tanh GELU 6.1e-8, SiLU 2.4e-7 of the spread (the device's exp against the
    /// CPU's Cephes polynomial; the same erf approximation).
    @Test func activationsMatchTheCPU() throws {
        let vk = try TestBackend.backend()
        let mark = TestBackend.messageMark
        defer { TestBackend.expectNoValidationMessages(since: mark) }
        var v = Self.values(2053, seed: 21, scale: 8)
        v += [0, -0.0, 100, -100, 30, -30, 1e-20, -1e-20, 88, -88]
        let x = (host: Tensor(shape: [v.count], values: v), device: vk.upload(v, shape: [v.count]))
        Self.expectClose(vk, vk.gelu(x.device), cpu.gelu(x.host), "gelu", tolerance: 1e-6)
        Self.expectClose(vk, vk.geluTanh(x.device), cpu.geluTanh(x.host), "geluTanh", tolerance: 1e-6)
        Self.expectClose(vk, vk.silu(x.device), cpu.silu(x.host), "silu", tolerance: 1e-6)
    }

    @Test func elementwiseArithmeticIsTheCPUsBitForBit() throws {
        let vk = try TestBackend.backend()
        let mark = TestBackend.messageMark
        defer { TestBackend.expectNoValidationMessages(since: mark) }
        let a = Self.pair(vk, [3, 7, 11], seed: 31, scale: 5)
        let b = Self.pair(vk, [3, 7, 11], seed: 32, scale: 0.01)
        let row = Self.pair(vk, [11], seed: 33)
        Self.expectExact(vk, vk.add(a.device, b.device), cpu.add(a.host, b.host), "add")
        Self.expectExact(vk, vk.mul(a.device, b.device), cpu.mul(a.host, b.host), "mul")
        Self.expectExact(vk, vk.addRows(a.device, row.device), cpu.addRows(a.host, row.host), "addRows")
        Self.expectExact(vk, vk.scale(a.device, by: -0.37), cpu.scale(a.host, by: -0.37), "scale")
        Self.expectExact(
            vk, vk.clamp(a.device, lower: -2.5, upper: 1), cpu.clamp(a.host, lower: -2.5, upper: 1), "clamp")

        var want = b.host
        cpu.add(a.host, into: &want)
        // b held only here: added in its own storage.
        var owned = vk.upload(b.host)
        let before = ObjectIdentifier(owned.storage)
        vk.add(a.device, into: &owned)
        #expect(ObjectIdentifier(owned.storage) == before, "a uniquely held residual is added in place")
        Self.expectExact(vk, owned, want, "add into (in place)")
        // b shared: a new tensor, the other holder unchanged.
        var shared = b.device
        vk.add(a.device, into: &shared)
        #expect(ObjectIdentifier(shared.storage) != ObjectIdentifier(b.device.storage))
        Self.expectExact(vk, shared, want, "add into (shared)")
        Self.expectExact(vk, b.device, b.host, "the shared residual's other holder")
    }

    // MARK: - Layout

    @Test func embeddingRowsAreExactInBothPrecisions() throws {
        let vk = try TestBackend.backend()
        let mark = TestBackend.messageMark
        defer { TestBackend.expectNoValidationMessages(since: mark) }
        let table = Self.pair(vk, [13, 37], seed: 41)
        let ids = [0, 12, 5, 5, 7, 12, 0, 3]
        Self.expectExact(vk, vk.embedding(table.device, ids: ids), cpu.embedding(table.host, ids: ids), "embedding")
        let half = try #require(vk.uploadHalf(table.host))
        Self.expectExact(
            vk, vk.embedding(half, ids: ids), cpu.embedding(Self.halfRounded(table.host), ids: ids), "embedding f16")
    }

    /// An id outside the table stops on the host, before anything reaches the device.
    @Test func anEmbeddingIdOutsideTheTableStops() async throws {
        _ = try TestBackend.backend()  // no device: a failure here, not a child process that dies for another reason
        await #expect(processExitsWith: .signal(SIGILL)) {
            let vk = try TestBackend.backend()
            _ = vk.embedding(vk.upload([Float](repeating: 0, count: 6), shape: [3, 2]), ids: [0, 3])
        }
    }

    @Test func concatAndSliceAreExactOnEveryAxis() throws {
        let vk = try TestBackend.backend()
        let mark = TestBackend.messageMark
        defer { TestBackend.expectNoValidationMessages(since: mark) }
        let base = [2, 3, 5, 7]
        for axis in 0..<base.count {
            let parts = [1, 4, 2].enumerated().map { i, n in
                var shape = base
                shape[axis] = n
                return Self.pair(vk, shape, seed: 50 + UInt64(i))
            }
            let joined = vk.concat(parts.map(\.device), axis: axis)
            let want = cpu.concat(parts.map(\.host), axis: axis)
            Self.expectExact(vk, joined, want, "concat axis \(axis)")
            let length = want.shape[axis]
            // Slices at both ends, in the middle and whole.
            for range in [0..<1, 0..<3, 2..<5, (length - 2)..<length, (length - 1)..<length, 0..<length] {
                Self.expectExact(
                    vk, vk.slice(joined, axis: axis, range), cpu.slice(want, axis: axis, range),
                    "slice \(range) on axis \(axis)")
            }
        }
        // A single part, and a slice of a half-precision weight (widened to float32).
        let one = Self.pair(vk, [3, 4], seed: 59)
        Self.expectExact(vk, vk.concat([one.device], axis: 1), one.host, "concat of one part")
        let half = try #require(vk.uploadHalf(one.host))
        Self.expectExact(
            vk, vk.slice(half, axis: 0, 1..<2), cpu.slice(Self.halfRounded(one.host), axis: 0, 1..<2), "slice f16")
    }

    @Test func headsTransposesAndResamplingAreExact() throws {
        let vk = try TestBackend.backend()
        let mark = TestBackend.messageMark
        defer { TestBackend.expectNoValidationMessages(since: mark) }
        let x = Self.pair(vk, [2, 5, 3 * 7], seed: 61)
        let split = vk.splitHeads(x.device, heads: 3)
        Self.expectExact(vk, split, cpu.splitHeads(x.host, heads: 3), "splitHeads")
        Self.expectExact(vk, vk.mergeHeads(split, heads: 3), x.host, "mergeHeads after splitHeads")
        let y = Self.pair(vk, [6, 5, 7], seed: 62)
        Self.expectExact(vk, vk.mergeHeads(y.device, heads: 2), cpu.mergeHeads(y.host, heads: 2), "mergeHeads")
        for shape in [[5, 9], [2, 3, 4, 5], [1, 1, 7]] {
            let t = Self.pair(vk, shape, seed: 63)
            Self.expectExact(vk, vk.transposeLast2(t.device), cpu.transposeLast2(t.host), "transposeLast2 \(shape)")
        }
        for shape in [[2, 3, 5, 7], [1, 2, 4, 6], [1, 1, 1, 1]] {
            let t = Self.pair(vk, shape, seed: 64)
            Self.expectExact(vk, vk.upsampleNearest2x(t.device), cpu.upsampleNearest2x(t.host), "upsample \(shape)")
        }
        // Odd heights and widths: the last row or column dropped.
        for shape in [[2, 3, 5, 7], [1, 2, 4, 6], [1, 1, 3, 2]] {
            let t = Self.pair(vk, shape, seed: 65, scale: 4)
            Self.expectExact(vk, vk.avgPool2x2(t.device), cpu.avgPool2x2(t.host), "avgPool \(shape)")
        }
    }

    // MARK: - Sampler operations

    /// Bit for bit without a divisor; with one, measured on lavapipe: exact as well (its division is correctly
    /// rounded; Vulkan allows 2.5 ulp, hence the tolerance).
    @Test func weightedSumKeepsTheCPUsOrder() throws {
        let vk = try TestBackend.backend()
        let mark = TestBackend.messageMark
        defer { TestBackend.expectNoValidationMessages(since: mark) }
        // 3 images of 4 terms, and 18 images (two dispatches of coefficients) of 2 terms.
        for (batch, termCount) in [(3, 4), (18, 2), (2, 1)] {
            let shape = [batch, 4, 3, 5]
            let terms = (0..<termCount).map { Self.pair(vk, shape, seed: 70 + UInt64($0), scale: 3) }
            let coefficients = (0..<batch).map { i in
                Self.values(termCount, seed: 80 + UInt64(i), scale: 2)
            }
            Self.expectExact(
                vk, vk.weightedSum(terms.map(\.device), coefficients: coefficients, dividedBy: 1),
                cpu.weightedSum(terms.map(\.host), coefficients: coefficients, dividedBy: 1),
                "weightedSum \(batch)×\(termCount)")
            Self.expectClose(
                vk, vk.weightedSum(terms.map(\.device), coefficients: coefficients, dividedBy: 3.7),
                cpu.weightedSum(terms.map(\.host), coefficients: coefficients, dividedBy: 3.7),
                "weightedSum \(batch)×\(termCount) / 3.7", tolerance: 1e-6)
        }
    }

    @Test func guidanceCombineIsTheCPUsBitForBit() throws {
        let vk = try TestBackend.backend()
        let mark = TestBackend.messageMark
        defer { TestBackend.expectNoValidationMessages(since: mark) }
        for b in [3, 17] {
            let out = Self.pair(vk, [2 * b, 8, 3, 5], seed: 90, scale: 2)
            let scales = Self.values(b, seed: 91, scale: 4, offset: 5)
            let (eps, v) = vk.guidanceCombine(out.device, scales: scales)
            let (wantEps, wantV) = cpu.guidanceCombine(out.host, scales: scales)
            Self.expectExact(vk, eps, wantEps, "guidance ε, \(b) images")
            Self.expectExact(vk, v, wantV, "guidance v, \(b) images")
        }
    }

    /// Measured on lavapipe: ancestral step 1.5e-7 of the spread with noise (exp), exact without; Gaussian sample
    /// 4.9e-7.
    @Test func ancestralStepAndGaussianSampleMatchTheCPU() throws {
        let vk = try TestBackend.backend()
        let mark = TestBackend.messageMark
        defer { TestBackend.expectNoValidationMessages(since: mark) }
        let shape = [3, 4, 5, 7]
        let x0 = Self.pair(vk, shape, seed: 101)
        let x = Self.pair(vk, shape, seed: 102, scale: 3)
        let v = Self.pair(vk, shape, seed: 103)
        let noise = Self.pair(vk, shape, seed: 104)
        let variance = (lower: Float(-7.3), upper: Float(-2.1))
        Self.expectClose(
            vk,
            vk.ancestralStep(
                x0: x0.device, x: x.device, v: v.device, noise: noise.device, c1: 0.31, c2: 0.93,
                logVariance: variance, addNoise: true),
            cpu.ancestralStep(
                x0: x0.host, x: x.host, v: v.host, noise: noise.host, c1: 0.31, c2: 0.93, logVariance: variance,
                addNoise: true),
            "ancestral step", tolerance: 1e-6)
        Self.expectExact(
            vk,
            vk.ancestralStep(
                x0: x0.device, x: x.device, v: v.device, noise: noise.device, c1: 0.31, c2: 0.93,
                logVariance: variance, addNoise: false),
            cpu.ancestralStep(
                x0: x0.host, x: x.host, v: v.host, noise: noise.host, c1: 0.31, c2: 0.93, logVariance: variance,
                addNoise: false),
            "ancestral step without noise")
        let logVariance = Self.pair(vk, shape, seed: 105, scale: 6, offset: -2)
        Self.expectClose(
            vk,
            vk.gaussianSample(mean: x.device, logVariance: logVariance.device, noise: noise.device, scale: 0.18215),
            cpu.gaussianSample(mean: x.host, logVariance: logVariance.host, noise: noise.host, scale: 0.18215),
            "gaussian sample", tolerance: 1e-6)
    }

    /// The percentile is found exactly (ties, repeated values, p = 0 and 100, nil); only the final division may
    /// differ from the CPU's: measured on lavapipe, exact.
    @Test func dynamicThresholdFindsTheCPUsPercentile() throws {
        let vk = try TestBackend.backend()
        let mark = TestBackend.messageMark
        defer { TestBackend.expectNoValidationMessages(since: mark) }
        // 10 images (two dispatches of 8), 396 values each (more than the workgroup), quantised to 1/8 so that
        // many magnitudes tie, and spread so that some percentiles fall below 1 (s = 1) and some above.
        let shape = [10, 4, 9, 11]
        let per = 4 * 9 * 11
        var v = Self.values(10 * per, seed: 111, scale: 3).map { ($0 * 8).rounded() / 8 }
        // Image 7 nearly constant: ties at the percentile and above it.
        for j in 0..<per { v[7 * per + j] = j % 5 == 0 ? -2.5 : 2.5 }
        // Image 5 (p = 37.3) all distinct, shuffled: the (k+1)-th smallest is always the next value up.
        for j in 0..<per { v[5 * per + j] = Float((j * 127) % per) * (j % 2 == 0 ? 0.01 : -0.01) }
        // Image 8 has both signs of zero.
        for j in 0..<per where j % 3 == 0 { v[8 * per + j] = j % 2 == 0 ? 0 : -0.0 }
        let x0 = (host: Tensor(shape: shape, values: v), device: vk.upload(v, shape: shape))
        let percentiles: [Double?] = [99.5, nil, 0, 100, 50, 37.3, 95, 90, 99.99, nil]
        let got = vk.dynamicThreshold(x0.device, percentiles: percentiles)
        let want = cpu.dynamicThreshold(x0.host, percentiles: percentiles)
        Self.expectClose(vk, got, want, "dynamicThreshold", tolerance: 1e-6)
        // The nil images pass unchanged, bit for bit.
        let g = vk.download(got)
        #expect(Array(g[per..<(2 * per)]) == Array(v[per..<(2 * per)]))
        #expect(Array(g[(9 * per)...]) == Array(v[(9 * per)...]))
        // Latent-sized images of 4096 values, unquantised.
        let latents = Self.pair(vk, [2, 4, 32, 32], seed: 113, scale: 2.5)
        Self.expectClose(
            vk, vk.dynamicThreshold(latents.device, percentiles: [99.5, 95]),
            cpu.dynamicThreshold(latents.host, percentiles: [99.5, 95]), "dynamicThreshold of latents",
            tolerance: 1e-6)
        // One value per image: every percentile is that value.
        let single = Self.pair(vk, [3, 1], seed: 112, scale: 4)
        Self.expectClose(
            vk, vk.dynamicThreshold(single.device, percentiles: [0, 100, 42]),
            cpu.dynamicThreshold(single.host, percentiles: [0, 100, 42]), "dynamicThreshold of single values",
            tolerance: 1e-6)
    }

    @Test func maskedBlendAndMaskAreExactInBothBroadcastForms() throws {
        let vk = try TestBackend.backend()
        let mark = TestBackend.messageMark
        defer { TestBackend.expectNoValidationMessages(since: mark) }
        let shape = [3, 4, 5, 7]
        let x0 = Self.pair(vk, shape, seed: 121)
        for knownImages in [1, 3] {
            for maskImages in [1, 3] {
                let known = Self.pair(vk, [knownImages, 4, 5, 7], seed: 122)
                let mask = Self.pair(vk, [maskImages, 1, 5, 7], seed: 123, scale: 0.5, offset: 0.5)
                Self.expectExact(
                    vk, vk.maskedBlend(x0.device, known: known.device, mask: mask.device),
                    cpu.maskedBlend(x0.host, known: known.host, mask: mask.host),
                    "maskedBlend known \(knownImages), mask \(maskImages)")
            }
        }
        let mask = Self.pair(vk, [3, 1, 5, 7], seed: 124, offset: 0.5)
        Self.expectExact(
            vk, vk.multiplyByMask(x0.device, mask.device), cpu.multiplyByMask(x0.host, mask.host), "multiplyByMask")
    }

    /// Bit for bit but the division by the count: measured on lavapipe, exact.
    @Test func maskedMeanCountsTheMarkedPositions() throws {
        let vk = try TestBackend.backend()
        let mark = TestBackend.messageMark
        defer { TestBackend.expectNoValidationMessages(since: mark) }
        let x = Self.pair(vk, [4, 6, 19], seed: 131, scale: 2)
        // All marked, some, none (the count is then 1), and one.
        let mask = [[1, 1, 1, 1, 1, 1], [1, 1, 0, 1, 0, 0], [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1]]
        Self.expectClose(
            vk, vk.maskedMean(x.device, mask: mask), cpu.maskedMean(x.host, mask: mask), "maskedMean",
            tolerance: 1e-6)
    }
}
