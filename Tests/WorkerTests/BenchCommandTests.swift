import Foundation
import TestSupport
import Testing

@testable import Tensor
@testable import Worker

/// `kandinsky-worker bench kernels --json` as a report reads it: the real binary on one UNet shape.
@Suite struct BenchCommandTests {
    /// The OpenBLAS kernel a bench run names in its header ("OpenBLAS SkylakeX (…) kernel, …", on stderr with
    /// `--json`): as wide as the processor allows (the worker restarts itself with OPENBLAS_CORETYPE set where
    /// OpenBLAS's detection fell short), or the family the environment chose.
    @discardableResult
    func expectFittingBLASKernel(_ process: WorkerProcess) throws -> String {
        let header = try #require(
            process.log.split(separator: "\n").first { $0.hasPrefix("OpenBLAS ") }, "no header: \(process.log)")
        let core = try #require(header.split(separator: " ").dropFirst().first.map(String.init), "\(header)")
        if let chosen = ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] {
            #expect(!header.contains("set by kandinsky-worker"), "\(header) with OPENBLAS_CORETYPE=\(chosen)")
        } else if let flags = ProcessorCheck.flags() {
            #expect(BLAS.vectorLevel(core: core) >= BLAS.vectorLevel(flags: flags), "\(header)")
        }
        return core
    }

    /// With `--json` stdout is exactly one JSON document (what `| jq` needs): the whole of it parses as one object.
    func jsonDocument(_ process: WorkerProcess) throws -> [String: Any] {
        let data = Data(process.output.utf8)
        #expect(process.output.hasSuffix("}\n") && process.output.filter { $0 == "\n" }.count == 1, "\(process.output)")
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any], "\(process.output)")
    }

    /// `bench queue --replica`: a master with one replica; every finish waits for it unless told not to.
    @Test(arguments: [([String](), 1), (["--wait-replicas", "0"], 0)])
    func queueAgainstAReplicatedMaster(extra: [String], waited: Int) throws {
        let dir = try TemporaryDirectory(prefix: "kd-bench")
        defer { dir.remove() }
        let process = try WorkerProcess(
            name: "bench", command: ["bench", "queue", "--replica", "--jobs", "300", "--json"] + extra,
            logDirectory: dir.path, captureOutput: true)
        #expect(eventually(timeout: 120) { !process.isRunning })
        #expect(process.terminate() == 0, "\(process.log)")
        let object = try jsonDocument(process)
        #expect(object["wait_replicas"] as? Int == waited, "\(object)")
        #expect(object["wait_timeouts"] as? Int == 0, "\(object)")
        #expect((object["jobs_per_s"] as? Double ?? 0) > 0, "\(object)")
    }

    @Test func kernelsRatioIsTheSlowestPickedAlgorithmsNotAForcedAlternative() throws {
        let dir = try TemporaryDirectory(prefix: "kd-bench")
        defer { dir.remove() }
        let process = try WorkerProcess(
            name: "bench", command: ["bench", "kernels", "--only", "8×8 b2", "--repeats", "1", "--json"],
            logDirectory: dir.path, captureOutput: true)
        #expect(eventually(timeout: 120) { !process.isRunning })
        #expect(process.terminate() == 0, "\(process.log)")
        try expectFittingBLASKernel(process)
        let object = try jsonDocument(process)
        let sgemm = try #require(object["sgemm_gflops"] as? Double)
        let convs = try #require(object["conv3x3_gflops"] as? [String: Double])
        // The picked algorithm (in parentheses: "… b2 (F(4×4))") and the two forced ones ("… b2 im2col", "… b2 F(6×6)").
        #expect(convs.count == 3, "\(convs)")
        let picked = try #require(convs.first { $0.key.contains(" (") }?.value, "\(convs)")
        let ratio = try #require(object["conv3x3_over_sgemm"] as? Double)
        #expect(abs(ratio - picked / sgemm) <= 0.011, "ratio \(ratio) for \(picked) / \(sgemm) GFLOP/s")
        // The cores' multiply-add peak where the processor has AVX2 and FMA, with sgemm's share of it; said otherwise.
        if let fma = object["fma_peak_gflops"] as? Double {
            let share = try #require(object["sgemm_over_fma_peak"] as? Double)
            #expect(fma > 0 && abs(share - sgemm / fma) <= 0.011, "sgemm \(sgemm) of \(fma) GFLOP/s: \(share)")
        } else {
            #expect(process.log.contains("multiply-add peak: not measured"), "\(process.log)")
        }
    }

    /// `bench unet --json` pairs each timed run with the sgemm sampled around it, and its `sgemm_work_gflop` (what
    /// `Ops/bench-report` scales the official times by) is the fastest and the median of those runs' seconds × sgemm.
    @Test func modelBenchPairsEachRunWithTheSgemmAroundIt() throws {
        let dir = try TemporaryDirectory(prefix: "kd-bench")
        defer { dir.remove() }
        let process = try WorkerProcess(
            name: "bench",
            command: ["bench", "unet", "--preset", "tiny", "--latent", "32x32", "--repeats", "3", "--json"],
            logDirectory: dir.path, captureOutput: true)
        #expect(eventually(timeout: 120) { !process.isRunning })
        #expect(process.terminate() == 0, "\(process.log)")
        let core = try expectFittingBLASKernel(process)
        let object = try jsonDocument(process)
        // The kernel family of the header, and how wide its vectors are (what `Ops/bench-report` picks the official
        // run's sgemm by).
        #expect(object["blas_kernel"] as? String == core, "\(object)")
        #expect(object["blas_vector_level"] as? Int == BLAS.vectorLevel(core: core), "\(object)")
        let runs = try #require(object["runs"] as? [[String: Double]], "\(object)")
        #expect(runs.count == 3, "\(runs)")
        let pairs = runs.compactMap { run in run["s"].flatMap { s in run["sgemm_gflops"].map { (s, $0) } } }
        #expect(pairs.count == 3 && pairs.allSatisfy { $0.0 >= 0 && $0.1 > 1 }, "\(runs)")
        let work = pairs.map { $0.0 * $0.1 }.sorted()
        let reported = try #require(object["sgemm_work_gflop"] as? [String: Double], "\(object)")
        // Within the rounding of the printed figures (six decimals): half a microsecond × the sgemm, and so on.
        let tolerance = { (value: Double) in 1e-6 * (pairs.map(\.1).max() ?? 0) + 1e-5 * value + 1e-5 }
        #expect(abs((reported["best"] ?? -1) - work[0]) <= tolerance(work[0]), "\(reported) against \(work)")
        #expect(abs((reported["median"] ?? -1) - work[1]) <= tolerance(work[1]), "\(reported) against \(work)")
        let best = try #require(object["best_s"] as? Double)
        #expect(pairs.map(\.0).min().map { abs($0 - best) <= 6e-4 } == true, "best \(best) of \(pairs)")
        // The fastest run's FLOPs (its GFLOP/s × its seconds) are its kernels' (the breakdown's, within what no
        // category holds): the sgemm sampled after a run (34 GFLOP) is not counted in it.
        let gflops = try #require(object["gflops"] as? Double)
        let kernels = try #require(object["breakdown_gflop"] as? [String: Double]).values.reduce(0, +)
        let runFlop = gflops * (pairs.map(\.0).min() ?? 0)
        #expect(kernels > 0 && abs(runFlop - kernels) <= 0.1 * kernels, "\(runFlop) GFLOP a run, kernels \(kernels)")
    }
}
