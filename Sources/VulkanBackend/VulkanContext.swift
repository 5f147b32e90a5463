import CVulkan
import CVulkanShaders
import Foundation
import Tensor

/// What to open a device with.
public struct VulkanOptions: Sendable {
    /// Enable the Khronos validation layer and fail on any message it prints (the tests' setting).
    public var validation: Bool
    /// Where the pipeline cache is kept between runs (nil: not kept).
    public var pipelineCacheDirectory: String?

    public init(validation: Bool = false, pipelineCacheDirectory: String? = nil) {
        self.validation = validation
        self.pipelineCacheDirectory = pipelineCacheDirectory
    }
}

/// A Vulkan failure, said in words: what was being done and the result code.
public struct VulkanError: Error, CustomStringConvertible, Equatable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// One opened device: its queue, memory, pipelines and the command buffer being recorded.
final class VulkanContext: @unchecked Sendable {
    init(index: Int, options: VulkanOptions) throws(VulkanError) {
        throw VulkanError("the Vulkan runtime is not written yet")
    }

    func empty(_ shape: [Int], dtype: DType) -> Tensor { fatalError("not yet") }

    func dispatch(_ kernel: String, _ buffers: [Tensor], push: [UInt32], groups: (x: Int, y: Int, z: Int)) {
        fatalError("not yet")
    }

    func upload(words: [UInt32]) -> Tensor { fatalError("not yet") }
}
