import Foundation
import Kandinsky
import TestSupport
import Testing
import VulkanBackend

@testable import Bench

/// The model benchmarks on the tiny configuration, one timed run or two: what they report, never how fast.
///
/// Serialized: the kernel profile they read is one per process.
@Suite(.serialized) struct ModelBenchTests {
    static let tiny = ModelBenchOptions(source: .preset(.tiny), latentHeight: 8, latentWidth: 8, repeats: 1)

    /// The keys `Ops/bench-report` and `docs/perf/*.json` read, and the others `--json` has always printed.
    static let documentKeys: Set<String> = [
        "best_s", "blas_kernel", "blas_vector_level", "breakdown", "breakdown_gflop", "gflops", "median_s",
        "peak_rss_mb", "rss_after_warmup_mb", "rss_end_mb", "runs", "sgemm_gflops", "sgemm_work_gflop", "threads",
        "device", "precision",
    ]

    /// A result of `repeats` timed runs, each with positive seconds and the sgemm sampled around it, whose fastest
    /// run's figures (time, FLOPs, breakdown, sgemm work) are consistent with those runs.
    func expectMeasured(_ r: ModelBenchResult, repeats: Int, sourceLocation: SourceLocation = #_sourceLocation) {
        let seconds = r.runs.map(\.seconds)
        #expect(r.runs.count == repeats, "\(r.name): \(r.runs)", sourceLocation: sourceLocation)
        #expect(
            r.runs.allSatisfy { $0.seconds > 0 && $0.sgemm > 0 }, "\(r.name): \(r.runs)", sourceLocation: sourceLocation
        )
        #expect(
            seconds.min() == r.best && r.best <= r.median, "\(r.name): \(r.best), \(r.median)",
            sourceLocation: sourceLocation)
        let work = r.runs.map { $0.seconds * $0.sgemm }.sorted()
        #expect(
            r.sgemmWork.best == work.first && r.sgemmWork.median == work[work.count / 2], sourceLocation: sourceLocation
        )
        #expect(r.flops > 0 && r.gflops > 0, "\(r.name): \(r.flops) FLOPs", sourceLocation: sourceLocation)
        // The fastest run's categories add up to its time ("other" is the rest); their FLOPs are within the run's
        // (products outside any instrumented kernel count in no category; the sgemm sampled after a run in neither).
        #expect(r.breakdown.values.allSatisfy { $0 >= 0 }, "\(r.breakdown)", sourceLocation: sourceLocation)
        #expect(
            abs(r.breakdown.values.reduce(0, +) - r.best) <= 1e-6 * r.best + 1e-9, "\(r.breakdown) for \(r.best) s",
            sourceLocation: sourceLocation)
        let categorized = r.breakdownFlops.values.reduce(0, +)
        #expect(
            categorized > 0 && categorized <= r.flops * (1 + 1e-9) && r.flops - categorized <= 0.1 * categorized,
            "\(r.breakdownFlops), \(r.flops)", sourceLocation: sourceLocation)
        #expect(r.residentAfterWarmUp > 0 && r.residentAtEnd > 0, sourceLocation: sourceLocation)
    }

    func parse(_ document: String) throws -> [String: Any] {
        #expect(!document.contains("\n"), "one line: \(document)")
        return try #require(try JSONSerialization.jsonObject(with: Data(document.utf8)) as? [String: Any])
    }

    /// A tiny model directory with random weights, loaded as `--model` loads it.
    @Test func vaeAndTextEncodersOfARandomModelDirectory() throws {
        let dir = try TemporaryDirectory(prefix: "kd-bench-model")
        defer { dir.remove() }
        try RandomModel.write(preset: .tiny, to: dir.path, seed: 7, components: [.vae, .textEncoder1, .textEncoder2])
        let options = ModelBenchOptions(
            source: .directory(dir.path), batch: 2, latentHeight: 8, latentWidth: 8, repeats: 2)
        let vae = try ModelBench.vaeDecode(options)
        #expect(vae.name.hasPrefix("VAE decode, 2 × "), "\(vae.name)")
        expectMeasured(vae, repeats: 2)
        let text = try ModelBench.textEncoders(options)
        #expect(text.map(\.name) == ["XLM-R large encoder (M-CLIP), 4 × 77 tokens", "mT5 encoder, 4 × 77 tokens"])
        for r in text { expectMeasured(r, repeats: 2) }
    }

    /// `bench unet`: one guided step and a window of time modulations, its header logged first, its lines, and the
    /// document's keys and figures (the first part's).
    @Test func unetReport() throws {
        var logged: [String] = []
        let report = try ModelBench.unet(Self.tiny) { logged.append($0) }
        #expect(logged.count == 1, "\(logged)")
        #expect(logged.first?.hasPrefix("OpenBLAS ") == true, "\(logged)")
        #expect(logged.first?.hasSuffix("; preset tiny (zero weights in memory)") == true, "\(logged)")
        #expect(report.results.count == 2 && report.sgemmGFLOPS > 0 && report.peakRSSMegabytes > 0)
        let (step, window) = (report.results[0], report.results[1])
        #expect(step.name == "UNet forward, 2 rows (1 image per guided step), 8×8 latent")
        #expect(window.name == "ResBlock time modulations, 25 timesteps × 2 rows (once per 25 steps)")
        expectMeasured(step, repeats: 1)
        expectMeasured(window, repeats: 1)
        #expect((step.breakdown["conv3x3"] ?? 0) > 0 && !step.shapes.isEmpty, "\(step.breakdown)")
        #expect((window.breakdown["linear"] ?? 0) > 0, "\(window.breakdown)")
        #expect(report.lines.first?.hasPrefix(step.name + ": best ") == true, "\(report.lines)")
        #expect(report.lines.last?.hasPrefix("peak RSS: ") == true, "\(report.lines)")

        let object = try parse(report.jsonDocument())
        #expect(Set(object.keys) == Self.documentKeys.union(["parts"]), "\(object.keys.sorted())")
        #expect(object["blas_kernel"] as? String == report.blasKernel)
        #expect((object["parts"] as? [String: Any])?.count == 2, "\(object)")
        // The first part's figures, rounded: seconds to the millisecond, the runs and their sgemm work to 10⁻⁶.
        #expect(object["best_s"] as? Double == (step.best * 1000).rounded() / 1000, "\(object)")
        let runs = try #require(object["runs"] as? [[String: Double]], "\(object)")
        #expect(
            runs
                == step.runs.map {
                    ["s": ($0.seconds * 1e6).rounded() / 1e6, "sgemm_gflops": ($0.sgemm * 1e6).rounded() / 1e6]
                })
        let work = try #require(object["sgemm_work_gflop"] as? [String: Double], "\(object)")
        #expect(
            work == [
                "best": (step.sgemmWork.best * 1e6).rounded() / 1e6,
                "median": (step.sgemmWork.median * 1e6).rounded() / 1e6,
            ])
    }

    /// The pipeline estimate adds its parts: text encoders + steps × UNet step + a window of time modulations per
    /// 25 steps begun + VAE decode.
    @Test func pipelineEstimateAddsItsParts() throws {
        let report = try ModelBench.pipeline(Self.tiny, steps: 30)
        #expect(report.results.count == 6, "\(report.results.map(\.name))")
        let total = report.results[0]
        let parts = Dictionary(uniqueKeysWithValues: report.results.dropFirst().map { ($0.name, $0) })
        #expect(total.name == "pipeline estimate, 30 steps")
        let text = parts.filter { $0.key.contains("encoder") }.values
        let unet = try #require(parts.values.first { $0.name.hasPrefix("UNet forward") })
        let window = try #require(parts.values.first { $0.name.hasPrefix("ResBlock time modulations") })
        let vae = try #require(parts.values.first { $0.name.hasPrefix("VAE decode") })
        #expect(text.count == 2)
        let expected = text.map(\.median).reduce(0, +) + 30 * unet.median + 2 * window.median + vae.median
        #expect(abs(total.median - expected) <= 1e-9 * expected, "\(total.median) against \(expected)")
        let object = try parse(report.jsonDocument())
        #expect(
            Set(object.keys)
                == Self.documentKeys.union([
                    "parts", "dpmpp_2m_20_steps_estimate_s", "dpmpp_2m_20_steps_sgemm_work_gflop",
                ]), "\(object.keys.sorted())")
        #expect((object["parts"] as? [String: Any])?.count == 6, "\(object)")
        #expect(report.lines.contains { $0.hasPrefix("  dpmpp_2m_20_steps_estimate_s: ") }, "\(report.lines)")
    }

    /// `bench unet --device vulkan:0` (lavapipe in CI): the device's figures per step, and the weights resident on it
    /// (f16 ones in half the memory); a step moves nothing between host and device (its inputs are uploaded before).
    @Test(.enabled(if: VulkanTesting.enabled))
    func unetOnTheGPUReportsDispatchesAndDeviceMemory() throws {
        let gpu = try VulkanBackend(index: 0, options: VulkanOptions(validation: true))
        var weights: [String: Double] = [:]
        for half in [false, true] {
            var options = ModelBenchOptions(
                source: .preset(.tiny), latentHeight: 8, latentWidth: 8, repeats: 1, backend: gpu)
            options.halfPrecision = half
            let report = try ModelBench.unet(options)
            let object = try parse(try report.jsonDocument())
            #expect(object["device"] as? String == "vulkan:0")
            #expect(object["precision"] as? String == (half ? "f16" : "f32"))
            #expect(((object["dispatches_per_step"] as? Double) ?? 0) > 50, "\(object)")
            #expect(((object["submits_per_step"] as? Double) ?? 0) >= 1, "\(object)")
            #expect(object["host_device_bytes_per_step"] as? Double == 0, "\(object)")
            let memory = try #require(object["device_memory_mb"] as? [String: Double], "\(object)")
            #expect((memory["weights"] ?? 0) > 0 && (memory["peak"] ?? 0) >= (memory["weights"] ?? 0), "\(memory)")
            weights[half ? "f16" : "f32"] = memory["weights"]
        }
        // The pipeline estimate carries a sampling step's figures too.
        let pipeline = try parse(
            try ModelBench.pipeline(
                ModelBenchOptions(source: .preset(.tiny), latentHeight: 8, latentWidth: 8, repeats: 1, backend: gpu),
                steps: 4
            ).jsonDocument())
        #expect(((pipeline["dispatches_per_step"] as? Double) ?? 0) > 50, "\(pipeline)")
        #expect(pipeline["device_memory_mb"] != nil, "\(pipeline)")
        let (f32, f16) = (weights["f32"] ?? 0, weights["f16"] ?? 0)
        #expect(f16 < 0.75 * f32, "f16 weights \(f16) MiB, f32 \(f32) MiB")
        #expect(gpu.validationMessages.isEmpty, "\(gpu.validationMessages)")
    }
}
