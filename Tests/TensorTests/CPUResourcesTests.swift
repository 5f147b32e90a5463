import Foundation
import TestSupport
import Testing

@testable import Tensor

/// Each `CPUBackend` owns its compute pool, block cache and kernel profile: the kernels it runs use its own, and
/// nothing of one backend's reaches another's.
@Suite struct CPUResourcesTests {
    func tensor(_ shape: [Int], seed: UInt64) -> Tensor {
        var rng = SeededGenerator(seed: seed)
        return Tensor(shape: shape, values: rng.floats(shape.reduce(1, *), in: -1...1))
    }

    @Test func kernelsRunOnTheCallingBackendsPool() {
        let (a, b) = (CPUBackend(threads: 3), CPUBackend(threads: 2))
        #expect(a.threads == 3 && b.threads == 2)
        #expect(a.resources.bound { BLAS.threads } == 3 && b.resources.bound { BLAS.threads } == 2)
        let x = tensor([96, 256], seed: 1)
        let w = tensor([192, 256], seed: 2)
        let y = a.linear(x, weight: w, bias: nil, rowIndependent: false)
        #expect(a.resources.pool.regionsRun > 0, "the product did not run on the backend's own pool")
        #expect(b.resources.pool.regionsRun == 0, "another backend's pool ran a region")
        // The same product on one thread (OpenBLAS cut into other slabs) agrees to rounding.
        let single = CPUBackend(threads: 1).linear(x, weight: w, bias: nil, rowIndependent: false)
        #expect(zip(y.scalars, single.scalars).allSatisfy { abs($0 - $1) <= 1e-5 })
    }

    @Test func aRegionsWorkersUseItsCallersResources() {
        let backend = CPUBackend(threads: 3)
        let seen = UnsafeMutablePointer<Bool>.allocate(capacity: 64)
        defer { seen.deallocate() }
        seen.initialize(repeating: false, count: 64)
        let resources = backend.resources
        resources.bound {
            ComputePool.current.run(chunks: 64) { chunk in
                seen[chunk] = CPUResources.current === resources
                usleep(200)  // so the workers take chunks too
            }
        }
        #expect((0..<64).allSatisfy { seen[$0] })
        // Outside any operation: the shared backend's.
        #expect(CPUResources.current === CPUBackend.shared.resources)
    }

    @Test func freedActivationsGoBackToTheirBackendsCache() {
        let (a, b) = (CPUBackend(threads: 1), CPUBackend(threads: 1))
        let big = tensor([4, 256, 512], seed: 3)  // 2 MiB: cached when freed
        do {
            let doubled = a.scale(big, by: 2)
            #expect(doubled.count == big.count)
        }
        #expect(a.resources.cachedBytes >= 2 << 20, "the freed output was not kept by its backend")
        #expect(b.resources.cachedBytes == 0)
        // A tensor dropped inside another backend's operation still goes back where it came from.
        var kept: Tensor? = a.scale(big, by: 3)
        a.releaseCachedMemory()
        #expect(a.resources.cachedBytes == 0 && kept?.count == big.count)
        b.resources.bound { kept = nil }
        #expect(b.resources.cachedBytes == 0 && a.resources.cachedBytes >= 2 << 20)
        a.releaseCachedMemory()
    }

    @Test func kernelTimeIsRecordedInTheRunningBackendsProfile() {
        let (a, b) = (CPUBackend(threads: 1), CPUBackend(threads: 1))
        let x = tensor([32, 64], seed: 4)
        let w = tensor([48, 64], seed: 5)
        KernelProfile.enabled = true
        defer { KernelProfile.enabled = false }
        _ = a.linear(x, weight: w, bias: nil, rowIndependent: false)
        #expect((a.resources.profile.totals[.linear] ?? 0) > 0 && a.resources.profile.flops == 2 * 32 * 48 * 64)
        #expect(b.resources.profile.totals[.linear] == 0 && b.resources.profile.flops == 0)
        a.resources.profile.reset()
        #expect(a.resources.profile.flops == 0)
    }

    @Test func aBackendsThreadsEndWithIt() async throws {
        weak var pool: ComputePool?
        do {
            let backend = CPUBackend(threads: 3)
            pool = backend.resources.pool
            _ = backend.linear(
                tensor([64, 128], seed: 6), weight: tensor([128, 128], seed: 7), bias: nil, rowIndependent: false)
        }
        // The workers hold the pool until they have seen it shut down, then let it go.
        for _ in 0..<200 where pool != nil { try await Task.sleep(for: .milliseconds(10)) }
        #expect(pool == nil, "the pool of a backend that is gone still has threads")
    }

    @Test func halfWeightsStayMappedAndAreExpandedAtUse() throws {
        let dir = try TemporaryDirectory()
        let values: [Float] = (0..<(24 * 40)).map { Float($0 % 37) / 8 - 2 }
        let path = dir.file("w.safetensors")
        try SafetensorsWriter.write(["w": .float(Tensor(shape: [24, 40], values: values), .f16)], to: path)
        let file = try SafetensorsFile(path: path)
        let half = try #require(try file.halfWeight("w"))
        let backend = CPUBackend(threads: 2)
        let weight = try #require(backend.upload(half))
        #expect(weight.dtype == .f16 && weight.device == .cpu && weight.shape == [24, 40])
        let x = tensor([5, 40], seed: 8)
        // Bit for bit the product with the weight expanded beforehand, as before the seam.
        let expected = Kernels.linear(x, weight: half.expanded(), bias: nil)
        #expect(backend.linear(x, weight: weight, bias: nil, rowIndependent: false).scalars == expected.scalars)
        #expect(backend.imagesPerPass(activationBytesPerImage: 1 << 28, images: 4) == 1)
    }
}
