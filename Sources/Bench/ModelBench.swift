import Foundation
import Kandinsky
import Tensor

/// What `bench unet|vae|text|pipeline` measure, and on which model.
public struct ModelBenchOptions: Sendable {
    /// Where the weights come from.
    public enum Source: Sendable, Equatable {
        /// A configuration built in memory with zero weights: timings hold, resident memory does not (zero pages are
        /// shared).
        case preset(ModelPreset)
        /// A model directory (memory-mapped weights; its model.json gives the configuration), half-precision weights
        /// kept as stored when `keepHalfPrecision` (expanded to float32 at each use).
        case directory(String, keepHalfPrecision: Bool = false)
    }

    public var source: Source
    /// Images per guided step: the UNet and the text encoders run 2 × this many rows, the VAE this many latents.
    public var batch: Int
    /// The latent's height and width (64×64 for a 512×512 image).
    public var latentHeight: Int, latentWidth: Int
    /// Timed repetitions of each part (after one warm-up).
    public var repeats: Int
    /// OpenBLAS and compute-pool threads; nil keeps the current count (one per core unless set).
    public var threads: Int?
    /// Convolution shapes listed in the report's lines, those that took the most time in the fastest run.
    public var layers: Int
    /// The device the model runs on (its weights uploaded once, before the runs).
    public var backend: any ComputeBackend
    /// `--precision f16` for a preset's zero weights (a directory's is `Source.directory`'s flag).
    public var halfPrecision = false

    /// `f16` when the layer weights are kept in 16 bits, else `f32`.
    var precision: String {
        if case .directory(_, let half) = source { return half ? "f16" : "f32" }
        return halfPrecision ? "f16" : "f32"
    }

    public init(
        source: Source = .preset(.full), batch: Int = 1, latentHeight: Int = 64, latentWidth: Int = 64,
        repeats: Int = 3, threads: Int? = nil, layers: Int = 0, backend: any ComputeBackend = CPUBackend.shared
    ) {
        (self.source, self.batch, self.latentHeight, self.latentWidth) = (source, batch, latentHeight, latentWidth)
        (self.repeats, self.threads, self.layers, self.backend) = (repeats, threads, layers, backend)
        // Another thread count on the CPU is a CPU backend of its own (its compute pool has that many threads).
        if let threads, backend.device == .cpu { self.backend = CPUBackend(threads: threads) }
    }

    /// The backend when it is the CPU's (its resources: the pool the sgemm probe shares, the kernel profile).
    var cpu: CPUBackend? { backend as? CPUBackend }

    /// A host-made input on the benchmark's device.
    func input(_ host: Tensor) -> Tensor { backend.upload(host) }

    /// The model's configuration (the directory's model.json, or the preset's).
    func config() throws -> ModelConfig {
        switch source {
        case .preset(let preset): return preset.config
        case .directory(let path, _): return try ModelDirectory(path: path).config
        }
    }

    /// Builds a component from the model directory, or from zero pages for the preset.
    func load<M>(
        _ fromDirectory: (ModelDirectory) throws -> M, _ fromWeights: (WeightFile, ModelConfig) throws -> M
    ) throws -> M {
        switch source {
        case .preset(let preset):
            let weights = WeightFile(recording: preset.rawValue, keepHalf: halfPrecision, backend: backend)
            return try fromWeights(weights, preset.config)
        case .directory(let path, let keepHalfPrecision):
            var directory = try ModelDirectory(path: path)
            directory.keepHalfPrecision = keepHalfPrecision
            directory.backend = backend
            return try fromDirectory(directory)
        }
    }

    /// The set-up in words: the BLAS kernel, the threads, the weights.
    var description: String {
        let weights: String
        switch source {
        case .preset(let preset): weights = "preset \(preset.rawValue) (zero weights in memory)"
        case .directory(let path, _): weights = "model \(path)"
        }
        if backend.device != .cpu { return "device \(backend.device); \(weights)" }
        return "OpenBLAS \(BLAS.coreDescription) kernel; \(cpu?.threads ?? BLAS.threads) threads; \(weights)"
    }
}

/// What one model benchmark measured.
public struct ModelBenchResult: Sendable {
    public var name: String
    /// The fastest and the median timed run, seconds.
    public var best: Double, median: Double
    /// Direct-method FLOPs of one run (GEMMs as issued, 3×3 convolutions counted as im2col + GEMM would).
    public var flops: Double
    /// Seconds per kernel category of the fastest run (`KernelProfile.Category` names, and `other`).
    public var breakdown: [String: Double]
    /// Direct-method FLOPs per kernel category of the fastest run.
    public var breakdownFlops: [String: Double] = [:]
    /// Resident memory after the warm-up run and after the last run, MiB (growth between them would be a leak).
    public var residentAfterWarmUp = 0.0, residentAtEnd = 0.0
    /// Time per convolution shape in the fastest run.
    public var shapes: [String: KernelProfile.ShapeTotal] = [:]
    /// Each timed run's seconds and the sgemm GFLOP/s of the cores while it ran: the faster of the samples taken just
    /// before and just after it (a sample lasts a fifth of a second and a brief slowdown can catch it; the mean of the
    /// two let one such sample flatter a run: a VAE decode came out at 3.20 × sgemm, its median run 2.60 ×).
    public var runs: [(seconds: Double, sgemm: Double)] = []
    /// Seconds × that sgemm, in GFLOP: the sgemm work the cores could have done in the time, the fastest run's and
    /// the median; a time comparable across periods of a shared machine's speed. A sum for a whole-pipeline estimate.
    public var sgemmWork: (best: Double, median: Double) = (0, 0)
    /// On a device other than the CPU, per timed run: `dispatches_per_step`, `submits_per_step`,
    /// `host_device_bytes_per_step`, and the device memory in MiB (`device_memory_weights_mb`, held before the runs;
    /// `device_memory_peak_mb`, the most held during them).
    public var device: [String: Double] = [:]

    public init(
        name: String, best: Double, median: Double, flops: Double, breakdown: [String: Double],
        breakdownFlops: [String: Double] = [:], residentAfterWarmUp: Double = 0, residentAtEnd: Double = 0,
        shapes: [String: KernelProfile.ShapeTotal] = [:], runs: [(seconds: Double, sgemm: Double)] = [],
        sgemmWork: (best: Double, median: Double) = (0, 0)
    ) {
        (self.name, self.best, self.median, self.flops, self.breakdown) = (name, best, median, flops, breakdown)
        (self.breakdownFlops, self.residentAfterWarmUp, self.residentAtEnd) =
            (breakdownFlops, residentAfterWarmUp, residentAtEnd)
        (self.shapes, self.runs, self.sgemmWork) = (shapes, runs, sgemmWork)
    }

    /// Effective GFLOP/s of the fastest run.
    public var gflops: Double { flops / best / 1e9 }
}

/// A model benchmark's figures with what the process measured at its end: its lines and its JSON document.
public struct ModelBenchReport: Sendable {
    /// The parts measured; the first is the one the document's top-level figures describe.
    public var results: [ModelBenchResult]
    /// Further figures for the document and the lines (the pipeline's DPM-Solver++ estimate).
    public var extra: [String: Double]
    /// sgemm 2048³ measured after the parts, GFLOP/s.
    public var sgemmGFLOPS: Double
    /// Peak resident set size of the process, MiB.
    public var peakRSSMegabytes: Double
    /// OpenBLAS's kernel family (`BLAS.coreName`) and how wide its vectors are (`BLAS.vectorLevel`).
    public var blasKernel: String, blasVectorLevel: Int
    public var threads: Int
    /// The options' `repeats` and `layers`, for the lines.
    public var repeats: Int, layers: Int
    /// The device (`cpu`, `vulkan:N`) and the weights' precision.
    public var device = "cpu", precision = "f32"

    /// The human lines: per part its times, GFLOP/s against the sgemm, breakdown, slowest layers and resident memory.
    public var lines: [String] {
        let peak = sgemmGFLOPS
        var lines: [String] = []
        for r in results {
            lines.append(
                String(
                    format: "%@: best %.3f s  median %.3f s  %.1f effective GFLOP/s (%.2f × sgemm)", r.name, r.best,
                    r.median, r.gflops, r.gflops / peak))
            if r.sgemmWork.best > 0 {
                let runs = r.runs.map { String(format: "%.3f s at %.0f", $0.seconds, $0.sgemm) }
                lines.append(
                    String(
                        format: "  against the sgemm sampled around each run: %.2f × sgemm best, %.2f × median%@",
                        r.flops / 1e9 / r.sgemmWork.best, r.flops / 1e9 / r.sgemmWork.median,
                        runs.isEmpty ? "" : " (" + runs.joined(separator: ", ") + " GFLOP/s)"))
            }
            let total = r.best
            let parts = r.breakdown.filter { $0.value >= 5e-4 }.sorted { $0.value > $1.value }.map { key, seconds in
                let share = String(format: "%@ %.3f s (%.0f %%", key, seconds, 100 * seconds / max(1e-9, total))
                guard let flops = r.breakdownFlops[key], seconds > 0 else { return share + ")" }
                return share + String(format: ", %.0f GFLOP/s)", flops / seconds / 1e9)
            }
            lines.append("  breakdown (fastest run): " + parts.joined(separator: ", "))
            for (shape, entry) in r.shapes.sorted(by: { $0.value.seconds > $1.value.seconds }).prefix(layers) {
                let gflops = entry.flops / max(1e-9, entry.seconds) / 1e9
                lines.append(
                    String(
                        format: "    %@ ×%d: %.3f s (%.0f %%), %.0f GFLOP/s (%.2f × sgemm)", shape, entry.calls,
                        entry.seconds, 100 * entry.seconds / max(1e-9, total), gflops, gflops / peak))
            }
            lines.append(
                String(
                    format: "  resident memory: %.0f MiB after the warm-up, %.0f MiB after %d more runs (%+.0f MiB)",
                    r.residentAfterWarmUp, r.residentAtEnd, repeats, r.residentAtEnd - r.residentAfterWarmUp))
        }
        for (key, value) in extra.sorted(by: { $0.key < $1.key }) { lines.append("  \(key): \(value)") }
        lines.append(String(format: "sgemm 2048³ in the same run: %.1f GFLOP/s", peak))
        lines.append(String(format: "peak RSS: %.0f MiB", peakRSSMegabytes))
        return lines
    }

    /// The `--json` document (what `Ops/bench-report` reads): the first part's `best_s`, `median_s`, `gflops`,
    /// `breakdown`, `breakdown_gflop`, `rss_after_warmup_mb`, `rss_end_mb`, `sgemm_work_gflop` {best, median} and
    /// `runs` [{s, sgemm_gflops}]; the process's `sgemm_gflops`, `blas_kernel`, `blas_vector_level`, `peak_rss_mb`,
    /// `threads`; `parts` {name: {best_s, median_s, gflops}} when there are several; and the `extra` figures.
    public func jsonDocument() throws -> String {
        precondition(!results.isEmpty, "a model benchmark report without a result")
        let main = results[0]
        func round3(_ v: Double) -> Double { BenchJSON.rounded(v, places: 3) }
        func round6(_ v: Double) -> Double { BenchJSON.rounded(v, places: 6) }
        var object: [String: Any] = [
            "median_s": round3(main.median), "best_s": round3(main.best), "gflops": round3(main.gflops),
            "sgemm_gflops": round3(sgemmGFLOPS), "blas_kernel": blasKernel, "blas_vector_level": blasVectorLevel,
            "peak_rss_mb": round3(peakRSSMegabytes), "threads": threads,
            "breakdown": main.breakdown.mapValues(round3),
            "breakdown_gflop": main.breakdownFlops.mapValues { round3($0 / 1e9) },
            "rss_after_warmup_mb": round3(main.residentAfterWarmUp), "rss_end_mb": round3(main.residentAtEnd),
            "sgemm_work_gflop": ["best": round6(main.sgemmWork.best), "median": round6(main.sgemmWork.median)],
            "runs": main.runs.map { ["s": round6($0.seconds), "sgemm_gflops": round6($0.sgemm)] },
            "device": device, "precision": precision,
        ]
        if results.count > 1 {
            object["parts"] = Dictionary(
                uniqueKeysWithValues: results.map {
                    ($0.name, ["best_s": round3($0.best), "median_s": round3($0.median), "gflops": round3($0.gflops)])
                })
        }
        if !main.device.isEmpty {
            for key in ["dispatches_per_step", "submits_per_step", "host_device_bytes_per_step"] {
                object[key] = main.device[key].map(round3)
            }
            object["device_memory_mb"] = [
                "weights": round3(main.device["device_memory_weights_mb"] ?? 0),
                "peak": round3(main.device["device_memory_peak_mb"] ?? 0),
            ]
        }
        for (key, value) in extra { object[key] = value }
        return try BenchJSON.document(object)
    }
}

/// `bench unet|vae|text|pipeline`: the models' parts timed with every kernel profiled, each run paired with the sgemm
/// the cores reached around it.
///
/// The kernel profile is the CPU backend's (`CPUResources.profile`): run one model benchmark per backend at a time.
public enum ModelBench {
    // MARK: - The commands

    /// One guided UNet step and a window of its time modulations (`unetStep`), reported.
    public static func unet(_ options: ModelBenchOptions, log: (String) -> Void = { _ in }) throws -> ModelBenchReport {
        log(prepare(options))
        let unet = try unetStep(options)
        return report([unet.step, unet.window], options: options)
    }

    /// The VAE decoder (`vaeDecode`), reported.
    public static func vae(_ options: ModelBenchOptions, log: (String) -> Void = { _ in }) throws -> ModelBenchReport {
        log(prepare(options))
        return report([try vaeDecode(options)], options: options)
    }

    /// Both text encoders (`textEncoders`), reported.
    public static func text(_ options: ModelBenchOptions, log: (String) -> Void = { _ in }) throws -> ModelBenchReport {
        log(prepare(options))
        return report(try textEncoders(options), options: options)
    }

    /// A whole generation estimated from its parts: text encoders + steps × UNet step + time modulations + VAE
    /// decode. The estimate adds the parts' medians (its best: their fastest runs); the sampler's own arithmetic (a
    /// few element-wise passes over the latent per step) is left out. The report's first result is the `steps`-step
    /// estimate, then the parts; `extra` holds the 20-step DPM-Solver++ (2M) estimate (`dpmpp_2m_20_steps_estimate_s`,
    /// `dpmpp_2m_20_steps_sgemm_work_gflop`).
    public static func pipeline(
        _ options: ModelBenchOptions, steps: Int = 50, log: (String) -> Void = { _ in }
    ) throws -> ModelBenchReport {
        log(prepare(options))
        let text = try textEncoders(options)
        let (unet, window) = try unetStep(options)
        let vae = try vaeDecode(options)
        /// Windows of time modulations a run of n steps computes.
        func windows(_ n: Int) -> Double {
            Double((n + StepModulations.defaultWindow - 1) / StepModulations.defaultWindow)
        }
        /// A run of n steps summed from its parts' `figure` (seconds, FLOPs, sgemm work, fastest or median alike).
        func sum(_ n: Int, _ figure: (ModelBenchResult) -> Double) -> Double {
            text.map(figure).reduce(0, +) + figure(vae) + Double(n) * figure(unet) + windows(n) * figure(window)
        }
        var total = ModelBenchResult(
            name: "pipeline estimate, \(steps) steps", best: sum(steps, \.best), median: sum(steps, \.median),
            flops: sum(steps, \.flops), breakdown: [:],
            sgemmWork: (sum(steps, \.sgemmWork.best), sum(steps, \.sgemmWork.median)))
        for part in text + [unet, window, vae] {
            let weight = part.name == unet.name ? Double(steps) : part.name == window.name ? windows(steps) : 1
            for (key, value) in part.breakdown { total.breakdown[key, default: 0] += weight * value }
        }
        // On a device: a sampling step's figures are the UNet step's; the memory, the most any part held.
        if !unet.device.isEmpty {
            total.device = unet.device
            let parts = text + [unet, window, vae]
            total.device["device_memory_weights_mb"] = parts.compactMap { $0.device["device_memory_weights_mb"] }.max()
            total.device["device_memory_peak_mb"] = parts.compactMap { $0.device["device_memory_peak_mb"] }.max()
        }
        // dpmpp_2m evaluates the UNet once per step, like DDIM.
        return report(
            [total] + text + [unet, window, vae], options: options,
            extra: [
                "dpmpp_2m_20_steps_estimate_s": BenchJSON.rounded(sum(20, \.median), places: 3),
                "dpmpp_2m_20_steps_sgemm_work_gflop": BenchJSON.rounded(sum(20, \.sgemmWork.median), places: 3),
            ])
    }

    /// Describes the set-up (the header line).
    static func prepare(_ options: ModelBenchOptions) -> String { options.description }

    /// The results with the sgemm 2048³ measured once more and the process's peak RSS.
    public static func report(
        _ results: [ModelBenchResult], options: ModelBenchOptions, extra: [String: Double] = [:]
    ) -> ModelBenchReport {
        // The sgemm probe runs on the CPU backend's own pool.
        let binding = options.cpu?.resources.enter()
        defer { binding?.leave() }
        var report = ModelBenchReport(
            results: results, extra: extra, sgemmGFLOPS: probe.gflops(repeats: 3), peakRSSMegabytes: peakRSSMegabytes,
            blasKernel: BLAS.coreName, blasVectorLevel: BLAS.vectorLevel(core: BLAS.coreName), threads: BLAS.threads,
            repeats: options.repeats, layers: options.layers)
        (report.device, report.precision) = (options.backend.device.description, options.precision)
        return report
    }

    // MARK: - The parts

    /// One guided UNet step as a sampling run takes it (the ResBlocks' time modulations computed in advance), and
    /// the computation of those modulations for a window of `StepModulations.defaultWindow` timesteps, which a run
    /// pays once per window.
    public static func unetStep(
        _ options: ModelBenchOptions
    ) throws -> (step: ModelBenchResult, window: ModelBenchResult) {
        let unet = try options.load({ try $0.unet(checkFinite: false).module }) {
            var c = $1.unet
            c.inpainting = false
            return try Text2ImUNet($0, config: c)
        }
        let rows = 2 * options.batch
        let (height, width) = (options.latentHeight, options.latentWidth)
        let t = textInputs(try options.config(), rows: rows)
        var text = unet.textConditioning(
            full1: options.input(t.full1), pooled1: options.input(t.pooled1), full2: options.input(t.full2))
        let x = options.input(KernelBenchmark.random([rows, unet.inputChannels, height, width], seed: 14))
        let timesteps = [Float](repeating: 500, count: rows)
        text.expect(timesteps: [500])  // computed in the warm-up run
        let step = measure(
            "UNet forward, \(rows) rows (\(options.batch) image\(options.batch > 1 ? "s" : "") per guided step), "
                + "\(height)×\(width) latent", repeats: options.repeats, backend: options.backend
        ) {
            _ = unet(x, timesteps: timesteps, text: text)
        }
        let window = (0..<StepModulations.defaultWindow).map { Float(980 - 40 * $0) }
        let modulations = measure(
            "ResBlock time modulations, \(window.count) timesteps × \(rows) rows (once per \(window.count) steps)",
            repeats: options.repeats, backend: options.backend
        ) {
            _ = unet.modulationTable(window.map { Array(repeating: $0, count: rows) }, text: text)
        }
        return (step, modulations)
    }

    /// The VAE decoder on `batch` latents.
    public static func vaeDecode(_ options: ModelBenchOptions) throws -> ModelBenchResult {
        let vae = try options.load({ try $0.vae(checkFinite: false).module }) { try AutoencoderKL($0, config: $1.vae) }
        let (height, width) = (options.latentHeight, options.latentWidth)
        let z = options.input(KernelBenchmark.random([options.batch, vae.config.embedDim, height, width], seed: 15))
        let f = vae.downsamplingFactor
        return measure(
            "VAE decode, \(options.batch) × \(f * height)×\(f * width)", repeats: options.repeats,
            backend: options.backend
        ) {
            _ = vae.decode(z)
        }
    }

    /// Both text encoders (XLM-R large M-CLIP, then mT5) on 2 × `batch` prompts of 77 tokens.
    public static func textEncoders(_ options: ModelBenchOptions) throws -> [ModelBenchResult] {
        let rows = 2 * options.batch
        let ids = (0..<rows).map { r in (0..<77).map { i in i == 0 ? 0 : (i < 20 ? 1000 + 37 * i + r : 1) } }
        let mask = (0..<rows).map { _ in (0..<77).map { $0 < 20 ? 1 : 0 } }
        let xlmr = try options.load({ try $0.textEncoder1(checkFinite: false).module }) {
            try MultilingualCLIP($0, config: $1.textEncoder1)
        }
        let first = try measure(
            "XLM-R large encoder (M-CLIP), \(rows) × 77 tokens", repeats: options.repeats, backend: options.backend
        ) {
            _ = try xlmr(ids: ids, mask: mask)
        }
        let mt5 = try options.load({ try $0.textEncoder2(checkFinite: false).module }) {
            try MT5Encoder($0, config: $1.textEncoder2)
        }
        let second = try measure(
            "mT5 encoder, \(rows) × 77 tokens", repeats: options.repeats, backend: options.backend
        ) {
            _ = try mt5(ids: ids, mask: mask)
        }
        return [first, second]
    }

    /// Random text conditioning inputs for `rows` UNet rows.
    static func textInputs(_ config: ModelConfig, rows: Int) -> (full1: Tensor, pooled1: Tensor, full2: Tensor) {
        (
            KernelBenchmark.random([rows, 77, config.unet.textEncoderInDim1], seed: 11),
            KernelBenchmark.random([rows, config.unet.textEncoderInDim2], seed: 12),
            KernelBenchmark.random([rows, 77, Text2ImUNet.mt5Width], seed: 13)
        )
    }

    // MARK: - Measuring

    /// Times `body` once to warm up and `repeats` times more, profiling every run; the breakdown is the fastest
    /// run's (on shared cores a slow run's breakdown would not add up to the best time).
    ///
    /// On a device other than the CPU each run ends when the device has finished (`synchronize`), and the result
    /// carries the device's counters per run (`ModelBenchResult.device`).
    public static func measure(
        _ name: String, repeats: Int, backend: any ComputeBackend = CPUBackend.shared, _ body: () throws -> Void
    ) rethrows -> ModelBenchResult {
        precondition(repeats >= 1, "a model benchmark needs at least one timed run")
        backend.synchronize()
        let weightsBytes = backend.statistics?.memoryInUse ?? 0
        var deviceStart = backend.statistics
        // The CPU backend's resources (its pool runs the sgemm probe too) and profile; another device's work is not
        // profiled (an empty profile).
        let cpu = backend as? CPUBackend
        let binding = cpu?.resources.enter()
        defer { binding?.leave() }
        let profile = cpu?.resources.profile ?? KernelProfile()
        (KernelProfile.enabled, profile.byShape) = (true, true)
        defer { (KernelProfile.enabled, profile.byShape) = (false, false) }
        var samples: [Double] = []
        var shapes: [String: KernelProfile.ShapeTotal] = [:]
        var breakdown: [String: Double] = [:]
        var flops = 0.0
        var breakdownFlops: [String: Double] = [:]
        var residentAfterWarmUp = 0.0
        let probe = Self.probe  // allocated before the warm-up, so the resident memory measured after it holds it
        var runs: [(seconds: Double, sgemm: Double)] = []
        var before = 0.0
        for run in 0...repeats {
            profile.reset()
            let start = DispatchTime.now().uptimeNanoseconds
            try body()
            backend.synchronize()
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            if run == 0 {  // warm-up: scratch buffers, page faults, pipelines
                residentAfterWarmUp = residentMegabytes
                before = probe.gflops()
                deviceStart = backend.statistics
                continue
            }
            samples.append(seconds)
            if seconds <= samples.min()! {
                let totals = profile.totals
                breakdown = Dictionary(uniqueKeysWithValues: totals.map { ($0.key.rawValue, $0.value) })
                breakdown["other"] = max(0, seconds - totals.values.reduce(0, +))
                flops = profile.flops
                shapes = profile.shapeTotals
                breakdownFlops = Dictionary(
                    uniqueKeysWithValues: profile.flopTotals.filter { $0.value > 0 }.map {
                        ($0.key.rawValue, $0.value)
                    })
            }
            // Only after the run's profile is read: the probe's products would count among the run's FLOPs.
            let after = probe.gflops()
            runs.append((seconds, max(before, after)))
            before = after
        }
        samples.sort()
        let work = runs.map { $0.seconds * $0.sgemm }.sorted()
        var result = ModelBenchResult(
            name: name, best: samples[0], median: samples[samples.count / 2], flops: flops, breakdown: breakdown,
            breakdownFlops: breakdownFlops, residentAfterWarmUp: residentAfterWarmUp, residentAtEnd: residentMegabytes,
            shapes: shapes, runs: runs, sgemmWork: (work[0], work[work.count / 2]))
        if let start = deviceStart, let end = backend.statistics {
            let n = Double(repeats)
            result.device = [
                "dispatches_per_step": Double(end.dispatches - start.dispatches) / n,
                "submits_per_step": Double(end.submits - start.submits) / n,
                "host_device_bytes_per_step":
                    Double(end.bytesToDevice - start.bytesToDevice + end.bytesFromDevice - start.bytesFromDevice) / n,
                "device_memory_weights_mb": Double(weightsBytes) / 1_048_576,
                "device_memory_peak_mb": Double(end.memoryPeak) / 1_048_576,
            ]
        }
        return result
    }

    /// The sgemm 2048³ that every benchmark of the process samples around its runs (its operands, 48 MB, allocated
    /// once).
    nonisolated(unsafe) static let probe = KernelBenchmark.SgemmProbe()

    /// Resident set size of this process now, in MiB (`/proc/self/statm`; 0 where it cannot be read).
    static var residentMegabytes: Double {
        guard let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = statm.split(separator: " ")
        guard fields.count > 1, let pages = Double(fields[1]) else { return 0 }
        return pages * Double(sysconf(Int32(_SC_PAGESIZE))) / 1_048_576
    }

    /// Peak resident set size of this process so far, in MiB.
    static var peakRSSMegabytes: Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_maxrss) / 1024
    }
}
