import Foundation
import Tensor

extension Device {
    /// `cpu` or `vulkan:N`; anything else is an error that says what is accepted.
    public init(parsing text: String) throws(DeviceError) {
        guard let device = Device(name: text) else {
            throw DeviceError("device \"\(text)\" is not one this worker knows: use cpu or vulkan:N")
        }
        self = device
    }
}

/// The number format weights are kept in on the device; arithmetic always accumulates in f32.
public enum Precision: String, CaseIterable, Sendable {
    case f32, f16, bf16
}

/// One device this host can run the model on, as `devices` lists it.
public struct DeviceInfo: Equatable, Sendable {
    public var id: Device
    public var name: String
    /// `cpu` or `gpu`.
    public var kind: String
    public var memoryBytes: UInt64
    /// What `--precision` may be on this device.
    public var precisions: [Precision]
    /// What the backend uses of the device (instruction sets, memory types, subgroup sizes…).
    public var features: [String]

    public init(
        id: Device, name: String, kind: String, memoryBytes: UInt64, precisions: [Precision], features: [String]
    ) {
        (self.id, self.name, self.kind, self.memoryBytes) = (id, name, kind, memoryBytes)
        (self.precisions, self.features) = (precisions, features)
    }

    /// One line for humans: `cpu  AMD EPYC 7B13 (2 threads), 23.5 GiB, f32 f16 — avx2 fma f16c`.
    public var line: String {
        let gib = String(format: "%.1f GiB", Double(memoryBytes) / Double(1 << 30))
        return "\(id)  \(name), \(gib), \(precisions.map(\.rawValue).joined(separator: " "))"
            + (features.isEmpty ? "" : " — " + features.joined(separator: " "))
    }
}

/// A device or precision this host cannot run, said before any model is loaded or job taken.
public struct DeviceError: Error, CustomStringConvertible, Equatable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The devices of this host, and the check that a requested device and precision can run.
public enum Devices {
    /// Every device this host can run on, in the order `--device` indexes them, and a note for each kind of device
    /// that is missing and why (so an empty GPU list is never a silent one).
    public static func list(
        cpuinfo: String? = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
        meminfo: String? = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8)
    ) -> (devices: [DeviceInfo], notes: [String]) {
        let devices = [cpu(cpuinfo: cpuinfo, meminfo: meminfo)]
        let notes = ["vulkan: no GPU backend in this build yet (the Vulkan backend is the next piece of work)"]
        return (devices, notes)
    }

    /// The CPU: OpenBLAS and our kernels. `f16` is the half-weight mode (layer weights kept in the 16 bits the
    /// weights file stores, expanded to f32 at each use: about half the memory, about a fifth more time per step).
    public static func cpu(cpuinfo: String?, meminfo: String?) -> DeviceInfo {
        let lines = cpuinfo?.split(separator: "\n") ?? []
        let model =
            lines.first { $0.hasPrefix("model name") }.flatMap { line in
                line.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) }
            } ?? "processor"
        let threads = ProcessInfo.processInfo.activeProcessorCount
        let flags = ProcessorCheck.flags(cpuinfo: cpuinfo) ?? []
        let used = ["avx2", "fma", "f16c", "avx512f", "avx512_bf16", "amx_bf16"]
        let memory =
            meminfo?.split(separator: "\n").first { $0.hasPrefix("MemTotal:") }.flatMap { line in
                line.split(separator: " ").dropFirst().first.flatMap { UInt64($0) }.map { $0 * 1024 }
            } ?? ProcessInfo.processInfo.physicalMemory
        return DeviceInfo(
            id: .cpu, name: "\(model) (\(threads) threads)", kind: "cpu", memoryBytes: memory,
            precisions: [.f32, .f16], features: used.filter { flags.contains($0) })
    }

    /// The device `device` names, checked to exist and to run `precision`: the first thing `serve`, `generate`,
    /// `forward` and `bench` do.
    public static func select(
        _ device: String, precision: String, from list: (devices: [DeviceInfo], notes: [String]) = Devices.list()
    ) throws(DeviceError) -> (device: DeviceInfo, precision: Precision) {
        let id = try Device(parsing: device)
        guard let chosen = Precision(rawValue: precision.trimmingCharacters(in: .whitespaces).lowercased()) else {
            throw DeviceError("precision \"\(precision)\" is not one this worker knows: use f32, f16 or bf16")
        }
        guard let info = list.devices.first(where: { $0.id == id }) else {
            let present = list.devices.map(\.id.description).joined(separator: ", ")
            let why = list.notes.isEmpty ? "" : " (\(list.notes.joined(separator: "; ")))"
            throw DeviceError("device \(id) is not available on this host; it has \(present)\(why)")
        }
        guard info.precisions.contains(chosen) else {
            let runs = info.precisions.map(\.rawValue).joined(separator: " and ")
            throw DeviceError(
                "precision \(chosen.rawValue) is not available on device \(id), which runs \(runs)"
                    + (chosen == .bf16 && info.kind == "cpu" ? " (the CPU backend has no bf16 path)" : ""))
        }
        return (info, chosen)
    }
}
