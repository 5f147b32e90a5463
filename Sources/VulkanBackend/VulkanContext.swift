import CVulkan
import CVulkanShaders
import Foundation
import Tensor

/// What to open a device with.
public struct VulkanOptions: Sendable {
    /// Enable the Khronos validation layer and record every message it prints (the tests' setting).
    public var validation: Bool
    /// Where the pipeline cache is kept between runs (nil: not kept).
    public var pipelineCacheDirectory: String?
    /// How long one submission may take before the device is treated as hung (and lost).
    public var submissionTimeout: Double
    /// Dispatches recorded before the command buffer is submitted without waiting (the host records the next one
    /// while the device runs it).
    public var dispatchesPerSubmit: Int

    public init(
        validation: Bool = false, pipelineCacheDirectory: String? = nil, submissionTimeout: Double = 120,
        dispatchesPerSubmit: Int = 256
    ) {
        self.validation = validation
        self.pipelineCacheDirectory = pipelineCacheDirectory
        self.submissionTimeout = submissionTimeout
        self.dispatchesPerSubmit = dispatchesPerSubmit
    }
}

/// A Vulkan failure, said in words: what was being done and the result code.
public struct VulkanError: Error, CustomStringConvertible, Equatable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// One Vulkan device as `kandinsky-worker devices` lists it.
public struct VulkanDeviceInfo: Sendable, Equatable {
    public var index: Int
    public var name: String
    /// `discrete`, `integrated`, `virtual`, `cpu` or `other`.
    public var type: String
    public var driver: String
    public var apiVersion: String
    /// The largest device-local heap.
    public var memoryBytes: UInt64
    /// 16-bit storage and f16 arithmetic: what `--precision f16` needs.
    public var supportsF16: Bool
    public var subgroupSize: Int
    public var maxStorageBufferRange: UInt64
    public var sharedMemoryBytes: Int
    /// What is missing for this backend to run at all (nil: usable).
    public var unusableBecause: String?
    /// Features the backend uses, for the listing.
    public var features: [String]

    public init(
        index: Int, name: String, type: String, driver: String, apiVersion: String, memoryBytes: UInt64,
        supportsF16: Bool, subgroupSize: Int, maxStorageBufferRange: UInt64, sharedMemoryBytes: Int,
        unusableBecause: String?, features: [String]
    ) {
        (self.index, self.name, self.type, self.driver, self.apiVersion) = (index, name, type, driver, apiVersion)
        (self.memoryBytes, self.supportsF16, self.subgroupSize) = (memoryBytes, supportsF16, subgroupSize)
        (self.maxStorageBufferRange, self.sharedMemoryBytes) = (maxStorageBufferRange, sharedMemoryBytes)
        (self.unusableBecause, self.features) = (unusableBecause, features)
    }
}

/// Lists and opens devices.
public enum Vulkan {
    /// The devices of this host in `vulkan:N` order, or why there are none (no loader, no driver).
    public static func devices() -> Result<[VulkanDeviceInfo], VulkanError> {
        do {
            let instance = try VulkanInstance(validation: false)
            let physical = try instance.physicalDevices()
            if physical.isEmpty {
                return .failure(VulkanError("the Vulkan loader found no device (no driver installed for a GPU)"))
            }
            return .success(physical.enumerated().map { describeDevice($1, index: $0, instance: instance) })
        } catch {
            return .failure(error)
        }
    }

    static func describeDevice(_ physical: VkPhysicalDevice, index: Int, instance: VulkanInstance) -> VulkanDeviceInfo {
        let f = instance.functions
        var subgroup = VkPhysicalDeviceSubgroupProperties()
        subgroup.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES
        var driverProps = VkPhysicalDeviceDriverProperties()
        driverProps.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES
        var props2 = VkPhysicalDeviceProperties2()
        props2.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2
        withUnsafeMutablePointer(to: &subgroup) { sg in
            withUnsafeMutablePointer(to: &driverProps) { dp in
                dp.pointee.pNext = UnsafeMutableRawPointer(sg)
                props2.pNext = UnsafeMutableRawPointer(dp)
                f.getPhysicalDeviceProperties2(physical, &props2)
            }
        }
        let props = props2.properties
        let features = Features.query(physical, f)
        var memory = VkPhysicalDeviceMemoryProperties()
        f.getPhysicalDeviceMemoryProperties(physical, &memory)
        let heaps = withUnsafeBytes(of: memory.memoryHeaps) { raw in
            Array(raw.bindMemory(to: VkMemoryHeap.self).prefix(Int(memory.memoryHeapCount)))
        }
        let deviceLocal = heaps.filter { $0.flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT.rawValue != 0 }
        let memoryBytes = (deviceLocal.isEmpty ? heaps : deviceLocal).map(\.size).max() ?? 0
        let type: String
        switch props.deviceType {
        case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: type = "discrete"
        case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: type = "integrated"
        case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: type = "virtual"
        case VK_PHYSICAL_DEVICE_TYPE_CPU: type = "cpu"
        default: type = "other"
        }
        let api = props.apiVersion
        let extensions = deviceExtensions(physical, f)
        var missing: [String] = []
        if api < vulkanVersion(1, 2) { missing.append("Vulkan 1.2") }
        if !extensions.contains("VK_KHR_push_descriptor") { missing.append("VK_KHR_push_descriptor") }
        if computeQueueFamily(physical, f) == nil { missing.append("a compute queue") }
        var used = ["push-descriptors", "subgroup \(subgroup.subgroupSize)"]
        if features.storage16 { used.append("16-bit-storage") }
        if features.float16 { used.append("f16-arithmetic") }
        used.append("binding \(MemoryBlock.mib(Int(props.limits.maxStorageBufferRange)))")
        used.append("shared \(props.limits.maxComputeSharedMemorySize / 1024) KiB")
        return VulkanDeviceInfo(
            index: index, name: string(fromCArray: props.deviceName), type: type,
            driver: "\(string(fromCArray: driverProps.driverName)) \(string(fromCArray: driverProps.driverInfo))"
                .trimmingCharacters(in: .whitespaces),
            apiVersion: "\(api >> 22).\((api >> 12) & 0x3FF).\(api & 0xFFF)", memoryBytes: UInt64(memoryBytes),
            supportsF16: features.storage16 && features.float16, subgroupSize: Int(subgroup.subgroupSize),
            maxStorageBufferRange: UInt64(props.limits.maxStorageBufferRange),
            sharedMemoryBytes: Int(props.limits.maxComputeSharedMemorySize),
            unusableBecause: missing.isEmpty ? nil : "lacks " + missing.joined(separator: ", "), features: used)
    }

    static func deviceExtensions(_ physical: VkPhysicalDevice, _ f: InstanceFunctions) -> Set<String> {
        var count: UInt32 = 0
        _ = f.enumerateDeviceExtensionProperties(physical, nil, &count, nil)
        var list = [VkExtensionProperties](repeating: VkExtensionProperties(), count: Int(count))
        _ = f.enumerateDeviceExtensionProperties(physical, nil, &count, &list)
        return Set(list.prefix(Int(count)).map { string(fromCArray: $0.extensionName) })
    }

    static func computeQueueFamily(_ physical: VkPhysicalDevice, _ f: InstanceFunctions) -> UInt32? {
        var count: UInt32 = 0
        f.getPhysicalDeviceQueueFamilyProperties(physical, &count, nil)
        var families = [VkQueueFamilyProperties](repeating: VkQueueFamilyProperties(), count: Int(count))
        f.getPhysicalDeviceQueueFamilyProperties(physical, &count, &families)
        let compute = VK_QUEUE_COMPUTE_BIT.rawValue
        let graphics = VK_QUEUE_GRAPHICS_BIT.rawValue
        // A compute-only family first (dedicated async-compute hardware), else any family with compute.
        if let i = families.firstIndex(where: { $0.queueFlags & compute != 0 && $0.queueFlags & graphics == 0 }) {
            return UInt32(i)
        }
        return families.firstIndex { $0.queueFlags & compute != 0 }.map { UInt32($0) }
    }
}

/// The 16-bit features of a device.
struct Features {
    var storage16: Bool
    var float16: Bool

    static func query(_ physical: VkPhysicalDevice, _ f: InstanceFunctions) -> Features {
        var storage = VkPhysicalDevice16BitStorageFeatures()
        storage.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES
        var float16 = VkPhysicalDeviceShaderFloat16Int8Features()
        float16.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES
        var features2 = VkPhysicalDeviceFeatures2()
        features2.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2
        withUnsafeMutablePointer(to: &storage) { s in
            withUnsafeMutablePointer(to: &float16) { h in
                s.pointee.pNext = UnsafeMutableRawPointer(h)
                features2.pNext = UnsafeMutableRawPointer(s)
                f.getPhysicalDeviceFeatures2(physical, &features2)
            }
        }
        return Features(storage16: storage.storageBuffer16BitAccess != 0, float16: float16.shaderFloat16 != 0)
    }
}
