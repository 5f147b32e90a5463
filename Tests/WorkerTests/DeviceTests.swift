import Foundation
import JobQueue
import Kandinsky
import Tensor
import TestSupport
import Testing
import VulkanBackend

@testable import Worker

/// `--device` / `--precision`: what is accepted, and the errors for what this host cannot run.
@Suite struct DeviceTests {
    static let cpuinfo = """
        processor\t: 0
        model name\t: Test CPU @ 3.0GHz
        flags\t\t: fpu sse2 avx2 fma f16c
        """
    static let meminfo = "MemTotal:       24576000 kB\nMemFree:         1000 kB\n"
    let host = Devices.list(cpuinfo: cpuinfo, meminfo: meminfo)

    @Test func parsesDeviceNames() throws {
        #expect(try Device(parsing: "cpu") == .cpu)
        #expect(try Device(parsing: " CPU ") == .cpu)
        #expect(try Device(parsing: "vulkan:3") == .vulkan(3))
        #expect(Device.vulkan(3).description == "vulkan:3")
        for bad in ["cuda:0", "vulkan", "vulkan:-1", "vulkan:x", "gpu", ""] {
            #expect(throws: DeviceError.self, "\(bad)") { try Device(parsing: bad) }
        }
    }

    @Test func listsTheCPUWithItsMemoryPrecisionsAndFeatures() throws {
        let cpu = try #require(host.devices.first)
        #expect(cpu.id == .cpu && cpu.kind == "cpu")
        #expect(cpu.name.hasPrefix("Test CPU @ 3.0GHz ("))
        #expect(cpu.memoryBytes == 24_576_000 * 1024)
        #expect(cpu.precisions == [.f32, .f16])
        #expect(cpu.features == ["avx2", "fma", "f16c"])
        // Vulkan devices follow the CPU, or a note says why there are none.
        let gpus = host.devices.dropFirst()
        #expect(gpus.allSatisfy { $0.kind == "gpu" && $0.precisions.contains(.f32) })
        #expect(!gpus.isEmpty || host.notes.contains { $0.hasPrefix("vulkan") }, "an empty GPU list says why")
    }

    @Test func selectsWhatTheHostRunsAndNamesWhatItDoesNot() throws {
        #expect(try Devices.select("cpu", precision: "f32", from: host).precision == .f32)
        #expect(try Devices.select("cpu", precision: "f16", from: host).precision == .f16)
        #expect(throws: DeviceError.self) { try Devices.select("cpu", precision: "f8", from: host) }
        do {
            _ = try Devices.select("cpu", precision: "bf16", from: host)
            Issue.record("bf16 accepted on the CPU")
        } catch {
            #expect(error.message.contains("precision bf16 is not available on device cpu, which runs f32 and f16"))
        }
        do {
            _ = try Devices.select("vulkan:7", precision: "f32", from: host)
            Issue.record("vulkan:7 accepted")
        } catch {
            #expect(error.message.contains("device vulkan:7 is not available on this host; it has cpu"))
        }
        let noGPU: (devices: [DeviceInfo], notes: [String]) = (
            [host.devices[0]], ["vulkan: no Vulkan loader on this host"]
        )
        do {
            _ = try Devices.select("vulkan:0", precision: "f32", from: noGPU)
            Issue.record("vulkan:0 accepted without a GPU")
        } catch {
            #expect(error.message.contains("it has cpu (vulkan: no Vulkan loader on this host)"), "\(error.message)")
        }
    }

    /// A GPU without 16-bit storage or f16 arithmetic runs f32 only: `--precision f16` is refused at start.
    @Test func aGPUWithoutHalfPrecisionRefusesF16() throws {
        let old = Devices.vulkan(
            VulkanDeviceInfo(
                index: 0, name: "Old GPU", type: "discrete", driver: "test", apiVersion: "1.2.0", memoryBytes: 8 << 30,
                supportsF16: false, subgroupSize: 32, maxStorageBufferRange: 1 << 30, sharedMemoryBytes: 48 << 10,
                unusableBecause: nil, features: []))
        #expect(old.precisions == [.f32] && old.kind == "gpu")
        let list = ([host.devices[0], old], [String]())
        #expect(try Devices.select("vulkan:0", precision: "f32", from: list).device.name.hasPrefix("Old GPU"))
        do {
            _ = try Devices.select("vulkan:0", precision: "f16", from: list)
            Issue.record("f16 accepted without 16-bit storage")
        } catch {
            #expect(error.message.contains("precision f16 is not available on device vulkan:0, which runs f32"))
        }
    }

    @Test func configurationTakesDeviceAndPrecision() throws {
        var c = ServeConfiguration()
        try c.apply(yaml: "device: vulkan:1\nprecision: F16\n", source: "t.yaml")
        #expect(c.device == "vulkan:1" && c.precision == .f16 && c.halfWeights)
        try c.apply(environment: ["KD_HALF_WEIGHTS": "false"])
        #expect(c.precision == .f32, "half_weights is the older name of precision f16")
        #expect(throws: ServeConfiguration.Problem.self) { try c.apply(yaml: "device: cuda:0\n", source: "t.yaml") }
        #expect(throws: ServeConfiguration.Problem.self) { try c.apply(yaml: "precision: f64\n", source: "t.yaml") }
    }
}

/// The real binary: `devices --json` is one document listing the CPU, and the model commands refuse what this host
/// cannot run before loading anything.
@Suite struct DevicesCommandTests {
    @Test func devicesJSONListsTheCPU() throws {
        let dir = try TemporaryDirectory(prefix: "kd-devices")
        defer { dir.remove() }
        let process = try WorkerProcess(
            name: "devices", command: ["devices", "--json"], logDirectory: dir.path, captureOutput: true)
        #expect(eventually(timeout: 30) { !process.isRunning })
        #expect(process.terminate() == 0, "\(process.log)")
        let output = process.output
        #expect(output.hasSuffix("}\n") && output.filter { $0 == "\n" }.count == 1, "\(output)")
        let document = try #require(
            try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any], "\(output)")
        let devices = try #require(document["devices"] as? [[String: Any]])
        #expect(devices.first?["id"] as? String == "cpu" && devices.first?["kind"] as? String == "cpu")
        #expect((devices.first?["precisions"] as? [String]) == ["f32", "f16"])
        #expect(((devices.first?["memory_bytes"] as? Int) ?? 0) > 0)
        // lavapipe in CI (a GPU elsewhere): listed as vulkan:0 with its precisions, or a note says why not.
        if VulkanTesting.enabled {
            let gpu = try #require(devices.first { $0["id"] as? String == "vulkan:0" }, "\(output)")
            #expect(gpu["kind"] as? String == "gpu")
            #expect((gpu["precisions"] as? [String])?.first == "f32")
        } else {
            #expect(devices.count > 1 || (document["notes"] as? [String])?.contains { $0.hasPrefix("vulkan") } == true)
        }
    }

    @Test(arguments: [
        (["generate", "x", "--device", "vulkan:7"], "device vulkan:7 is not available"),
        (["generate", "x", "--device", "vulkan:0", "--precision", "bf16"], "is not available"),
        (["generate", "x", "--precision", "bf16"], "precision bf16 is not available on device cpu"),
        (["bench", "unet", "--preset", "tiny", "--device", "vulkan:7"], "device vulkan:7 is not available"),
        (
            ["forward", "tokenize", "--text", "a", "--model", "/nonexistent", "--device", "gpu"],
            "is not one this worker knows"
        ),
    ])
    func modelCommandsRefuseWhatTheHostCannotRun(arguments: [String], message: String) throws {
        let dir = try TemporaryDirectory(prefix: "kd-devices")
        defer { dir.remove() }
        let process = try WorkerProcess(name: "refuse", command: arguments, logDirectory: dir.path)
        #expect(eventually(timeout: 60) { !process.isRunning }, "\(arguments) still running")
        #expect(process.terminate() != 0)
        #expect(process.log.contains(message), "\(arguments): \(process.log)")
    }
}

/// Weights that do not fit the device stop start-up with the sizes, before anything is loaded: checked against a
/// full-size model directory whose files hold the real headers and no data (sparse), on lavapipe's 2 GiB heap.
@Suite struct DeviceCapacityTests {
    /// A model directory of `preset`'s sizes: model.json and, per component, a safetensors header with every key and
    /// shape, the data a hole in a sparse file.
    static func sparseModel(_ preset: ModelPreset, at path: String) throws {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        try Data((preset.modelJSON + "\n").utf8).write(to: URL(fileURLWithPath: "\(path)/model.json"))
        for component in RandomModel.Component.allCases {
            var members: [JSONObject.Member] = []
            var offset = 0
            for (key, shape) in try RandomModel.keys(of: component, config: preset.config) {
                let bytes = 4 * shape.reduce(1, *)
                members.append(
                    (
                        key,
                        .object([
                            "dtype": .string("F32"), "shape": .array(shape.map { .integer($0) }),
                            "data_offsets": .array([.integer(offset), .integer(offset + bytes)]),
                        ])
                    ))
                offset += bytes
            }
            let header = Array(JSONValue.object(JSONObject(members)).serialized.utf8)
            var file = withUnsafeBytes(of: UInt64(header.count).littleEndian) { Array($0) }
            file += header
            let url = URL(fileURLWithPath: "\(path)/\(component.file.rawValue)")
            try Data(file).write(to: url)
            let handle = try FileHandle(forWritingTo: url)
            try handle.truncate(atOffset: UInt64(file.count + offset))
            try handle.close()
        }
    }

    @Test(.enabled(if: VulkanTesting.enabled))
    func theFullSizeModelDoesNotFitLavapipesHeap() throws {
        let dir = try TemporaryDirectory(prefix: "kd-capacity")
        defer { dir.remove() }
        try Self.sparseModel(.full, at: dir.file("full"))
        let directory = try ModelDirectory(path: dir.file("full"))
        let gpu = try #require(Devices.list().devices.first { $0.id == .vulkan(0) })
        #expect(throws: DeviceError.self) { try Devices.checkCapacity(directory, on: gpu, precision: .f32) }
        let tooLarge = #expect(throws: DeviceError.self) {
            try Devices.checkCapacity(directory, on: gpu, precision: .f16)
        }
        print("capacity: \(tooLarge?.message ?? "accepted")")
        #expect(tooLarge?.message.contains("in f16 on vulkan:0, which has") == true, "\(String(describing: tooLarge))")
        // One binding's limit: a device with room enough but lavapipe's 128 MiB per binding names the tensor.
        var roomy = gpu
        roomy.memoryBytes = 64 << 30
        let overBinding = #expect(throws: DeviceError.self) {
            try Devices.checkCapacity(directory, on: roomy, precision: .f32)
        }
        print("capacity: \(overBinding?.message ?? "accepted")")
        let message = overBinding?.message ?? ""
        #expect(message.contains("in one binding"), "\(message)")
        #expect(message.contains("text_encoder1.safetensors"), "the XLM-R embedding: \(message)")
        // The CPU takes it (its memory is the host's).
        let cpu = try #require(Devices.list().devices.first)
        try Devices.checkCapacity(directory, on: cpu, precision: .f32)

        // The command line refuses it before loading anything.
        let generate = try WorkerProcess(
            name: "too-big",
            command: ["generate", "x", "--model", dir.file("full"), "--device", "vulkan:0", "-o", dir.file("x.png")],
            logDirectory: dir.path)
        #expect(eventually(timeout: 120) { !generate.isRunning })
        #expect(generate.terminate() != 0)
        #expect(generate.log.contains("the model's weights need"), "\(generate.log)")
    }
}
