import Tensor
import Testing

@testable import VulkanBackend
