import TestSupport
import Testing

@testable import Tensor

/// The CPU backend's named sampler operations against the closures and loops they replaced, written out here:
/// the results must be equal bit for bit (the conformance errors of the models may not move), so every comparison
/// is exact.
@Suite struct CPUBackendTests {
    let backend = CPUBackend()

    func tensor(_ shape: [Int], seed: UInt64, in range: ClosedRange<Float> = -3...3) -> Tensor {
        var rng = SeededGenerator(seed: seed)
        return Tensor(shape: shape, values: rng.floats(shape.reduce(1, *), in: range))
    }

    @Test func weightedSumsAreTheClosuresTheyReplaced() {
        let shape = [2, 4, 5, 7]
        let (a, b, c, d) = (
            tensor(shape, seed: 1), tensor(shape, seed: 2), tensor(shape, seed: 3), tensor(shape, seed: 4)
        )
        let (c1, c2, r2): (Float, Float, Float) = (1.3719, 0.29113, 0.8317)
        // predictX0, DPM-Solver's update: c1·x − c2·ε.
        #expect(backend.weightedSum([a, b], [c1, -c2]).scalars == Kernels.zipMap(a, b) { c1 * $0 - c2 * $1 }.scalars)
        // Release DDIM's ε': (r1·x − x0) / r2.
        #expect(
            backend.weightedSum([a, b], [c1, -1], dividedBy: r2).scalars
                == Kernels.zipMap(a, b) { (c1 * $0 - $1) / r2 }.scalars)
        // LDM DDIM: √ᾱ'·((x − √(1−ᾱ)·ε)/√ᾱ) + √(1−ᾱ')·ε, in two weighted sums.
        let step = backend.weightedSum([backend.weightedSum([a, b], [1, -c2], dividedBy: r2), b], [c1, 0.7])
        #expect(step.scalars == Kernels.zipMap(a, b) { x, e in c1 * ((x - c2 * e) / r2) + 0.7 * e }.scalars)
        // PLMS's combinations.
        #expect(
            backend.weightedSum([a, b], [1, 1], dividedBy: 2).scalars
                == Kernels.zipMap(a, b) { ($0 + $1) / 2 }.scalars)
        #expect(
            backend.weightedSum([a, b, c], [23, -16, 5], dividedBy: 12).scalars
                == Kernels.zipMap(Kernels.zipMap(a, b) { 23 * $0 - 16 * $1 }, c) { ($0 + 5 * $1) / 12 }.scalars)
        let partial = Kernels.zipMap(Kernels.zipMap(a, b) { 55 * $0 - 59 * $1 }, c) { $0 + 37 * $1 }
        #expect(
            backend.weightedSum([a, b, c, d], [55, -59, 37, -9], dividedBy: 24).scalars
                == Kernels.zipMap(partial, d) { ($0 - 9 * $1) / 24 }.scalars)
    }

    @Test func perImageCoefficientsApplyToTheirRows() {
        let shape = [2, 3, 4]
        let (a, b) = (tensor(shape, seed: 5), tensor(shape, seed: 6))
        let coefficients: [[Float]] = [[0.5, 1.25], [-2, 0.125]]
        let sum = backend.weightedSum([a, b], coefficients: coefficients, dividedBy: 1).scalars
        let (x, y) = (a.scalars, b.scalars)
        let per = 12
        let expected = (0..<24).map { coefficients[$0 / per][0] * x[$0] + coefficients[$0 / per][1] * y[$0] }
        #expect(sum == expected)
    }

    @Test func guidanceCombineSplitsConditionalAndUnconditionalRows() {
        // [2B, 2C, h, w] with B = 2, C = 2.
        let out = tensor([4, 4, 3, 3], seed: 7)
        let scales: [Float] = [4, 7.5]
        let (eps, v) = backend.guidanceCombine(out, scales: scales)
        #expect(eps.shape == [2, 2, 3, 3] && v.shape == [2, 2, 3, 3])
        let o = out.scalars
        let per = 2 * 9
        for i in 0..<2 {
            for j in 0..<per {
                let (cond, uncond) = (o[i * 2 * per + j], o[(2 + i) * 2 * per + j])
                #expect(eps.scalars[i * per + j] == uncond + scales[i] * (cond - uncond))
                #expect(v.scalars[i * per + j] == o[i * 2 * per + per + j])
            }
        }
    }

    @Test func groupNormThroughTheBackendStillReusesAConsumedTensor() {
        let x = tensor([2, 8, 3, 3], seed: 9)
        let (weight, bias) = (tensor([8], seed: 10), tensor([8], seed: 11))
        let modulation = tensor([2, 16], seed: 12)
        let copied = backend.groupNorm(
            x, groups: 4, weight: weight, bias: bias, eps: 1e-5, modulation: modulation, silu: true)
        let owned = Tensor(shape: x.shape, values: x.scalars)
        let storage = owned.storage.pointer
        let inPlace = backend.groupNorm(
            consume owned, groups: 4, weight: weight, bias: bias, eps: 1e-5, modulation: modulation, silu: true)
        #expect(inPlace.storage.pointer == storage, "the existential call keeps a consumed tensor's storage")
        #expect(inPlace.scalars == copied.scalars)
        #expect(copied.storage !== x.storage, "a tensor still held is left as it was")
    }

    @Test func tensorsLiveOnTheCPUAndTransfersAreIdentities() {
        let t = tensor([2, 3], seed: 8)
        #expect(t.device == .cpu && t.dtype == .f32 && backend.device == .cpu)
        let up = backend.upload(t)
        #expect(up.storage === t.storage, "uploading a host tensor to the CPU shares its storage")
        #expect(backend.download(backend.upload([1, 2, 3], shape: [3])) == [1, 2, 3])
    }
}
