import Foundation
import TestSupport
import Testing

/// `kandinsky-worker bench kernels --json` as a report reads it: the real binary on one UNet shape.
@Suite struct BenchCommandTests {
    @Test func kernelsRatioIsTheSlowestPickedAlgorithmsNotAForcedAlternative() throws {
        let dir = try TemporaryDirectory(prefix: "kd-bench")
        defer { dir.remove() }
        let process = try WorkerProcess(
            name: "bench", command: ["bench", "kernels", "--only", "8×8 b2", "--repeats", "1", "--json"],
            logDirectory: dir.path, captureOutput: true)
        #expect(eventually(timeout: 120) { !process.isRunning })
        #expect(process.terminate() == 0, "\(process.log)")
        let last = try #require(process.output.split(separator: "\n").last, "no output: \(process.log)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any])
        let sgemm = try #require(object["sgemm_gflops"] as? Double)
        let convs = try #require(object["conv3x3_gflops"] as? [String: Double])
        // The picked algorithm (in parentheses: "… b2 (F(4×4))") and the two forced ones ("… b2 im2col", "… b2 F(6×6)").
        #expect(convs.count == 3, "\(convs)")
        let picked = try #require(convs.first { $0.key.contains(" (") }?.value, "\(convs)")
        let ratio = try #require(object["conv3x3_over_sgemm"] as? Double)
        #expect(abs(ratio - picked / sgemm) <= 0.011, "ratio \(ratio) for \(picked) / \(sgemm) GFLOP/s")
    }
}
