import CKernels

// Products of operands that the Winograd transforms write already packed, so nothing is copied between a transform and
// its product (OpenBLAS packs both operands of every call: 12–13 % of a UNet step and 11 % of a VAE decode went to
// its copy routines, since each of the 36 products meets its operands only once).
//
// The register tile is 4 rows × 24 columns: twelve 8-float accumulators, three vector loads of B and four broadcasts
// of A per step of k, which keeps both FMA pipes busy with AVX2 (from the caches, as fast as OpenBLAS's own kernels). A
// holds its panels in pairs, eight floats per step of k, as the weight transform computes eight output channels at once
// (one 32-byte store per point; stored as two halves, the compiler split the whole transform into 128-bit halves and
// spilled it); twenty-four columns are three groups of the input transform's eight tiles. With AVX-512VL's 32 registers
// the 24-wide panels are met by both panels of a pair at once (`kw_gemm_8x24`): where k is long the panel of B (24 · k
// floats, 74 KB for k = 768) is out of L1 and came from L2 once per four rows; now once per eight, which made the
// UNet's attention and its 64×64 convolutions faster.

/// C = A·B for A packed in pairs of 4-row panels (`[rowPanels / 2][k][8]`, rows 0–3 of the pair then rows 4–7 at
/// each step of k) and B in panels of 24 columns (`[panel][k][24]`, the last panel 8, 16 or 24 wide).
enum PanelGEMM {
    /// Rows of A (and C) per panel.
    static let panelRows = 4
    /// Columns of B (and C) per full panel.
    static let panelColumns = 24

    /// Where the columns of a packed B live: panels of 24 columns, the last holding the rest padded to a multiple of
    /// eight (8, 16 or 24 wide; the padding columns are never read back from C).
    struct Columns {
        /// Columns in use.
        let count: Int
        /// Panels of 24 columns.
        let fullPanels: Int
        /// Width of the last, partial panel: 0, 8, 16 or 24.
        let tail: Int

        init(_ count: Int) {
            self.count = count
            fullPanels = count / PanelGEMM.panelColumns
            tail = (count % PanelGEMM.panelColumns + 7) / 8 * 8
        }

        /// Columns of storage, padding included: the row stride of C.
        var padded: Int { fullPanels * PanelGEMM.panelColumns + tail }
        /// Panels in all.
        var panels: Int { fullPanels + (tail > 0 ? 1 : 0) }

        /// Width of panel `p`.
        @inline(__always) func width(_ p: Int) -> Int { p < fullPanels ? PanelGEMM.panelColumns : tail }

        /// Offset of element (row `k`, column `j`) in a packed B of `rows` rows.
        @inline(__always) func offset(row k: Int, column j: Int, rows: Int) -> Int {
            let p = j / PanelGEMM.panelColumns
            return p * PanelGEMM.panelColumns * rows + k * width(p) + j - p * PanelGEMM.panelColumns
        }

        /// Whether columns `j..<j + n` lie in one panel (so they are contiguous in every row).
        @inline(__always) func samePanel(_ j: Int, _ n: Int) -> Bool {
            j / PanelGEMM.panelColumns == (j + n - 1) / PanelGEMM.panelColumns
        }
    }

    /// Rows of C for `rows` rows of A: whole panels.
    static func packedRows(_ rows: Int) -> Int { (rows + panelRows - 1) / panelRows * panelRows }

    /// Whether the processor has AVX-512VL, whose 32 registers hold three pairs of rows against an 8-wide panel of B
    /// (`kw_gemm_rows_x8`: 11 loads per 24 multiply-adds, against the 8 × 8 tile's 9 per 8) and a pair of rows
    /// against a 24-wide one (`kw_gemm_8x24`: 11 per 24, against the 4 × 24 tile's 7 per 12).
    static let wide = kw_has_avx512() != 0

    /// Whether to multiply pairs of 24-wide panels in sixteen-lane vectors (`kw_gemm_8x48`): where the processor has
    /// AVX-512VL and its cores multiply-add sixteen lanes at least 1.5 times as fast as eight (`fmaLaneRatio`),
    /// i.e. have two 512-bit units: there the UNet's 64×64 and 32×32 levels took about a quarter less time. Where
    /// 512-bit multiply-adds run as two halves (Zen 4) the tile would do the same work in as many cycles, and the
    /// choice leaves the results' bits as they are either way.
    public static let sixteenLanes = wide && fmaLaneRatio() >= 1.5

    /// The rate of sixteen-lane multiply-adds over eight-lane ones on one core (`kw_fma_peak`, best of three runs of
    /// ≈ 2 ms each); 0 without AVX-512.
    static func fmaLaneRatio() -> Double {
        func best(_ lanes: Int32) -> Double {
            (0..<3).map { _ in kw_fma_peak(1, 1_000_000, lanes) }.max() ?? -1
        }
        let (eight, sixteen) = (best(8), best(16))
        return eight > 0 && sixteen > 0 ? sixteen / eight : 0
    }

    /// Floats per step of k in a packed A: a pair of panels.
    static let aStep = 2 * panelRows

    /// Floats of a packed A of `rows` rows (whole pairs of panels, the rows past `rows` zero) and `k` columns.
    static func packedCount(rows: Int, k: Int) -> Int { (rows + aStep - 1) / aStep * aStep * k }

    /// Cache lines to bring into L2 while a product runs, one every `Prefetch.steps` steps of k of its 8- and 16-wide
    /// register tiles (the few-tile levels' last panel of B; the 4 × 24 tile has no register to spare):
    /// the memory a thread reads next (`Kernels.winograd`'s few-tile blocks: the next block's weights), fetched while
    /// the products keep the core busy instead of while the next transform waits for it.
    struct Prefetch {
        /// The first line (a hint only: any address is safe).
        var start: UnsafeRawPointer?
        /// Lines from `start`, 64 bytes each.
        var lines: Int

        static var none: Prefetch { Prefetch(start: nil, lines: 0) }
        /// Steps of k per prefetch: 8, one line per 64 multiply-adds of the 8 × 8 tile, 128 of the 4 × 16 one.
        static let steps = 8

        /// The first lines, as many as a tile over `k` steps issues, and the rest left in `self`.
        @inline(__always) mutating func take(steps k: Int) -> Prefetch {
            guard let start, lines > 0 else { return .none }
            let count = min(lines, (k + Self.steps - 1) / Self.steps)
            (self.start, lines) = (start + 64 * count, lines - count)
            return Prefetch(start: start, lines: count)
        }
    }

    /// `step()` k times, prefetching the next of `prefetch`'s lines before every `Prefetch.steps` of them (as nested
    /// loops: with a test of the step in one loop the compiler spilled the 8 × 8 tile's accumulators; the 4 × 24 tile
    /// spilled either way, so it prefetches nothing).
    @inline(__always)
    static func steps(_ k: Int, _ prefetch: Prefetch, _ step: () -> Void) {
        var (i, line) = (0, 0)
        while i < k {
            let end = min(k, i + Prefetch.steps)
            if line < prefetch.lines, let start = prefetch.start {
                kw_prefetch(start + 64 * line)
                line += 1
            }
            while i < end {
                step()
                i += 1
            }
        }
    }

    /// C[0..<4·rowPanels][0..<columns.padded] = A·B, C's rows `ldc` apart; `prefetch` spread over the register tiles;
    /// `wide`: the AVX-512VL tiles (pairs of row panels against 24- and 8-wide panels of B); `sixteen` (with `wide`):
    /// pairs of whole 24-wide panels in sixteen-lane vectors (`kw_gemm_8x48`). Panel `p` of B starts at
    /// `b + p · bPanelStride` (default 24 · k: packed back to back) and its columns of C at `c + p · cPanelStride`
    /// (default 24: C row-major), so a product can write C as the next one's packed B (`ldc` 24, panels of C
    /// `cPanelStride` apart).
    ///
    /// Panels of B are taken one at a time and met by every panel of A (blocks of A up to about 256 KiB, so a block
    /// stays in the core's L2 across the panels of B while each panel of B stays in L1).
    static func multiply(
        a: UnsafePointer<Float>, rowPanels: Int, b: UnsafePointer<Float>, columns: Columns, k: Int,
        c: UnsafeMutablePointer<Float>, ldc: Int, prefetch: Prefetch = .none, wide: Bool = PanelGEMM.wide,
        sixteen: Bool = PanelGEMM.sixteenLanes, bPanelStride: Int? = nil, cPanelStride: Int = PanelGEMM.panelColumns
    ) {
        var prefetch = prefetch
        let bStride = bPanelStride ?? panelColumns * k
        let panelFloats = panelRows * k
        let block = max(2, (64 << 10) / max(1, panelFloats)) / 2 * 2  // whole pairs
        /// Panel `r` of A: its pair, then its half of each step.
        @inline(__always) func panel(_ r: Int) -> UnsafePointer<Float> { a + r / 2 * aStep * k + r % 2 * panelRows }
        var first = 0
        while first < rowPanels {
            let last = min(rowPanels, first + block)
            var p = 0
            while p < columns.panels {
                let bp = b + p * bStride
                let cp = c + p * cPanelStride
                if wide && sixteen && p + 1 < columns.fullPanels {
                    // Two whole panels at once in sixteen-lane vectors (`kw_gemm_8x48`).
                    var r = first
                    while r + 1 < last {
                        kw_gemm_8x48(k, panel(r), bp, bStride, cp + r * panelRows * ldc, ldc, cPanelStride)
                        r += 2
                    }
                    while r < last {
                        kernel4x24(k, panel(r), bp, cp + r * panelRows * ldc, ldc, add: false)
                        kernel4x24(k, panel(r), bp + bStride, cp + cPanelStride + r * panelRows * ldc, ldc, add: false)
                        r += 1
                    }
                    p += 2
                    continue
                }
                switch columns.width(p) {
                case 24:
                    // With AVX-512VL both panels of a pair at once (`kw_gemm_8x24`: each step of B read once for
                    // eight rows instead of four).
                    var r = first
                    while wide && r + 1 < last {
                        kw_gemm_8x24(k, panel(r), bp, cp + r * panelRows * ldc, ldc)
                        r += 2
                    }
                    while r < last {
                        kernel4x24(k, panel(r), bp, cp + r * panelRows * ldc, ldc, add: false)
                        r += 1
                    }
                case 16:
                    for r in first..<last {
                        kernel4x16(k, panel(r), bp, cp + r * panelRows * ldc, ldc, prefetch.take(steps: k))
                    }
                default:
                    // Eight columns: both panels of a pair at once (eight accumulators, one load of B per step).
                    var r = first
                    while wide && r + 1 < last {
                        let pairs = min(3, (last - r) / 2)
                        let p = prefetch.take(steps: k * pairs)
                        kw_gemm_rows_x8(
                            k, pairs, panel(r), aStep * k, bp, 8, cp + r * panelRows * ldc, ldc, 0,
                            p.start?.assumingMemoryBound(to: CChar.self), p.lines)
                        r += 2 * pairs
                    }
                    while r + 1 < last {
                        kernel8x8(k, panel(r), bp, cp + r * panelRows * ldc, ldc, prefetch.take(steps: k))
                        r += 2
                    }
                    if r < last { kernel4x8(k, panel(r), bp, cp + r * panelRows * ldc, ldc) }
                }
                p += 1
            }
            first = last
        }
    }

    typealias Lanes = SIMD8<Float>

    @inline(__always) static func load(_ p: UnsafePointer<Float>) -> Lanes {
        UnsafeRawPointer(p).loadUnaligned(as: Lanes.self)
    }

    @inline(__always) static func store(_ v: Lanes, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: Lanes.self)
    }

    // The four kernels are written out rather than generic: with the accumulators in an InlineArray the compiler
    // kept them on the stack (a third of the speed).

    /// C[4][24] = A[k][4]ᵀ · B[k][24], A's steps `aStep` floats apart.
    @inline(never)
    static func kernel4x24(
        _ k: Int, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ c: UnsafeMutablePointer<Float>, _ ldc: Int,
        add: Bool
    ) {
        var (c00, c01, c02, c10, c11, c12) = (Lanes(), Lanes(), Lanes(), Lanes(), Lanes(), Lanes())
        var (c20, c21, c22, c30, c31, c32) = (Lanes(), Lanes(), Lanes(), Lanes(), Lanes(), Lanes())
        var (pa, pb) = (a, b)
        for _ in 0..<k {
            let (b0, b1, b2) = (load(pb), load(pb + 8), load(pb + 16))
            var s = Lanes(repeating: pa[0])
            (c00, c01, c02) = (c00.addingProduct(s, b0), c01.addingProduct(s, b1), c02.addingProduct(s, b2))
            s = Lanes(repeating: pa[1])
            (c10, c11, c12) = (c10.addingProduct(s, b0), c11.addingProduct(s, b1), c12.addingProduct(s, b2))
            s = Lanes(repeating: pa[2])
            (c20, c21, c22) = (c20.addingProduct(s, b0), c21.addingProduct(s, b1), c22.addingProduct(s, b2))
            s = Lanes(repeating: pa[3])
            (c30, c31, c32) = (c30.addingProduct(s, b0), c31.addingProduct(s, b1), c32.addingProduct(s, b2))
            pa += aStep
            pb += 24
        }
        if add {
            (c00, c01, c02) = (c00 + load(c), c01 + load(c + 8), c02 + load(c + 16))
            (c10, c11, c12) = (c10 + load(c + ldc), c11 + load(c + ldc + 8), c12 + load(c + ldc + 16))
            (c20, c21, c22) = (c20 + load(c + 2 * ldc), c21 + load(c + 2 * ldc + 8), c22 + load(c + 2 * ldc + 16))
            (c30, c31, c32) = (c30 + load(c + 3 * ldc), c31 + load(c + 3 * ldc + 8), c32 + load(c + 3 * ldc + 16))
        }
        store(c00, c)
        store(c01, c + 8)
        store(c02, c + 16)
        store(c10, c + ldc)
        store(c11, c + ldc + 8)
        store(c12, c + ldc + 16)
        store(c20, c + 2 * ldc)
        store(c21, c + 2 * ldc + 8)
        store(c22, c + 2 * ldc + 16)
        store(c30, c + 3 * ldc)
        store(c31, c + 3 * ldc + 8)
        store(c32, c + 3 * ldc + 16)
    }

    /// C[4][16] = A[k][4]ᵀ · B[k][16], A's steps `aStep` floats apart.
    @inline(never)
    static func kernel4x16(
        _ k: Int, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ c: UnsafeMutablePointer<Float>, _ ldc: Int,
        _ prefetch: Prefetch
    ) {
        var (c00, c01, c10, c11) = (Lanes(), Lanes(), Lanes(), Lanes())
        var (c20, c21, c30, c31) = (Lanes(), Lanes(), Lanes(), Lanes())
        var (pa, pb) = (a, b)
        steps(k, prefetch) {
            let (b0, b1) = (load(pb), load(pb + 8))
            var s = Lanes(repeating: pa[0])
            (c00, c01) = (c00.addingProduct(s, b0), c01.addingProduct(s, b1))
            s = Lanes(repeating: pa[1])
            (c10, c11) = (c10.addingProduct(s, b0), c11.addingProduct(s, b1))
            s = Lanes(repeating: pa[2])
            (c20, c21) = (c20.addingProduct(s, b0), c21.addingProduct(s, b1))
            s = Lanes(repeating: pa[3])
            (c30, c31) = (c30.addingProduct(s, b0), c31.addingProduct(s, b1))
            pa += aStep
            pb += 16
        }
        store(c00, c)
        store(c01, c + 8)
        store(c10, c + ldc)
        store(c11, c + ldc + 8)
        store(c20, c + 2 * ldc)
        store(c21, c + 2 * ldc + 8)
        store(c30, c + 3 * ldc)
        store(c31, c + 3 * ldc + 8)
    }

    /// C[8][8] = A[k][8]ᵀ · B[k][8]: a whole pair of panels.
    @inline(never)
    static func kernel8x8(
        _ k: Int, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ c: UnsafeMutablePointer<Float>, _ ldc: Int,
        _ prefetch: Prefetch
    ) {
        var (c0, c1, c2, c3) = (Lanes(), Lanes(), Lanes(), Lanes())
        var (c4, c5, c6, c7) = (Lanes(), Lanes(), Lanes(), Lanes())
        var (pa, pb) = (a, b)
        steps(k, prefetch) {
            let b0 = load(pb)
            c0 = c0.addingProduct(Lanes(repeating: pa[0]), b0)
            c1 = c1.addingProduct(Lanes(repeating: pa[1]), b0)
            c2 = c2.addingProduct(Lanes(repeating: pa[2]), b0)
            c3 = c3.addingProduct(Lanes(repeating: pa[3]), b0)
            c4 = c4.addingProduct(Lanes(repeating: pa[4]), b0)
            c5 = c5.addingProduct(Lanes(repeating: pa[5]), b0)
            c6 = c6.addingProduct(Lanes(repeating: pa[6]), b0)
            c7 = c7.addingProduct(Lanes(repeating: pa[7]), b0)
            pa += aStep
            pb += 8
        }
        store(c0, c)
        store(c1, c + ldc)
        store(c2, c + 2 * ldc)
        store(c3, c + 3 * ldc)
        store(c4, c + 4 * ldc)
        store(c5, c + 5 * ldc)
        store(c6, c + 6 * ldc)
        store(c7, c + 7 * ldc)
    }

    /// C[4][8] = A[k][4]ᵀ · B[k][8], A's steps `aStep` floats apart. One accumulator per row, like every other tile:
    /// each element of C is one chain of multiply-adds over k in order, whichever tile computes it, so a row's
    /// result does not depend on the rows around it (`panelLinear` relies on it: a batch's rows must come out as
    /// each request's alone). With two accumulators (even and odd k) it hid the multiply-adds' latency, but a lone
    /// row panel then summed in another order than the same rows in a pair.
    @inline(never)
    static func kernel4x8(
        _ k: Int, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ c: UnsafeMutablePointer<Float>, _ ldc: Int
    ) {
        var (c0, c1, c2, c3) = (Lanes(), Lanes(), Lanes(), Lanes())
        var (pa, pb) = (a, b)
        for _ in 0..<k {
            let b0 = load(pb)
            c0 = c0.addingProduct(Lanes(repeating: pa[0]), b0)
            c1 = c1.addingProduct(Lanes(repeating: pa[1]), b0)
            c2 = c2.addingProduct(Lanes(repeating: pa[2]), b0)
            c3 = c3.addingProduct(Lanes(repeating: pa[3]), b0)
            pa += aStep
            pb += 8
        }
        store(c0, c)
        store(c1, c + ldc)
        store(c2, c + 2 * ldc)
        store(c3, c + 3 * ldc)
    }
}
