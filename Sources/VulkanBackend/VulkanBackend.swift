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
