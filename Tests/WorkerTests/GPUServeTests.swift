import Foundation
import JobQueue
import Redis
import TestSupport
import Testing

/// `serve --device vulkan:0` (lavapipe in CI) end to end through Redis, and what a GPU that fails under a batch does:
/// the worker hands its jobs back and exits non-zero (75) so that systemd restarts it, and another worker finishes
/// them. The fault comes from the backend's switch (`KD_VULKAN_FAULT`), armed once the worker is ready.
@Suite(.enabled(if: VulkanTesting.enabled))
struct GPUServeTests {
    @Test func servesAJobOnTheGPUAndReportsItsMemory() throws {
        let fleet = try Fleet(prefix: "kd-gpu", config: "device: vulkan:0\nheartbeat_ms: 300\n")
        defer { fleet.dir.remove() }
        let worker = try fleet.start("g1")
        defer { worker.kill9() }
        try fleet.producer.submit(
            Array(#"{"id":"on-gpu","prompt":"a red circle","seed":3,"steps":3}"#.utf8), queue: "default")
        #expect(
            eventually(timeout: 300) { (try? fleet.producer.status("on-gpu")["state"]) == "done" }, "\(worker.log)")
        let event = try JSONValue.parse(Array(try #require(try fleet.producer.event(for: "on-gpu")).utf8))
        guard case .array(let images)? = event["images"], let path = images.first?["path"]?.stringValue else {
            Issue.record("no image in \(event)")
            return
        }
        #expect(FileManager.default.fileExists(atPath: fleet.dir.file("store/\(path)")))
        #expect(worker.log.contains("device vulkan:0"), "\(worker.log)")

        let beat = try fleet.client.command(["HGETALL", "kd:worker:g1"]).fields
        #expect(beat["device"] == "vulkan:0")
        #expect((beat["device_memory_used_mb"].flatMap(Int.init) ?? -1) >= 0, "\(beat)")
        #expect((beat["device_memory_total_mb"].flatMap(Int.init) ?? 0) > 0, "\(beat)")
        let port = httpPort(of: "g1", fleet.client)
        let (status, metrics) = try httpGet(port: port, path: "/metrics")
        #expect(status == 200 && metrics.contains("kd_device_memory_used_bytes{device=\"vulkan:0\"}"), "\(metrics)")
        #expect(metrics.contains("kd_device_memory_total_bytes{device=\"vulkan:0\"}"))
        #expect(worker.terminate(timeout: 60) == 0, "\(worker.log)")
    }

    /// The hang's submission timeout is 20 s: lavapipe may take seconds over one real submission.
    @Test(arguments: [
        ("device-lost:1", "VK_ERROR_DEVICE_LOST"), ("hang:1", "did not finish within 20.0 s (the device hangs)"),
    ])
    func aFailingDeviceHandsTheBatchBackAndTheWorkerExitsForARestart(fault: String, message: String) throws {
        let fleet = try Fleet(prefix: "kd-gpu-fault", config: "device: vulkan:0\nheartbeat_ms: 300\n")
        defer { fleet.dir.remove() }
        let failing = try fleet.start("f1", ["KD_VULKAN_FAULT": fault, "KD_VULKAN_SUBMIT_TIMEOUT_S": "20"])
        defer { failing.kill9() }
        try fleet.producer.submit(
            Array(#"{"id":"lost","prompt":"a blue square","seed":5,"steps":2}"#.utf8), queue: "default")
        #expect(eventually(timeout: 300) { !failing.isRunning }, "still running:\n\(failing.log)")
        #expect(failing.log.contains("ready"), "the fault is armed once the worker is ready:\n\(failing.log)")
        #expect(failing.terminate() == 75, "\(failing.log)")
        #expect(failing.log.contains(message), "\(failing.log)")
        #expect(failing.log.contains("handed back 1 job(s) for another worker"), "\(failing.log)")
        #expect(try fleet.client.command(["LLEN", "kd:processing:f1"]).integer == 0)

        // The job went back to its queue at once (no lease to wait out); a CPU worker finishes it.
        let rescuer = try fleet.start("c1", ["KD_DEVICE": "cpu"])
        defer { rescuer.kill9() }
        #expect(
            eventually(timeout: 300) { (try? fleet.producer.status("lost")["state"]) == "done" }, "\(rescuer.log)")
        #expect(try fleet.producer.status("lost")["worker"] == "c1")
        #expect(rescuer.terminate(timeout: 60) == 0)
    }
}
