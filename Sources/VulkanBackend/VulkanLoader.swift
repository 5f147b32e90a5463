import CVulkan
import Foundation

/// The Vulkan loader (`libvulkan.so.1`), opened at run time so that the binary starts on hosts without Vulkan, and the
/// entry points this backend calls, resolved once per instance and per device.
final class VulkanLoader: @unchecked Sendable {
    let getInstanceProcAddr: PFN_vkGetInstanceProcAddr

    private init(getInstanceProcAddr: PFN_vkGetInstanceProcAddr) {
        self.getInstanceProcAddr = getInstanceProcAddr
    }

    /// The loader, or why there is none.
    static let shared: Result<VulkanLoader, VulkanError> = {
        let names = ["libvulkan.so.1", "libvulkan.so"]
        for name in names {
            guard let handle = dlopen(name, RTLD_NOW | RTLD_LOCAL) else { continue }
            guard let symbol = dlsym(handle, "vkGetInstanceProcAddr") else {
                return .failure(VulkanError("\(name) has no vkGetInstanceProcAddr"))
            }
            return .success(
                VulkanLoader(getInstanceProcAddr: unsafeBitCast(symbol, to: PFN_vkGetInstanceProcAddr.self)))
        }
        return .failure(
            VulkanError(
                "no Vulkan loader on this host (libvulkan.so.1 did not open: install libvulkan1 and a driver, e.g. "
                    + "the GPU vendor's or Mesa's mesa-vulkan-drivers)"))
    }()

    /// A global or instance-level entry point.
    func function<T>(_ name: String, instance: VkInstance?, as type: T.Type) throws(VulkanError) -> T {
        guard let f = getInstanceProcAddr(instance, name) else {
            throw VulkanError("the Vulkan loader has no \(name)")
        }
        return unsafeBitCast(f, to: T.self)
    }
}

/// The instance-level functions.
struct InstanceFunctions {
    let destroyInstance: PFN_vkDestroyInstance
    let enumeratePhysicalDevices: PFN_vkEnumeratePhysicalDevices
    let getPhysicalDeviceProperties: PFN_vkGetPhysicalDeviceProperties
    let getPhysicalDeviceProperties2: PFN_vkGetPhysicalDeviceProperties2
    let getPhysicalDeviceFeatures2: PFN_vkGetPhysicalDeviceFeatures2
    let getPhysicalDeviceMemoryProperties: PFN_vkGetPhysicalDeviceMemoryProperties
    let getPhysicalDeviceQueueFamilyProperties: PFN_vkGetPhysicalDeviceQueueFamilyProperties
    let enumerateDeviceExtensionProperties: PFN_vkEnumerateDeviceExtensionProperties
    let createDevice: PFN_vkCreateDevice
    let getDeviceProcAddr: PFN_vkGetDeviceProcAddr
    let createDebugUtilsMessenger: PFN_vkCreateDebugUtilsMessengerEXT?
    let destroyDebugUtilsMessenger: PFN_vkDestroyDebugUtilsMessengerEXT?

    init(_ loader: VulkanLoader, _ instance: VkInstance, debugUtils: Bool) throws(VulkanError) {
        func f<T>(_ name: String, _ t: T.Type) throws(VulkanError) -> T {
            try loader.function(name, instance: instance, as: t)
        }
        destroyInstance = try f("vkDestroyInstance", PFN_vkDestroyInstance.self)
        enumeratePhysicalDevices = try f("vkEnumeratePhysicalDevices", PFN_vkEnumeratePhysicalDevices.self)
        getPhysicalDeviceProperties = try f("vkGetPhysicalDeviceProperties", PFN_vkGetPhysicalDeviceProperties.self)
        getPhysicalDeviceProperties2 = try f(
            "vkGetPhysicalDeviceProperties2", PFN_vkGetPhysicalDeviceProperties2.self)
        getPhysicalDeviceFeatures2 = try f("vkGetPhysicalDeviceFeatures2", PFN_vkGetPhysicalDeviceFeatures2.self)
        getPhysicalDeviceMemoryProperties = try f(
            "vkGetPhysicalDeviceMemoryProperties", PFN_vkGetPhysicalDeviceMemoryProperties.self)
        getPhysicalDeviceQueueFamilyProperties = try f(
            "vkGetPhysicalDeviceQueueFamilyProperties", PFN_vkGetPhysicalDeviceQueueFamilyProperties.self)
        enumerateDeviceExtensionProperties = try f(
            "vkEnumerateDeviceExtensionProperties", PFN_vkEnumerateDeviceExtensionProperties.self)
        createDevice = try f("vkCreateDevice", PFN_vkCreateDevice.self)
        getDeviceProcAddr = try f("vkGetDeviceProcAddr", PFN_vkGetDeviceProcAddr.self)
        if debugUtils {
            createDebugUtilsMessenger = try f(
                "vkCreateDebugUtilsMessengerEXT", PFN_vkCreateDebugUtilsMessengerEXT.self)
            destroyDebugUtilsMessenger = try f(
                "vkDestroyDebugUtilsMessengerEXT", PFN_vkDestroyDebugUtilsMessengerEXT.self)
        } else {
            (createDebugUtilsMessenger, destroyDebugUtilsMessenger) = (nil, nil)
        }
    }
}

/// The device-level functions.
struct DeviceFunctions {
    let destroyDevice: PFN_vkDestroyDevice
    let getDeviceQueue: PFN_vkGetDeviceQueue
    let deviceWaitIdle: PFN_vkDeviceWaitIdle
    let createBuffer: PFN_vkCreateBuffer
    let destroyBuffer: PFN_vkDestroyBuffer
    let getBufferMemoryRequirements: PFN_vkGetBufferMemoryRequirements
    let allocateMemory: PFN_vkAllocateMemory
    let freeMemory: PFN_vkFreeMemory
    let bindBufferMemory: PFN_vkBindBufferMemory
    let mapMemory: PFN_vkMapMemory
    let unmapMemory: PFN_vkUnmapMemory
    let createShaderModule: PFN_vkCreateShaderModule
    let destroyShaderModule: PFN_vkDestroyShaderModule
    let createDescriptorSetLayout: PFN_vkCreateDescriptorSetLayout
    let destroyDescriptorSetLayout: PFN_vkDestroyDescriptorSetLayout
    let createPipelineLayout: PFN_vkCreatePipelineLayout
    let destroyPipelineLayout: PFN_vkDestroyPipelineLayout
    let createPipelineCache: PFN_vkCreatePipelineCache
    let getPipelineCacheData: PFN_vkGetPipelineCacheData
    let destroyPipelineCache: PFN_vkDestroyPipelineCache
    let createComputePipelines: PFN_vkCreateComputePipelines
    let destroyPipeline: PFN_vkDestroyPipeline
    let createCommandPool: PFN_vkCreateCommandPool
    let destroyCommandPool: PFN_vkDestroyCommandPool
    let allocateCommandBuffers: PFN_vkAllocateCommandBuffers
    let beginCommandBuffer: PFN_vkBeginCommandBuffer
    let endCommandBuffer: PFN_vkEndCommandBuffer
    let resetCommandBuffer: PFN_vkResetCommandBuffer
    let cmdBindPipeline: PFN_vkCmdBindPipeline
    let cmdPushConstants: PFN_vkCmdPushConstants
    let cmdPushDescriptorSet: PFN_vkCmdPushDescriptorSetKHR
    let cmdDispatch: PFN_vkCmdDispatch
    let cmdPipelineBarrier: PFN_vkCmdPipelineBarrier
    let cmdCopyBuffer: PFN_vkCmdCopyBuffer
    let queueSubmit: PFN_vkQueueSubmit
    let createFence: PFN_vkCreateFence
    let destroyFence: PFN_vkDestroyFence
    let waitForFences: PFN_vkWaitForFences
    let resetFences: PFN_vkResetFences

    init(_ getDeviceProcAddr: PFN_vkGetDeviceProcAddr, _ device: VkDevice) throws(VulkanError) {
        func f<T>(_ name: String, _ t: T.Type) throws(VulkanError) -> T {
            guard let p = getDeviceProcAddr(device, name) else { throw VulkanError("the Vulkan device has no \(name)") }
            return unsafeBitCast(p, to: t)
        }
        destroyDevice = try f("vkDestroyDevice", PFN_vkDestroyDevice.self)
        getDeviceQueue = try f("vkGetDeviceQueue", PFN_vkGetDeviceQueue.self)
        deviceWaitIdle = try f("vkDeviceWaitIdle", PFN_vkDeviceWaitIdle.self)
        createBuffer = try f("vkCreateBuffer", PFN_vkCreateBuffer.self)
        destroyBuffer = try f("vkDestroyBuffer", PFN_vkDestroyBuffer.self)
        getBufferMemoryRequirements = try f("vkGetBufferMemoryRequirements", PFN_vkGetBufferMemoryRequirements.self)
        allocateMemory = try f("vkAllocateMemory", PFN_vkAllocateMemory.self)
        freeMemory = try f("vkFreeMemory", PFN_vkFreeMemory.self)
        bindBufferMemory = try f("vkBindBufferMemory", PFN_vkBindBufferMemory.self)
        mapMemory = try f("vkMapMemory", PFN_vkMapMemory.self)
        unmapMemory = try f("vkUnmapMemory", PFN_vkUnmapMemory.self)
        createShaderModule = try f("vkCreateShaderModule", PFN_vkCreateShaderModule.self)
        destroyShaderModule = try f("vkDestroyShaderModule", PFN_vkDestroyShaderModule.self)
        createDescriptorSetLayout = try f("vkCreateDescriptorSetLayout", PFN_vkCreateDescriptorSetLayout.self)
        destroyDescriptorSetLayout = try f("vkDestroyDescriptorSetLayout", PFN_vkDestroyDescriptorSetLayout.self)
        createPipelineLayout = try f("vkCreatePipelineLayout", PFN_vkCreatePipelineLayout.self)
        destroyPipelineLayout = try f("vkDestroyPipelineLayout", PFN_vkDestroyPipelineLayout.self)
        createPipelineCache = try f("vkCreatePipelineCache", PFN_vkCreatePipelineCache.self)
        getPipelineCacheData = try f("vkGetPipelineCacheData", PFN_vkGetPipelineCacheData.self)
        destroyPipelineCache = try f("vkDestroyPipelineCache", PFN_vkDestroyPipelineCache.self)
        createComputePipelines = try f("vkCreateComputePipelines", PFN_vkCreateComputePipelines.self)
        destroyPipeline = try f("vkDestroyPipeline", PFN_vkDestroyPipeline.self)
        createCommandPool = try f("vkCreateCommandPool", PFN_vkCreateCommandPool.self)
        destroyCommandPool = try f("vkDestroyCommandPool", PFN_vkDestroyCommandPool.self)
        allocateCommandBuffers = try f("vkAllocateCommandBuffers", PFN_vkAllocateCommandBuffers.self)
        beginCommandBuffer = try f("vkBeginCommandBuffer", PFN_vkBeginCommandBuffer.self)
        endCommandBuffer = try f("vkEndCommandBuffer", PFN_vkEndCommandBuffer.self)
        resetCommandBuffer = try f("vkResetCommandBuffer", PFN_vkResetCommandBuffer.self)
        cmdBindPipeline = try f("vkCmdBindPipeline", PFN_vkCmdBindPipeline.self)
        cmdPushConstants = try f("vkCmdPushConstants", PFN_vkCmdPushConstants.self)
        cmdPushDescriptorSet = try f("vkCmdPushDescriptorSetKHR", PFN_vkCmdPushDescriptorSetKHR.self)
        cmdDispatch = try f("vkCmdDispatch", PFN_vkCmdDispatch.self)
        cmdPipelineBarrier = try f("vkCmdPipelineBarrier", PFN_vkCmdPipelineBarrier.self)
        cmdCopyBuffer = try f("vkCmdCopyBuffer", PFN_vkCmdCopyBuffer.self)
        queueSubmit = try f("vkQueueSubmit", PFN_vkQueueSubmit.self)
        createFence = try f("vkCreateFence", PFN_vkCreateFence.self)
        destroyFence = try f("vkDestroyFence", PFN_vkDestroyFence.self)
        waitForFences = try f("vkWaitForFences", PFN_vkWaitForFences.self)
        resetFences = try f("vkResetFences", PFN_vkResetFences.self)
    }
}

/// `VK_MAKE_API_VERSION(0, major, minor, 0)` (function-like macros are not imported).
func vulkanVersion(_ major: UInt32, _ minor: UInt32) -> UInt32 { (major << 22) | (minor << 12) }

/// A result code in words.
func describe(_ result: VkResult) -> String {
    switch result {
    case VK_ERROR_OUT_OF_HOST_MEMORY: return "VK_ERROR_OUT_OF_HOST_MEMORY"
    case VK_ERROR_OUT_OF_DEVICE_MEMORY: return "VK_ERROR_OUT_OF_DEVICE_MEMORY"
    case VK_ERROR_INITIALIZATION_FAILED: return "VK_ERROR_INITIALIZATION_FAILED"
    case VK_ERROR_DEVICE_LOST: return "VK_ERROR_DEVICE_LOST"
    case VK_ERROR_LAYER_NOT_PRESENT: return "VK_ERROR_LAYER_NOT_PRESENT"
    case VK_ERROR_EXTENSION_NOT_PRESENT: return "VK_ERROR_EXTENSION_NOT_PRESENT"
    case VK_ERROR_FEATURE_NOT_PRESENT: return "VK_ERROR_FEATURE_NOT_PRESENT"
    case VK_ERROR_INCOMPATIBLE_DRIVER: return "VK_ERROR_INCOMPATIBLE_DRIVER"
    case VK_ERROR_TOO_MANY_OBJECTS: return "VK_ERROR_TOO_MANY_OBJECTS"
    case VK_TIMEOUT: return "VK_TIMEOUT"
    default: return "VkResult \(result.rawValue)"
    }
}

/// Throws a `VulkanError` naming `what` unless `result` is `VK_SUCCESS`.
func check(_ result: VkResult, _ what: @autoclosure () -> String) throws(VulkanError) {
    guard result == VK_SUCCESS else { throw VulkanError("\(what()) failed: \(describe(result))") }
}

/// A fixed-size C `char` array (imported as a tuple) as a String.
func string<T>(fromCArray tuple: T) -> String {
    withUnsafeBytes(of: tuple) { raw in
        let bytes = raw.prefix { $0 != 0 }
        return String(decoding: bytes, as: UTF8.self)
    }
}
