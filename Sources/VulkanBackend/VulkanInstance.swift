import CVulkan
import Foundation

/// A Vulkan instance, with the validation layer and a messenger that records every message when asked for.
final class VulkanInstance: @unchecked Sendable {
    let loader: VulkanLoader
    let handle: VkInstance
    let functions: InstanceFunctions
    private var messenger: VkDebugUtilsMessengerEXT?
    private let messages = MessageLog()

    /// Messages the validation layer printed (warnings and errors), oldest first.
    var validationMessages: [String] { messages.all }

    init(validation: Bool) throws(VulkanError) {
        let loader = try VulkanLoader.shared.get()
        self.loader = loader
        let createInstance = try loader.function("vkCreateInstance", instance: nil, as: PFN_vkCreateInstance.self)
        if validation {
            let enumerateLayers = try loader.function(
                "vkEnumerateInstanceLayerProperties", instance: nil, as: PFN_vkEnumerateInstanceLayerProperties.self)
            var count: UInt32 = 0
            _ = enumerateLayers(&count, nil)
            var layers = [VkLayerProperties](repeating: VkLayerProperties(), count: Int(count))
            _ = enumerateLayers(&count, &layers)
            guard layers.contains(where: { string(fromCArray: $0.layerName) == "VK_LAYER_KHRONOS_validation" }) else {
                throw VulkanError(
                    "validation was asked for but VK_LAYER_KHRONOS_validation is not installed "
                        + "(Debian: vulkan-validationlayers)")
            }
        }
        var instance: VkInstance?
        let result: VkResult = "kandinsky-worker".withCString { appName in
            let layerNames = validation ? ["VK_LAYER_KHRONOS_validation"] : []
            let extensionNames = validation ? ["VK_EXT_debug_utils"] : []
            return withCStrings(layerNames) { layers in
                withCStrings(extensionNames) { extensions in
                    var app = VkApplicationInfo()
                    app.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO
                    app.pApplicationName = appName
                    app.apiVersion = vulkanVersion(1, 2)
                    return withUnsafePointer(to: &app) { appPointer in
                        var info = VkInstanceCreateInfo()
                        info.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO
                        info.pApplicationInfo = appPointer
                        info.enabledLayerCount = UInt32(layerNames.count)
                        info.ppEnabledLayerNames = layers
                        info.enabledExtensionCount = UInt32(extensionNames.count)
                        info.ppEnabledExtensionNames = extensions
                        return createInstance(&info, nil, &instance)
                    }
                }
            }
        }
        try check(result, "creating a Vulkan instance (vkCreateInstance)")
        guard let instance else { throw VulkanError("vkCreateInstance returned no instance") }
        handle = instance
        do {
            functions = try InstanceFunctions(loader, instance, debugUtils: validation)
        } catch {
            if let destroy = try? loader.function(
                "vkDestroyInstance", instance: instance, as: PFN_vkDestroyInstance.self)
            {
                destroy(instance, nil)
            }
            throw error
        }
        if validation, let create = functions.createDebugUtilsMessenger {
            var info = VkDebugUtilsMessengerCreateInfoEXT()
            info.sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT
            info.messageSeverity =
                VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT.rawValue
                | VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT.rawValue
            info.messageType =
                VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT.rawValue
                | VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT.rawValue
                | VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT.rawValue
            info.pfnUserCallback = { _, _, data, user in
                if let user, let text = data?.pointee.pMessage {
                    Unmanaged<MessageLog>.fromOpaque(user).takeUnretainedValue().append(String(cString: text))
                }
                return VkBool32(VK_FALSE)
            }
            info.pUserData = Unmanaged.passUnretained(messages).toOpaque()
            var m: VkDebugUtilsMessengerEXT?
            try check(create(instance, &info, nil, &m), "creating the validation messenger")
            messenger = m
        }
    }

    deinit {
        if let messenger { functions.destroyDebugUtilsMessenger?(handle, messenger, nil) }
        functions.destroyInstance(handle, nil)
    }

    /// The physical devices, in the loader's order (the order `vulkan:N` indexes).
    func physicalDevices() throws(VulkanError) -> [VkPhysicalDevice] {
        var count: UInt32 = 0
        try check(functions.enumeratePhysicalDevices(handle, &count, nil), "listing Vulkan devices")
        var devices = [VkPhysicalDevice?](repeating: nil, count: Int(count))
        try check(functions.enumeratePhysicalDevices(handle, &count, &devices), "listing Vulkan devices")
        return devices.prefix(Int(count)).compactMap { $0 }
    }
}

/// The validation layer's messages, appended from the driver's threads.
final class MessageLog: @unchecked Sendable {
    private let lock = NSLock()
    private var messages: [String] = []

    func append(_ message: String) {
        lock.lock()
        messages.append(message)
        lock.unlock()
    }

    var all: [String] {
        lock.lock()
        defer { lock.unlock() }
        return messages
    }
}

/// `body` with the strings as a C array of C strings (nil when empty).
func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>?) -> R) -> R {
    if strings.isEmpty { return body(nil) }
    let copies = strings.map { strdup($0) }
    defer { copies.forEach { free($0) } }
    let pointers = copies.map { UnsafePointer<CChar>($0) }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress) }
}
