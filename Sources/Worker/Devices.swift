import Foundation
import Kandinsky
import Tensor
import VulkanBackend

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
    /// The largest tensor one operation can address (a GPU's storage-binding limit); nil: no limit but memory.
    public var maxTensorBytes: UInt64?

    public init(
        id: Device, name: String, kind: String, memoryBytes: UInt64, precisions: [Precision], features: [String],
        maxTensorBytes: UInt64? = nil
    ) {
        (self.id, self.name, self.kind, self.memoryBytes) = (id, name, kind, memoryBytes)
        (self.precisions, self.features, self.maxTensorBytes) = (precisions, features, maxTensorBytes)
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
        var devices = [cpu(cpuinfo: cpuinfo, meminfo: meminfo)]
        var notes: [String] = []
        switch Vulkan.devices() {
        case .failure(let error):
            notes.append("vulkan: \(error.message)")
        case .success(let found):
            for d in found {
                if let why = d.unusableBecause {
                    notes.append("vulkan:\(d.index) \(d.name): not usable, it \(why)")
                    continue
                }
                devices.append(vulkan(d))
            }
        }
        return (devices, notes)
    }

    /// A Vulkan device: f32 everywhere, f16 where it has 16-bit storage and f16 arithmetic.
    public static func vulkan(_ d: VulkanDeviceInfo) -> DeviceInfo {
        DeviceInfo(
            id: .vulkan(d.index), name: "\(d.name) (\(d.type), \(d.driver), Vulkan \(d.apiVersion))", kind: "gpu",
            memoryBytes: d.memoryBytes, precisions: d.supportsF16 ? [.f32, .f16] : [.f32], features: d.features,
            maxTensorBytes: d.maxStorageBufferRange)
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

extension Devices {
    /// The backend of `device`, opened once per process (a GPU's weights and pipelines stay with it).
    ///
    /// - Parameter stateDirectory: where a GPU keeps its pipeline cache between runs (nil: not kept).
    public static func backend(
        for device: Device, stateDirectory: String? = nil
    ) throws(DeviceError)
        -> any ComputeBackend
    {
        switch device {
        case .cpu:
            return CPUBackend.shared
        case .vulkan(let index):
            openLock.lock()
            defer { openLock.unlock() }
            if let open = opened[index] { return open }
            let environment = ProcessInfo.processInfo.environment
            var options = VulkanOptions(
                validation: environment["KD_VULKAN_VALIDATION"] == "1",
                pipelineCacheDirectory: stateDirectory)
            if let timeout = environment["KD_VULKAN_SUBMIT_TIMEOUT_S"].flatMap(Double.init), timeout > 0 {
                options.submissionTimeout = timeout
            }
            do {
                let backend = try VulkanBackend(index: index, options: options)
                opened[index] = backend
                return backend
            } catch {
                throw DeviceError(error.message)
            }
        }
    }

    nonisolated(unsafe) private static var opened: [Int: VulkanBackend] = [:]
    private static let openLock = NSLock()

    /// Checks that the model's weights fit the device before any is loaded: in all, against the device's memory
    /// (with a quarter kept for activations), and each tensor against the largest one operation can address.
    public static func checkCapacity(
        _ directory: ModelDirectory, on device: DeviceInfo, precision: Precision
    ) throws(DeviceError) {
        guard device.kind == "gpu" else { return }
        let sizes: ModelDirectory.WeightSizes
        do {
            sizes = try directory.weightSizes(halfPrecision: precision == .f16)
        } catch {
            throw DeviceError(error.description)
        }
        let budget = device.memoryBytes / 4 * 3
        if UInt64(sizes.total) > budget {
            throw DeviceError(
                "the model's weights need \(gib(sizes.total)) in \(precision.rawValue) on \(device.id), which has "
                    + "\(gib(Int(device.memoryBytes))) (\(gib(Int(budget))) usable for weights, a quarter is kept for "
                    + "activations)"
                    + (precision == .f32 && device.precisions.contains(.f16) ? "; try --precision f16" : ""))
        }
        if let limit = device.maxTensorBytes, UInt64(sizes.largest.bytes) > limit {
            throw DeviceError(
                "tensor \(sizes.largest.key) of \(sizes.largest.file) needs \(mib(sizes.largest.bytes)) in one binding; "
                    + "\(device.id) addresses at most \(mib(Int(limit))) per binding")
        }
    }

    private static func gib(_ bytes: Int) -> String { String(format: "%.2f GiB", Double(bytes) / Double(1 << 30)) }
    private static func mib(_ bytes: Int) -> String { String(format: "%.1f MiB", Double(bytes) / Double(1 << 20)) }
}
