import TestSupport
import Testing

@testable import Tensor

/// The Winograd products' register tiles against a plain triple loop in double precision: every panel width (24, 16
/// and 8, with pairs of row panels and a lone one), odd and single steps of k, and row counts that leave a panel
/// partly empty.
@Suite struct PanelGEMMTests {
    static let cases = [
        // (rows, columns, k)
        (1, 1, 1), (4, 24, 3), (5, 30, 7), (8, 8, 5), (12, 8, 1), (13, 53, 9), (7, 16, 2), (16, 72, 33),
        (20, 48, 6), (20, 48, 4_100),
        // A 16-wide last panel against a pair and a lone row panel, and against three pairs and a lone one.
        (12, 40, 9), (28, 16, 5),
    ]

    /// Every set of register tiles the processor can run: with AVX-512VL the wide ones too, with and without the
    /// sixteen-lane 8 × 48 tile (which is used only where it is faster, but runs on any AVX-512 processor).
    static let tileSets = PanelGEMM.wide ? [Tiles.avx2, .wide, .sixteen] : [.avx2]

    enum Tiles: CaseIterable, Sendable { case avx2, wide, sixteen }

    /// C = A·B through `PanelGEMM.multiply` with `tiles`, C's padding columns NaN.
    static func product(
        _ a: [Float], rows: Int, _ b: [Float], columns count: Int, k: Int, tiles: Tiles,
        prefetch lines: UnsafeRawPointer? = nil
    ) -> [Float] {
        let columns = PanelGEMM.Columns(count)
        let panels = PanelGEMM.packedRows(rows) / PanelGEMM.panelRows
        var packedA = [Float](repeating: 0, count: PanelGEMM.packedCount(rows: rows, k: k))
        for r in 0..<rows {
            for i in 0..<k { packedA[r / 8 * 8 * k + i * PanelGEMM.aStep + r % 8] = a[r * k + i] }
        }
        // Padding columns hold NaN: they may only reach C's padding columns.
        var packedB = [Float](repeating: .nan, count: k * columns.padded)
        for i in 0..<k {
            for j in 0..<count { packedB[columns.offset(row: i, column: j, rows: k)] = b[i * count + j] }
        }
        var out = [Float](repeating: .nan, count: panels * PanelGEMM.panelRows * columns.padded)
        let prefetch = lines.map { PanelGEMM.Prefetch(start: $0, lines: 64) } ?? .none
        packedA.withUnsafeBufferPointer { pa in
            packedB.withUnsafeBufferPointer { pb in
                out.withUnsafeMutableBufferPointer { pc in
                    PanelGEMM.multiply(
                        a: pa.baseAddress!, rowPanels: panels, b: pb.baseAddress!, columns: columns, k: k,
                        c: pc.baseAddress!, ldc: columns.padded, prefetch: prefetch, wide: tiles != .avx2,
                        sixteen: tiles == .sixteen)
                }
            }
        }
        return out
    }

    @Test(arguments: cases, tileSets)
    func matchesPlainProduct(_ c: (Int, Int, Int), tiles: Tiles) {
        let (rows, count, k) = c
        var rng = SeededGenerator(seed: 11)
        let a = rng.floats(rows * k, in: -1...1)  // [rows][k]
        let b = rng.floats(k * count, in: -1...1)  // [k][count]
        let columns = PanelGEMM.Columns(count)
        let out = Self.product(a, rows: rows, b, columns: count, k: k, tiles: tiles)
        // The same product while the 8- and 16-wide tiles prefetch lines (their steps of k then run in groups of
        // eight, the last one partial).
        let lines = [Float](repeating: 0, count: 16 * 64)
        let prefetching = lines.withUnsafeBufferPointer { pl in
            Self.product(
                a, rows: rows, b, columns: count, k: k, tiles: tiles, prefetch: UnsafeRawPointer(pl.baseAddress!))
        }
        if tiles != .avx2 {
            // Every tile runs each element's multiply-adds in one chain over k, in order: the same bits whichever
            // tiles the processor picks.
            let plain = Self.product(a, rows: rows, b, columns: count, k: k, tiles: .avx2)
            #expect(out.map(\.bitPattern) == plain.map(\.bitPattern), "rows \(rows), columns \(count), k \(k)")
        }
        let panels = PanelGEMM.packedRows(rows) / PanelGEMM.panelRows
        if panels >= 2 {
            // And a row's result does not depend on the rows around it: fewer rows, so that a row panel that was in a
            // pair comes last and alone (`panelLinear` takes a batch's rows together), give the same bits.
            let fewer = (panels % 2 == 0 ? panels - 1 : panels - 2) * PanelGEMM.panelRows
            let part = Self.product(
                Array(a[0..<(fewer * k)]), rows: fewer, b, columns: count, k: k, tiles: tiles)
            for r in 0..<fewer {
                let (x, y) = (r * columns.padded, r * columns.padded)
                #expect(
                    out[x..<(x + count)].map(\.bitPattern) == part[y..<(y + count)].map(\.bitPattern),
                    "row \(r) of \(rows) against \(fewer) rows, columns \(count), k \(k), tiles \(tiles)")
            }
        }
        #expect(
            out.map(\.bitPattern) == prefetching.map(\.bitPattern),
            "rows \(rows), columns \(count), k \(k), tiles \(tiles)")
        var worst = 0.0
        for r in 0..<rows {
            for j in 0..<count {
                var sum = 0.0
                for i in 0..<k { sum += Double(a[r * k + i]) * Double(b[i * count + j]) }
                worst = max(worst, abs(Double(out[r * columns.padded + j]) - sum))
            }
        }
        #expect(worst <= 1e-5 * Double(k), "rows \(rows), columns \(count), k \(k), tiles \(tiles): max error \(worst)")
    }

    /// Panels of B and of C apart from each other (`bPanelStride`, `cPanelStride`; the attention writes its scores as
    /// the next product's packed B): the same bits as packed back to back, nothing written between the panels of C.
    @Test(arguments: [(12, 48, 7), (9, 72, 30), (16, 96, 5)], tileSets)
    func panelsApartGiveTheSameBits(_ c: (Int, Int, Int), tiles: Tiles) {
        let (rows, count, k) = c
        var rng = SeededGenerator(seed: 12)
        let a = rng.floats(rows * k, in: -1...1)
        let b = rng.floats(k * count, in: -1...1)
        let together = Self.product(a, rows: rows, b, columns: count, k: k, tiles: tiles)
        let columns = PanelGEMM.Columns(count)  // whole panels of 24 only
        let (panels, cRows) = (columns.panels, PanelGEMM.packedRows(rows))
        let (bStride, cStride) = (24 * k + 16, 24 * cRows + 8)  // gaps of NaN between the panels
        var packedA = [Float](repeating: 0, count: PanelGEMM.packedCount(rows: rows, k: k))
        for r in 0..<rows {
            for i in 0..<k { packedA[r / 8 * 8 * k + i * PanelGEMM.aStep + r % 8] = a[r * k + i] }
        }
        var packedB = [Float](repeating: .nan, count: panels * bStride)
        for i in 0..<k {
            for j in 0..<count { packedB[j / 24 * bStride + i * 24 + j % 24] = b[i * count + j] }
        }
        var out = [Float](repeating: .nan, count: panels * cStride)
        packedA.withUnsafeBufferPointer { pa in
            packedB.withUnsafeBufferPointer { pb in
                out.withUnsafeMutableBufferPointer { pc in
                    PanelGEMM.multiply(
                        a: pa.baseAddress!, rowPanels: cRows / PanelGEMM.panelRows, b: pb.baseAddress!,
                        columns: columns, k: k, c: pc.baseAddress!, ldc: 24, wide: tiles != .avx2,
                        sixteen: tiles == .sixteen, bPanelStride: bStride, cPanelStride: cStride)
                }
            }
        }
        for r in 0..<rows {
            let apart = (0..<count).map { j in out[j / 24 * cStride + r * 24 + j % 24].bitPattern }
            let row = together[(r * columns.padded)..<(r * columns.padded + count)].map(\.bitPattern)
            #expect(apart == row, "row \(r) of \(rows), columns \(count), k \(k), tiles \(tiles)")
        }
        for p in 0..<panels {
            let gap = out[(p * cStride + 24 * cRows)..<((p + 1) * cStride)]
            #expect(gap.allSatisfy { $0.isNaN }, "gap after panel \(p)")
        }
    }

    @Test func prefetchLinesAreHandedOutOnePerEightStepsOfK() {
        let base = UnsafeRawPointer(bitPattern: 4096)!
        var prefetch = PanelGEMM.Prefetch(start: base, lines: 10)
        let first = prefetch.take(steps: 33)
        #expect(first.start == base && first.lines == 5)
        #expect(prefetch.start == base + 5 * 64 && prefetch.lines == 5)
        #expect(prefetch.take(steps: 64).lines == 5)
        #expect(prefetch.take(steps: 64).lines == 0 && prefetch.lines == 0)
        #expect(PanelGEMM.Prefetch.none.lines == 0)
    }

    @Test func columnPanelsAreTwentyFourWideThenARoundedRest() {
        #expect(PanelGEMM.Columns(53).padded == 48 + 8)
        #expect(PanelGEMM.Columns(40).width(1) == 16)
        #expect(PanelGEMM.Columns(20).panels == 1 && PanelGEMM.Columns(20).width(0) == 24)
        // Column 30 of 53: panel 1 (24 wide), row 2 → 24 · 3 rows + 2 · 24 + 6.
        #expect(PanelGEMM.Columns(53).offset(row: 2, column: 30, rows: 3) == 72 + 48 + 6)
    }
}
