import Tensor
import TestSupport
import Testing

@testable import Kandinsky

/// The devices the model suites (conformance, samplers, pipeline, seeds and batches) run on: every backend this build
/// has, each with the factor its tolerances are multiplied by. A new backend adds its entry here (when the machine has
/// the device) and is then checked by the same tests the CPU passes, against the same official numbers.
struct TestDevice: Sendable, CustomTestStringConvertible {
    var name: String
    var backend: any ComputeBackend
    /// 1 for the CPU: its backend is the reference arithmetic, and the tolerances are the fixtures README's.
    var toleranceFactor: Double

    static let available: [TestDevice] = [TestDevice(name: "cpu", backend: CPUBackend.shared, toleranceFactor: 1)]

    var testDescription: String { name }

    /// The tiny fixture model, loaded onto this device.
    func tinyModel() throws -> ModelDirectory {
        var directory = try ModelDirectory(path: Fixtures.kandinsky2("tiny-model"))
        directory.backend = backend
        return directory
    }

    /// A host tensor (a fixture's input) on this device.
    func upload(_ host: Tensor) -> Tensor { backend.upload(host) }

    /// A tensor of this device as a host tensor, to compare with a fixture.
    func host(_ x: Tensor) -> Tensor {
        x.device == .cpu ? x : Tensor(shape: x.shape, values: backend.download(x))
    }
}
