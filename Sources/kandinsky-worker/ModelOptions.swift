import ArgumentParser
import Kandinsky

/// `--model` and `--half-weights`, shared by the commands that generate on this machine (`generate`, `demo-eval`).
struct ModelOptions: ParsableArguments {
    @Option(help: "The model directory (default: the embedded multilingual shapes demo model).")
    var model: String?

    @Flag(help: "Keep weights stored as F16/BF16 in half precision, expanded to float32 at each use.")
    var halfWeights = false

    /// The model directory opened (its model.json read; no weights loaded yet).
    func directory() throws(KandinskyError) -> ModelDirectory {
        var directory: ModelDirectory
        if let model {
            directory = try ModelDirectory(path: model)
        } else {
            directory = try ModelDirectory.embeddedDemo()
        }
        directory.keepHalfPrecision = halfWeights
        return directory
    }
}
