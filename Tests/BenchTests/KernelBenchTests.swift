import Foundation
import Testing

@testable import Bench
@testable import Tensor

/// `bench kernels` through the library: its `--gemm` shapes, its document, and one short real run.
@Suite struct KernelBenchTests {
    typealias Shape = KernelBenchOptions.GEMMShape

    @Test func gemmShapes() {
        #expect(Shape("64,32,16") == Shape(m: 64, n: 32, k: 16))
        #expect(Shape("64,32,16t") == Shape(m: 64, n: 32, k: 16, transB: true))
        for bad in ["", "64,32", "64,32,16,8", "64,,16", "a,32,16", "0,32,16", "64,32,-1", "t64,32,16", "64,32,16tt"] {
            #expect(Shape(bad) == nil, "\(bad)")
        }
    }

    func result(_ name: String, gflops: Double) -> KernelBenchmark.Result {
        KernelBenchmark.Result(name: name, bestSeconds: 0.01, medianSeconds: 0.01, gflops: gflops)
    }

    func parse(_ document: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(document.utf8)) as? [String: Any])
    }

    /// `conv3x3_over_sgemm` is the slowest convolution through the algorithm `conv2d` picks, not a forced
    /// alternative's (those are there for comparison, and slower).
    @Test func ratioIsTheSlowestPickedConvolutions() throws {
        let picked = KernelBenchmark.convCases.filter { $0.algorithm == nil }.map(\.name)
        let forced = try #require(KernelBenchmark.convCases.first { $0.algorithm != nil }?.name)
        let report = KernelBenchReport(
            threads: 2, sgemm: result("sgemm 2048³", gflops: 100), fmaPeakGFLOPS: 160,
            convolutions: [
                result(picked[0], gflops: 80), result(picked[1], gflops: 60), result(forced, gflops: 10),
            ],
            attentions: [result("attention", gflops: 40)])
        #expect(report.slowestPickedConvolutionOverSgemm == 0.6)
        let object = try parse(report.jsonDocument())
        #expect(object["conv3x3_over_sgemm"] as? Double == 0.6, "\(object)")
        #expect(object["sgemm_over_fma_peak"] as? Double == 0.63, "\(object)")  // 100 / 160, two decimals
        #expect(object["fma_peak_gflops"] as? Double == 160 && object["sgemm_gflops"] as? Double == 100)
        #expect((object["conv3x3_gflops"] as? [String: Double])?[forced] == 10, "\(object)")
        #expect(object["attention_gflops"] as? [String: Double] == ["attention": 40], "\(object)")
        #expect(object["threads"] as? Int == 2)
    }

    /// Without the multiply-add peak and without a picked convolution, their keys are left out.
    @Test func documentLeavesOutWhatWasNotMeasured() throws {
        let forced = try #require(KernelBenchmark.convCases.first { $0.algorithm != nil }?.name)
        let report = KernelBenchReport(
            threads: 1, sgemm: result("sgemm 2048³", gflops: 100), fmaPeakGFLOPS: nil,
            convolutions: [result(forced, gflops: 10)])
        let object = try parse(report.jsonDocument())
        #expect(
            Set(object.keys) == ["sgemm_gflops", "conv3x3_gflops", "attention_gflops", "threads"], "\(object)")
    }

    /// One short real run: the header first, then a line per case, in the order they ran.
    @Test func shortRun() throws {
        var logged: [String] = []
        let report = KernelBench.run(
            KernelBenchOptions(repeats: 1, gemm: [Shape(m: 64, n: 48, k: 32, transB: true)], only: "8×8 b2")
        ) { logged.append($0) }
        #expect(report.convolutions.count == 3 && report.attentions.isEmpty && report.pointwise.isEmpty)
        #expect(report.gemm.count == 1 && report.sgemm.gflops > 0)
        #expect(logged.first?.hasPrefix("OpenBLAS ") == true, "\(logged)")
        // Header, sgemm, the multiply-add peak (or why not), the gemm shape, the three convolutions.
        #expect(logged.count == 7, "\(logged)")
        #expect(report.convolutions.allSatisfy { $0.gflops > 0 && $0.bestSeconds > 0 }, "\(report.convolutions)")
    }
}
