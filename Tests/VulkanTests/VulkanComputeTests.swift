import Tensor
import TestSupport
import Testing

@testable import VulkanBackend

/// The compute-heavy operations (GEMM, convolutions, fused attention) against `CPUBackend.shared`, on shapes that are
/// not multiples of the shaders' tiles (64 × 64 × 16 for products, 16 queries × 64 keys × 64 channels for attention).
///
/// Tolerance: the error relative to the output's spread (`relativeMaxError`), 1e-5, because the shaders sum in other
/// orders than OpenBLAS and the CPU kernels (a product's terms in ascending k; the softmax online, block by block);
/// each test's comment gives the error measured on lavapipe.
@Suite("Vulkan compute", .enabled(if: VulkanTesting.enabled))
struct VulkanComputeTests {
    let cpu = CPUBackend.shared
    static let tolerance = 1e-5
    /// For 3×3 stride-1 convolutions, whose CPU result comes from Winograd's transforms: those differ from the direct
    /// sum by up to 9e-6 of the spread on these shapes, so the device is held to 1e-5 against the CPU's direct method
    /// (`Kernels.conv2dDirect`, im2col and sgemm) and to this against the CPU backend.
    static let winogradTolerance = 3e-5

    /// Host values uniform in `range` with `shape`, from `seed`.
    func host(_ shape: [Int], seed: UInt64, in range: ClosedRange<Float> = -1...1) -> Tensor {
        var rng = SeededGenerator(seed: seed)
        return Tensor(shape: shape, values: rng.floats(shape.reduce(1, *), in: range))
    }

    /// Runs `body` on the test device and fails when the validation layer printed anything meanwhile.
    func withDevice(
        sourceLocation: SourceLocation = #_sourceLocation, _ body: (VulkanBackend) throws -> Void
    ) throws {
        let gpu = try TestBackend.backend()
        let mark = TestBackend.messageMark
        try body(gpu)
        gpu.synchronize()
        TestBackend.expectNoValidationMessages(since: mark, sourceLocation: sourceLocation)
    }

    /// `x` on the device.
    func up(_ gpu: VulkanBackend, _ x: Tensor) -> Tensor {
        gpu.upload(x.scalars, shape: x.shape)
    }

    /// The device's result as a host tensor.
    func fetch(_ gpu: VulkanBackend, _ x: Tensor) -> Tensor {
        Tensor(shape: x.shape, values: gpu.download(x))
    }

    /// `x` with every element rounded to f16 and back: the weights an `_f16` kernel computes with.
    func roundedToHalf(_ x: Tensor) -> Tensor {
        Tensor(shape: x.shape, values: x.scalars.map { Float(Float16($0)) })
    }

    /// `w` on the device in half precision (lavapipe offers 16-bit storage and f16 arithmetic).
    func half(_ gpu: VulkanBackend, _ w: Tensor) throws -> Tensor {
        let t = try #require(gpu.uploadHalf(w))
        #expect(t.dtype == .f16)
        return t
    }

    /// `relativeMaxError` of the device's result against the CPU's, shapes checked.
    func error(_ gpu: VulkanBackend, _ result: Tensor, _ reference: Tensor) -> Double {
        #expect(result.shape == reference.shape)
        guard result.shape == reference.shape else { return .infinity }
        return fetch(gpu, result).relativeMaxError(to: reference)
    }

    // MARK: - linear

    /// M = 6, N = 70, K = 37: one partial tile in each dimension, and a second along N; rows from a rank-3 input.
    /// Error measured 4.9e-7.
    @Test func linearWithBiasOnPartialTiles() throws {
        try withDevice { gpu in
            let (x, w, b) = (host([2, 3, 37], seed: 1), host([70, 37], seed: 2), host([70], seed: 3))
            let y = gpu.linear(up(gpu, x), weight: up(gpu, w), bias: up(gpu, b), rowIndependent: false)
            #expect(error(gpu, y, cpu.linear(x, weight: w, bias: b)) < Self.tolerance)
        }
    }

    /// M = 130 (three row tiles), N = 65, K = 100, no bias; the first five rows alone give the same bits as within
    /// all 130 (`rowIndependent`). Error measured 8.7e-7.
    @Test func linearRowsAreIndependentOfTheirBatch() throws {
        try withDevice { gpu in
            let (x, w) = (host([130, 100], seed: 4), host([65, 100], seed: 5))
            let weight = up(gpu, w)
            let all = gpu.linear(up(gpu, x), weight: weight, bias: nil, rowIndependent: true)
            #expect(error(gpu, all, cpu.linear(x, weight: w, bias: nil)) < Self.tolerance)
            let few = gpu.linear(up(gpu, x.slice(first: 0..<5)), weight: weight, bias: nil, rowIndependent: true)
            #expect(gpu.download(few) == Array(gpu.download(all)[0..<(5 * 65)]))
        }
    }

    /// The general product on views: a batch of two `Aᵀ·B` with A read transposed through its strides, alpha and a
    /// bias per row, against a plain loop. Error measured 0: the loop sums in the shader's order.
    @Test func gemmReadsStridedViews() throws {
        try withDevice { gpu in
            let (m, n, k, batches) = (67, 19, 21, 2)
            let a = host([batches, k, m], seed: 6)  // stored [k][m]: row stride 1, column stride m
            let b = host([batches, k, n], seed: 7)
            let bias = host([m], seed: 8)
            let c = gpu.empty([batches, m, n])
            gpu.gemm(
                MatrixView(up(gpu, a), batchStride: k * m, rowStride: 1, columnStride: m),
                MatrixView(up(gpu, b), batchStride: k * n, rowStride: n, columnStride: 1),
                into: MatrixView(c, batchStride: m * n, rowStride: n, columnStride: 1),
                m: m, n: n, k: k, batches: batches, alpha: 0.5, bias: (up(gpu, bias), .perRow))
            let (av, bv, biasv) = (a.scalars, b.scalars, bias.scalars)
            var expected = [Float](repeating: 0, count: batches * m * n)
            for z in 0..<batches {
                for i in 0..<m {
                    for j in 0..<n {
                        var sum: Float = 0
                        for l in 0..<k { sum += av[(z * k + l) * m + i] * bv[(z * k + l) * n + j] }
                        expected[(z * m + i) * n + j] = 0.5 * sum + biasv[i]
                    }
                }
            }
            #expect(error(gpu, c, Tensor(shape: [batches, m, n], values: expected)) < Self.tolerance)
        }
    }

    // MARK: - Convolutions

    /// 3×3, stride 1, padding 1, batch 2, 5 → 7 channels on a 9 × 11 plane, with bias.
    /// Error measured 4.5e-7 (direct), 6.2e-6 (Winograd).
    @Test func conv2dSamePadding() throws {
        try withDevice { gpu in
            let (x, w, b) = (host([2, 5, 9, 11], seed: 10), host([7, 5, 3, 3], seed: 11), host([7], seed: 12))
            let y = gpu.conv2d(up(gpu, x), weight: up(gpu, w), bias: up(gpu, b), stride: 1, padding: .uniform(1))
            let winograd = cpu.conv2d(x, weight: w, bias: b, stride: 1, padding: .uniform(1))
            #expect(error(gpu, y, winograd) < Self.winogradTolerance)
            let direct = Kernels.conv2dDirect(x, weight: w, bias: b, stride: 1, padding: .uniform(1))
            #expect(error(gpu, y, direct) < Self.tolerance)
        }
    }

    /// Stride 2 with the VAE encoder's padding (right and bottom only), 70 output channels (two row tiles), and a
    /// 2 × 3 kernel with padding on other sides, no bias, on odd planes. Error measured 2.0e-7 and 3.5e-7.
    @Test func conv2dStrideTwoAsymmetricPadding() throws {
        try withDevice { gpu in
            let (x, w, b) = (host([1, 6, 10, 9], seed: 13), host([70, 6, 3, 3], seed: 14), host([70], seed: 15))
            let vae = Padding(top: 0, left: 0, bottom: 1, right: 1)
            let y = gpu.conv2d(up(gpu, x), weight: up(gpu, w), bias: up(gpu, b), stride: 2, padding: vae)
            #expect(error(gpu, y, cpu.conv2d(x, weight: w, bias: b, stride: 2, padding: vae)) < Self.tolerance)

            let (x2, w2) = (host([3, 4, 7, 8], seed: 16), host([5, 4, 2, 3], seed: 17))
            let odd = Padding(top: 2, left: 1, bottom: 0, right: 3)
            let y2 = gpu.conv2d(up(gpu, x2), weight: up(gpu, w2), bias: nil, stride: 2, padding: odd)
            #expect(error(gpu, y2, cpu.conv2d(x2, weight: w2, bias: nil, stride: 2, padding: odd)) < Self.tolerance)
        }
    }

    /// A 1×1 convolution through conv2d (the CPU's pointwise path), batch 2. Error measured 2.1e-7.
    @Test func conv2dPointwise() throws {
        try withDevice { gpu in
            let (x, w, b) = (host([2, 9, 5, 6], seed: 18), host([11, 9, 1, 1], seed: 19), host([11], seed: 20))
            let y = gpu.conv2d(up(gpu, x), weight: up(gpu, w), bias: up(gpu, b), stride: 1, padding: .zero)
            #expect(error(gpu, y, cpu.conv2d(x, weight: w, bias: b, stride: 1, padding: .zero)) < Self.tolerance)
        }
    }

    /// The upsampling convolution, batch 2, 3 → 9 channels from a 5 × 7 plane (10 × 14 out), with and without bias.
    /// Error measured 4.5e-7 (direct), 6.1e-6 (Winograd).
    @Test func conv3x3UpsampledNeverMakesTheUpsampledInput() throws {
        try withDevice { gpu in
            let (x, w, b) = (host([2, 3, 5, 7], seed: 21), host([9, 3, 3, 3], seed: 22), host([9], seed: 23))
            let (dx, dw) = (up(gpu, x), up(gpu, w))
            let y = gpu.conv3x3Upsampled(dx, weight: dw, bias: up(gpu, b))
            #expect(error(gpu, y, cpu.conv3x3Upsampled(x, weight: w, bias: b)) < Self.winogradTolerance)
            let upsampled = Kernels.upsampleNearest2x(x)
            let direct = Kernels.conv2dDirect(upsampled, weight: w, bias: b, stride: 1, padding: .uniform(1))
            #expect(error(gpu, y, direct) < Self.tolerance)
            let plain = gpu.conv3x3Upsampled(dx, weight: dw, bias: nil)
            #expect(error(gpu, plain, cpu.conv3x3Upsampled(x, weight: w, bias: nil)) < Self.winogradTolerance)
            let plainDirect = Kernels.conv2dDirect(upsampled, weight: w, bias: nil, stride: 1, padding: .uniform(1))
            #expect(error(gpu, plain, plainDirect) < Self.tolerance)
        }
    }

    /// conv1x1 on `[3, 20, 13]` to 70 channels (two row tiles), weight `[Co, Ci, 1]`, with bias. Error measured 3.7e-7.
    @Test func conv1x1Batched() throws {
        try withDevice { gpu in
            let (x, w, b) = (host([3, 20, 13], seed: 24), host([70, 20, 1], seed: 25), host([70], seed: 26))
            let y = gpu.conv1x1(up(gpu, x), weight: up(gpu, w), bias: up(gpu, b))
            #expect(y.shape == [3, 70, 13])
            #expect(error(gpu, y, cpu.conv1x1(x, weight: w, bias: b)) < Self.tolerance)
        }
    }

    // MARK: - Half-precision weights

    /// `gemm_f16` and `conv2d_f16`: the weights kept in 16 bits on the device, every product in f32, against the CPU
    /// on the same weights rounded to f16 (so the tolerance is the f32 one): linear with 130 rows and 129 outputs,
    /// a stride-2 convolution with asymmetric padding, the upsampling one, and conv1x1.
    /// Error measured 9.7e-7, 4.7e-7, 6.0e-7 (direct; 8.7e-6 Winograd), 2.4e-7.
    @Test func halfPrecisionWeights() throws {
        try withDevice { gpu in
            try #require(gpu.supportsF16, "lavapipe offers 16-bit storage and f16 arithmetic")
            let (x, w, b) = (host([130, 33], seed: 60), host([129, 33], seed: 61), host([129], seed: 62))
            let y = gpu.linear(up(gpu, x), weight: try half(gpu, w), bias: up(gpu, b), rowIndependent: false)
            #expect(error(gpu, y, cpu.linear(x, weight: roundedToHalf(w), bias: b)) < Self.tolerance)

            let (cx, cw, cb) = (host([2, 5, 9, 8], seed: 63), host([7, 5, 3, 3], seed: 64), host([7], seed: 65))
            let pad = Padding(top: 1, left: 0, bottom: 0, right: 2)
            let (dx, dw) = (up(gpu, cx), try half(gpu, cw))
            let conv = gpu.conv2d(dx, weight: dw, bias: up(gpu, cb), stride: 2, padding: pad)
            let reference = cpu.conv2d(cx, weight: roundedToHalf(cw), bias: cb, stride: 2, padding: pad)
            #expect(error(gpu, conv, reference) < Self.tolerance)
            let upsampled = gpu.conv3x3Upsampled(dx, weight: dw, bias: nil)
            let halfW = roundedToHalf(cw)
            #expect(error(gpu, upsampled, cpu.conv3x3Upsampled(cx, weight: halfW, bias: nil)) < Self.winogradTolerance)
            let direct = Kernels.conv2dDirect(
                Kernels.upsampleNearest2x(cx), weight: halfW, bias: nil, stride: 1, padding: .uniform(1))
            #expect(error(gpu, upsampled, direct) < Self.tolerance)

            let (px, pw) = (host([2, 20, 11], seed: 66), host([9, 20, 1], seed: 67))
            let pointwise = gpu.conv1x1(up(gpu, px), weight: try half(gpu, pw), bias: nil)
            #expect(error(gpu, pointwise, cpu.conv1x1(px, weight: roundedToHalf(pw), bias: nil)) < Self.tolerance)
        }
    }

    // MARK: - Attention

    /// Row-major attention without a mask: 6 slices, 19 queries (two query blocks), 150 keys (three key blocks, the
    /// last partial), D = 40, Dv = 24. Error measured 1.9e-6.
    @Test func attentionOverSeveralKeyBlocks() throws {
        try withDevice { gpu in
            let (q, k, v) = (host([6, 19, 40], seed: 30), host([6, 150, 40], seed: 31), host([6, 150, 24], seed: 32))
            let scale = 1 / Float(40).squareRoot()
            let y = gpu.attention(q: up(gpu, q), k: up(gpu, k), v: up(gpu, v), scale: scale, mask: nil)
            #expect(error(gpu, y, cpu.attention(q: q, k: k, v: v, scale: scale, mask: nil)) < Self.tolerance)
        }
    }

    /// D = 72 (two channel chunks of the scores). Error measured 1.0e-6.
    @Test func attentionWithHeadDimensionAboveOneChunk() throws {
        try withDevice { gpu in
            let (q, k, v) = (host([2, 21, 72], seed: 33), host([2, 30, 72], seed: 34), host([2, 30, 72], seed: 35))
            let y = gpu.attention(q: up(gpu, q), k: up(gpu, k), v: up(gpu, v), scale: 0.4, mask: nil)
            #expect(error(gpu, y, cpu.attention(q: q, k: k, v: v, scale: 0.4, mask: nil)) < Self.tolerance)
        }
    }

    /// Masks of both broadcast forms (`[Bm, Lq, Lk]` and `[Bm, 1, Lk]`) over 6 slices of 2 items: −∞ entries, a
    /// large negative bias (the text encoders' padding), and one query row masked entirely (the mean of the values, as
    /// the CPU's uniform row). Error measured 1.3e-6 and 1.2e-6.
    @Test func attentionMasksBroadcastPerItem() throws {
        try withDevice { gpu in
            let (n, lq, lk, d) = (6, 19, 70, 16)
            let (q, k, v) = (host([n, lq, d], seed: 36), host([n, lk, d], seed: 37), host([n, lk, d], seed: 38))
            var values = host([2, lq, lk], seed: 39, in: -2...2).scalars
            for i in stride(from: 0, to: values.count, by: 7) { values[i] = -.infinity }
            for i in stride(from: 3, to: values.count, by: 11) { values[i] = -1e9 }
            for j in 0..<lk { values[(1 * lq + 4) * lk + j] = -.infinity }  // item 1, query 4: nothing left to attend
            let perQuery = Tensor(shape: [2, lq, lk], values: values)
            let (dq, dk, dv) = (up(gpu, q), up(gpu, k), up(gpu, v))
            let y = gpu.attention(q: dq, k: dk, v: dv, scale: 0.25, mask: up(gpu, perQuery))
            #expect(error(gpu, y, cpu.attention(q: q, k: k, v: v, scale: 0.25, mask: perQuery)) < Self.tolerance)

            var padding = [Float](repeating: 0, count: 2 * lk)
            for j in 50..<lk { padding[j] = -.infinity }
            for j in 61..<lk { padding[lk + j] = -.infinity }
            let perItem = Tensor(shape: [2, 1, lk], values: padding)
            let y2 = gpu.attention(q: dq, k: dk, v: dv, scale: 0.25, mask: up(gpu, perItem))
            #expect(error(gpu, y2, cpu.attention(q: q, k: k, v: v, scale: 0.25, mask: perItem)) < Self.tolerance)
        }
    }

    /// The VAE's form: one head of 512 channels (more than an invocation holds: 16 invocations share each query's
    /// row), T = 20 queries over S = 70 keys, batch 2. Error measured 1.8e-6.
    @Test func attentionChannelsFirstWithWideHead() throws {
        try withDevice { gpu in
            let (q, k, v) = (
                host([2, 512, 20], seed: 40), host([2, 512, 70], seed: 41), host([2, 512, 70], seed: 42)
            )
            let scale = 1 / Float(512).squareRoot()
            let y = gpu.attentionChannelsFirst(q: up(gpu, q), k: up(gpu, k), v: up(gpu, v), scale: scale)
            #expect(error(gpu, y, cpu.attentionChannelsFirst(q: q, k: k, v: v, scale: scale)) < Self.tolerance)
        }
    }

    /// More value channels (600) than one workgroup holds (512): a second workgroup along z, the scores recomputed.
    /// Error measured 1.1e-6.
    @Test func attentionChannelsFirstSplitsValueChannels() throws {
        try withDevice { gpu in
            let (q, k, v) = (host([1, 16, 10], seed: 43), host([1, 16, 30], seed: 44), host([1, 600, 30], seed: 45))
            let y = gpu.attentionChannelsFirst(q: up(gpu, q), k: up(gpu, k), v: up(gpu, v), scale: 0.3)
            #expect(error(gpu, y, cpu.attentionChannelsFirst(q: q, k: k, v: v, scale: 0.3)) < Self.tolerance)
        }
    }

    /// GLIDE's attention: q, k, v thirds of `[4, 3·24, 37]` with the text's 11 keys and values first, then without
    /// text; and D = 8 over 100 positions (two key blocks, text and image keys sharing the first).
    /// Error measured 1.2e-6, 9.9e-7, 1.2e-6.
    @Test func attentionQKVWithAndWithoutTextKeys() throws {
        try withDevice { gpu in
            let (qkv, text) = (host([4, 72, 37], seed: 46), host([4, 48, 11], seed: 47))
            let scale = 1 / Float(24).squareRoot()
            let dqkv = up(gpu, qkv)
            let y = gpu.attentionChannelsFirst(qkv: dqkv, textKV: up(gpu, text), scale: scale)
            #expect(error(gpu, y, cpu.attentionChannelsFirst(qkv: qkv, textKV: text, scale: scale)) < Self.tolerance)
            let plain = gpu.attentionChannelsFirst(qkv: dqkv, textKV: nil, scale: scale)
            #expect(error(gpu, plain, cpu.attentionChannelsFirst(qkv: qkv, textKV: nil, scale: scale)) < Self.tolerance)

            let (small, smallText) = (host([2, 24, 100], seed: 48), host([2, 16, 9], seed: 49))
            let y2 = gpu.attentionChannelsFirst(qkv: up(gpu, small), textKV: up(gpu, smallText), scale: 0.35)
            #expect(
                error(gpu, y2, cpu.attentionChannelsFirst(qkv: small, textKV: smallText, scale: 0.35)) < Self.tolerance)
        }
    }
}
