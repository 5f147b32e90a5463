import Foundation
import TestSupport
import Testing

@testable import ResultStore

/// Wraps the real filesystem and fails chosen writes with a chosen errno (a full disk cannot be made on demand).
struct FailingFileSystem: StoreFileSystem {
    let base = POSIXFileSystem()
    /// Fail writes whose path ends with this.
    let failing: String
    let code: Int32

    func makeDirectories(_ path: String) throws(StoreError) { try base.makeDirectories(path) }
    func writeAtomically(_ bytes: [UInt8], to path: String) throws(StoreError) {
        if path.hasSuffix(failing) {
            // Leave a partial temporary file behind, as a write cut short by ENOSPC would.
            let dir = (path as NSString).deletingLastPathComponent
            _ = FileManager.default.createFile(
                atPath: dir + "/." + (path as NSString).lastPathComponent + ".tmp.1.2", contents: Data(bytes.prefix(3)))
            throw StoreError.system("write", path, code)
        }
        try base.writeAtomically(bytes, to: path)
    }
    func list(_ directory: String) throws(StoreError) -> [String] { try base.list(directory) }
    func remove(_ path: String) throws(StoreError) { try base.remove(path) }
}

@Suite struct ResultStoreTests {
    @Test func sha256KnownAnswers() {
        // FIPS 180-2 appendix B test vectors.
        #expect(
            Digests.sha256Hex(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(Digests.sha256Hex([]) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(
            Digests.sha256Hex(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        #expect(
            Digests.sha256Hex([UInt8](repeating: 0x61, count: 1_000_000))
                == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    @Test func layoutAndContents() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let store = ResultStore(root: dir.file("store"))
        // 2024-03-01T23:59:59Z
        let ms: Int64 = 1_709_337_599_000
        #expect(ResultStore.relativeDirectory(jobId: "j", firstSeenMs: ms) == "2024-03-01/j")
        let (images, job) = try store.write(
            jobId: "j", firstSeenMs: ms, pngs: [[1, 2, 3], [4, 5]], jobJSON: Array("{}\n".utf8))
        #expect(images.map(\.path) == ["2024-03-01/j/0.png", "2024-03-01/j/1.png"])
        #expect(job.path == "2024-03-01/j/job.json")
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir.file("store/2024-03-01/j/1.png"))) == Data([4, 5]))
        #expect(images[0].sha256 == Digests.sha256Hex([1, 2, 3]))
        #expect(throws: StoreError.self) { try store.write(jobId: "../x", firstSeenMs: ms, pngs: [], jobJSON: []) }
    }

    @Test func rewritingIsIdempotentAndCleansTemporaries() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let store = ResultStore(root: dir.path)
        let ms: Int64 = 1_700_000_000_000
        _ = try store.write(jobId: "j", firstSeenMs: ms, pngs: [[1], [2]], jobJSON: [9])
        let jobDir = dir.file(ResultStore.relativeDirectory(jobId: "j", firstSeenMs: ms))
        _ = FileManager.default.createFile(atPath: jobDir + "/.0.png.tmp.99.1", contents: Data([0]))
        _ = try store.write(jobId: "j", firstSeenMs: ms, pngs: [[3], [4]], jobJSON: [8])
        #expect(try FileManager.default.contentsOfDirectory(atPath: jobDir).sorted() == ["0.png", "1.png", "job.json"])
        #expect(try Data(contentsOf: URL(fileURLWithPath: jobDir + "/0.png")) == Data([3]))
    }

    @Test func aFailedWriteThrowsAndLeavesNoFinalFile() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let store = ResultStore(root: dir.path, fileSystem: FailingFileSystem(failing: "1.png", code: ENOSPC))
        let ms: Int64 = 1_700_000_000_000
        do {
            _ = try store.write(jobId: "j", firstSeenMs: ms, pngs: [[1], [2]], jobJSON: [9])
            Issue.record("a failed write reported success")
        } catch {
            #expect(error.code == ENOSPC && error.path.hasSuffix("1.png"))
        }
        let jobDir = dir.file(ResultStore.relativeDirectory(jobId: "j", firstSeenMs: ms))
        let names = try FileManager.default.contentsOfDirectory(atPath: jobDir)
        #expect(!names.contains("1.png") && !names.contains("job.json"))
        // The retry, on a healthy disk, leaves exactly one set.
        _ = try ResultStore(root: dir.path).write(jobId: "j", firstSeenMs: ms, pngs: [[1], [2]], jobJSON: [9])
        #expect(try FileManager.default.contentsOfDirectory(atPath: jobDir).sorted() == ["0.png", "1.png", "job.json"])
    }

    @Test func realFilesystemErrorsAreTyped() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        // The root is a regular file: creating the day directory fails with ENOTDIR.
        _ = FileManager.default.createFile(atPath: dir.file("root"), contents: Data())
        let store = ResultStore(root: dir.file("root"))
        do {
            _ = try store.write(jobId: "j", firstSeenMs: 0, pngs: [[1]], jobJSON: [1])
            Issue.record("writing below a regular file succeeded")
        } catch {
            #expect(error.path.hasPrefix(dir.file("root")))
        }
    }

    @Test func concurrentReadersNeverSeeAPartialFile() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let fs = POSIXFileSystem()
        let path = dir.file("f.bin")
        let a = [UInt8](repeating: 0xAA, count: 256 * 1024)
        let b = [UInt8](repeating: 0xBB, count: 256 * 1024)
        try fs.writeAtomically(a, to: path)
        let done = DispatchSemaphore(value: 0)
        let writer = Thread {
            for i in 0..<40 { try? fs.writeAtomically(i % 2 == 0 ? b : a, to: path) }
            done.signal()
        }
        writer.start()
        for _ in 0..<200 {
            let data = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
            #expect(data == a || data == b)
        }
        done.wait()
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["f.bin"])
    }
}
