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

    /// `bench kernels --only … --json`: the cases named, the header's kernel, the multiply-add peak or why not.
    /// (`KernelBenchTests` checks the document's ratios.)
    @Test func kernelsOnOneShape() throws {
        let dir = try TemporaryDirectory(prefix: "kd-bench")
        defer { dir.remove() }
        let process = try WorkerProcess(
            name: "bench", command: ["bench", "kernels", "--only", "8×8 b2", "--repeats", "1", "--json"],
            logDirectory: dir.path, captureOutput: true)
        #expect(eventually(timeout: 120) { !process.isRunning })
        #expect(process.terminate() == 0, "\(process.log)")
        try expectFittingBLASKernel(process)
        let object = try jsonDocument(process)
        #expect((object["sgemm_gflops"] as? Double ?? 0) > 0, "\(object)")
        // The picked algorithm (in parentheses: "… b2 (F(4×4))") and the two forced ones ("… b2 im2col", "… b2 F(6×6)").
        let convs = try #require(object["conv3x3_gflops"] as? [String: Double])
        #expect(convs.count == 3 && convs.keys.contains { $0.contains(" (") }, "\(convs)")
        #expect(object["conv3x3_over_sgemm"] is Double, "\(object)")
        // The cores' multiply-add peak where the processor has AVX2 and FMA; said otherwise.
        if object["fma_peak_gflops"] == nil {
            #expect(process.log.contains("multiply-add peak: not measured"), "\(process.log)")
        } else {
            #expect(object["sgemm_over_fma_peak"] is Double, "\(object)")
        }
    }

    /// `bench unet --json` from the binary: the kernel family of its header (the process restarts itself for a
    /// wider one) and how wide its vectors are, and a pair for each timed run. (`ModelBenchTests` checks the figures
    /// themselves: the sgemm work, the breakdown, the rounding.)
    @Test func modelBenchNamesItsKernelAndPairsEachRun() throws {
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
        #expect(runs.count == 3 && runs.allSatisfy { ($0["s"] ?? -1) >= 0 && ($0["sgemm_gflops"] ?? 0) > 1 }, "\(runs)")
        #expect(object["sgemm_work_gflop"] is [String: Double], "\(object)")
    }
}
