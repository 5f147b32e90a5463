import Foundation
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
        #expect(try DeviceID(parsing: "cpu") == .cpu)
        #expect(try DeviceID(parsing: " CPU ") == .cpu)
        #expect(try DeviceID(parsing: "vulkan:3") == .vulkan(3))
        #expect(DeviceID.vulkan(3).description == "vulkan:3")
        for bad in ["cuda:0", "vulkan", "vulkan:-1", "vulkan:x", "gpu", ""] {
            #expect(throws: DeviceError.self, "\(bad)") { try DeviceID(parsing: bad) }
        }
    }

    @Test func listsTheCPUWithItsMemoryPrecisionsAndFeatures() throws {
        let cpu = try #require(host.devices.first)
        #expect(cpu.id == .cpu && cpu.kind == "cpu")
        #expect(cpu.name.hasPrefix("Test CPU @ 3.0GHz ("))
        #expect(cpu.memoryBytes == 24_576_000 * 1024)
        #expect(cpu.precisions == [.f32, .f16])
        #expect(cpu.features == ["avx2", "fma", "f16c"])
        #expect(host.notes.contains { $0.hasPrefix("vulkan:") }, "an empty GPU list says why")
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
            _ = try Devices.select("vulkan:0", precision: "f32", from: host)
            Issue.record("vulkan:0 accepted")
        } catch {
            #expect(error.message.contains("device vulkan:0 is not available on this host; it has cpu"))
            #expect(error.message.contains("no GPU backend in this build"), "\(error.message)")
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
