import ArgumentParser
import Bench

/// `bench`: the measurements of the `Bench` library, their figures printed (JSON with `--json`), never asserted.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure speed; figures are printed, never asserted.",
        subcommands: [Kernels.self, UNet.self, VAE.self, Text.self, Pipeline.self, Queue.self]
    )

    struct Kernels: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "sgemm, 3×3 and kernel-1 convolution and attention GFLOP/s at the models' shapes, measured in the same run."
        )

        enum Repeats: RepeatsDefault { static let repeats = 5 }
        @OptionGroup var measurement: MeasurementOptions<Repeats>

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
            for shape in gemm where KernelBenchOptions.GEMMShape(shape) == nil {
                throw ValidationError("--gemm \(shape): expected M,N,K")
            }
        }

        func run() throws {
            let options = KernelBenchOptions(
                repeats: measurement.repeats, threads: measurement.threads,
                gemm: gemm.compactMap(KernelBenchOptions.GEMMShape.init), only: only)
            let output = measurement.output
            let report = KernelBench.run(options, log: output.console.line)
            try output.print(lines: [], document: report.jsonDocument)
        }
    }
}
