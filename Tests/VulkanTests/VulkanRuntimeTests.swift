import Foundation
import Tensor
import TestSupport
import Testing

@testable import VulkanBackend

@Suite("Vulkan runtime", .enabled(if: VulkanTesting.enabled))
struct VulkanRuntimeTests {
    @Test func listsTheDeviceItOpens() throws {
        let devices = try Vulkan.devices().get()
        let b = try TestBackend.backend()
        #expect(devices.first?.name == b.info.name)
        #expect(devices.first?.unusableBecause == nil)
        #expect(b.device == .vulkan(0))
    }

    @Test func aDeviceThatDoesNotExistIsNamed() {
        #expect {
            _ = try VulkanBackend(index: 99)
        } throws: { error in
            let message = (error as? VulkanError)?.message ?? ""
            return message.contains("vulkan:99 does not exist") && message.contains("vulkan:0")
        }
    }

    @Test func uploadsAndDownloadsExactly() throws {
        let b = try TestBackend.backend()
        let mark = TestBackend.messageMark
        let values = (0..<1000).map { Float($0) * 0.37 - 100 }
        let t = b.upload(values, shape: [10, 100])
        #expect(t.device == .vulkan(0) && t.dtype == .f32 && t.shape == [10, 100])
        #expect(b.download(t) == values)
        // A tensor reshaped on the device keeps its elements.
        #expect(b.download(t.reshaped([1000])) == values)
        // Many small transfers in one stream, across submissions.
        let parts = (0..<300).map { i in b.upload([Float(i), Float(-i)], shape: [2]) }
        for (i, p) in parts.enumerated() { #expect(b.download(p) == [Float(i), Float(-i)]) }
        TestBackend.expectNoValidationMessages(since: mark)
    }

    @Test func keepsHalfPrecisionWeightsInSixteenBits() throws {
        let b = try TestBackend.backend()
        try #require(b.supportsF16, "lavapipe offers 16-bit storage and f16 arithmetic")
        let host = Tensor(shape: [3, 5], values: (0..<15).map { Float($0) / 3 - 2 })
        let t = try #require(b.uploadHalf(host))
        #expect(t.dtype == .f16)
        #expect(b.download(t) == host.scalars.map { Float(Float16($0)) })
        // Beyond f16's range: not converted.
        #expect(b.uploadHalf(Tensor(shape: [1], values: [1e6])) == nil)
    }

    @Test func freedMemoryIsReusedAndTrimmed() throws {
        // A backend of its own, so that other suites' tensors do not move its figures.
        _ = try TestBackend.backend()
        let b = try VulkanBackend(index: 0, options: VulkanOptions(validation: true))
        let before = b.memoryInUse.current
        do {
            let big = b.upload([Float](repeating: 1, count: 1 << 20), shape: [1 << 20])
            #expect(b.memoryInUse.current >= before + (4 << 20))
            _ = b.download(big)
        }
        #expect(b.memoryInUse.current == before)
        #expect(b.memoryInUse.peak >= 4 << 20)
        let reserved = b.memoryInUse.reserved
        b.releaseCachedMemory()
        #expect(b.memoryInUse.reserved < reserved)
        #expect(b.validationMessages.isEmpty, "\(b.validationMessages)")
    }
}
