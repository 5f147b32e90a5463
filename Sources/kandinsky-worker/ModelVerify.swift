import ArgumentParser
import Foundation
import Kandinsky

/// `model verify DIR`: loads every component strictly and prints what it found.
struct ModelVerify: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Load a model directory strictly and print its components, parameter counts and dtypes.")

    @Argument(help: "The model directory (model.json, *.safetensors, tokenizer1.model, tokenizer2.model).")
    var directory: String

    @Flag(help: "Skip the scan of every weight for NaN and infinity.")
    var skipFiniteCheck = false

    func run() throws {
        let model = try ModelDirectory(path: directory)
        let check = !skipFiniteCheck
        print("model \(directory): format \(model.config.format)")
        let tokenizers = try model.tokenizers()
        print("  \(pad("tokenizers", 16)) \(tokenizers.xlmr.pieceCount) / \(tokenizers.mt5.pieceCount) pieces")
        var total = 0
        func report<M>(_ name: String, _ loaded: Loaded<M>) {
            total += loaded.parameters
            let dtypes = loaded.dtypes.sorted { $0.key < $1.key }.map { "\($0.key)×\($0.value)" }.joined(separator: " ")
            print("  \(pad(name, 16)) \(pad(loaded.parameters.formatted(), 15, left: true)) parameters  \(dtypes)")
            if !loaded.unusedKeys.isEmpty {
                print(
                    "    unused tensors (\(loaded.unusedKeys.count)): \(loaded.unusedKeys.prefix(8).joined(separator: ", "))\(loaded.unusedKeys.count > 8 ? ", …" : "")"
                )
            }
        }
        report("text_encoder1", try model.textEncoder1(checkFinite: check))
        report("text_encoder2", try model.textEncoder2(checkFinite: check))
        report("unet", try model.unet(checkFinite: check))
        if model.hasInpaintingUNet { report("unet_inpaint", try model.inpaintingUNet(checkFinite: check)) }
        report("vae", try model.vae(checkFinite: check))
        print("ok: \(total.formatted()) parameters in all")
    }
}

/// `text` padded with spaces to `width` (on the left when `left`).
func pad(_ text: String, _ width: Int, left: Bool = false) -> String {
    let fill = String(repeating: " ", count: max(0, width - text.count))
    return left ? fill + text : text + fill
}
