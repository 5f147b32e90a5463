import ArgumentParser
import Worker

/// `--device` and `--precision`, shared by the commands that run the model (`serve`, `generate`, `forward`,
/// `bench`). Left out: `serve` takes its configuration's `device` and `precision`; the others run on the CPU in f32.
struct DeviceOptions: ParsableArguments {
    @Option(help: "Where the model runs: cpu, or vulkan:N (the order `kandinsky-worker devices` lists).")
    var device: String?

    @Option(help: "Weights' number format on the device: f32, f16 or bf16 (as the device allows; see `devices`).")
    var precision: String?

    /// The device and precision asked for, checked before anything is loaded.
    func select() throws -> (device: DeviceInfo, precision: Precision) {
        do {
            return try Devices.select(device ?? "cpu", precision: precision ?? "f32")
        } catch {
            throw ValidationError(error.message)
        }
    }
}
