import ArgumentParser
import Bench
import Kandinsky

/// The options of `bench unet|vae|text|pipeline`: the model, the input sizes, `--layers`, and the measurement's.
struct ModelBenchArguments: ParsableArguments {
    @Option(help: "Model configuration when no --model is given: tiny or full (weights built in memory, all zero).")
    var preset = "full"

    @Option(help: "A model directory to load (memory-mapped weights); its model.json replaces --preset.")
    var model: String?

    @OptionGroup var placement: DeviceOptions

    @Option(help: "Images per guided step (the UNet runs 2 × this many rows).")
    var batch = 1

    @Option(help: "Latent size HxW (64x64 for a 512×512 image).")
    var latent = "64x64"

    @Option(help: "Also list the convolution shapes that took the most time in the fastest run (this many).")
    var layers = 0

    enum Repeats: RepeatsDefault { static let repeats = 3 }
    @OptionGroup var measurement: MeasurementOptions<Repeats>

    var latentSize: (height: Int, width: Int)? {
        let parts = latent.lowercased().split(separator: "x").compactMap { Int($0) }
        guard parts.count == 2, parts.allSatisfy({ $0 > 0 }) else { return nil }
        return (parts[0], parts[1])
    }

    func validate() throws {
        guard ModelPreset(rawValue: preset) != nil else { throw ValidationError("--preset must be tiny or full") }
        guard batch >= 1 else { throw ValidationError("--batch must be at least 1") }
        guard layers >= 0 else { throw ValidationError("--layers must not be negative") }
        guard latentSize != nil else { throw ValidationError("--latent must be HxW, e.g. 64x64") }
    }

    /// The library's options (after `validate`), for the device and precision chosen.
    func options() throws -> ModelBenchOptions {
        let size = latentSize!
        let (_, precision, backend) = try placement.open()
        var options = ModelBenchOptions(
            source: model.map { .directory($0, keepHalfPrecision: precision == .f16) }
                ?? .preset(ModelPreset(rawValue: preset)!),
            batch: batch, latentHeight: size.height, latentWidth: size.width, repeats: measurement.repeats,
            threads: measurement.threads, layers: layers, backend: backend)
        options.halfPrecision = precision == .f16
        return options
    }

    /// Runs one of `ModelBench`'s benchmarks (its header line first) and prints its report.
    func run(
        _ benchmark: (ModelBenchOptions, _ log: (String) -> Void) throws -> ModelBenchReport
    ) throws {
        let output = measurement.output
        let report = try benchmark(try options(), output.console.line)
        try output.print(lines: report.lines, document: report.jsonDocument)
    }
}

extension BenchCommand {
    struct UNet: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "unet",
            abstract: "Time one guided UNet step (2 × batch rows): seconds, effective GFLOP/s, breakdown.")
        @OptionGroup var arguments: ModelBenchArguments

        func run() throws { try arguments.run(ModelBench.unet) }
    }

    struct VAE: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "vae",
            abstract: "Time the VAE decoder on batch latents of --latent size.")
        @OptionGroup var arguments: ModelBenchArguments

        func run() throws { try arguments.run(ModelBench.vae) }
    }

    struct Text: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "text",
            abstract: "Time both text encoders on 2 × batch prompts of 77 tokens.")
        @OptionGroup var arguments: ModelBenchArguments

        func run() throws { try arguments.run(ModelBench.text) }
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
        @OptionGroup var arguments: ModelBenchArguments

        @Option(help: "Sampling steps of the main estimate.")
        var steps = 50

        func run() throws { try arguments.run { try ModelBench.pipeline($0, steps: steps, log: $1) } }
    }
}
