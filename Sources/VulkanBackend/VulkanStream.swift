import CVulkan
import CVulkanShaders
import Foundation
import Tensor

/// One opened device: its queue, memory pools, pipelines, and the command stream being recorded.
///
/// The stream is two command buffers used in turn: one is recorded while the device runs the other. A buffer is
/// submitted when `dispatchesPerSubmit` dispatches are in it, or when the host needs a result (`download`); before a
/// buffer is recorded again its fence is waited for, and its staging memory reused.
final class VulkanContext: @unchecked Sendable {
    let instance: VulkanInstance
    let info: VulkanDeviceInfo
    let logical: LogicalDevice
    let queue: VkQueue
    let options: VulkanOptions
    /// Device-local memory for tensors.
    let memory: MemoryPool
    /// Host-visible memory for uploads and downloads.
    let staging: MemoryPool
    let supportsF16: Bool
    let maxStorageBufferRange: Int
    let maxWorkgroups: (Int, Int, Int)
    private let commandPool: VkCommandPool
    private var frames: [Frame] = []
    private var current = 0
    private var pipelines: [String: Pipeline] = [:]
    private var layouts: [Int: (set: VkDescriptorSetLayout, pipeline: VkPipelineLayout)] = [:]
    private var pipelineCache: VkPipelineCache?
    private var pipelineCacheDirty = false
    private let lock = NSRecursiveLock()
    private let shaders: [String: (code: UnsafePointer<UInt32>, words: Int)]
    private let fault: Fault?
    private var submits = 0
    /// `KD_VULKAN_PROFILE=1`: each dispatch waited for and timed, the totals per kernel printed at exit (a
    /// diagnostic: it serialises the host and the device).
    private let profiling = ProcessInfo.processInfo.environment["KD_VULKAN_PROFILE"] == "1"
    private var profile: [String: (count: Int, seconds: Double)] = [:]

    /// Counters for `bench`: dispatches, submissions and bytes moved between host and device.
    private(set) var counters = Counters()

    struct Counters: Equatable {
        var dispatches = 0
        var submits = 0
        var bytesUp = 0
        var bytesDown = 0
    }

    /// A command buffer of the stream, its fence and the staging memory its copies read or write.
    final class Frame {
        let commandBuffer: VkCommandBuffer
        let fence: VkFence
        var recording = false
        var submitted = false
        var dispatches = 0
        var stagingBytes = 0
        var held: [DeviceAllocation] = []

        init(commandBuffer: VkCommandBuffer, fence: VkFence) {
            (self.commandBuffer, self.fence) = (commandBuffer, fence)
        }
    }

    struct Pipeline {
        let pipeline: VkPipeline
        let layout: VkPipelineLayout
        let bindings: Int
    }

    /// A fault to inject (`KD_VULKAN_FAULT`), for the tests of what happens when a device is lost or hangs: the N-th
    /// submission after `VulkanBackend.faultArmed` is set (by `serve` once it is ready to take jobs) fails.
    enum Fault {
        case deviceLost(afterSubmits: Int)
        case hang(afterSubmits: Int)

        /// `device-lost:N` or `hang:N`: the N-th submission fails.
        init?(_ text: String?) {
            guard let text, let colon = text.firstIndex(of: ":"), let n = Int(text[text.index(after: colon)...])
            else { return nil }
            switch text[..<colon] {
            case "device-lost": self = .deviceLost(afterSubmits: n)
            case "hang": self = .hang(afterSubmits: n)
            default: return nil
            }
        }
    }

    init(index: Int, options: VulkanOptions) throws(VulkanError) {
        self.options = options
        let instance = try VulkanInstance(validation: options.validation)
        self.instance = instance
        let physicalDevices = try instance.physicalDevices()
        guard !physicalDevices.isEmpty else {
            throw VulkanError("device vulkan:\(index) does not exist: the Vulkan loader found no device")
        }
        guard physicalDevices.indices.contains(index) else {
            let names = physicalDevices.enumerated().map { i, p in
                "vulkan:\(i) \(Vulkan.describeDevice(p, index: i, instance: instance).name)"
            }
            throw VulkanError(
                "device vulkan:\(index) does not exist; this host has \(names.joined(separator: ", "))")
        }
        let physical = physicalDevices[index]
        info = Vulkan.describeDevice(physical, index: index, instance: instance)
        if let why = info.unusableBecause {
            throw VulkanError("device vulkan:\(index) (\(info.name)) cannot run this backend: it \(why)")
        }
        let f = instance.functions
        guard let family = Vulkan.computeQueueFamily(physical, f) else {
            throw VulkanError("device vulkan:\(index) has no compute queue")
        }
        let features = Features.query(physical, f)
        supportsF16 = features.storage16 && features.float16

        // The device: one compute queue, push descriptors, and the 16-bit features when present.
        var deviceHandle: VkDevice?
        var priority: Float = 1
        var storage = VkPhysicalDevice16BitStorageFeatures()
        storage.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES
        storage.storageBuffer16BitAccess = VkBool32(features.storage16 ? VK_TRUE : VK_FALSE)
        var float16 = VkPhysicalDeviceShaderFloat16Int8Features()
        float16.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES
        float16.shaderFloat16 = VkBool32(features.float16 ? VK_TRUE : VK_FALSE)
        let result: VkResult = withUnsafeMutablePointer(to: &priority) { priorityPointer in
            var queueInfo = VkDeviceQueueCreateInfo()
            queueInfo.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO
            queueInfo.queueFamilyIndex = family
            queueInfo.queueCount = 1
            queueInfo.pQueuePriorities = UnsafePointer(priorityPointer)
            return withUnsafePointer(to: &queueInfo) { queuePointer in
                withUnsafeMutablePointer(to: &float16) { h in
                    withUnsafeMutablePointer(to: &storage) { s in
                        s.pointee.pNext = UnsafeMutableRawPointer(h)
                        return withCStrings(["VK_KHR_push_descriptor"]) { extensions in
                            var deviceInfo = VkDeviceCreateInfo()
                            deviceInfo.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO
                            deviceInfo.pNext = UnsafeRawPointer(s)
                            deviceInfo.queueCreateInfoCount = 1
                            deviceInfo.pQueueCreateInfos = queuePointer
                            deviceInfo.enabledExtensionCount = 1
                            deviceInfo.ppEnabledExtensionNames = extensions
                            return f.createDevice(physical, &deviceInfo, nil, &deviceHandle)
                        }
                    }
                }
            }
        }
        try check(result, "opening device vulkan:\(index) (\(info.name))")
        guard let deviceHandle else { throw VulkanError("vkCreateDevice returned no device") }
        let functions: DeviceFunctions
        do {
            functions = try DeviceFunctions(f.getDeviceProcAddr, deviceHandle)
        } catch {
            if let destroy = f.getDeviceProcAddr(deviceHandle, "vkDestroyDevice") {
                unsafeBitCast(destroy, to: PFN_vkDestroyDevice.self)(deviceHandle, nil)
            }
            throw error
        }
        logical = LogicalDevice(handle: deviceHandle, functions: functions, instance: instance)
        var q: VkQueue?
        functions.getDeviceQueue(deviceHandle, family, 0, &q)
        guard let q else { throw VulkanError("device vulkan:\(index) gave no queue") }
        queue = q

        // Memory: device-local blocks for tensors, host-visible coherent ones for staging.
        var properties = VkPhysicalDeviceProperties()
        f.getPhysicalDeviceProperties(physical, &properties)
        let limits = properties.limits
        maxStorageBufferRange = Int(limits.maxStorageBufferRange)
        maxWorkgroups = (
            Int(limits.maxComputeWorkGroupCount.0), Int(limits.maxComputeWorkGroupCount.1),
            Int(limits.maxComputeWorkGroupCount.2)
        )
        var memoryProperties = VkPhysicalDeviceMemoryProperties()
        f.getPhysicalDeviceMemoryProperties(physical, &memoryProperties)
        let types = withUnsafeBytes(of: memoryProperties.memoryTypes) { raw in
            Array(raw.bindMemory(to: VkMemoryType.self).prefix(Int(memoryProperties.memoryTypeCount)))
        }
        let deviceLocalBit = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT.rawValue
        let hostBits = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT.rawValue | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT.rawValue
        guard let local = types.firstIndex(where: { $0.propertyFlags & deviceLocalBit != 0 }) ?? types.indices.first,
            let host = types.firstIndex(where: { $0.propertyFlags & hostBits == hostBits })
        else { throw VulkanError("device vulkan:\(index) has no usable memory types") }
        let alignment = max(256, Int(limits.minStorageBufferOffsetAlignment))
        let usage =
            VK_BUFFER_USAGE_STORAGE_BUFFER_BIT.rawValue | VK_BUFFER_USAGE_TRANSFER_SRC_BIT.rawValue
            | VK_BUFFER_USAGE_TRANSFER_DST_BIT.rawValue
        let blockSize = min(256 << 20, Int(info.memoryBytes / 8))
        memory = MemoryPool(
            device: logical, memoryType: UInt32(local), blockSize: max(16 << 20, blockSize), alignment: alignment,
            usage: usage, mapped: false)
        staging = MemoryPool(
            device: logical, memoryType: UInt32(host), blockSize: 64 << 20, alignment: alignment, usage: usage,
            mapped: true)

        // Commands: one pool, two buffers used in turn.
        var poolInfo = VkCommandPoolCreateInfo()
        poolInfo.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO
        poolInfo.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT.rawValue
        poolInfo.queueFamilyIndex = family
        var pool: VkCommandPool?
        try check(functions.createCommandPool(deviceHandle, &poolInfo, nil, &pool), "creating a command pool")
        guard let pool else { throw VulkanError("vkCreateCommandPool returned no pool") }
        commandPool = pool
        var table: [String: (UnsafePointer<UInt32>, Int)] = [:]
        var shaderCount = 0
        if let list = kd_spirv_shaders(&shaderCount) {
            for i in 0..<shaderCount {
                let entry = list[i]
                if let name = entry.name, let code = entry.code { table[String(cString: name)] = (code, entry.words) }
            }
        }
        shaders = table
        fault = Fault(ProcessInfo.processInfo.environment["KD_VULKAN_FAULT"])
        for _ in 0..<2 { frames.append(try makeFrame()) }
        loadPipelineCache()
    }

    deinit {
        lock.lock()
        for frame in frames where frame.submitted { wait(frame, failOnError: false) }
        savePipelineCache()
        let (d, f) = (logical.handle, logical.functions)
        for frame in frames { f.destroyFence(d, frame.fence, nil) }
        f.destroyCommandPool(d, commandPool, nil)
        for p in pipelines.values { f.destroyPipeline(d, p.pipeline, nil) }
        for l in layouts.values {
            f.destroyPipelineLayout(d, l.pipeline, nil)
            f.destroyDescriptorSetLayout(d, l.set, nil)
        }
        if let pipelineCache { f.destroyPipelineCache(d, pipelineCache, nil) }
        lock.unlock()
    }

    private func makeFrame() throws(VulkanError) -> Frame {
        let (d, f) = (logical.handle, logical.functions)
        var allocate = VkCommandBufferAllocateInfo()
        allocate.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO
        allocate.commandPool = commandPool
        allocate.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY
        allocate.commandBufferCount = 1
        var buffer: VkCommandBuffer?
        try check(f.allocateCommandBuffers(d, &allocate, &buffer), "allocating a command buffer")
        var fenceInfo = VkFenceCreateInfo()
        fenceInfo.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO
        var fence: VkFence?
        try check(f.createFence(d, &fenceInfo, nil, &fence), "creating a fence")
        guard let buffer, let fence else { throw VulkanError("no command buffer or fence") }
        return Frame(commandBuffer: buffer, fence: fence)
    }

    // MARK: Tensors

    /// A device tensor whose elements the next operation writes.
    func empty(_ shape: [Int], dtype: DType) -> Tensor {
        let count = shape.reduce(1, *)
        let bytes = count * dtype.byteSize
        precondition(
            bytes <= maxStorageBufferRange,
            "a \(dtype.rawValue) tensor of shape \(shape) (\(MemoryBlock.mib(bytes))) exceeds the "
                + "\(MemoryBlock.mib(maxStorageBufferRange)) one binding of \(info.name) can address")
        let allocation: DeviceAllocation
        do {
            allocation = try memory.allocate(bytes)
        } catch {
            fatal(
                "out of device memory on vulkan:\(info.index) (\(info.name)): \(error.message); "
                    + "\(MemoryBlock.mib(memory.bytesInUse)) in use")
        }
        return Tensor(
            shape: shape,
            storage: TensorStorage(device: .vulkan(info.index), count: count, dtype: dtype, allocation: allocation))
    }

    /// The allocation behind a tensor of this device.
    func allocation(_ t: Tensor) -> DeviceAllocation {
        guard t.device == .vulkan(info.index), let a = t.storage.allocation as? DeviceAllocation else {
            preconditionFailure("a \(t.device) tensor given to the backend of vulkan:\(info.index)")
        }
        return a
    }

    /// Copies `bytes` from host memory into a new device tensor, in stream order.
    func upload(_ bytes: UnsafeRawBufferPointer, shape: [Int], dtype: DType) -> Tensor {
        let t = empty(shape, dtype: dtype)
        guard bytes.count > 0 else { return t }
        let target = allocation(t)
        lock.lock()
        defer { lock.unlock() }
        let frame = recordingFrame()
        let stage = stagingAllocation(bytes.count)
        guard let mapped = stage.block.mapped else { fatal("staging memory is not mapped") }
        (mapped + stage.offset).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        var region = VkBufferCopy(
            srcOffset: VkDeviceSize(stage.offset), dstOffset: VkDeviceSize(target.offset),
            size: VkDeviceSize(bytes.count))
        logical.functions.cmdCopyBuffer(frame.commandBuffer, stage.block.buffer, target.block.buffer, 1, &region)
        barrier(frame)
        frame.held.append(stage)
        frame.stagingBytes += bytes.count
        counters.bytesUp += bytes.count
        if frame.stagingBytes >= 256 << 20 { submit() }
        return t
    }

    func upload(words: [UInt32]) -> Tensor {
        words.withUnsafeBytes { upload($0, shape: [words.count], dtype: .i32) }
    }

    /// The bytes of a device tensor, after every operation recorded before.
    func download(_ t: Tensor) -> [UInt8] {
        let source = allocation(t)
        let bytes = t.count * t.dtype.byteSize
        guard bytes > 0 else { return [] }
        lock.lock()
        defer { lock.unlock() }
        let frame = recordingFrame()
        let stage = stagingAllocation(bytes)
        var region = VkBufferCopy(
            srcOffset: VkDeviceSize(source.offset), dstOffset: VkDeviceSize(stage.offset), size: VkDeviceSize(bytes))
        logical.functions.cmdCopyBuffer(frame.commandBuffer, source.block.buffer, stage.block.buffer, 1, &region)
        barrier(frame)
        frame.held.append(stage)
        counters.bytesDown += bytes
        submit()
        wait(frame, failOnError: true)
        guard let mapped = stage.block.mapped else { fatal("staging memory is not mapped") }
        return [UInt8](UnsafeRawBufferPointer(start: mapped + stage.offset, count: bytes))
    }

    /// Waits until the device has run everything recorded.
    func synchronize() {
        lock.lock()
        defer { lock.unlock() }
        if frames[current].recording { submit() }
        for frame in frames where frame.submitted { wait(frame, failOnError: true) }
    }

    private func stagingAllocation(_ bytes: Int) -> DeviceAllocation {
        do {
            return try staging.allocate(bytes)
        } catch {
            fatal("out of host-visible memory for a transfer of \(MemoryBlock.mib(bytes)): \(error.message)")
        }
    }

    // MARK: Dispatches

    func dispatch(_ kernel: String, _ buffers: [Tensor], push: [UInt32], groups: (x: Int, y: Int, z: Int)) {
        precondition(push.count <= 32, "\(push.count) push-constant words for \(kernel); at most 32")
        precondition(
            groups.x >= 1 && groups.y >= 1 && groups.z >= 1 && groups.x <= maxWorkgroups.0
                && groups.y <= maxWorkgroups.1 && groups.z <= maxWorkgroups.2,
            "\(kernel): \(groups) workgroups; this device allows \(maxWorkgroups)")
        let allocations = buffers.map(allocation)
        lock.lock()
        defer { lock.unlock() }
        let pipeline = self.pipeline(kernel, bindings: buffers.count)
        let frame = recordingFrame()
        let f = logical.functions
        let cb = frame.commandBuffer
        f.cmdBindPipeline(cb, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline.pipeline)
        var infos = allocations.map { a in
            VkDescriptorBufferInfo(buffer: a.block.buffer, offset: VkDeviceSize(a.offset), range: VkDeviceSize(a.size))
        }
        infos.withUnsafeMutableBufferPointer { infoPointer in
            var writes = (0..<allocations.count).map { i in
                var w = VkWriteDescriptorSet()
                w.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET
                w.dstBinding = UInt32(i)
                w.descriptorCount = 1
                w.descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER
                w.pBufferInfo = UnsafePointer(infoPointer.baseAddress! + i)
                return w
            }
            f.cmdPushDescriptorSet(
                cb, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline.layout, 0, UInt32(writes.count), &writes)
        }
        if !push.isEmpty {
            push.withUnsafeBytes { raw in
                f.cmdPushConstants(
                    cb, pipeline.layout, VK_SHADER_STAGE_COMPUTE_BIT.rawValue, 0, UInt32(raw.count), raw.baseAddress)
            }
        }
        f.cmdDispatch(cb, UInt32(groups.x), UInt32(groups.y), UInt32(groups.z))
        barrier(frame)
        frame.dispatches += 1
        counters.dispatches += 1
        if profiling {
            let start = DispatchTime.now().uptimeNanoseconds
            submit()
            wait(frame, failOnError: true)
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            let name = "\(kernel) \(groups.x)×\(groups.y)×\(groups.z)"
            profile[name, default: (0, 0)].count += 1
            profile[name, default: (0, 0)].seconds += seconds
            if profile.count == 1 && profile[name]?.count == 1 {
                atexit { VulkanContext.printProfiles() }
            }
            VulkanContext.profiles[ObjectIdentifier(self)] = profile
            return
        }
        if frame.dispatches >= options.dispatchesPerSubmit { submit() }
    }

    /// A full memory barrier: every later command sees every earlier command's writes.
    private func barrier(_ frame: Frame) {
        var b = VkMemoryBarrier()
        b.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER
        b.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT.rawValue | VK_ACCESS_TRANSFER_WRITE_BIT.rawValue
        b.dstAccessMask =
            VK_ACCESS_SHADER_READ_BIT.rawValue | VK_ACCESS_SHADER_WRITE_BIT.rawValue
            | VK_ACCESS_TRANSFER_READ_BIT.rawValue | VK_ACCESS_TRANSFER_WRITE_BIT.rawValue
            | VK_ACCESS_HOST_READ_BIT.rawValue
        let stages = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT.rawValue | VK_PIPELINE_STAGE_TRANSFER_BIT.rawValue
        logical.functions.cmdPipelineBarrier(
            frame.commandBuffer, stages, stages | VK_PIPELINE_STAGE_HOST_BIT.rawValue, 0, 1, &b, 0, nil, 0, nil)
    }

    /// The frame being recorded, begun if needed (after waiting for its previous submission).
    private func recordingFrame() -> Frame {
        let frame = frames[current]
        if frame.recording { return frame }
        if frame.submitted { wait(frame, failOnError: true) }
        var begin = VkCommandBufferBeginInfo()
        begin.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO
        begin.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT.rawValue
        let f = logical.functions
        if f.resetCommandBuffer(frame.commandBuffer, 0) != VK_SUCCESS
            || f.beginCommandBuffer(frame.commandBuffer, &begin) != VK_SUCCESS
        {
            fatal("could not begin a command buffer on vulkan:\(info.index)")
        }
        frame.recording = true
        // Commands of earlier submissions on this queue come first (submission order spans submissions).
        barrier(frame)
        return frame
    }

    /// Submits the frame being recorded (if any) and moves on to the other one.
    private func submit() {
        let frame = frames[current]
        guard frame.recording else { return }
        let f = logical.functions
        guard f.endCommandBuffer(frame.commandBuffer) == VK_SUCCESS else {
            fatal("could not end a command buffer on vulkan:\(info.index)")
        }
        frame.recording = false
        counters.submits += 1
        if VulkanBackend.faultArmed { submits += 1 }
        if case .deviceLost(let n)? = fault, submits >= n {
            fatal("vulkan:\(info.index) (\(info.name)): VK_ERROR_DEVICE_LOST (injected by KD_VULKAN_FAULT)")
        }
        if case .hang(let n)? = fault, submits >= n {
            // Never submitted: the wait below runs into the submission timeout, as with a hung device.
            frame.submitted = true
            current = (current + 1) % frames.count
            return
        }
        var buffer: VkCommandBuffer? = frame.commandBuffer
        var submitInfo = VkSubmitInfo()
        submitInfo.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO
        submitInfo.commandBufferCount = 1
        let result = withUnsafePointer(to: &buffer) { pointer in
            submitInfo.pCommandBuffers = pointer
            return f.queueSubmit(queue, 1, &submitInfo, frame.fence)
        }
        guard result == VK_SUCCESS else {
            fatal("vulkan:\(info.index) (\(info.name)): submitting work failed: \(describe(result))")
        }
        frame.submitted = true
        current = (current + 1) % frames.count
    }

    /// Waits for a submitted frame, then frees what its copies held.
    private func wait(_ frame: Frame, failOnError: Bool) {
        guard frame.submitted else { return }
        let f = logical.functions
        var fence: VkFence? = frame.fence
        let timeout = UInt64(max(0.001, options.submissionTimeout) * 1e9)
        let result = f.waitForFences(logical.handle, 1, &fence, VkBool32(VK_TRUE), timeout)
        if result != VK_SUCCESS && failOnError {
            let what =
                result == VK_TIMEOUT
                ? "a submission did not finish within \(options.submissionTimeout) s (the device hangs)"
                : "waiting for the device failed: \(describe(result))"
            fatal("vulkan:\(info.index) (\(info.name)): \(what)")
        }
        _ = f.resetFences(logical.handle, 1, &fence)
        frame.submitted = false
        frame.dispatches = 0
        frame.stagingBytes = 0
        frame.held.removeAll()
    }

    /// Releases memory blocks no tensor uses, after the device is idle.
    func trim() {
        synchronize()
        memory.trim()
        staging.trim()
    }

    // MARK: Pipelines

    private func pipeline(_ kernel: String, bindings: Int) -> Pipeline {
        let key = "\(kernel)/\(bindings)"
        if let p = pipelines[key] { return p }
        guard let spirv = shaders[kernel] else {
            preconditionFailure("no shader named \(kernel) in this build (Ops/gen-shaders makes them)")
        }
        let (d, f) = (logical.handle, logical.functions)
        let layout = pipelineLayout(bindings: bindings)
        var moduleInfo = VkShaderModuleCreateInfo()
        moduleInfo.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO
        moduleInfo.codeSize = spirv.words * 4
        moduleInfo.pCode = spirv.code
        var module: VkShaderModule?
        guard f.createShaderModule(d, &moduleInfo, nil, &module) == VK_SUCCESS, let module else {
            fatal("could not create the shader module of \(kernel)")
        }
        defer { f.destroyShaderModule(d, module, nil) }
        var pipeline: VkPipeline?
        let result: VkResult = "main".withCString { entry in
            var stage = VkPipelineShaderStageCreateInfo()
            stage.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO
            stage.stage = VK_SHADER_STAGE_COMPUTE_BIT
            stage.module = module
            stage.pName = entry
            var info = VkComputePipelineCreateInfo()
            info.sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO
            info.stage = stage
            info.layout = layout
            return f.createComputePipelines(d, pipelineCache, 1, &info, nil, &pipeline)
        }
        guard result == VK_SUCCESS, let pipeline else {
            fatal("could not create the pipeline of \(kernel): \(describe(result))")
        }
        pipelineCacheDirty = true
        let p = Pipeline(pipeline: pipeline, layout: layout, bindings: bindings)
        pipelines[key] = p
        return p
    }

    private func pipelineLayout(bindings: Int) -> VkPipelineLayout {
        if let l = layouts[bindings] { return l.pipeline }
        let (d, f) = (logical.handle, logical.functions)
        var slots = (0..<bindings).map { i in
            var b = VkDescriptorSetLayoutBinding()
            b.binding = UInt32(i)
            b.descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER
            b.descriptorCount = 1
            b.stageFlags = VK_SHADER_STAGE_COMPUTE_BIT.rawValue
            return b
        }
        var setInfo = VkDescriptorSetLayoutCreateInfo()
        setInfo.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO
        setInfo.flags = VK_DESCRIPTOR_SET_LAYOUT_CREATE_PUSH_DESCRIPTOR_BIT_KHR.rawValue
        setInfo.bindingCount = UInt32(bindings)
        var setLayout: VkDescriptorSetLayout?
        let setResult = slots.withUnsafeMutableBufferPointer { s in
            setInfo.pBindings = UnsafePointer(s.baseAddress)
            return f.createDescriptorSetLayout(d, &setInfo, nil, &setLayout)
        }
        guard setResult == VK_SUCCESS, let setLayout else { fatal("could not create a descriptor set layout") }
        var range = VkPushConstantRange(stageFlags: VK_SHADER_STAGE_COMPUTE_BIT.rawValue, offset: 0, size: 128)
        var layoutInfo = VkPipelineLayoutCreateInfo()
        layoutInfo.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO
        layoutInfo.setLayoutCount = 1
        layoutInfo.pushConstantRangeCount = 1
        var pipelineLayout: VkPipelineLayout?
        var setLayoutOptional: VkDescriptorSetLayout? = setLayout
        let result = withUnsafePointer(to: &setLayoutOptional) { setPointer in
            withUnsafePointer(to: &range) { rangePointer in
                layoutInfo.pSetLayouts = setPointer
                layoutInfo.pPushConstantRanges = rangePointer
                return f.createPipelineLayout(d, &layoutInfo, nil, &pipelineLayout)
            }
        }
        guard result == VK_SUCCESS, let pipelineLayout else { fatal("could not create a pipeline layout") }
        layouts[bindings] = (setLayout, pipelineLayout)
        return pipelineLayout
    }

    private var pipelineCachePath: String? {
        guard let dir = options.pipelineCacheDirectory else { return nil }
        let safe = info.name.map { $0.isLetter || $0.isNumber ? $0 : "-" }
        return (dir as NSString).appendingPathComponent("vulkan-pipelines-\(String(safe)).bin")
    }

    private func loadPipelineCache() {
        let data = pipelineCachePath.flatMap { FileManager.default.contents(atPath: $0) } ?? Data()
        var info = VkPipelineCacheCreateInfo()
        info.sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO
        var cache: VkPipelineCache?
        let result = data.withUnsafeBytes { raw in
            info.initialDataSize = raw.count
            info.pInitialData = raw.baseAddress
            return logical.functions.createPipelineCache(logical.handle, &info, nil, &cache)
        }
        // A cache the driver refuses (another driver version) is dropped: pipelines are then compiled anew.
        pipelineCache = result == VK_SUCCESS ? cache : nil
    }

    /// Writes the pipeline cache to the state directory (atomically), when pipelines were created.
    func savePipelineCache() {
        guard pipelineCacheDirty, let path = pipelineCachePath, let cache = pipelineCache else { return }
        var size = 0
        guard logical.functions.getPipelineCacheData(logical.handle, cache, &size, nil) == VK_SUCCESS, size > 0
        else { return }
        var bytes = [UInt8](repeating: 0, count: size)
        guard logical.functions.getPipelineCacheData(logical.handle, cache, &size, &bytes) == VK_SUCCESS else { return }
        try? FileManager.default.createDirectory(
            atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        if (try? Data(bytes.prefix(size)).write(to: URL(fileURLWithPath: path), options: .atomic)) != nil {
            pipelineCacheDirty = false
        }
    }

    nonisolated(unsafe) static var profiles: [ObjectIdentifier: [String: (count: Int, seconds: Double)]] = [:]

    static func printProfiles() {
        for profile in profiles.values {
            let total = profile.values.reduce(0) { $0 + $1.seconds }
            var lines = ["vulkan kernel profile: \(String(format: "%.3f", total)) s"]
            for (name, p) in profile.sorted(by: { $0.value.seconds > $1.value.seconds }).prefix(40) {
                lines.append(String(format: "  %8.3f s  %5d×  %@", p.seconds, p.count, name))
            }
            FileHandle.standardError.write(Data((lines.joined(separator: "\n") + "\n").utf8))
        }
    }

    // MARK: Failure

    /// A device failure the model cannot continue after (lost, hung, out of memory): handed to
    /// `VulkanBackend.onDeviceFailure`, which by default prints it and exits with status 70.
    func fatal(_ message: String) -> Never {
        VulkanBackend.failureHandler.handler(VulkanError(message))
    }
}
