import Foundation
import Tensor
import Testing

@testable import VulkanBackend

/// The device the Vulkan tests run on: `vulkan:0` (lavapipe in CI), opened once per process with the Khronos
/// validation layer on. A machine without a Vulkan device fails these tests rather than skipping them, unless
/// `KD_VULKAN_TESTS=off` says the run is meant to go without (`VulkanTesting.enabled`).
enum TestBackend {
    static let opened: Result<VulkanBackend, VulkanError> = Result {
        () throws(VulkanError) -> VulkanBackend in
        try VulkanBackend(index: 0, options: VulkanOptions(validation: true))
    }

    /// The backend, or a failure naming why there is none.
    static func backend() throws -> VulkanBackend { try opened.get() }

    /// Fails the test when the validation layer printed anything since `mark`.
    static func expectNoValidationMessages(since mark: Int, sourceLocation: SourceLocation = #_sourceLocation) {
        guard case .success(let b) = opened else { return }
        let new = b.validationMessages.dropFirst(mark)
        #expect(new.isEmpty, "validation layer: \(new.joined(separator: "\n"))", sourceLocation: sourceLocation)
    }

    /// The number of validation messages so far (for `expectNoValidationMessages(since:)`).
    static var messageMark: Int {
        guard case .success(let b) = opened else { return 0 }
        return b.validationMessages.count
    }
}
