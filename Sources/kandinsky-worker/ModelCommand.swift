import ArgumentParser
import Foundation
import ModelConversion

/// `model …`: prepare and check model directories.
struct ModelCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "model",
        abstract: "Prepare model directories (DESIGN.md §2).",
        // One entry per subcommand, each in a file of its own.
        subcommands: [
            ModelConvert.self, ModelVerify.self, ModelInitRandom.self,
        ]
    )
}

/// `model convert RELEASE_DIR MODEL_DIR`: the official release files → a model directory, keys unchanged.
struct ModelConvert: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert",
        abstract: "Convert the official Kandinsky 2.0 release into a model directory.",
        discussion: """
            Reads Kandinsky-2-0.pt, Kandinsky-2-0-inpainting.pt (if present), vae.ckpt, text_encoder1/ and \
            text_encoder2/ (torch zip checkpoints, read without executing their pickles) and writes \
            unet.safetensors, unet_inpaint.safetensors, vae.safetensors, text_encoder1.safetensors, \
            text_encoder2.safetensors, tokenizer1.model, tokenizer2.model and model.json. Tensors keep their \
            names, dtypes and bytes; training-only entries (vae.ckpt's loss.*, optimizer states) are dropped. \
            model.json takes the text encoders' sizes from their config.json and the UNet, diffusion and VAE \
            settings from the official CONFIG_2_0, which --config can override; it is checked against the \
            weights' shapes before anything is written.
            """)

    @Argument(help: "The release directory (Kandinsky-2-0.pt, vae.ckpt, text_encoder1/, text_encoder2/).")
    var releaseDirectory: String

    @Argument(help: "The model directory to write (created if missing).")
    var modelDirectory: String

    @Option(
        name: .customLong("config"),
        help: "A model.json, or part of one, merged field by field over the built configuration.")
    var configOverride: String?

    @Flag(help: "Replace files already in the model directory.")
    var overwrite = false

    @Flag(help: "Print nothing but errors.")
    var quiet = false

    func validate() throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: releaseDirectory, isDirectory: &isDirectory), isDirectory.boolValue
        else { throw ValidationError("\(releaseDirectory) is not a directory") }
        if let configOverride, !FileManager.default.fileExists(atPath: configOverride) {
            throw ValidationError("--config \(configOverride) does not exist")
        }
        let release = URL(fileURLWithPath: releaseDirectory).standardizedFileURL.path
        let model = URL(fileURLWithPath: modelDirectory).standardizedFileURL.path
        guard release != model else {
            throw ValidationError("the model directory must differ from the release directory")
        }
    }

    func run() throws {
        let converter = ReleaseConverter(
            releaseDirectory: releaseDirectory, modelDirectory: modelDirectory, configOverride: configOverride,
            overwrite: overwrite)
        let quiet = quiet
        try converter.run { line in if !quiet { print(line) } }
    }
}
