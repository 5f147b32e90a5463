import ArgumentParser
import Kandinsky
import Worker

/// `--model`, `--device` and `--precision`, shared by the commands that generate on this machine (`generate`,
/// `demo-eval`).
struct ModelOptions: ParsableArguments {
    @Option(help: "The model directory (default: the embedded multilingual shapes demo model).")
    var model: String?

    @OptionGroup var placement: DeviceOptions

    /// The model directory opened (its model.json read; no weights loaded yet), after the device and precision are
    /// checked.
    func directory() throws -> ModelDirectory {
        _ = try placement.select()
        var directory: ModelDirectory
        if let model {
            directory = try ModelDirectory(path: model)
        } else {
            directory = try ModelDirectory.embeddedDemo()
        }
        try placement.place(&directory)
        return directory
    }
}
