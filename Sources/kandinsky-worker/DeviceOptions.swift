import ArgumentParser
import Kandinsky
import Tensor
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

    /// The device and precision asked for, checked, with the device's backend opened.
    func open() throws -> (device: DeviceInfo, precision: Precision, backend: any ComputeBackend) {
        let (device, precision) = try select()
        do {
            return (device, precision, try Devices.backend(for: device.id))
        } catch {
            throw ValidationError(error.message)
        }
    }

    /// `directory` set up for the device and precision asked for: its backend, half precision, and the check that
    /// its weights fit the device.
    func place(_ directory: inout ModelDirectory) throws {
        let (device, precision, backend) = try open()
        directory.keepHalfPrecision = precision == .f16
        directory.backend = backend
        do {
            try Devices.checkCapacity(directory, on: device, precision: precision)
        } catch {
            throw ValidationError(error.message)
        }
    }
}
