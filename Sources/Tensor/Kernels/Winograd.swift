// Winograd minimal filtering F(4×4, 3×3) for stride-1, padding-1 3×3 convolutions (Lavin & Gray, "Fast Algorithms
// for Convolutional Neural Networks", 2015, interpolation points 0, ±1, ±2, ∞).
//
// Each 4×4 output tile is Aᵀ·[(G·g·Gᵀ) ⊙ (Bᵀ·d·B)]·A over its 6×6 input patch d: 36 multiplications per input
// channel instead of 144, and summed over channels those element-wise products are 36 independent GEMMs
// M[ξ] = U[ξ]·V[ξ] with U[ξ] = (G·g·Gᵀ)[ξ] of shape [Cout, Cin] and V[ξ] = (Bᵀ·d·B)[ξ] of shape [Cin, tiles].
//
// The weights are transformed on every call, a block of output channels at a time: caching U for the whole
// model would take four times the weights' memory, while transforming a block costs about 18 multiply-adds per
// weight (well under 1 % of the block's GEMMs at 32×32 and larger planes) and keeps U in the last-level cache.

extension Kernels {
    /// Convolutions with at least this many 4×4 output tiles over the whole batch use Winograd; with fewer, the
    /// transformed weights (four times the filter's size, rebuilt on every call) cost more than the GEMMs save
    /// (`bench kernels`, batch 2: Winograd 2.3× sgemm at 64×64 and 32×32, 1.56× against im2col's 0.93× at 16×16 = 32
    /// tiles, but 0.71× against 0.87× at 8×8 = 8 tiles).
    static let winogradMinimumTiles = 32
    /// The most floats one block of transformed weights U may hold (16 MiB): larger layers are done in blocks of
    /// output channels.
    public static let winogradWeightBudget = 4 << 20

    /// Whether `conv2d` takes the Winograd path for this geometry.
    static func usesWinograd(
        kernel: (Int, Int), stride: Int, padding: Padding, batch: Int, outH: Int, outW: Int
    ) -> Bool {
        kernel == (3, 3) && stride == 1 && padding == .uniform(1)
            && WinogradTiling(batch: batch, height: outH, width: outW).count >= winogradMinimumTiles
    }

    /// 3×3 convolution, stride 1, zero padding 1, by Winograd F(4×4, 3×3).
    ///
    /// - Parameters:
    ///   - x: `[B, Cin, H, W]`.
    ///   - weight: `[Cout, Cin, 3, 3]`.
    ///   - bias: `[Cout]`, or nil.
    ///   - weightBudget: floats per block of transformed weights (tests force several blocks).
    /// - Returns: `[B, Cout, H, W]`.
    public static func winogradConv3x3(
        _ x: Tensor, weight: Tensor, bias: Tensor?, weightBudget: Int = winogradWeightBudget
    ) -> Tensor {
        precondition(x.rank == 4, "conv2d input must be [B, C, H, W], got \(x.shape)")
        let (batch, cin, height, width) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let cout = weight.shape[0]
        precondition(weight.shape == [cout, cin, 3, 3], "Winograd weight \(weight.shape) for \(cin) input channels")
        if let bias { precondition(bias.shape == [cout], "conv2d bias \(bias.shape) is not [\(cout)]") }
        let y = Tensor(uninitialized: [batch, cout, height, width])
        if batch == 0 || cout == 0 || height == 0 || width == 0 { return y }
        KernelProfile.addFlops(2 * Double(batch * height * width) * Double(cout * cin * 9))
        let tiling = WinogradTiling(batch: batch, height: height, width: width)
        let tiles = tiling.count
        let blocks = (cout + max(1, weightBudget / max(1, 36 * cin)) - 1) / max(1, weightBudget / max(1, 36 * cin))
        let blockOut = (cout + blocks - 1) / blocks
        let scratch = Scratch.current
        let v = scratch.buffer(0, count: 36 * cin * tiles)
        let u = scratch.buffer(1, count: 36 * blockOut * cin)
        let m = scratch.buffer(2, count: 36 * blockOut * tiles)

        tiling.transformInput(x.storage.pointer, channels: cin, into: v)
        var first = 0
        while first < cout {
            let count = min(blockOut, cout - first)
            transformWeights(weight.storage.pointer + first * cin * 9, outChannels: count, inChannels: cin, into: u)
            // 36 independent products, shared out whole among the pool's threads.
            ComputePool.shared.run(chunks: 36) { xi in
                // M[ξ][count, tiles] = U[ξ][count, Cin] · V[ξ][Cin, tiles]
                BLAS.sgemmSerial(
                    m: count, n: tiles, k: cin, a: u + xi * count * cin, lda: cin, b: v + xi * cin * tiles,
                    ldb: tiles, c: m + xi * count * tiles, ldc: tiles)
            }
            tiling.transformOutput(
                m, channels: count, firstChannel: first, totalChannels: cout, bias: bias?.storage.pointer,
                into: y.storage.pointer)
            first += count
        }
        return y
    }

    /// U[ξ][o][i] = (G·g·Gᵀ)[ξ] for `outChannels` filters g = w[o][i] (3×3), written `[36][outChannels][inChannels]`.
    ///
    /// Eight input channels at a time, one SIMD lane each, so every store of U is eight contiguous floats; everything
    /// in between stays in registers (no arrays: an earlier version allocated ten per filter group and spent 8 % of a
    /// UNet step here).
    static func transformWeights(
        _ w: UnsafePointer<Float>, outChannels: Int, inChannels: Int, into u: UnsafeMutablePointer<Float>
    ) {
        let plane = outChannels * inChannels
        let groups = (inChannels + 7) / 8
        ComputePool.shared.parallelFor(outChannels * groups, minimumChunk: 64) { range in
            for item in range {
                let (o, first) = (item / groups, (item % groups) * 8)
                let lanes = min(8, inChannels - first)
                let g = w + (o * inChannels + first) * 9
                @inline(__always) func load(_ e: Int) -> SIMD8<Float> {
                    if lanes == 8 {
                        return SIMD8(g[e], g[9 + e], g[18 + e], g[27 + e], g[36 + e], g[45 + e], g[54 + e], g[63 + e])
                    }
                    var k = SIMD8<Float>.zero
                    for lane in 0..<lanes { k[lane] = g[lane * 9 + e] }
                    return k
                }
                let dst = u + o * inChannels + first
                @inline(__always) func store(_ point: Int, _ value: SIMD8<Float>) {
                    let out = dst + point * plane
                    if lanes == 8 {
                        UnsafeMutableRawPointer(out).storeBytes(of: value, as: SIMD8<Float>.self)
                    } else {
                        for lane in 0..<lanes { out[lane] = value[lane] }
                    }
                }
                // G rows: [¼, 0, 0], [−⅙, −⅙, −⅙], [−⅙, ⅙, −⅙], [1/24, 1/12, ⅙], [1/24, −1/12, ⅙], [0, 0, 1];
                // first down the kernel's rows (Gg, 6×3), then along its columns ((Gg)Gᵀ, 6×6).
                let c0 = WinogradG(load(0), load(3), load(6))
                let c1 = WinogradG(load(1), load(4), load(7))
                let c2 = WinogradG(load(2), load(5), load(8))
                @inline(__always) func emitRow(_ i: Int, _ a: SIMD8<Float>, _ b: SIMD8<Float>, _ c: SIMD8<Float>) {
                    let row = WinogradG(a, b, c)
                    store(i * 6, row.r0)
                    store(i * 6 + 1, row.r1)
                    store(i * 6 + 2, row.r2)
                    store(i * 6 + 3, row.r3)
                    store(i * 6 + 4, row.r4)
                    store(i * 6 + 5, row.r5)
                }
                emitRow(0, c0.r0, c1.r0, c2.r0)
                emitRow(1, c0.r1, c1.r1, c2.r1)
                emitRow(2, c0.r2, c1.r2, c2.r2)
                emitRow(3, c0.r3, c1.r3, c2.r3)
                emitRow(4, c0.r4, c1.r4, c2.r4)
                emitRow(5, c0.r5, c1.r5, c2.r5)
            }
        }
    }
}

/// G·(a, b, c)ᵀ for the F(4×4, 3×3) filter transform, on eight lanes at once.
struct WinogradG {
    let r0: SIMD8<Float>, r1: SIMD8<Float>, r2: SIMD8<Float>, r3: SIMD8<Float>, r4: SIMD8<Float>, r5: SIMD8<Float>

    @inline(__always)
    init(_ a: SIMD8<Float>, _ b: SIMD8<Float>, _ c: SIMD8<Float>) {
        let sum = (a + c) * (-1.0 / 6)
        let odd = b * (1.0 / 6)
        let even = a * (1.0 / 24) + c * (1.0 / 6)
        let mid = b * (1.0 / 12)
        (r0, r1, r2, r3, r4, r5) = (a * 0.25, sum - odd, sum + odd, even + mid, even - mid, c)
    }
}

/// The 4×4 output tiles of one Winograd convolution and the input and output transforms.
struct WinogradTiling {
    let batch: Int, height: Int, width: Int
    let tilesH: Int, tilesW: Int

    init(batch: Int, height: Int, width: Int) {
        (self.batch, self.height, self.width) = (batch, height, width)
        tilesH = (height + 3) / 4
        tilesW = (width + 3) / 4
    }

    /// Tiles over the whole batch; tile (b, ty, tx) is column `(b·tilesH + ty)·tilesW + tx` of each V[ξ], M[ξ].
    var count: Int { batch * tilesH * tilesW }

    /// V[ξ][c][tile] = (Bᵀ·d·B)[ξ] for the 6×6 patch d at rows 4·ty − 1…4·ty + 4, columns 4·tx − 1…4·tx + 4 (zero
    /// outside the image), written `[36][channels][count]`.
    func transformInput(_ x: UnsafePointer<Float>, channels: Int, into v: UnsafeMutablePointer<Float>) {
        let (tilesH, tilesW, height, width, batch) = (tilesH, tilesW, height, width, batch)
        let tiles = count
        let stripWidth = 4 * tilesW + 2
        let pointStride = channels * tiles
        ComputePool.shared.parallelFor(batch * channels) { range in
            // Six zero-padded input rows, then Bᵀ applied down the columns: both 6 × stripWidth.
            let strip = UnsafeMutablePointer<Float>.allocate(capacity: 12 * stripWidth)
            defer { strip.deallocate() }
            let cols = strip + 6 * stripWidth
            for item in range {
                let (b, c) = (item / channels, item % channels)
                let plane = x + item * height * width
                for ty in 0..<tilesH {
                    for r in 0..<6 {
                        let row = strip + r * stripWidth
                        let ih = 4 * ty - 1 + r
                        row.update(repeating: 0, count: stripWidth)
                        if ih >= 0 && ih < height { (row + 1).update(from: plane + ih * width, count: width) }
                    }
                    // Bᵀ rows: [4,0,−5,0,1,0], [0,−4,−4,1,1,0], [0,4,−4,−1,1,0], [0,−2,−1,2,1,0], [0,2,−1,−2,1,0],
                    // [0,4,0,−5,0,1].
                    let (d0, d1, d2) = (strip, strip + stripWidth, strip + 2 * stripWidth)
                    let (d3, d4, d5) = (strip + 3 * stripWidth, strip + 4 * stripWidth, strip + 5 * stripWidth)
                    for j in 0..<stripWidth {
                        cols[j] = 4 * d0[j] - 5 * d2[j] + d4[j]
                        cols[stripWidth + j] = -4 * (d1[j] + d2[j]) + d3[j] + d4[j]
                        cols[2 * stripWidth + j] = 4 * (d1[j] - d2[j]) - d3[j] + d4[j]
                        cols[3 * stripWidth + j] = 2 * (d3[j] - d1[j]) - d2[j] + d4[j]
                        cols[4 * stripWidth + j] = 2 * (d1[j] - d3[j]) - d2[j] + d4[j]
                        cols[5 * stripWidth + j] = 4 * d1[j] - 5 * d3[j] + d5[j]
                    }
                    let firstTile = (b * tilesH + ty) * tilesW
                    for i in 0..<6 {
                        let t = cols + i * stripWidth
                        let out = v + (i * 6) * pointStride + c * tiles + firstTile
                        for tx in 0..<tilesW {
                            let e = t + 4 * tx
                            out[tx] = 4 * e[0] - 5 * e[2] + e[4]
                            out[pointStride + tx] = -4 * (e[1] + e[2]) + e[3] + e[4]
                            out[2 * pointStride + tx] = 4 * (e[1] - e[2]) - e[3] + e[4]
                            out[3 * pointStride + tx] = 2 * (e[3] - e[1]) - e[2] + e[4]
                            out[4 * pointStride + tx] = 2 * (e[1] - e[3]) - e[2] + e[4]
                            out[5 * pointStride + tx] = 4 * e[1] - 5 * e[3] + e[5]
                        }
                    }
                }
            }
        }
    }

    /// y[b][first + o] = Aᵀ·M[·][o][tile]·A (+ bias) for `channels` output channels, cropped to the image.
    func transformOutput(
        _ m: UnsafePointer<Float>, channels: Int, firstChannel: Int, totalChannels: Int, bias: UnsafePointer<Float>?,
        into y: UnsafeMutablePointer<Float>
    ) {
        let (tilesH, tilesW, height, width, batch) = (tilesH, tilesW, height, width, batch)
        let tiles = count
        let pointStride = channels * tiles
        ComputePool.shared.parallelFor(batch * channels) { range in
            // Aᵀ applied down the columns of one tile row: 4 × (6 · tilesW), then along the rows.
            let rows = UnsafeMutablePointer<Float>.allocate(capacity: 4 * 6 * tilesW)
            defer { rows.deallocate() }
            for item in range {
                let (b, o) = (item / channels, item % channels)
                let add = bias?[firstChannel + o] ?? 0
                let plane = y + (b * totalChannels + firstChannel + o) * height * width
                for ty in 0..<tilesH {
                    let firstTile = (b * tilesH + ty) * tilesW
                    // Aᵀ rows: [1,1,1,1,1,0], [0,1,−1,2,−2,0], [0,1,1,4,4,0], [0,1,−1,8,−8,1].
                    for j in 0..<6 {
                        let src = m + j * pointStride + o * tiles + firstTile
                        let (m0, m1, m2) = (src, src + 6 * pointStride, src + 12 * pointStride)
                        let (m3, m4, m5) = (src + 18 * pointStride, src + 24 * pointStride, src + 30 * pointStride)
                        let r = rows + j * tilesW
                        let stride = 6 * tilesW
                        for tx in 0..<tilesW {
                            let (p, q) = (m1[tx] + m2[tx], m1[tx] - m2[tx])
                            let (s, d) = (m3[tx] + m4[tx], m3[tx] - m4[tx])
                            r[tx] = m0[tx] + p + s
                            r[stride + tx] = q + 2 * d
                            r[2 * stride + tx] = p + 4 * s
                            r[3 * stride + tx] = q + 8 * d + m5[tx]
                        }
                    }
                    let outRows = min(4, height - 4 * ty)
                    for a in 0..<outRows {
                        let r = rows + a * 6 * tilesW
                        let dst = plane + (4 * ty + a) * width
                        for tx in 0..<tilesW {
                            let (e0, e1, e2) = (r[tx], r[tilesW + tx], r[2 * tilesW + tx])
                            let (e3, e4, e5) = (r[3 * tilesW + tx], r[4 * tilesW + tx], r[5 * tilesW + tx])
                            let (p, q) = (e1 + e2, e1 - e2)
                            let (s, d) = (e3 + e4, e3 - e4)
                            let x0 = 4 * tx
                            let outCols = min(4, width - x0)
                            let values = (e0 + p + s + add, q + 2 * d + add, p + 4 * s + add, q + 8 * d + e5 + add)
                            dst[x0] = values.0
                            if outCols > 1 { dst[x0 + 1] = values.1 }
                            if outCols > 2 { dst[x0 + 2] = values.2 }
                            if outCols > 3 { dst[x0 + 3] = values.3 }
                        }
                    }
                }
            }
        }
    }
}
