import ArgumentParser
import Foundation
import Tensor

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure speed; figures are printed, never asserted.",
        subcommands: [Kernels.self, UNet.self, VAE.self, Text.self, Pipeline.self, BenchQueue.self]
    )

    struct Kernels: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "sgemm, 3×3 and kernel-1 convolution and attention GFLOP/s at the models' shapes, measured in the same run."
        )

        @Option(help: "Timed repetitions of each case (after one warm-up).")
        var repeats = 5

        @Option(help: "OpenBLAS threads (default: one per core).")
        var threads: Int?

        @Flag(help: "Print one JSON document on stdout (the human lines go to stderr).")
        var json = false

        @Option(
            parsing: .upToNextOption,
            help: "Also time sgemm at these shapes, each M,N,K (append t to transpose B: M,N,Kt).")
        var gemm: [String] = []

        @Option(
            help:
                "Only the convolution and attention cases whose name contains this text (e.g. 16×16, b8, im2col, conv1d, attention)."
        )
        var only: String?

        func validate() throws {
            guard repeats >= 1 else { throw ValidationError("--repeats must be at least 1") }
            if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
        }

        func run() throws {
            if let threads { BLAS.threads = threads }
            console.line(
                "OpenBLAS \(BLAS.coreDescription) kernel, \(BLAS.threads) threads; compute pool \(ComputePool.shared.threadCount) threads"
            )
            let peak = KernelBenchmark.sgemm(repeats: repeats)
            report(peak, peak: peak.gflops)
            let fma = KernelBenchmark.fmaPeak(threads: BLAS.threads)
            if let fma {
                console.line(
                    String(
                        format: "%-28@ %7.1f GFLOP/s; sgemm %.2f × that; Winograd products in %d-lane tiles",
                        "multiply-add peak (registers only)", fma, peak.gflops / fma,
                        KernelBenchmark.sixteenLaneProducts ? 16 : 8))
            } else {
                console.line("multiply-add peak: not measured (needs AVX2 and FMA)")
            }
            for shape in gemm {
                let transB = shape.hasSuffix("t")
                let dims = shape.trimmingCharacters(in: CharacterSet(charactersIn: "t")).split(separator: ",")
                    .compactMap { Int($0) }
                guard dims.count == 3, dims.allSatisfy({ $0 > 0 }) else {
                    throw ValidationError("--gemm \(shape): expected M,N,K")
                }
                report(
                    KernelBenchmark.sgemm(m: dims[0], n: dims[1], k: dims[2], transB: transB, repeats: repeats),
                    peak: peak.gflops)
            }
            let convs = measure(KernelBenchmark.convCases, name: \.name, peak: peak.gflops) {
                KernelBenchmark.conv($0, repeats: repeats)
            }
            let attentions = measure(KernelBenchmark.attentionCases, name: \.name, peak: peak.gflops) {
                KernelBenchmark.attention($0, repeats: repeats)
            }
            _ = measure(KernelBenchmark.pointwiseCases, name: \.name, peak: peak.gflops) {
                KernelBenchmark.pointwise($0, repeats: repeats)
            }
            if json {
                var object: [String: Any] = [
                    "sgemm_gflops": round2(peak.gflops),
                    "conv3x3_gflops": Dictionary(uniqueKeysWithValues: convs.map { ($0.name, round2($0.gflops)) }),
                    "attention_gflops": Dictionary(
                        uniqueKeysWithValues: attentions.map { ($0.name, round2($0.gflops)) }),
                    "threads": BLAS.threads,
                ]
                if let fma {
                    object["fma_peak_gflops"] = round2(fma)
                    object["sgemm_over_fma_peak"] = round2(peak.gflops / fma)
                }
                // The slowest convolution through the algorithm conv2d picks, against the peak, when any ran (not with
                // --only attention or im2col): the forced alternatives are there for comparison (with them, this was
                // always an im2col case's ≈ 0.9).
                let picked = Set(KernelBenchmark.convCases.filter { $0.algorithm == nil }.map(\.name))
                if let worst = convs.filter({ picked.contains($0.name) }).map(\.gflops).min() {
                    object["conv3x3_over_sgemm"] = round2(worst / peak.gflops)
                }
                try console.document(object)
            }
        }

        /// Times the cases whose name contains `--only` (all without it), printing a line for each.
        private func measure<Case>(
            _ cases: [Case], name: (Case) -> String, peak: Double, _ time: (Case) -> KernelBenchmark.Result
        ) -> [KernelBenchmark.Result] {
            cases.filter { c in only.map { name(c).contains($0) } ?? true }.map { c in
                let r = time(c)
                report(r, peak: peak)
                return r
            }
        }

        private func report(_ r: KernelBenchmark.Result, peak: Double) {
            let line = String(
                format: "%-28@ best %8.2f ms  median %8.2f ms  %7.1f GFLOP/s  (%.2f × sgemm)",
                r.name, r.bestSeconds * 1e3, r.medianSeconds * 1e3, r.gflops, r.gflops / peak)
            console.line(line)
        }

        private var console: Console { Console(json: json) }

        private func round2(_ v: Double) -> Double { (v * 100).rounded() / 100 }
    }
}
