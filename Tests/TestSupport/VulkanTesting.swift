import Foundation

/// Whether this run tests the Vulkan backend (lavapipe in CI): always, unless `KD_VULKAN_TESTS=off` says the run is
/// meant to go without. A machine without a Vulkan device otherwise fails these tests rather than skipping them.
public enum VulkanTesting {
    public static let enabled = ProcessInfo.processInfo.environment["KD_VULKAN_TESTS"] != "off"
}
