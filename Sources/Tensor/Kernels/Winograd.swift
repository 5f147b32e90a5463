import CKernels

// Winograd minimal filtering F(4×4, 3×3) for stride-1, padding-1 3×3 convolutions (Lavin & Gray, "Fast Algorithms
// for Convolutional Neural Networks", 2015, interpolation points 0, ±1, ±2, ∞).
//
// Each 4×4 output tile is Aᵀ·[(G·g·Gᵀ) ⊙ (Bᵀ·d·B)]·A over its 6×6 input patch d: 36 multiplications per input
// channel instead of 144, and summed over channels those element-wise products are 36 independent GEMMs
// M[ξ] = U[ξ]·V[ξ] with U[ξ] = (G·g·Gᵀ)[ξ] of shape [Cout, Cin] and V[ξ] = (Bᵀ·d·B)[ξ] of shape [Cin, tiles].
//
// The weights are transformed on every call, a block of output channels at a time: caching U for the whole
// model would take four times the weights' memory, while transforming a block costs about 18 multiply-adds per
// weight and keeps U in the cache for its products.
//
// The transforms write U and V already packed for `PanelGEMM`'s register tile, which multiplies them without copying
// (through OpenBLAS each of the 36 products packed both its operands again, since it met them only once).
//
// F(2×2, 3×3) (U only 16/9 of the weights) was built and measured against it on every UNet level: once F(4×4)'s
// blocks of U were sized for the cache it was slower everywhere, so it was not kept.

/// How `Kernels.conv2d` computes a convolution.
public enum ConvAlgorithm: String, Sendable, CaseIterable {
    /// im2col and one GEMM (the direct method).
    case im2col
    /// Winograd F(4×4, 3×3): 36 products of [Cout, Cin] · [Cin, tiles], 4× fewer multiplications than direct.
    case winograd = "F(4×4)"
    /// Winograd F(6×6, 3×3): 64 products per 6×6 tile, 5.1× fewer multiplications than direct (`WinogradF6`).
    case winograd6 = "F(6×6)"
}

extension Kernels {
    /// Winograd from this many 4×4 output tiles over the whole batch: 8×8 planes at batch 2 have 8, and there it
    /// was still measured faster than im2col; with fewer the weight transform (four times the filter's size, rebuilt
    /// on every call) would cost more than the products save.
    static let winogradMinimumTiles = 8
    /// The most floats one block of transformed weights U may hold (12 MiB, so that it stays in the last-level cache
    /// between the weight transform and the products; 16 MiB blocks made the 8×8 layers a third slower): larger
    /// layers are done in blocks of output channels.
    public static let winogradWeightBudget = 3 << 20

    /// The most floats of V (and of M) one thread's band may hold when each thread takes its own bands: 1 MiB, so V
    /// and M stay in the core's L2 between the transforms and the products (56 tiles of a 128-channel VAE layer, 8 of
    /// a 512-channel one). With the eight-lane tiles, bands of 512 KiB, 2 MiB and whole tile rows of 4 MiB were all
    /// measured slower on the VAE.
    ///
    /// 4 MiB with the sixteen-lane tiles (`PanelGEMM.sixteenLanes`), whose 8 × 48 tile needs two whole panels of 24
    /// tiles in a band: 1 MiB bands of a 512-channel layer held 8 tiles, and ran on the 8-wide tile alone. Smaller
    /// bands (1 to 2 MiB) were slower on the VAE, and 8 MiB no faster.
    static let bandBudget = PanelGEMM.sixteenLanes ? 1 << 20 : 1 << 18
    /// Bands of their own for the threads from this many bands (with fewer, one thread would wait on the other).
    static let minimumOwnBands = 4

    /// The most floats V may hold for all tiles at once (96 MiB). Past it the tiles are taken in bands even when the
    /// weights are over `winogradWeightBudget`: all of U is transformed first (38 MiB for 512 → 512 channels) and
    /// each band's products read it again. The VAE's 256×256 layers with 512 input channels would otherwise hold a
    /// 302 MB V (kept as scratch through the rest of the decode: its peak, the 512×512 level, stood on top of it);
    /// the UNet's largest V, 85 MB (1152 → 384 at 64×64, batch 2), stays whole.
    public static let winogradInputBudget = 24 << 20

    /// Up to this many tiles each thread takes whole blocks of `fewTilesBlock(wide:)` output channels.
    static let fewTiles = 32
    /// Output channels per block when the tiles are few: one group of the weight transform's eight; three with
    /// AVX-512VL (`PanelGEMM.wide`), whose products over the 8-wide panel of B take three pairs of rows at once.
    ///
    /// With the sixteen-lane products (`PanelGEMM.sixteenLanes`) six pairs (`kw_gemm_rows_x16`: two pairs per vector,
    /// 24 accumulators); a chunk of U is then 885 KB, within a 2 MB L2. On the 8×8 and 16×16 levels this was faster
    /// than three pairs over eight lanes and than four pairs.
    static func fewTilesBlock(wide: Bool, sixteen: Bool = false) -> Int { sixteen ? 48 : wide ? 24 : 8 }
    /// Input channels per chunk of a few-tile block when `wide`: its transformed weights (36 · 24 · 128 floats,
    /// 442 KB) and V's rows for it stay in L2 between the weight transform and the products.
    static let fewTilesChunk = 128

    /// Output channels per block of U when the tiles are taken all at once.
    ///
    /// Within `budget`; and when the tiles are few (the 16×16 and 8×8 levels) at most `fewTilesBlock`, so each
    /// thread's U (36 · 8 · Cin floats, 1.3 MiB for 1152 input channels) stays in its own L2 between the weight
    /// transform and the products, which meet it only 8 or 32 times (blocks of 32 and 64 were measured slower on
    /// both levels). Not on 32×32 planes (128 tiles): there every block of eight reads all of V again (14–35 MB, out
    /// of the last-level cache from 1152 input channels), and shared blocks of ≈ 112 channels were faster.
    static func winogradBlockChannels(
        inChannels: Int, tiles: Int, budget: Int, points: Int, wide: Bool = PanelGEMM.wide,
        sixteen: Bool = PanelGEMM.sixteenLanes
    ) -> Int {
        let channels = budget / (points * inChannels)
        let block = fewTilesBlock(wide: wide, sixteen: wide && sixteen)
        return max(1, tiles <= fewTiles ? min(channels, block) : channels)
    }

    /// Input channels per interleaving of a group's eight rows of weights (`transformWeights`): 9 KiB of interleaved
    /// filters (runs of eight made the 8×8 layers slower: the reads from memory came in bursts too short).
    static let interleavedInputs = 32

    /// Floats allocated after M, so the output transform may read whole groups of eight columns past the last tile.
    static let winogradSlack = 8

    /// The algorithm `conv2d` takes for this geometry.
    ///
    /// Winograd for 3×3 kernels, stride 1 and padding 1 from `winogradMinimumTiles` tiles; F(6×6) instead of F(4×4)
    /// where both hold:
    /// - its work is at most 0.95 of F(4×4)'s, counted as the transforms do it: points × tile rows × tiles of a row
    ///   in whole groups of eight. From 128×128 planes (0.92 there, 0.82 at 512×512). Not on 64×64 planes, whose 11
    ///   tiles a row fill 16 lanes (1.22): there F(6×6) was slower on every UNet layer and no faster on the VAE's;
    /// - its U (64 points a filter against 36) is not over `winogradWeightBudget` where F(4×4)'s is within it: the
    ///   tiles would then be taken in bands shared by the threads, each reading all of U again, and F(6×6) was
    ///   measured slower there; where both are over the budget, or both within it, F(6×6) was the faster.
    static func convAlgorithm(
        kernel: (Int, Int), stride: Int, padding: Padding, batch: Int, outH: Int, outW: Int, inChannels: Int,
        outChannels: Int
    ) -> ConvAlgorithm {
        guard kernel == (3, 3) && stride == 1 && padding == .uniform(1) else { return .im2col }
        let f4 = WinogradF4(batch: batch, height: outH, width: outW, upsampled: false)
        guard f4.count >= winogradMinimumTiles else { return .im2col }
        let f6 = WinogradF6(batch: batch, height: outH, width: outW, upsampled: false)
        func lanes<T: WinogradTiling>(_ t: T) -> Int { T.points * t.tileRows * ((t.tilesW + 7) / 8 * 8) }
        let lessWork = 100 * lanes(f6) <= 95 * lanes(f4)
        let filters = PanelGEMM.packedRows(outChannels) * inChannels
        let samePath =
            (WinogradF4.points * filters <= winogradWeightBudget)
            == (WinogradF6.points * filters <= winogradWeightBudget)
        return lessWork && samePath ? .winograd6 : .winograd
    }

    /// 3×3 convolution, stride 1, zero padding 1, by Winograd F(4×4, 3×3).
    ///
    /// - Parameters:
    ///   - x: `[B, Cin, H, W]`.
    ///   - weight: `[Cout, Cin, 3, 3]`.
    ///   - bias: `[Cout]`, or nil.
    ///   - weightBudget: floats per block of transformed weights (tests force several blocks).
    ///   - inputBudget: the most floats of V for all tiles at once (tests force bands with U whole).
    ///   - upsampled: convolve `upsampleNearest2x(x)` instead, read from x as the input transform needs it (the
    ///     upsampled tensor, four times x, is never made).
    ///   - wide: whether to use the AVX-512VL products (default: where the processor has them; tests also run
    ///     without them).
    /// - Returns: `[B, Cout, H, W]` (`[B, Cout, 2H, 2W]` when `upsampled`).
    public static func winogradConv3x3(
        _ x: Tensor, weight: Tensor, bias: Tensor?, weightBudget: Int = winogradWeightBudget,
        inputBudget: Int = winogradInputBudget, upsampled: Bool = false, algorithm: ConvAlgorithm = .winograd,
        wide: Bool? = nil, sixteen: Bool? = nil
    ) -> Tensor {
        let wide = wide ?? PanelGEMM.wide
        precondition(!wide || PanelGEMM.wide, "AVX-512VL products asked for on a processor without AVX-512VL")
        let sixteen = wide && (sixteen ?? PanelGEMM.sixteenLanes)
        switch algorithm {
        case .winograd6:
            return winograd(
                WinogradF6.self, x, weight: weight, bias: bias, weightBudget: weightBudget, inputBudget: inputBudget,
                upsampled: upsampled, wide: wide, sixteen: sixteen)
        default:
            return winograd(
                WinogradF4.self, x, weight: weight, bias: bias, weightBudget: weightBudget, inputBudget: inputBudget,
                upsampled: upsampled, wide: wide, sixteen: sixteen)
        }
    }

    /// `winogradConv3x3` with the tiling `T`.
    static func winograd<T: WinogradTiling>(
        _: T.Type, _ x: Tensor, weight: Tensor, bias: Tensor?, weightBudget: Int, inputBudget: Int, upsampled: Bool,
        wide: Bool, sixteen: Bool
    ) -> Tensor {
        precondition(x.rank == 4, "conv2d input must be [B, C, H, W], got \(x.shape)")
        let factor = upsampled ? 2 : 1
        let (batch, cin, height, width) = (x.shape[0], x.shape[1], factor * x.shape[2], factor * x.shape[3])
        let cout = weight.shape[0]
        precondition(weight.shape == [cout, cin, 3, 3], "Winograd weight \(weight.shape) for \(cin) input channels")
        if let bias { precondition(bias.shape == [cout], "conv2d bias \(bias.shape) is not [\(cout)]") }
        let y = Tensor(uninitialized: [batch, cout, height, width])
        if batch == 0 || cout == 0 || height == 0 || width == 0 { return y }
        KernelProfile.addFlops(2 * Double(batch * height * width) * Double(cout * cin * 9))
        let tiling = T(batch: batch, height: height, width: width, upsampled: upsampled)
        let scratch = Scratch.current
        let points = T.points
        let (xp, yp, wp, bp) = (x.storage.pointer, y.storage.pointer, weight.storage.pointer, bias?.storage.pointer)

        /// M[ξ][count, n] = U[ξ][count, Cin] · V[ξ][Cin, n] on operands the transforms packed (`PanelGEMM`): independent
        /// products, shared out whole among the pool's threads; product ξ prefetches its 36th of `next` floats.
        func products(
            u: UnsafePointer<Float>, v: UnsafePointer<Float>, m: UnsafeMutablePointer<Float>, count: Int,
            columns: PanelGEMM.Columns, next: UnsafeBufferPointer<Float>? = nil
        ) {
            let rows = PanelGEMM.packedRows(count)
            let uPlane = T.plane(PanelGEMM.packedCount(rows: count, k: cin))
            let vPlane = T.plane(cin * columns.padded)
            let mPlane = T.plane(rows * columns.padded)
            let lines = ((next?.count ?? 0) + 15) / 16
            let perProduct = (lines + points - 1) / points
            ComputePool.current.run(chunks: points) { xi in
                let mine = min(perProduct, max(0, lines - xi * perProduct))
                let prefetch = PanelGEMM.Prefetch(
                    start: next.map { UnsafeRawPointer($0.baseAddress! + 16 * perProduct * xi) }, lines: mine)
                PanelGEMM.multiply(
                    a: u + xi * uPlane, rowPanels: rows / PanelGEMM.panelRows, b: v + xi * vPlane, columns: columns,
                    k: cin, c: m + xi * mPlane, ldc: columns.padded, prefetch: prefetch, wide: wide, sixteen: sixteen)
            }
        }

        let coutRows = PanelGEMM.packedRows(cout)
        let uFits = points * coutRows * cin <= weightBudget
        if uFits || points * cin * tiling.count > inputBudget {
            // Large planes, few channels (the VAE, the UNet's outer levels): all weights transformed once, the tiles
            // taken a band of tile rows at a time, so V and M stay within the budget too (a 512×512 VAE layer would
            // otherwise need 300 MB for each) and in the last-level cache between the transforms and the products.
            // Large planes with many channels too, their V over `inputBudget`, but only in shared bands: every band
            // reads all of U.
            let u = scratch.buffer(1, count: points * T.plane(PanelGEMM.packedCount(rows: cout, k: cin)))
            T.transformWeights(wp, outChannels: cout, inChannels: cin, into: u)
            // Bands of their own for the threads: whole tile rows within `bandBudget`, or tiles of one row (whole
            // groups of eight) when a row is over it; shared bands (when that makes too few bands for the threads):
            // whole rows within the budget.
            let floatsPerTile = points * max(cin, coutRows)
            let (ownBudget, rowFloats) = (min(weightBudget, bandBudget), floatsPerTile * tiling.tilesW)
            var (rowsPerBand, tilesPerBand) =
                rowFloats <= ownBudget
                ? (min(tiling.tileRows, ownBudget / rowFloats), tiling.tilesW)
                : (1, min(tiling.tilesW, max(8, ownBudget / floatsPerTile / 8 * 8)))
            func bandCount() -> Int {
                (tiling.tileRows + rowsPerBand - 1) / rowsPerBand * ((tiling.tilesW + tilesPerBand - 1) / tilesPerBand)
            }
            let own = uFits && bandCount() >= minimumOwnBands
            if !own {
                (rowsPerBand, tilesPerBand) = (max(1, min(tiling.tileRows, weightBudget / rowFloats)), tiling.tilesW)
            }
            let (bands, perRow) = (bandCount(), (tiling.tilesW + tilesPerBand - 1) / tilesPerBand)
            let most = PanelGEMM.Columns(rowsPerBand * tilesPerBand).padded
            let (vCount, mCount) = (
                points * T.plane(cin * most), points * T.plane(coutRows * most) + winogradSlack
            )
            /// Band `b`: its tiles transformed into `v`, its products into `m`, its outputs written.
            func band(_ b: Int, v: UnsafeMutablePointer<Float>, m: UnsafeMutablePointer<Float>) {
                let (rowBand, part) = (b / perRow, b % perRow)
                let rows = rowBand * rowsPerBand..<min(tiling.tileRows, (rowBand + 1) * rowsPerBand)
                let tiles = part * tilesPerBand..<min(tiling.tilesW, (part + 1) * tilesPerBand)
                let columns = PanelGEMM.Columns(rows.count * tiles.count)
                tiling.transformInput(xp, channels: cin, tileRows: rows, tileColumns: tiles, columns: columns, into: v)
                products(u: u, v: v, m: m, count: cout, columns: columns)
                tiling.transformOutput(
                    m, rows: coutRows, columns: columns, channels: cout, firstChannel: 0, totalChannels: cout,
                    tileRows: rows, tileColumns: tiles, bias: bp, into: yp)
            }
            // With bands of their own, each thread's V and M are small enough to stay in its L2 (two of 12 MiB each,
            // shared, did not stay even in the last-level cache: the transforms and products waited on memory).
            eachWithBuffers(bands, own: own, slots: (0, 2), counts: (vCount, mCount), band)
            return y
        }

        // Many channels on small planes (the UNet's inner levels): every tile at once, the weights transformed a
        // block of output channels at a time.
        let tiles = tiling.count
        let perBlock = winogradBlockChannels(
            inChannels: cin, tiles: tiles, budget: weightBudget, points: points, wide: wide, sixteen: sixteen)
        let evenBlocks = (cout + perBlock - 1) / perBlock
        // Blocks of (nearly) equal size, in whole groups of eight output channels (the weight transform's) from eight.
        let even = (cout + evenBlocks - 1) / evenBlocks
        let blockOut = even < 8 ? even : min(cout, (even + 7) / 8 * 8)
        let blocks = (cout + blockOut - 1) / blockOut
        let columns = PanelGEMM.Columns(tiles)
        let own = tiles <= fewTiles
        // With AVX-512VL and few tiles (the 8×8 and 16×16 levels at batch 2, the 8×8 level at batch 4 and 6), each
        // block of up to 24 output channels goes `fewTilesChunk` input channels at a time (`chunkedProducts`): whole,
        // its U was 5.3 MB for 1536 input channels, written to and read back from the last-level cache, and the next
        // block's weights, prefetched into L2 during the products, did not stay there. Chunked, the 8×8 level ran
        // faster than in blocks of eight over the 8 × 8 tile, and the 16×16 level no slower. Chunking also pays with
        // whole panels of tiles, not only with a last panel of eight: with 16 tiles (8×8 at 4 rows, U 10.6 MB for 3072
        // input channels) and with one whole panel and none after it (24 tiles, 8×8 at 6 rows) it made those levels
        // clearly faster.
        let chunked = own && wide && blockOut <= fewTilesBlock(wide: true, sixteen: sixteen)
        // M's rows: whole pairs when chunked (the AVX-512VL products write both panels of a pair).
        let blockRows = chunked ? PanelGEMM.packedCount(rows: blockOut, k: 1) : PanelGEMM.packedRows(blockOut)
        let uCount = points * T.plane(PanelGEMM.packedCount(rows: blockOut, k: cin))
        let mCount = points * T.plane(blockRows * columns.padded) + winogradSlack
        let v = scratch.buffer(0, count: points * T.plane(cin * columns.padded))
        let allRows = 0..<tiling.tileRows
        tiling.transformInput(
            xp, channels: cin, tileRows: allRows, tileColumns: 0..<tiling.tilesW, columns: columns, into: v)
        /// The weights of the block the thread that does block `b` most likely takes next (the pool hands blocks out
        /// in order): its products bring them into L2 for that block's transform. Each few-tile block reads its
        /// weights (442 KB for 1536 input channels) from memory, where one thread streams at about 12 GB/s, and the
        /// transform waited on them; fetched during the products (from the 8- or 16-wide tiles of the last panel,
        /// `PanelGEMM.Prefetch`), they are in L2 when the transform starts, which made the 8×8 level faster (the
        /// larger planes were unchanged).
        func nextWeights(after b: Int) -> UnsafeBufferPointer<Float>? {
            let next = (b + ComputePool.current.threadCount) * blockOut
            guard next < cout else { return nil }
            return UnsafeBufferPointer(start: wp + next * cin * 9, count: min(blockOut, cout - next) * cin * 9)
        }
        /// Block `b`: its weights transformed into `u`, its products into `m`, its outputs written.
        func block(_ b: Int, u: UnsafeMutablePointer<Float>, m: UnsafeMutablePointer<Float>) {
            let first = b * blockOut
            let count = min(blockOut, cout - first)
            if chunked {
                chunkedProducts(first: first, count: count, u: u, m: m)
            } else {
                T.transformWeights(wp + first * cin * 9, outChannels: count, inChannels: cin, into: u)
                products(u: u, v: v, m: m, count: count, columns: columns, next: own ? nextWeights(after: b) : nil)
            }
            tiling.transformOutput(
                m, rows: chunked ? PanelGEMM.packedCount(rows: count, k: 1) : PanelGEMM.packedRows(count),
                columns: columns,
                channels: count, firstChannel: first, totalChannels: cout, tileRows: allRows,
                tileColumns: 0..<tiling.tilesW, bias: bp, into: yp)
        }
        /// M[ξ] = U[ξ]·V[ξ] for output channels `first..<first + count`, `fewTilesChunk` input channels at a time:
        /// each chunk's weights transformed into `u` and met at once by the products, which add into M (rows in
        /// whole pairs) and fetch the next chunk's weights, one row of filters per point (the first chunk of the
        /// thread's next block after the last). Not through `PanelGEMM.multiply`: a chunk's B panels are rows
        /// `c0..<c0 + n` of V's panels of `cin` rows, and each product fetches a whole row of filters.
        func chunkedProducts(first: Int, count: Int, u: UnsafeMutablePointer<Float>, m: UnsafeMutablePointer<Float>) {
            let (pairs, ldm, kc) = (PanelGEMM.packedCount(rows: count, k: 1) / 8, columns.padded, fewTilesChunk)
            let (vPlane, mPlane) = (T.plane(cin * ldm), T.plane(8 * pairs * ldm))
            let tail = columns.fullPanels * PanelGEMM.panelColumns
            let nextBlock = first + ComputePool.current.threadCount * blockOut
            var c0 = 0
            while c0 < cin {
                let n = min(kc, cin - c0)
                T.transformWeights(
                    wp + first * cin * 9 + c0 * 9, outChannels: count, inChannels: n, rowFloats: cin * 9, into: u)
                let uPlane = T.plane(PanelGEMM.packedCount(rows: count, k: n))
                let (nextFirst, nextC0, nextRows) =
                    c0 + n < cin ? (first, c0 + n, count) : (nextBlock, 0, max(0, min(blockOut, cout - nextBlock)))
                let lines = (min(kc, cin - nextC0) * 9 * MemoryLayout<Float>.size + 63) / 64
                for xi in 0..<points {
                    let (ux, vx, mx) = (u + xi * uPlane, v + xi * vPlane, m + xi * mPlane)
                    let fetch = xi < nextRows ? UnsafeRawPointer(wp + (nextFirst + xi) * cin * 9 + nextC0 * 9) : nil
                    if sixteen && pairs % 2 == 0 {
                        // Every panel eight columns at a time, two pairs of rows per sixteen-lane vector.
                        for p in 0..<columns.panels {
                            let width = columns.width(p)
                            let bp = vx + p * PanelGEMM.panelColumns * cin + c0 * width
                            for g in stride(from: 0, to: width, by: 8) {
                                kw_gemm_rows_x16(
                                    n, pairs, ux, PanelGEMM.aStep * n, bp + g, width,
                                    mx + p * PanelGEMM.panelColumns + g, ldm, c0 > 0 ? 1 : 0,
                                    p == 0 && g == 0 ? fetch?.assumingMemoryBound(to: CChar.self) : nil, lines)
                            }
                        }
                        continue
                    }
                    for p in 0..<columns.fullPanels {
                        let bp = vx + p * PanelGEMM.panelColumns * cin + c0 * PanelGEMM.panelColumns
                        for r in 0..<2 * pairs {
                            PanelGEMM.kernel4x24(
                                n, ux + r / 2 * PanelGEMM.aStep * n + r % 2 * PanelGEMM.panelRows, bp,
                                mx + p * PanelGEMM.panelColumns + r * PanelGEMM.panelRows * ldm, ldm, add: c0 > 0)
                        }
                    }
                    // The last, partial panel (8, 16 or 24 wide) eight columns at a time; the first eight fetch.
                    let width = columns.tail
                    for g in stride(from: 0, to: width, by: 8) {
                        kw_gemm_rows_x8(
                            n, pairs, ux, PanelGEMM.aStep * n, vx + tail * cin + c0 * width + g, width, mx + tail + g,
                            ldm, c0 > 0 ? 1 : 0, g == 0 ? fetch?.assumingMemoryBound(to: CChar.self) : nil, lines)
                    }
                }
                c0 += n
            }
        }
        // Small blocks (see `winogradBlockChannels`) each thread takes whole, so its U stays in its own cache and
        // there is no barrier between the three steps of a block.
        eachWithBuffers(blocks, own: own, slots: (1, 2), counts: (uCount, mCount), block)
        return y
    }

    /// `work(i, a, b)` for every i in `0..<count`, with scratch buffers `slots` of `counts` floats: with `own`, spread
    /// over the pool's threads, each passing its own (the steps inside `work` then run on that thread alone); else
    /// in order, each step inside `work` spread over the threads.
    private static func eachWithBuffers(
        _ count: Int, own: Bool, slots: (Int, Int), counts: (Int, Int),
        _ work: (Int, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>) -> Void
    ) {
        if own {
            ComputePool.current.run(chunks: count) { i in
                let mine = Scratch.current
                work(i, mine.buffer(slots.0, count: counts.0), mine.buffer(slots.1, count: counts.1))
            }
        } else {
            let scratch = Scratch.current
            let (a, b) = (scratch.buffer(slots.0, count: counts.0), scratch.buffer(slots.1, count: counts.1))
            for i in 0..<count { work(i, a, b) }
        }
    }
}

/// Input row `first + k` of a tile row, from `WinogradTiling.inputRows`.
struct WinogradInputRows {
    let plane: UnsafePointer<Float>, zeros: UnsafePointer<Float>, widened: UnsafePointer<Float>
    let first: Int, height: Int, width: Int, upsampled: Bool

    @inline(__always)
    func callAsFunction(_ k: Int) -> UnsafePointer<Float> {
        let row = first + k
        guard row >= 0 && row < height else { return zeros }
        return upsampled ? widened + ((k + 1) / 2) * width : plane + row * width
    }
}

/// One way of tiling a 3×3 convolution for Winograd's minimal filtering (`WinogradF4`, `WinogradF6`): the tiles'
/// geometry and the three transforms, which write and read their operands packed for `PanelGEMM`.
///
/// Tiles are numbered by tile row over the whole batch (`r = b·tilesH + ty`), then `tx`; a band of tile rows
/// `r₀..<r₁` and tile columns `t₀..<t₁` is transformed into columns `(r − r₀)·(t₁ − t₀) + tx − t₀` of each V[ξ] and
/// read back from M[ξ] the same way.
protocol WinogradTiling {
    /// Transformed values per tile ((tile + 2)²): the number of products.
    static var points: Int { get }
    init(batch: Int, height: Int, width: Int, upsampled: Bool)
    var batch: Int { get }
    /// The convolution's output size (and its input's, unless `upsampled`).
    var height: Int { get }
    var width: Int { get }
    /// Whether the input is read from a tensor of half its height and width, upsampled (nearest) on the way.
    var upsampled: Bool { get }
    var tilesH: Int { get }
    var tilesW: Int { get }
    /// Output rows and columns per tile (4 or 6); each reads a window of `tile + 2`.
    static var tile: Int { get }
    /// Bᵀ down the columns `first..<end` of the `tile + 2` input rows at `rows`, row k of the result at `out + k · stride`
    /// (`kw_winograd_f4_input_columns`, `kw_winograd_f6_input_columns`).
    static func inputColumns(
        _ rows: UnsafePointer<UnsafePointer<Float>?>, first: Int, end: Int, into out: UnsafeMutablePointer<Float>,
        stride: Int)
    /// Bᵀ along a row for eight tiles whose windows start `tile` floats apart at `t`, value k of tile l stored as lane l
    /// of `dst + k · pointStride` for the first `lanes` tiles (`kw_winograd_f4_input_group`, `kw_winograd_f6_input_group`).
    static func inputGroup(
        _ t: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>, pointStride: Int, lanes: Int)
    /// y from M for `channels` output channels (see `WinogradF4.transformOutput`).
    func transformOutput(
        _ m: UnsafePointer<Float>, rows mRows: Int, columns: PanelGEMM.Columns, channels: Int, firstChannel: Int,
        totalChannels: Int, tileRows: Range<Int>, tileColumns: Range<Int>, bias: UnsafePointer<Float>?,
        into y: UnsafeMutablePointer<Float>)
    /// The `points` transformed values of `count` groups of eight 3×3 filters, group n interleaved at `g + 72·n` (tap
    /// e of every lane at `+ 8·e`), each point's eight values stored contiguously at
    /// `dst + n · PanelGEMM.aStep + point · pointStride`.
    static func transformFilterGroups(
        _ g: UnsafePointer<Float>, count: Int, into dst: UnsafeMutablePointer<Float>, pointStride: Int)
}

extension WinogradTiling {
    /// Tiles over the whole batch.
    var count: Int { batch * tilesH * tilesW }
    /// Tile rows over the whole batch.
    var tileRows: Int { batch * tilesH }

    /// Floats from one point's U, V or M to the next's: a cache line more than the `floats` they hold, so the
    /// streams a transform writes at once do not all fall on the same offset within 4 KiB pages (with blocks of 32
    /// output channels × 1152 inputs they did: the weight transform ran at half speed).
    static func plane(_ floats: Int) -> Int { floats + 16 }

    /// The input rows tile row `ty` reads, `tile·ty − 1 + k` for k in 0..<tile + 2, from `plane` (zeros outside it).
    /// When `upsampled`, `plane` is half as high and wide and input row i is its row i / 2: the source rows
    /// `(tile / 2)·ty − 1 + s` are first widened (`columns` of them) into `widened`, rows `width` apart, and row k
    /// reads s = (k + 1) / 2.
    @inline(__always)
    func inputRows(
        _ plane: UnsafePointer<Float>, tile: Int, ty: Int, columns: Range<Int>, zeros: UnsafePointer<Float>,
        widened: UnsafeMutablePointer<Float>
    ) -> WinogradInputRows {
        let first = tile * ty - 1
        if upsampled {
            let (sourceFirst, sourceHeight, sourceWidth) = ((tile / 2) * ty - 1, height / 2, width / 2)
            for s in 0..<(tile / 2 + 2) where sourceFirst + s >= 0 && sourceFirst + s < sourceHeight {
                Self.widen(plane + (sourceFirst + s) * sourceWidth, into: widened + s * width, columns: columns)
            }
        }
        return WinogradInputRows(
            plane: plane, zeros: zeros, widened: UnsafePointer(widened), first: first, height: height, width: width,
            upsampled: upsampled)
    }

    /// `body(band, b, ty, channel, buffer)` for every tile row `tileRows.lowerBound + band` (tile row ty of image b) and
    /// channel, spread over the pool's threads, each passing its own `floats` zeros for the transform's rows.
    @inline(__always)
    func eachTileRow(
        _ tileRows: Range<Int>, channels: Int, buffer floats: Int,
        _ body: (_ band: Int, _ b: Int, _ ty: Int, _ channel: Int, _ buffer: UnsafeMutablePointer<Float>) -> Void
    ) {
        let tilesH = tilesH
        ComputePool.current.parallelFor(tileRows.count * channels) { range in
            let buffer = UnsafeMutablePointer<Float>.allocate(capacity: floats)
            defer { buffer.deallocate() }
            buffer.initialize(repeating: 0, count: floats)
            for item in range {
                let (band, channel) = (item / channels, item % channels)
                let r = tileRows.lowerBound + band
                body(band, r / tilesH, r % tilesH, channel, buffer)
            }
        }
    }

    /// V[ξ][c][column] = (Bᵀ·d·B)[ξ] for the (tile + 2)² patch d at rows tile·ty − 1 …, columns tile·tx − 1 … (zero
    /// outside the image) of the tiles in `tileRows` × `tileColumns`, each V[ξ] packed as `PanelGEMM`'s B with `columns`
    /// (`tileRows.count · tileColumns.count` of them), `channels · columns.padded` floats apart. When `upsampled`, x
    /// holds `height / 2 × width / 2` planes and row i, column j of the input is x's row i / 2, column j / 2: the
    /// source rows a tile row reads are first widened into row buffers.
    ///
    /// For each tile row and channel, Bᵀ down the columns of its tile + 2 input rows (`inputColumns`) into a strip,
    /// then along the strip's rows for eight tiles at a time (`inputGroup`), stored straight into V.
    func transformInput(
        _ x: UnsafePointer<Float>, channels: Int, tileRows: Range<Int>, tileColumns: Range<Int>,
        columns: PanelGEMM.Columns, into v: UnsafeMutablePointer<Float>
    ) {
        let (tile, side) = (Self.tile, Self.tile + 2)
        let (height, width) = (height, width)
        let (firstTile, tilesW) = (tileColumns.lowerBound, tileColumns.count)
        precondition(columns.count == tileRows.count * tilesW, "Winograd band of \(columns.count) columns")
        // The input columns these tiles read (tile·tx − 1 … tile·tx + tile), within the image.
        let (firstInput, endInput) = (max(0, tile * firstTile - 1), min(width, tile * tileColumns.upperBound + 1))
        // Room for the floats the last group of eight tiles reads (8·tile·(groups − 1) + 7·tile + side).
        let groups = (tilesW + 7) / 8
        let stripWidth = 8 * tile * groups + 8
        let pointStride = Self.plane(channels * columns.padded)
        let upsampled = upsampled
        let sourcePlane = upsampled ? height * width / 4 : height * width
        let widenedRows = upsampled ? tile / 2 + 2 : 0
        // Bᵀ applied down the columns of the input rows, side × stripWidth, input column j at index j + 1 − tile·firstTile
        // (zero padding at index 0 for the first tile of a row, and after the last column: never written, so they stay
        // zero). Then a row of zeros, (upsampled) the widened source rows, and one group's results.
        let buffer = side * stripWidth + width + widenedRows * width + 8 * side
        eachTileRow(tileRows, channels: channels, buffer: buffer) { band, b, ty, c, bt in
            let zeros = bt + side * stripWidth
            let widened = zeros + width
            let group = widened + widenedRows * width
            let source = inputRows(
                x + (b * channels + c) * sourcePlane, tile: tile, ty: ty, columns: firstInput..<endInput,
                zeros: zeros, widened: widened)
            withUnsafeTemporaryAllocation(of: UnsafePointer<Float>?.self, capacity: side) { rows in
                for k in 0..<side { rows[k] = source(k) }
                Self.inputColumns(
                    rows.baseAddress!, first: firstInput, end: endInput, into: bt + 1 - tile * firstTile,
                    stride: stripWidth)
            }
            let firstColumn = band * tilesW
            for i in 0..<side {
                let t = bt + i * stripWidth
                let out = v + (i * side) * pointStride
                var tx = 0
                while tx < tilesW {
                    let (column, lanes) = (firstColumn + tx, min(8, tilesW - tx))
                    let at = out + columns.offset(row: c, column: column, rows: channels)
                    if columns.samePanel(column, lanes) {
                        Self.inputGroup(t + tile * tx, into: at, pointStride: pointStride, lanes: lanes)
                    } else {
                        // Eight tiles across the end of a panel (rows of tiles not a multiple of eight wide): the lanes
                        // before it, then the rest at the start of the next, two contiguous runs (stored lane by lane,
                        // each at its own column offset, they made F(6×6)'s 512 → 512 layer at 128×128 slower).
                        let first = PanelGEMM.panelColumns - column % PanelGEMM.panelColumns
                        let next = out + columns.offset(row: c, column: column + first, rows: channels)
                        Self.inputGroup(t + tile * tx, into: group, pointStride: 8, lanes: 8)
                        for point in 0..<side {
                            let (src, p) = (group + 8 * point, point * pointStride)
                            for lane in 0..<first { at[p + lane] = src[lane] }
                            for lane in first..<lanes { next[p + lane - first] = src[lane] }
                        }
                    }
                    tx += 8
                }
            }
        }
    }

    /// `row[j] = source[j / 2]` for j in `columns` (`row` as wide as the upsampled input, `source` half as wide).
    @inline(__always)
    static func widen(_ source: UnsafePointer<Float>, into row: UnsafeMutablePointer<Float>, columns: Range<Int>) {
        var j = columns.lowerBound & ~1
        while j + 8 <= columns.upperBound {
            let s = UnsafeRawPointer(source + j / 2).loadUnaligned(as: SIMD4<Float>.self)
            let pairs = SIMD8(s[0], s[0], s[1], s[1], s[2], s[2], s[3], s[3])
            UnsafeMutableRawPointer(row + j).storeBytes(of: pairs, as: SIMD8<Float>.self)
            j += 8
        }
        while j < columns.upperBound {
            row[j] = source[j / 2]
            j += 1
        }
    }

    /// The first `lanes` lanes of `value` at `p`.
    @inline(__always)
    static func store(_ value: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>, lanes: Int) {
        if lanes == 8 {
            UnsafeMutableRawPointer(p).storeBytes(of: value, as: SIMD8<Float>.self)
        } else {
            for lane in 0..<lanes { p[lane] = value[lane] }
        }
    }

    /// U[ξ][o][i] = (G·g·Gᵀ)[ξ] for `outChannels` filters g = w[o][i] (3×3), packed as `PanelGEMM`'s A:
    /// `[points][outChannels / 8][inChannels][8]`, output channel o in lane o % 8; rows past `outChannels` are zero.
    ///
    /// Eight output channels at a time, one SIMD lane each, so every store of U is eight contiguous floats. Each
    /// group's eight rows of w are interleaved `Kernels.interleavedInputs` input channels at a time into a buffer that
    /// stays in L1, then transformed (`kw_winograd_f4_filters` for F(4×4)): gathered straight from w by the
    /// transform, the weights came from memory at a quarter of its speed and the eight row addresses made the
    /// compiler spill the transform's vectors (the transform took 13 % of a UNet step). Interleaving whole rows first
    /// (72 · Cin floats, out of L1 from 64 input channels) and transforming them in Swift was measured slower.
    static func transformWeights(
        _ w: UnsafePointer<Float>, outChannels: Int, inChannels: Int, rowFloats: Int? = nil,
        into u: UnsafeMutablePointer<Float>
    ) {
        let plane = Self.plane(PanelGEMM.packedCount(rows: outChannels, k: inChannels))
        let rowFloats = rowFloats ?? inChannels * 9
        ComputePool.current.run(chunks: (outChannels + 7) / 8) { group in
            let first = group * 8
            let lanes = min(8, outChannels - first)
            let row = w + first * rowFloats
            let dst = u + group * inChannels * PanelGEMM.aStep
            // [9 · chunk][8]: `chunk` input channels' filters, lane l holding output channel first + l (zeros past the
            // last).
            let chunk = Kernels.interleavedInputs
            let filters = Scratch.current.buffer(4, count: chunk * 72)
            var i = 0
            while i < inChannels {
                let n = min(chunk, inChannels - i)
                // By 8 × 8 transposes in registers where whole, eight stores of eight floats each (one float at a
                // time, the stores held the transform back more than the reads from memory).
                Kernels.interleave(row + 9 * i, rows: lanes, stride: rowFloats, k: 9 * n, into: filters)
                transformFilterGroups(filters, count: n, into: dst + i * PanelGEMM.aStep, pointStride: plane)
                i += n
            }
        }
    }
}

extension WinogradF4 {
    /// The 36 transformed values of `count` groups of eight 3×3 filters (`kw_winograd_f4_filters`: written in Swift,
    /// the optimiser split the transform into 128-bit halves, blends and stack spills).
    @inline(__always)
    static func transformFilterGroups(
        _ g: UnsafePointer<Float>, count: Int, into dst: UnsafeMutablePointer<Float>, pointStride: Int
    ) {
        kw_winograd_f4_filters(g, count, dst, PanelGEMM.aStep, pointStride)
    }
}

/// The 4×4 output tiles of one F(4×4, 3×3) convolution and the input and output transforms.
///
/// Both transforms work on eight horizontally adjacent tiles at once (one SIMD lane each). The input transform is in C
/// (`kw_winograd_f4_input_columns`, `kw_winograd_f4_input_group`), the output transform down the columns in Swift and
/// along the rows in C (`kw_winograd_f4_output_group`). Along the rows the tiles' 6-wide input
/// windows, overlapping by two, are transposed from four 8-float loads and the 4-wide outputs transposed back into 32
/// floats. Written with Swift's SIMD32 halves, the optimiser turned those shuffles into 128-bit inserts, blends and
/// stack spills; in C both the convolutions and a whole UNet step run faster.
struct WinogradF4: WinogradTiling {
    typealias Lanes = SIMD8<Float>
    let batch: Int, height: Int, width: Int
    let tilesH: Int, tilesW: Int
    /// Whether the input is read from a tensor of half its height and width, upsampled (nearest) on the way.
    let upsampled: Bool

    init(batch: Int, height: Int, width: Int, upsampled: Bool) {
        precondition(!upsampled || (height % 2 == 0 && width % 2 == 0), "upsampled input of odd size")
        (self.batch, self.height, self.width, self.upsampled) = (batch, height, width, upsampled)
        tilesH = (height + 3) / 4
        tilesW = (width + 3) / 4
    }

    /// Transformed values per tile (6 × 6): the number of products.
    static let points = 36

    static let tile = 4

    static func inputColumns(
        _ rows: UnsafePointer<UnsafePointer<Float>?>, first: Int, end: Int, into out: UnsafeMutablePointer<Float>,
        stride: Int
    ) {
        kw_winograd_f4_input_columns(rows, first, end, out, stride)
    }

    static func inputGroup(
        _ t: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>, pointStride: Int, lanes: Int
    ) {
        kw_winograd_f4_input_group(t, dst, pointStride, lanes)
    }

    /// y[b][first + o] = Aᵀ·M[·][o][column]·A (+ bias) for `channels` output channels and the tiles in `tileRows`,
    /// cropped to the image; each M[ξ] has `rows` rows of `columns.padded` floats.
    func transformOutput(
        _ m: UnsafePointer<Float>, rows mRows: Int, columns: PanelGEMM.Columns, channels: Int, firstChannel: Int,
        totalChannels: Int, tileRows: Range<Int>, tileColumns: Range<Int>, bias: UnsafePointer<Float>?,
        into y: UnsafeMutablePointer<Float>
    ) {
        let (height, width) = (height, width)
        let (firstTile, tilesW) = (tileColumns.lowerBound, tileColumns.count)
        // Output columns end here (another band may own the columns after).
        let limit = min(width, 4 * tileColumns.upperBound)
        let rowStride = columns.padded
        let pointStride = Self.plane(mRows * rowStride)
        let groups = (tilesW + 7) / 8
        // Aᵀ applied down the columns of one tile row: 4 × 6 × (8 · groups), then along the rows.
        let rowsWidth = 8 * groups
        eachTileRow(tileRows, channels: channels, buffer: 24 * rowsWidth) { band, b, ty, o, rows in
            let add = bias?[firstChannel + o] ?? 0
            let plane = y + (b * totalChannels + firstChannel + o) * height * width
            let firstColumn = band * tilesW
            // Aᵀ rows: [1,1,1,1,1,0], [0,1,−1,2,−2,0], [0,1,1,4,4,0], [0,1,−1,8,−8,1].
            for j in 0..<6 {
                let src = m + j * pointStride + o * rowStride + firstColumn
                let (m0, m1, m2) = (src, src + 6 * pointStride, src + 12 * pointStride)
                let (m3, m4, m5) = (src + 18 * pointStride, src + 24 * pointStride, src + 30 * pointStride)
                let row = rows + j * rowsWidth
                let stride = 6 * rowsWidth
                // Whole groups of eight columns: M has `winogradSlack` floats after its end for the last one.
                var tx = 0
                while tx < tilesW {
                    @inline(__always) func lanes(_ p: UnsafePointer<Float>) -> Lanes {
                        UnsafeRawPointer(p + tx).loadUnaligned(as: Lanes.self)
                    }
                    let (p, q) = (lanes(m1) + lanes(m2), lanes(m1) - lanes(m2))
                    let (s, d) = (lanes(m3) + lanes(m4), lanes(m3) - lanes(m4))
                    @inline(__always) func put(_ value: Lanes, _ at: UnsafeMutablePointer<Float>) {
                        UnsafeMutableRawPointer(at + tx).storeBytes(of: value, as: Lanes.self)
                    }
                    put(lanes(m0) + p + s, row)
                    put(q + 2 * d, row + stride)
                    put(p + 4 * s, row + 2 * stride)
                    put(q + 8 * d + lanes(m5), row + 3 * stride)
                    tx += 8
                }
            }
            let outRows = min(4, height - 4 * ty)
            for a in 0..<outRows {
                let e = rows + a * 6 * rowsWidth
                let dst = plane + (4 * ty + a) * width
                var tx = 0
                while tx < tilesW {
                    let x0 = 4 * (firstTile + tx)
                    kw_winograd_f4_output_group(e + tx, rowsWidth, add, dst + x0, min(32, limit - x0))
                    tx += 8
                }
            }
        }
    }
}
