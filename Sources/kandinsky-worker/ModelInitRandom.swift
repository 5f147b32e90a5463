import ArgumentParser
import Foundation
import Kandinsky
import Tensor

/// `model init-random --preset tiny|full DIR`: a model directory with random weights, for tests and benchmarks.
struct ModelInitRandom: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init-random",
        abstract: "Create a model directory with random weights (the tiny fixture size, or the real 2.0 sizes).")

    @Option(help: "tiny (the conformance fixtures' configuration) or full (Kandinsky 2.0: 1.22B-parameter UNet).")
    var preset: String = "tiny"

    @Option(help: "Seed of the random weights.")
    var seed: UInt64 = 0

    @Option(help: "Storage dtype of the weights: f32, f16 or bf16.")
    var dtype: String = "f32"

    @Option(
        help:
            "Comma-separated components to write (unet, unet_inpaint, vae, text_encoder1, text_encoder2); default all.")
    var components: String?

    @Argument(help: "Directory to create (or fill).")
    var directory: String

    func validate() throws {
        guard ModelPreset(rawValue: preset) != nil else { throw ValidationError("--preset must be tiny or full") }
        guard ["f32", "f16", "bf16"].contains(dtype) else { throw ValidationError("--dtype must be f32, f16 or bf16") }
        _ = try selectedComponents()
    }

    func selectedComponents() throws -> [RandomModel.Component] {
        guard let components else { return RandomModel.Component.allCases }
        return try components.split(separator: ",").map { name in
            guard let c = RandomModel.Component(rawValue: String(name)) else {
                throw ValidationError(
                    "unknown component \(name) (unet, unet_inpaint, vae, text_encoder1, text_encoder2)")
            }
            return c
        }
    }

    func run() throws {
        let start = Date()
        let storage: DType = dtype == "f16" ? .f16 : dtype == "bf16" ? .bf16 : .f32
        try RandomModel.write(
            preset: ModelPreset(rawValue: preset)!, to: directory, seed: seed, components: try selectedComponents(),
            dtype: storage
        ) { path in print("wrote \(path)") }
        print(String(format: "done in %.1f s", Date().timeIntervalSince(start)))
    }
}
