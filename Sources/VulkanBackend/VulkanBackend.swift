import Foundation
import Tensor

/// The Vulkan compute backend: every `ComputeBackend` operation as a compute shader (`Shaders/vulkan`), recorded
/// into command buffers on one queue of one device and submitted when a result must come back.
///
/// DESIGN: one ordered stream. Every dispatch is recorded into the current command buffer, followed by a memory
/// barrier, so the device runs the operations in the order the model calls them, each seeing the previous ones'
/// writes. Memory freed by a tensor is therefore safe to reuse for the next operation recorded (it runs after
/// every earlier reader), and nothing waits on the host but `download` (and `rgb8`, which downloads).
public final class VulkanBackend: @unchecked Sendable {
    public let device: Device
    let context: VulkanContext

    /// The `index`-th Vulkan device (the order `VulkanContext.devices()` lists), opened with one compute queue.
    public init(index: Int, options: VulkanOptions = .init()) throws(VulkanError) {
        context = try VulkanContext(index: index, options: options)
        device = .vulkan(index)
    }

    // MARK: The API the operations are written with

    /// A device tensor of `shape` whose elements the next dispatch writes (uninitialised until then).
    func empty(_ shape: [Int], dtype: DType = .f32) -> Tensor {
        context.empty(shape, dtype: dtype)
    }

    /// Records one dispatch of `kernel` (a shader name of the generated table, e.g. `unary` or `gemm_f16`): `buffers`
    /// bound to bindings 0, 1, 2… of set 0 in order (each tensor's whole storage), `push` as the push-constant words
    /// (at most 32: uint, int and float members of 4 bytes, floats as `bitPattern`), `groups` workgroups.
    func dispatch(_ kernel: String, _ buffers: [Tensor], push: [UInt32], groups: (x: Int, y: Int, z: Int)) {
        context.dispatch(kernel, buffers, push: push, groups: groups)
    }

    /// One invocation per element of `0..<count` with 256 invocations per workgroup (`local_size_x = 256`), the
    /// workgroups folded into x and y so that no dimension exceeds 65535: the shader takes its element as
    /// `gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 256` and returns when ≥ count.
    func dispatch1D(_ kernel: String, _ buffers: [Tensor], push: [UInt32], count: Int) {
        let groups = max(1, (count + 255) / 256)
        let x = min(groups, 65535)
        dispatch(kernel, buffers, push: push, groups: (x, (groups + x - 1) / x, 1))
    }

    /// Messages the validation layer printed (with `VulkanOptions.validation`), oldest first.
    public var validationMessages: [String] { context.instance.validationMessages }

    /// The device as `devices` lists it.
    public var info: VulkanDeviceInfo { context.info }

    /// Whether `--precision f16` can run here (16-bit storage and f16 arithmetic).
    public var supportsF16: Bool { context.supportsF16 }

    /// Device memory held by tensors now, at most since `resetPeakMemory()`, and reserved from the driver.
    public var memoryInUse: (current: Int, peak: Int, reserved: Int) {
        (context.memory.bytesInUse, context.memory.peakBytesInUse, context.memory.bytesReserved)
    }

    public func resetPeakMemory() { context.memory.resetPeak() }

    /// Dispatches, submissions and bytes moved so far (for `bench`).
    public var counters: (dispatches: Int, submits: Int, bytesUp: Int, bytesDown: Int) {
        let c = context.counters
        return (c.dispatches, c.submits, c.bytesUp, c.bytesDown)
    }

    /// Waits until the device has run every operation recorded so far.
    public func synchronize() { context.synchronize() }

    public var statistics: BackendStatistics? {
        let c = context.counters
        let m = context.memory
        return BackendStatistics(
            dispatches: c.dispatches, submits: c.submits, bytesToDevice: c.bytesUp, bytesFromDevice: c.bytesDown,
            memoryInUse: m.bytesInUse, memoryPeak: m.peakBytesInUse, memoryReserved: m.bytesReserved,
            memoryTotal: Int(context.info.memoryBytes))
    }

    /// Writes the pipeline cache now (it is also written when the backend goes).
    public func savePipelineCache() { context.savePipelineCache() }

    /// What happens when the device fails under a running model (lost, hung, out of memory): the operations cannot
    /// throw, so the failure goes here. The default prints the message and exits with status 70 (EX_SOFTWARE); the
    /// worker installs one that hands its jobs back before exiting.
    public struct FailureHandler: Sendable {
        public var handler: @Sendable (VulkanError) -> Never
        public init(_ handler: @escaping @Sendable (VulkanError) -> Never) { self.handler = handler }
    }

    nonisolated(unsafe) public static var failureHandler = FailureHandler { error in
        FileHandle.standardError.write(Data("kandinsky-worker: \(error.message)\n".utf8))
        exit(70)
    }

    /// Arms the fault `KD_VULKAN_FAULT` names (`device-lost:N` or `hang:N`): the N-th submission from now on fails.
    /// `serve` arms it once it is ready, so that a test's fault hits a batch, not the start-up.
    nonisolated(unsafe) public static var faultArmed = false

    /// A small host-made buffer of 32-bit words (token ids, offsets) on the device, dtype `.i32`, shape `[count]`.
    func upload(words: [UInt32]) -> Tensor {
        context.upload(words: words)
    }
}

extension Float {
    /// The push-constant word of a float member.
    var word: UInt32 { bitPattern }
}

extension Int {
    /// The push-constant word of a uint or int member (two's complement for negatives).
    var word: UInt32 { UInt32(truncatingIfNeeded: self) }
}

// MARK: - Transfers and memory

/// Every operation of the protocol: transfers here, the layers in `+Compute` and `+Ops`, layout in `+Layout`, the
/// samplers' arithmetic in `+Sampler`.
extension VulkanBackend: ComputeBackend {
    public func upload(_ values: [Float], shape: [Int]) -> Tensor {
        precondition(shape.reduce(1, *) == values.count, "\(values.count) values for shape \(shape)")
        return values.withUnsafeBytes { context.upload($0, shape: shape, dtype: .f32) }
    }

    public func upload(_ host: Tensor) -> Tensor {
        if host.device == device { return host }
        precondition(host.device == .cpu, "a \(host.device) tensor given to the backend of \(device)")
        return host.withUnsafeBufferPointer {
            context.upload(UnsafeRawBufferPointer($0), shape: host.shape, dtype: .f32)
        }
    }

    /// F16 weights as they are; BF16 ones converted to f16 when every value fits its range, else kept in f32.
    public func upload(_ weight: HalfWeight) -> Tensor? {
        guard supportsF16 else { return nil }
        if weight.dtype == .f16 { return context.upload(weight.raw, shape: weight.shape, dtype: .f16) }
        let values = weight.expanded().scalars
        guard values.allSatisfy({ abs($0) <= 65504 }) else { return upload(values, shape: weight.shape) }
        return upload(half: values, shape: weight.shape)
    }

    /// Float32 weights converted to f16 (round to nearest even), unless a value is beyond f16's range.
    public func uploadHalf(_ host: Tensor) -> Tensor? {
        guard supportsF16, host.device == .cpu else { return nil }
        let values = host.scalars
        guard values.allSatisfy({ abs($0) <= 65504 }) else { return nil }
        return upload(half: values, shape: host.shape)
    }

    private func upload(half values: [Float], shape: [Int]) -> Tensor {
        let bits = values.map { Float16($0).bitPattern }
        return bits.withUnsafeBytes { context.upload($0, shape: shape, dtype: .f16) }
    }

    public func download(_ x: Tensor) -> [Float] {
        if x.device == .cpu { return x.scalars }
        let bytes = context.download(x)
        switch x.dtype {
        case .f32:
            return bytes.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        case .f16:
            return bytes.withUnsafeBytes { raw in raw.bindMemory(to: UInt16.self).map { Float(Float16(bitPattern: $0)) }
            }
        default:
            preconditionFailure("download of a \(x.dtype.rawValue) tensor as floats")
        }
    }

    /// Nothing to do: device memory freed by a tensor is reused by the next one at once.
    public func keepFreedActivations(upTo bytes: Int) {}

    /// Returns wholly unused memory blocks to the driver (after the device has finished with them).
    public func releaseCachedMemory() { context.trim() }

    /// As many images as fit both one storage binding (each activation is one) and a quarter of the memory the
    /// device has free under its 3/4 budget (the decoder's peak holds about four of its largest activations):
    /// fewer, larger dispatches than one image at a time, within the memory.
    public func imagesPerPass(activationBytesPerImage bytes: Int, images: Int) -> Int {
        let bytes = max(1, bytes)
        let binding = context.maxStorageBufferRange / bytes
        let free = (Int(context.info.memoryBytes) / 4 * 3 - context.memory.bytesInUse) / (4 * bytes)
        return max(1, min(images, binding, free))
    }

    /// Downloads image `image` and converts it like the CPU backend (`(x + 1)·127.5`, half to even, clamped).
    public func rgb8(_ images: Tensor, image: Int, width: Int, height: Int) -> [UInt8] {
        let (c, fullH, fullW) = (images.shape[1], images.shape[2], images.shape[3])
        precondition(width <= fullW && height <= fullH, "crop \(width)×\(height) of \(fullW)×\(fullH)")
        let one = Tensor(
            shape: [1, c, fullH, fullW], values: download(slice(images, axis: 0, image..<(image + 1))))
        return CPUBackend.shared.rgb8(one, image: 0, width: width, height: height)
    }
}
