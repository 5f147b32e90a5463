import Foundation
import Tensor
import TestSupport
import Testing
import VulkanBackend

@testable import Kandinsky

/// The devices the model suites (conformance, samplers, pipeline, seeds and batches) run on: every backend this build
/// has, each with the factor its tolerances are multiplied by. A new backend adds its entry here (when the machine has
/// the device) and is then checked by the same tests the CPU passes, against the same official numbers.
struct TestDevice: Sendable, CustomTestStringConvertible {
    var name: String
    var backend: any ComputeBackend
    /// 1 for the CPU: its backend is the reference arithmetic, and the tolerances are the fixtures README's.
    var toleranceFactor: Double
    /// `--precision f16`: the layer weights in 16 bits on the device.
    var halfPrecision = false

    static let available: [TestDevice] = {
        var devices = [TestDevice(name: "cpu", backend: CPUBackend.shared, toleranceFactor: 1)]
        // vulkan:0 (lavapipe in CI) with the validation layer on; VulkanTests fail when it cannot be opened, unless
        // KD_VULKAN_TESTS=off.
        if VulkanTesting.enabled,
            let gpu = try? VulkanBackend(index: 0, options: VulkanOptions(validation: true))
        {
            devices.append(TestDevice(name: "vulkan:0", backend: gpu, toleranceFactor: 1))
            if gpu.supportsF16 {
                devices.append(
                    TestDevice(name: "vulkan:0 f16", backend: gpu, toleranceFactor: Self.f16Factor, halfPrecision: true)
                )
            }
        }
        return devices
    }()

    /// The devices for the batch, seed and parameter semantics (PipelineTests): each in f32 — those do not depend on
    /// the weights' precision, and lavapipe's few GFLOP/s make every extra run count in CI.
    static var semantics: [TestDevice] { available.filter { !$0.halfPrecision } }

    /// f16 layer weights against the official f32 numbers: the tolerances times this, 2.5e-2 of the output's spread
    /// for the modules and 5e-2 for the samplers. Measured on lavapipe (the tests print every error): the largest
    /// module error 1.6e-2 (mT5's last hidden state), UNet 6.6e-3, XLM-R 2.4e-4, the VAE (kept in f32) 1.0e-5; the
    /// samplers 3.2e-2 (the release's p_sampler over 10 steps), ddim 1.9e-2.
    static let f16Factor = 25.0

    var testDescription: String { name }

    /// The tiny fixture model, loaded onto this device.
    func tinyModel() throws -> ModelDirectory {
        var directory = try ModelDirectory(path: Fixtures.kandinsky2("tiny-model"))
        directory.backend = backend
        directory.keepHalfPrecision = halfPrecision
        return directory
    }

    /// A host tensor (a fixture's input) on this device.
    func upload(_ host: Tensor) -> Tensor { backend.upload(host) }

    /// A tensor of this device as a host tensor, to compare with a fixture.
    /// Every comparison also checks that the validation layer (on for a GPU) has printed nothing.
    func host(_ x: Tensor, sourceLocation: SourceLocation = #_sourceLocation) -> Tensor {
        guard x.device != .cpu else { return x }
        let values = backend.download(x)
        if let gpu = backend as? VulkanBackend {
            #expect(gpu.validationMessages.isEmpty, "\(gpu.validationMessages)", sourceLocation: sourceLocation)
        }
        return Tensor(shape: x.shape, values: values)
    }
}
