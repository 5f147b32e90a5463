import ArgumentParser
import Foundation
import Kandinsky
import Tensor

/// Options shared by `bench unet|vae|text|pipeline`.
struct ModelBenchOptions: ParsableArguments {
    @Option(help: "Model configuration when no --model is given: tiny or full (weights built in memory, all zero).")
    var preset = "full"

    var presetConfig: ModelPreset { ModelPreset(rawValue: preset) ?? .full }

    @Option(help: "A model directory to load (memory-mapped weights); its model.json replaces --preset.")
    var model: String?

    @Flag(help: "Keep weights stored as F16/BF16 in half precision, expanded to float32 at each use.")
    var halfWeights = false

    @Option(help: "Images per guided step (the UNet runs 2 × this many rows).")
    var batch = 1

    @Option(help: "Latent size HxW (64x64 for a 512×512 image).")
    var latent = "64x64"

    @Option(help: "Threads for the kernels (default: one per core).")
    var threads: Int?

    @Option(help: "Timed repetitions (after one warm-up).")
    var repeats = 3

    @Flag(help: "Print one JSON document on stdout (the human lines go to stderr).")
    var json = false

    @Option(help: "Also list the convolution shapes that took the most time in the fastest run (this many).")
    var layers = 0

    var latentSize: (height: Int, width: Int)? {
        let parts = latent.lowercased().split(separator: "x").compactMap { Int($0) }
        guard parts.count == 2, parts.allSatisfy({ $0 > 0 }) else { return nil }
        return (parts[0], parts[1])
    }

    func validate() throws {
        guard ModelPreset(rawValue: preset) != nil else { throw ValidationError("--preset must be tiny or full") }
        guard batch >= 1 else { throw ValidationError("--batch must be at least 1") }
        guard repeats >= 1 else { throw ValidationError("--repeats must be at least 1") }
        guard layers >= 0 else { throw ValidationError("--layers must not be negative") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
        guard latentSize != nil else { throw ValidationError("--latent must be HxW, e.g. 64x64") }
    }

    /// Sets the thread count before any kernel runs and describes the set-up.
    func prepare() -> String {
        if let threads { BLAS.threads = threads }
        let source = model.map { "model \($0)" } ?? "preset \(preset) (zero weights in memory)"
        return "OpenBLAS \(BLAS.coreDescription) kernel; \(BLAS.threads) threads; \(source)"
    }

    var config: ModelConfig {
        get throws {
            if let model { return try ModelDirectory(path: model).config }
            return presetConfig.config
        }
    }

    /// Builds a component from the model directory, or from zero pages for the preset.
    func load<M>(
        _ fromDirectory: (ModelDirectory) throws -> M, _ fromWeights: (WeightFile, ModelConfig) throws -> M
    ) throws -> M {
        if let model {
            var directory = try ModelDirectory(path: model)
            directory.keepHalfPrecision = halfWeights
            return try fromDirectory(directory)
        }
        return try fromWeights(WeightFile(recording: preset), presetConfig.config)
    }
}

/// What one model benchmark measured.
struct ModelBenchResult {
    var name: String
    var best: Double, median: Double
    /// Direct-method FLOPs of one run (GEMMs as issued, 3×3 convolutions counted as im2col + GEMM would).
    var flops: Double
    var breakdown: [String: Double]
    /// Direct-method FLOPs per kernel category of the fastest run.
    var breakdownFlops: [String: Double] = [:]
    /// Resident memory after the warm-up run and after the last run, MiB (growth between them would be a leak).
    var residentAfterWarmUp = 0.0, residentAtEnd = 0.0
    /// Time per convolution shape in the fastest run.
    var shapes: [String: KernelProfile.ShapeTotal] = [:]
    /// Each timed run's seconds and the sgemm GFLOP/s of the cores while it ran: the faster of the samples taken just
    /// before and just after it (a sample lasts a fifth of a second and a brief slowdown can catch it; the mean of the
    /// two let one such sample flatter a run: a VAE decode came out at 3.20 × sgemm, its median run 2.60 ×).
    var runs: [(seconds: Double, sgemm: Double)] = []
    /// Seconds × that sgemm, in GFLOP: the sgemm work the cores could have done in the time, the fastest run's and
    /// the median; a time comparable across periods of a shared machine's speed. A sum for a whole-pipeline estimate.
    var sgemmWork: (best: Double, median: Double) = (0, 0)

    var gflops: Double { flops / best / 1e9 }
}

enum ModelBench {
    /// Times `body`, profiling every run; the breakdown is the fastest run's (on shared cores a slow run's
    /// breakdown would not add up to the best time).
    static func measure(_ name: String, repeats: Int, _ body: () throws -> Void) rethrows -> ModelBenchResult {
        (KernelProfile.enabled, KernelProfile.byShape) = (true, true)
        defer { (KernelProfile.enabled, KernelProfile.byShape) = (false, false) }
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
            KernelProfile.reset()
            let start = DispatchTime.now().uptimeNanoseconds
            try body()
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            if run == 0 {  // warm-up: scratch buffers, page faults
                residentAfterWarmUp = residentMegabytes
                before = probe.gflops()
                continue
            }
            samples.append(seconds)
            if seconds <= samples.min()! {
                let totals = KernelProfile.totals
                breakdown = Dictionary(uniqueKeysWithValues: totals.map { ($0.key.rawValue, $0.value) })
                breakdown["other"] = max(0, seconds - totals.values.reduce(0, +))
                flops = KernelProfile.flops
                shapes = KernelProfile.shapeTotals
                breakdownFlops = Dictionary(
                    uniqueKeysWithValues: KernelProfile.flopTotals.filter { $0.value > 0 }.map {
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
        return ModelBenchResult(
            name: name, best: samples[0], median: samples[samples.count / 2], flops: flops, breakdown: breakdown,
            breakdownFlops: breakdownFlops, residentAfterWarmUp: residentAfterWarmUp, residentAtEnd: residentMegabytes,
            shapes: shapes, runs: runs, sgemmWork: (work[0], work[work.count / 2]))
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

    static func report(_ results: [ModelBenchResult], options: ModelBenchOptions, extra: [String: Any] = [:]) throws {
        let peak = probe.gflops(repeats: 3)
        let console = Console(json: options.json)
        for r in results {
            console.line(
                String(
                    format: "%@: best %.3f s  median %.3f s  %.1f effective GFLOP/s (%.2f × sgemm)", r.name, r.best,
                    r.median, r.gflops, r.gflops / peak))
            if r.sgemmWork.best > 0 {
                let runs = r.runs.map { String(format: "%.3f s at %.0f", $0.seconds, $0.sgemm) }
                console.line(
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
            console.line("  breakdown (fastest run): " + parts.joined(separator: ", "))
            for (shape, entry) in r.shapes.sorted(by: { $0.value.seconds > $1.value.seconds }).prefix(options.layers) {
                let gflops = entry.flops / max(1e-9, entry.seconds) / 1e9
                console.line(
                    String(
                        format: "    %@ ×%d: %.3f s (%.0f %%), %.0f GFLOP/s (%.2f × sgemm)", shape, entry.calls,
                        entry.seconds, 100 * entry.seconds / max(1e-9, total), gflops, gflops / peak))
            }
            console.line(
                String(
                    format: "  resident memory: %.0f MiB after the warm-up, %.0f MiB after %d more runs (%+.0f MiB)",
                    r.residentAfterWarmUp, r.residentAtEnd, options.repeats, r.residentAtEnd - r.residentAfterWarmUp))
        }
        for (key, value) in extra.sorted(by: { $0.key < $1.key }) { console.line("  \(key): \(value)") }
        console.line(String(format: "sgemm 2048³ in the same run: %.1f GFLOP/s", peak))
        console.line(String(format: "peak RSS: %.0f MiB", peakRSSMegabytes))
        guard options.json, let main = results.first else { return }
        func round3(_ v: Double) -> Double { (v * 1000).rounded() / 1000 }
        func round6(_ v: Double) -> Double { (v * 1e6).rounded() / 1e6 }
        var object: [String: Any] = [
            "median_s": round3(main.median), "best_s": round3(main.best), "gflops": round3(main.gflops),
            "sgemm_gflops": round3(peak), "blas_kernel": BLAS.coreName,
            "blas_vector_level": BLAS.vectorLevel(core: BLAS.coreName), "peak_rss_mb": round3(peakRSSMegabytes),
            "threads": BLAS.threads,
            "breakdown": main.breakdown.mapValues(round3),
            "breakdown_gflop": main.breakdownFlops.mapValues { round3($0 / 1e9) },
            "rss_after_warmup_mb": round3(main.residentAfterWarmUp), "rss_end_mb": round3(main.residentAtEnd),
            "sgemm_work_gflop": ["best": round6(main.sgemmWork.best), "median": round6(main.sgemmWork.median)],
            "runs": main.runs.map { ["s": round6($0.seconds), "sgemm_gflops": round6($0.sgemm)] },
        ]
        if results.count > 1 {
            object["parts"] = Dictionary(
                uniqueKeysWithValues: results.map {
                    ($0.name, ["best_s": round3($0.best), "median_s": round3($0.median), "gflops": round3($0.gflops)])
                })
        }
        for (key, value) in extra { object[key] = value }
        try console.document(object)
    }

    /// Random text conditioning inputs for `rows` UNet rows.
    static func textInputs(_ config: ModelConfig, rows: Int) -> (full1: Tensor, pooled1: Tensor, full2: Tensor) {
        (
            KernelBenchmark.random([rows, 77, config.unet.textEncoderInDim1], seed: 11),
            KernelBenchmark.random([rows, config.unet.textEncoderInDim2], seed: 12),
            KernelBenchmark.random([rows, 77, Text2ImUNet.mt5Width], seed: 13)
        )
    }

    /// One guided UNet step as a sampling run takes it (the ResBlocks' time modulations computed in advance), and
    /// the computation of those modulations for a window of `StepModulations.defaultWindow` timesteps, which a run
    /// pays once per window.
    static func unetStep(_ options: ModelBenchOptions) throws -> (step: ModelBenchResult, window: ModelBenchResult) {
        let unet = try options.load({ try $0.unet(checkFinite: false).module }) {
            var c = $1.unet
            c.inpainting = false
            return try Text2ImUNet($0, config: c)
        }
        let rows = 2 * options.batch
        let size = options.latentSize!
        let t = textInputs(try options.config, rows: rows)
        var text = unet.textConditioning(full1: t.full1, pooled1: t.pooled1, full2: t.full2)
        let x = KernelBenchmark.random([rows, unet.inputChannels, size.height, size.width], seed: 14)
        let timesteps = [Float](repeating: 500, count: rows)
        text.expect(timesteps: [500])  // computed in the warm-up run
        let step = ModelBench.measure(
            "UNet forward, \(rows) rows (\(options.batch) image\(options.batch > 1 ? "s" : "") per guided step), "
                + "\(size.height)×\(size.width) latent", repeats: options.repeats
        ) {
            _ = unet(x, timesteps: timesteps, text: text)
        }
        let window = (0..<StepModulations.defaultWindow).map { Float(980 - 40 * $0) }
        let modulations = ModelBench.measure(
            "ResBlock time modulations, \(window.count) timesteps × \(rows) rows (once per \(window.count) steps)",
            repeats: options.repeats
        ) {
            _ = unet.modulationTable(window.map { Array(repeating: $0, count: rows) }, text: text)
        }
        return (step, modulations)
    }

    static func vaeDecode(_ options: ModelBenchOptions) throws -> ModelBenchResult {
        let vae = try options.load({ try $0.vae(checkFinite: false).module }) { try AutoencoderKL($0, config: $1.vae) }
        let size = options.latentSize!
        let z = KernelBenchmark.random([options.batch, vae.config.embedDim, size.height, size.width], seed: 15)
        let f = vae.downsamplingFactor
        return ModelBench.measure(
            "VAE decode, \(options.batch) × \(f * size.height)×\(f * size.width)", repeats: options.repeats
        ) {
            _ = vae.decode(z)
        }
    }

    static func textEncoders(_ options: ModelBenchOptions) throws -> [ModelBenchResult] {
        let rows = 2 * options.batch
        let ids = (0..<rows).map { r in (0..<77).map { i in i == 0 ? 0 : (i < 20 ? 1000 + 37 * i + r : 1) } }
        let mask = (0..<rows).map { _ in (0..<77).map { $0 < 20 ? 1 : 0 } }
        let xlmr = try options.load({ try $0.textEncoder1(checkFinite: false).module }) {
            try MultilingualCLIP($0, config: $1.textEncoder1)
        }
        let first = try ModelBench.measure(
            "XLM-R large encoder (M-CLIP), \(rows) × 77 tokens", repeats: options.repeats
        ) {
            _ = try xlmr(ids: ids, mask: mask)
        }
        let mt5 = try options.load({ try $0.textEncoder2(checkFinite: false).module }) {
            try MT5Encoder($0, config: $1.textEncoder2)
        }
        let second = try ModelBench.measure("mT5 encoder, \(rows) × 77 tokens", repeats: options.repeats) {
            _ = try mt5(ids: ids, mask: mask)
        }
        return [first, second]
    }
}

extension Bench {
    struct UNet: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "unet",
            abstract: "Time one guided UNet step (2 × batch rows): seconds, effective GFLOP/s, breakdown.")
        @OptionGroup var options: ModelBenchOptions

        func run() throws {
            Console(json: options.json).line(options.prepare())
            let unet = try ModelBench.unetStep(options)
            try ModelBench.report([unet.step, unet.window], options: options)
        }
    }

    struct VAE: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "vae",
            abstract: "Time the VAE decoder on batch latents of --latent size.")
        @OptionGroup var options: ModelBenchOptions

        func run() throws {
            Console(json: options.json).line(options.prepare())
            try ModelBench.report([try ModelBench.vaeDecode(options)], options: options)
        }
    }

    struct Text: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "text",
            abstract: "Time both text encoders on 2 × batch prompts of 77 tokens.")
        @OptionGroup var options: ModelBenchOptions

        func run() throws {
            Console(json: options.json).line(options.prepare())
            try ModelBench.report(try ModelBench.textEncoders(options), options: options)
        }
    }

    struct Pipeline: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "pipeline",
            abstract:
                "Estimate a whole generation from its parts: text encoders + steps × UNet step + time modulations + VAE decode.",
            discussion: """
                The estimate adds the parts' measured medians (best_s: their fastest runs); the sampler's own \
                arithmetic (a few element-wise passes over the latent per step) is left out. median_s in --json is the \
                50-step DDIM estimate.
                """)
        @OptionGroup var options: ModelBenchOptions

        @Option(help: "Sampling steps of the main estimate.")
        var steps = 50

        func run() throws {
            Console(json: options.json).line(options.prepare())
            let text = try ModelBench.textEncoders(options)
            let (unet, window) = try ModelBench.unetStep(options)
            let vae = try ModelBench.vaeDecode(options)
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
            // dpmpp_2m evaluates the UNet once per step, like DDIM.
            try ModelBench.report(
                [total] + text + [unet, window, vae], options: options,
                extra: [
                    "dpmpp_2m_20_steps_estimate_s": (sum(20, \.median) * 1000).rounded() / 1000,
                    "dpmpp_2m_20_steps_sgemm_work_gflop": (sum(20, \.sgemmWork.median) * 1000).rounded() / 1000,
                ])
        }
    }
}
