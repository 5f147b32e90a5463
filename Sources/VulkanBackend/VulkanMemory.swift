import CVulkan
import Foundation

/// The logical device handle and its functions, destroyed when the last object using it (the context, a memory
/// block held by a tensor that outlives the backend) is gone.
final class LogicalDevice: @unchecked Sendable {
    let handle: VkDevice
    let functions: DeviceFunctions
    /// The instance, destroyed only after the device.
    let instance: VulkanInstance

    init(handle: VkDevice, functions: DeviceFunctions, instance: VulkanInstance) {
        (self.handle, self.functions, self.instance) = (handle, functions, instance)
    }

    deinit {
        _ = functions.deviceWaitIdle(handle)
        functions.destroyDevice(handle, nil)
    }
}

/// One `VkDeviceMemory` with one buffer over all of it, carved into tensors.
final class MemoryBlock: @unchecked Sendable {
    let device: LogicalDevice
    let memory: VkDeviceMemory
    let buffer: VkBuffer
    let size: Int
    /// The host address of the memory when it is mapped (staging and read-back blocks).
    let mapped: UnsafeMutableRawPointer?
    /// Free ranges, sorted by offset, coalesced.
    var free: [(offset: Int, size: Int)]

    init(
        device: LogicalDevice, size: Int, memoryType: UInt32, map: Bool, usage: VkBufferUsageFlags
    )
        throws(VulkanError)
    {
        let f = device.functions
        var info = VkBufferCreateInfo()
        info.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO
        info.size = VkDeviceSize(size)
        info.usage = usage
        info.sharingMode = VK_SHARING_MODE_EXCLUSIVE
        var buffer: VkBuffer?
        try check(f.createBuffer(device.handle, &info, nil, &buffer), "creating a buffer of \(size) bytes")
        guard let buffer else { throw VulkanError("vkCreateBuffer returned no buffer") }
        var requirements = VkMemoryRequirements()
        f.getBufferMemoryRequirements(device.handle, buffer, &requirements)
        var allocate = VkMemoryAllocateInfo()
        allocate.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO
        allocate.allocationSize = requirements.size
        allocate.memoryTypeIndex = memoryType
        var memory: VkDeviceMemory?
        let result = f.allocateMemory(device.handle, &allocate, nil, &memory)
        guard result == VK_SUCCESS, let memory else {
            f.destroyBuffer(device.handle, buffer, nil)
            throw VulkanError(
                "allocating \(MemoryBlock.mib(size)) of device memory failed: \(describe(result))")
        }
        if f.bindBufferMemory(device.handle, buffer, memory, 0) != VK_SUCCESS {
            f.freeMemory(device.handle, memory, nil)
            f.destroyBuffer(device.handle, buffer, nil)
            throw VulkanError("binding \(MemoryBlock.mib(size)) of device memory failed")
        }
        var host: UnsafeMutableRawPointer?
        if map {
            let mapResult = f.mapMemory(device.handle, memory, 0, VkDeviceSize(VK_WHOLE_SIZE), 0, &host)
            if mapResult != VK_SUCCESS {
                f.freeMemory(device.handle, memory, nil)
                f.destroyBuffer(device.handle, buffer, nil)
                throw VulkanError("mapping \(MemoryBlock.mib(size)) of host-visible memory failed")
            }
        }
        (self.device, self.memory, self.buffer, self.size, self.mapped) = (device, memory, buffer, size, host)
        free = [(0, size)]
    }

    deinit {
        let f = device.functions
        if mapped != nil { f.unmapMemory(device.handle, memory) }
        f.destroyBuffer(device.handle, buffer, nil)
        f.freeMemory(device.handle, memory, nil)
    }

    /// First fit: the offset of `size` bytes aligned to `alignment`, or nil.
    func take(_ size: Int, alignment: Int) -> Int? {
        for (i, range) in free.enumerated() {
            let start = (range.offset + alignment - 1) / alignment * alignment
            let end = start + size
            guard end <= range.offset + range.size else { continue }
            var replacement: [(offset: Int, size: Int)] = []
            if start > range.offset { replacement.append((range.offset, start - range.offset)) }
            if end < range.offset + range.size { replacement.append((end, range.offset + range.size - end)) }
            free.replaceSubrange(i...i, with: replacement)
            return start
        }
        return nil
    }

    /// Returns `size` bytes at `offset`, merged with free neighbours.
    func give(offset: Int, size: Int) {
        var i = free.firstIndex { $0.offset > offset } ?? free.count
        free.insert((offset, size), at: i)
        if i + 1 < free.count, free[i].offset + free[i].size == free[i + 1].offset {
            free[i].size += free[i + 1].size
            free.remove(at: i + 1)
        }
        if i > 0, free[i - 1].offset + free[i - 1].size == free[i].offset {
            free[i - 1].size += free[i].size
            free.remove(at: i)
            i -= 1
        }
    }

    var isUnused: Bool { free.count == 1 && free[0].size == size }

    static func mib(_ bytes: Int) -> String { String(format: "%.1f MiB", Double(bytes) / Double(1 << 20)) }
}

/// A range of a memory block holding one tensor's elements; freed when the last tensor using it goes.
final class DeviceAllocation: @unchecked Sendable {
    let block: MemoryBlock
    let offset: Int
    let size: Int
    private let pool: MemoryPool

    init(block: MemoryBlock, offset: Int, size: Int, pool: MemoryPool) {
        (self.block, self.offset, self.size, self.pool) = (block, offset, size, pool)
    }

    deinit { pool.free(self) }
}

/// Device memory in large blocks, sub-allocated first-fit; freed ranges are reused at once (the command stream is
/// ordered, see `VulkanBackend`), and wholly unused blocks go back to the driver on `trim()`.
final class MemoryPool: @unchecked Sendable {
    let device: LogicalDevice
    let memoryType: UInt32
    let blockSize: Int
    let alignment: Int
    let usage: VkBufferUsageFlags
    let mapped: Bool
    private let lock = NSLock()
    private var blocks: [MemoryBlock] = []
    private(set) var bytesInUse = 0
    private(set) var peakBytesInUse = 0

    init(
        device: LogicalDevice, memoryType: UInt32, blockSize: Int, alignment: Int, usage: VkBufferUsageFlags,
        mapped: Bool
    ) {
        (self.device, self.memoryType, self.blockSize, self.alignment) = (device, memoryType, blockSize, alignment)
        (self.usage, self.mapped) = (usage, mapped)
    }

    /// Bytes held from the driver.
    var bytesReserved: Int {
        lock.lock()
        defer { lock.unlock() }
        return blocks.reduce(0) { $0 + $1.size }
    }

    func allocate(_ bytes: Int) throws(VulkanError) -> DeviceAllocation {
        let size = max(4, (bytes + 3) / 4 * 4)
        lock.lock()
        defer { lock.unlock() }
        for block in blocks {
            if let offset = block.take(size, alignment: alignment) { return record(block, offset, size) }
        }
        let blockBytes = max(blockSize, (size + alignment - 1) / alignment * alignment)
        let block = try MemoryBlock(
            device: device, size: blockBytes, memoryType: memoryType, map: mapped, usage: usage)
        blocks.append(block)
        guard let offset = block.take(size, alignment: alignment) else {
            throw VulkanError("a new block of \(blockBytes) bytes did not hold \(size)")
        }
        return record(block, offset, size)
    }

    private func record(_ block: MemoryBlock, _ offset: Int, _ size: Int) -> DeviceAllocation {
        bytesInUse += size
        peakBytesInUse = max(peakBytesInUse, bytesInUse)
        return DeviceAllocation(block: block, offset: offset, size: size, pool: self)
    }

    func free(_ allocation: DeviceAllocation) {
        lock.lock()
        allocation.block.give(offset: allocation.offset, size: allocation.size)
        bytesInUse -= allocation.size
        lock.unlock()
    }

    /// Frees the blocks no tensor uses (the caller makes sure the device no longer reads them).
    func trim() {
        lock.lock()
        blocks.removeAll { $0.isUnused }
        lock.unlock()
    }

    func resetPeak() {
        lock.lock()
        peakBytesInUse = bytesInUse
        lock.unlock()
    }
}
