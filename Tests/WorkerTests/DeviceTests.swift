import Foundation
import Tensor
import TestSupport
import Testing

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
        if ProcessInfo.processInfo.environment["KD_VULKAN_TESTS"] != "off" {
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
