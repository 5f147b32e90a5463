import Foundation
import Tensor

/// What `bench kernels` measures.
public struct KernelBenchOptions: Sendable {
    /// Timed repetitions of each case (after one warm-up).
    public var repeats: Int
    /// OpenBLAS and compute-pool threads; nil keeps the current count (one per core unless set).
    public var threads: Int?
    /// sgemm shapes timed besides the 2048³ peak.
    public var gemm: [GEMMShape]
    /// Only the convolution, attention and pointwise cases whose name contains this text (all when nil).
    public var only: String?

    public init(repeats: Int = 5, threads: Int? = nil, gemm: [GEMMShape] = [], only: String? = nil) {
        (self.repeats, self.threads, self.gemm, self.only) = (repeats, threads, gemm, only)
    }

    /// One sgemm shape: C[M, N] = A[M, K] · B[K, N], B transposed (stored N×K) when `transB`.
    public struct GEMMShape: Sendable, Equatable {
        public var m: Int, n: Int, k: Int
        public var transB: Bool

        public init(m: Int, n: Int, k: Int, transB: Bool = false) {
            (self.m, self.n, self.k, self.transB) = (m, n, k, transB)
        }

        /// `M,N,K`, or `M,N,Kt` with B transposed; nil unless three positive whole numbers.
        public init?(_ text: String) {
            let transB = text.hasSuffix("t")
            let dims = (transB ? text.dropLast() : Substring(text)).split(
                separator: ",", omittingEmptySubsequences: false
            )
            .map { Int($0) }
            guard dims.count == 3, let m = dims[0], let n = dims[1], let k = dims[2], m > 0, n > 0, k > 0 else {
                return nil
            }
            self.init(m: m, n: n, k: k, transB: transB)
        }
    }
}

/// What `bench kernels` measured, in the order it ran.
public struct KernelBenchReport: Sendable {
    /// The OpenBLAS and compute-pool threads the cases ran on.
    public var threads: Int
    /// sgemm 2048³: the peak every other case is compared with.
    public var sgemm: KernelBenchmark.Result
    /// The cores' multiply-add peak with the operands in registers, GFLOP/s (nil without AVX2 and FMA).
    public var fmaPeakGFLOPS: Double?
    /// The `gemm` shapes asked for.
    public var gemm: [KernelBenchmark.Result]
    public var convolutions: [KernelBenchmark.Result]
    public var attentions: [KernelBenchmark.Result]
    public var pointwise: [KernelBenchmark.Result]

    public init(
        threads: Int, sgemm: KernelBenchmark.Result, fmaPeakGFLOPS: Double?, gemm: [KernelBenchmark.Result] = [],
        convolutions: [KernelBenchmark.Result] = [], attentions: [KernelBenchmark.Result] = [],
        pointwise: [KernelBenchmark.Result] = []
    ) {
        (self.threads, self.sgemm, self.fmaPeakGFLOPS, self.gemm) = (threads, sgemm, fmaPeakGFLOPS, gemm)
        (self.convolutions, self.attentions, self.pointwise) = (convolutions, attentions, pointwise)
    }

    /// The slowest convolution that went through the algorithm `conv2d` picks, over the sgemm peak; nil when none
    /// ran (`only` attention or im2col). The forced alternatives are there for comparison: with them, this was always
    /// an im2col case's ≈ 0.9.
    public var slowestPickedConvolutionOverSgemm: Double? {
        let picked = Set(KernelBenchmark.convCases.filter { $0.algorithm == nil }.map(\.name))
        guard let worst = convolutions.filter({ picked.contains($0.name) }).map(\.gflops).min() else { return nil }
        return worst / sgemm.gflops
    }

    /// The `--json` document: `sgemm_gflops`, `conv3x3_gflops` and `attention_gflops` (by case name), `threads`,
    /// `fma_peak_gflops` and `sgemm_over_fma_peak` where the peak was measured, `conv3x3_over_sgemm` where a picked
    /// convolution ran.
    public func jsonDocument() throws -> String {
        func round2(_ v: Double) -> Double { BenchJSON.rounded(v, places: 2) }
        var object: [String: Any] = [
            "sgemm_gflops": round2(sgemm.gflops),
            "conv3x3_gflops": Dictionary(uniqueKeysWithValues: convolutions.map { ($0.name, round2($0.gflops)) }),
            "attention_gflops": Dictionary(uniqueKeysWithValues: attentions.map { ($0.name, round2($0.gflops)) }),
            "threads": threads,
        ]
        if let fmaPeakGFLOPS {
            object["fma_peak_gflops"] = round2(fmaPeakGFLOPS)
            object["sgemm_over_fma_peak"] = round2(sgemm.gflops / fmaPeakGFLOPS)
        }
        if let ratio = slowestPickedConvolutionOverSgemm { object["conv3x3_over_sgemm"] = round2(ratio) }
        return try BenchJSON.document(object)
    }
}

/// `bench kernels`: sgemm, 3×3 and kernel-1 convolution and attention GFLOP/s at the models' shapes, measured in the
/// same run so their ratios hold on any machine.
public enum KernelBench {
    /// Times every case on a CPU backend of `options.threads` threads (the shared one without), passing a line to
    /// `log` as each one is measured (the header first).
    public static func run(_ options: KernelBenchOptions, log: (String) -> Void = { _ in }) -> KernelBenchReport {
        // A backend of its own for another thread count; the kernels run on its resources, bound here.
        let backend = options.threads.map { CPUBackend(threads: $0) } ?? CPUBackend.shared
        let binding = backend.resources.enter()
        defer { binding.leave() }
        log("OpenBLAS \(BLAS.coreDescription) kernel, \(BLAS.threads) threads (the compute pool's)")
        let repeats = options.repeats
        let peak = KernelBenchmark.sgemm(repeats: repeats)
        log(line(peak, peak: peak.gflops))
        let fma = KernelBenchmark.fmaPeak(threads: BLAS.threads)
        if let fma {
            log(
                String(
                    format: "%-28@ %7.1f GFLOP/s; sgemm %.2f × that; Winograd products in %d-lane tiles",
                    "multiply-add peak (registers only)", fma, peak.gflops / fma,
                    KernelBenchmark.sixteenLaneProducts ? 16 : 8))
        } else {
            log("multiply-add peak: not measured (needs AVX2 and FMA)")
        }
        let gemm = options.gemm.map { shape in
            let r = KernelBenchmark.sgemm(m: shape.m, n: shape.n, k: shape.k, transB: shape.transB, repeats: repeats)
            log(line(r, peak: peak.gflops))
            return r
        }
        /// Times the cases whose name contains `only` (all without it), logging a line for each.
        func measure<Case>(
            _ cases: [Case], name: (Case) -> String, _ time: (Case) -> KernelBenchmark.Result
        ) -> [KernelBenchmark.Result] {
            cases.filter { c in options.only.map { name(c).contains($0) } ?? true }.map { c in
                let r = time(c)
                log(line(r, peak: peak.gflops))
                return r
            }
        }
        let convolutions = measure(KernelBenchmark.convCases, name: \.name) {
            KernelBenchmark.conv($0, repeats: repeats)
        }
        let attentions = measure(KernelBenchmark.attentionCases, name: \.name) {
            KernelBenchmark.attention($0, repeats: repeats)
        }
        let pointwise = measure(KernelBenchmark.pointwiseCases, name: \.name) {
            KernelBenchmark.pointwise($0, repeats: repeats)
        }
        return KernelBenchReport(
            threads: BLAS.threads, sgemm: peak, fmaPeakGFLOPS: fma, gemm: gemm, convolutions: convolutions,
            attentions: attentions, pointwise: pointwise)
    }

    /// A case's line: its best and median times, GFLOP/s and their share of the sgemm peak.
    static func line(_ r: KernelBenchmark.Result, peak: Double) -> String {
        String(
            format: "%-28@ best %8.2f ms  median %8.2f ms  %7.1f GFLOP/s  (%.2f × sgemm)",
            r.name, r.bestSeconds * 1e3, r.medianSeconds * 1e3, r.gflops, r.gflops / peak)
    }
}
