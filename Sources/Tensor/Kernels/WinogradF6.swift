import CKernels

// Winograd minimal filtering F(6×6, 3×3) (interpolation points 0, ±1, ±2, ±½, ∞): each 6×6 output tile from its 8×8
// input patch with 64 multiplications per input channel instead of 324, 0.79 × F(4×4, 3×3)'s 36 per 4×4 tile.
//
// Its transforms scale values by up to 32 (Aᵀ) and 5.25 (Bᵀ); in float32 against a double-precision direct
// convolution, on 256 random input channels (numpy, the same transforms): max error 1.7e-5 of max|reference|
// against F(4×4)'s 1.1e-5. `Kernels.convAlgorithm` says where it is taken (planes from 128×128, weights on the same
// path as F(4×4)'s).
//
// Matrices (the correlation form of Lavin & Gray's construction; row 0 of G and of Bᵀ negated together, which leaves
// their product unchanged):
//   Bᵀ = [1, 0, −21/4, 0, 21/4, 0, −1, 0], [0, 1, 1, −17/4, −17/4, 1, 1, 0], [0, −1, 1, 17/4, −17/4, −1, 1, 0],
//        [0, ½, ¼, −5/2, −5/4, 2, 1, 0], [0, −½, ¼, 5/2, −5/4, −2, 1, 0], [0, 2, 4, −5/2, −5, ½, 1, 0],
//        [0, −2, 4, 5/2, −5, −½, 1, 0], [0, −1, 0, 21/4, 0, −21/4, 0, 1]
//   G  = [1, 0, 0], [−2/9, −2/9, −2/9], [−2/9, 2/9, −2/9], [1/90, 1/45, 2/45], [1/90, −1/45, 2/45],
//        [32/45, 16/45, 8/45], [32/45, −16/45, 8/45], [0, 0, 1]
//   Aᵀ = [1, 1, 1, 1, 1, 1, 1, 0], [0, 1, −1, 2, −2, ½, −½, 0], [0, 1, 1, 4, 4, ¼, ¼, 0], [0, 1, −1, 8, −8, ⅛, −⅛, 0],
//        [0, 1, 1, 16, 16, 1/16, 1/16, 0], [0, 1, −1, 32, −32, 1/32, −1/32, 1]

/// The 6×6 output tiles of one F(6×6, 3×3) convolution and the input and output transforms.
///
/// As `WinogradF4`, both transforms work on eight horizontally adjacent tiles at once (one SIMD lane each). The input
/// transform is in C (`kw_winograd_f6_input_columns`, `kw_winograd_f6_input_group`: in Swift the optimiser kept the
/// eight row pointers on the stack and split part of the transform into 128-bit halves, which made the VAE's 128 → 128
/// layers at 512×512 slower). The tiles' 8-wide input windows start six columns apart: the eight windows are loaded
/// whole and transposed in registers (window l becomes lane l of the eight vectors); the output transform is in C too
/// (`kw_winograd_f6_output_columns`, `kw_winograd_f6_output_group`: no faster than the Swift one, but one Aᵀ beside the
/// one Bᵀ), where the six outputs of each tile are transposed back in registers and stored as overlapping 8-float
/// writes, left to right, each overwriting the two spare floats of the one before.
struct WinogradF6: WinogradTiling {
    typealias Lanes = SIMD8<Float>
    typealias Eight = (Lanes, Lanes, Lanes, Lanes, Lanes, Lanes, Lanes, Lanes)
    let batch: Int, height: Int, width: Int
    let tilesH: Int, tilesW: Int
    /// Whether the input is read from a tensor of half its height and width, upsampled (nearest) on the way.
    let upsampled: Bool

    init(batch: Int, height: Int, width: Int, upsampled: Bool) {
        precondition(!upsampled || (height % 2 == 0 && width % 2 == 0), "upsampled input of odd size")
        (self.batch, self.height, self.width, self.upsampled) = (batch, height, width, upsampled)
        tilesH = (height + 5) / 6
        tilesW = (width + 5) / 6
    }

    static let points = 64

    /// G·(a, b, c)ᵀ on eight lanes.
    @inline(__always)
    static func filterTransform(_ a: Lanes, _ b: Lanes, _ c: Lanes) -> Eight {
        let (sum, odd) = ((a + c) * (-2.0 / 9), b * (-2.0 / 9))
        let (even3, odd3) = (a * (1.0 / 90) + c * (2.0 / 45), b * (1.0 / 45))
        let (even5, odd5) = (a * (32.0 / 45) + c * (8.0 / 45), b * (16.0 / 45))
        return (a, sum + odd, sum - odd, even3 + odd3, even3 - odd3, even5 + odd5, even5 - odd5, c)
    }

    /// The 64 transformed values of `count` groups of eight 3×3 filters.
    static func transformFilterGroups(
        _ g: UnsafePointer<Float>, count: Int, into dst: UnsafeMutablePointer<Float>, pointStride: Int
    ) {
        for n in 0..<count {
            transformFilterGroup(g + 72 * n, into: dst + n * PanelGEMM.aStep, pointStride: pointStride)
        }
    }

    /// The 64 transformed values of eight 3×3 filters interleaved at `g`: G applied down each kernel column, then
    /// along each of the eight rows that gives.
    @inline(__always)
    static func transformFilterGroup(
        _ g: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>, pointStride: Int
    ) {
        @inline(__always) func tap(_ e: Int) -> Lanes {
            UnsafeRawPointer(g + 8 * e).loadUnaligned(as: Lanes.self)
        }
        let c0 = filterTransform(tap(0), tap(3), tap(6))
        let c1 = filterTransform(tap(1), tap(4), tap(7))
        let c2 = filterTransform(tap(2), tap(5), tap(8))
        @inline(__always) func emit(_ i: Int, _ a: Lanes, _ b: Lanes, _ c: Lanes) {
            let row = filterTransform(a, b, c)
            let out = dst + 8 * i * pointStride
            Self.storeEight(row, out, stride: pointStride)
        }
        emit(0, c0.0, c1.0, c2.0)
        emit(1, c0.1, c1.1, c2.1)
        emit(2, c0.2, c1.2, c2.2)
        emit(3, c0.3, c1.3, c2.3)
        emit(4, c0.4, c1.4, c2.4)
        emit(5, c0.5, c1.5, c2.5)
        emit(6, c0.6, c1.6, c2.6)
        emit(7, c0.7, c1.7, c2.7)
    }

    /// The eight vectors at `p`, `p + stride`, … (the first `lanes` lanes of each).
    @inline(__always)
    static func storeEight(_ r: Eight, _ p: UnsafeMutablePointer<Float>, stride: Int, lanes: Int = 8) {
        store(r.0, p, lanes: lanes)
        store(r.1, p + stride, lanes: lanes)
        store(r.2, p + 2 * stride, lanes: lanes)
        store(r.3, p + 3 * stride, lanes: lanes)
        store(r.4, p + 4 * stride, lanes: lanes)
        store(r.5, p + 5 * stride, lanes: lanes)
        store(r.6, p + 6 * stride, lanes: lanes)
        store(r.7, p + 7 * stride, lanes: lanes)
    }

    static let tile = 6

    static func inputColumns(
        _ rows: UnsafePointer<UnsafePointer<Float>?>, first: Int, end: Int, into out: UnsafeMutablePointer<Float>,
        stride: Int
    ) {
        kw_winograd_f6_input_columns(rows, first, end, out, stride)
    }

    static func inputGroup(
        _ t: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>, pointStride: Int, lanes: Int
    ) {
        kw_winograd_f6_input_group(t, dst, pointStride, lanes)
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
        let limit = min(width, 6 * tileColumns.upperBound)
        let rowStride = columns.padded
        let pointStride = Self.plane(mRows * rowStride)
        let groups = (tilesW + 7) / 8
        // Aᵀ applied down the columns of one tile row: 6 × 8 × (8 · groups), then along the rows; then room for one
        // group's transposed outputs.
        let rowsWidth = 8 * groups
        eachTileRow(tileRows, channels: channels, buffer: 48 * rowsWidth + 64) { band, b, ty, o, rows in
            let edge = rows + 48 * rowsWidth
            let add = bias?[firstChannel + o] ?? 0
            let plane = y + (b * totalChannels + firstChannel + o) * height * width
            let firstColumn = band * tilesW
            // Whole groups of eight columns: M has `winogradSlack` floats after its end for the last one.
            for j in 0..<8 {
                kw_winograd_f6_output_columns(
                    m + j * pointStride + o * rowStride + firstColumn, 8 * pointStride, rowsWidth,
                    rows + j * rowsWidth, 8 * rowsWidth)
            }
            let outRows = min(6, height - 6 * ty)
            for a in 0..<outRows {
                let e = rows + a * 8 * rowsWidth
                let dst = plane + (6 * ty + a) * width
                var tx = 0
                while tx < tilesW {
                    // Tile l's six outputs at x0 + 6·l, stored as eight floats, the last two overwritten by the next
                    // tile's (or the next group's).
                    let x0 = 6 * (firstTile + tx)
                    if x0 + 50 <= limit {
                        kw_winograd_f6_output_group(e + tx, rowsWidth, add, dst + x0, 6)
                    } else {
                        // At the right edge: whole stores while they stay within the limit, then single floats.
                        kw_winograd_f6_output_group(e + tx, rowsWidth, add, edge, 8)
                        for l in 0..<8 {
                            let at = x0 + 6 * l
                            if at + 8 <= limit {
                                UnsafeMutableRawPointer(dst + at).storeBytes(
                                    of: UnsafeRawPointer(edge + 8 * l).loadUnaligned(as: Lanes.self), as: Lanes.self
                                )
                            } else {
                                for q in 0..<max(0, min(6, limit - at)) { dst[at + q] = edge[8 * l + q] }
                            }
                        }
                    }
                    tx += 8
                }
            }
        }
    }
}
