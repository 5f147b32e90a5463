import Foundation
import TestSupport
import Testing

@testable import ModelConversion

/// Checkpoints built by the test (see `CheckpointBuilder`): tensor bytes come back exactly, and every kind of damage
/// is a clear error naming the file (and the key, where there is one).
@Suite struct TorchCheckpointTests {
    /// Writes `bytes` to a fresh file and opens it.
    func open(
        _ bytes: [UInt8], in dir: TemporaryDirectory, name: String = "model.pt"
    ) throws(ConversionError)
        -> TorchCheckpoint
    {
        let path = dir.file(name)
        try! writeFile(bytes, to: path)
        return try TorchCheckpoint(path: path)
    }

    func bytes(of checkpoint: TorchCheckpoint, _ key: String) throws -> [UInt8] {
        let tensor = try #require(checkpoint.root.dictValue?[key]?.tensorValue)
        var out: [UInt8] = []
        try checkpoint.stream(tensor, key: key) { chunk throws(ConversionError) in out += chunk }
        return out
    }

    /// The error `body` throws, or a recorded issue.
    func conversionError(_ body: () throws -> Void) -> ConversionError? {
        do {
            try body()
            Issue.record("expected an error")
        } catch let error as ConversionError {
            return error
        } catch {
            Issue.record("expected a ConversionError, got \(error)")
        }
        return nil
    }

    @Test func readsContiguousViewsAndGathersStridedOnes() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let storage = float32Bytes([0, 1, 2, 3, 4, 5, 6, 7])
        let half: [UInt8] = [0x00, 0x3C, 0x00, 0x40, 0x00, 0x42]  // 1, 2, 3 in IEEE binary16
        let pickle = PickleBuilder.dict([
            ("whole", { $0.tensor(storage: "0", numel: 8, size: [2, 4], stride: [4, 1]) }),
            ("window", { $0.tensor(storage: "0", numel: 8, offset: 2, size: [3], stride: [1]) }),
            // The transpose of the first 2×3 block: element [i][j] = storage[j * 3 + i].
            ("transposed", { $0.tensor(storage: "0", numel: 8, size: [3, 2], stride: [1, 3]) }),
            ("scalar", { $0.tensor(storage: "0", numel: 8, offset: 7, size: [], stride: []) }),
            ("empty", { $0.tensor(storage: "0", numel: 8, size: [0, 4], stride: [4, 1]) }),
            ("half", { $0.tensor(storage: "h", type: "HalfStorage", numel: 3, size: [3], stride: [1]) }),
        ])
        let checkpoint = try open(ZipBuilder.checkpoint(pickle: pickle, storages: ["0": storage, "h": half]), in: dir)
        #expect(try bytes(of: checkpoint, "whole") == storage)
        #expect(try bytes(of: checkpoint, "window") == float32Bytes([2, 3, 4]))
        #expect(try bytes(of: checkpoint, "transposed") == float32Bytes([0, 3, 1, 4, 2, 5]))
        #expect(try bytes(of: checkpoint, "scalar") == float32Bytes([7]))
        #expect(try bytes(of: checkpoint, "empty") == [])
        #expect(try bytes(of: checkpoint, "half") == half)
        #expect(try checkpoint.check(#require(checkpoint.root.dictValue?["half"]?.tensorValue), key: "half") == .f16)
    }

    @Test func missingStorageEntryNamesTheKey() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let pickle = PickleBuilder.dict([("w", { $0.tensor(storage: "7", numel: 2, size: [2], stride: [1]) })])
        let checkpoint = try open(
            ZipBuilder.checkpoint(pickle: pickle, storages: ["0": float32Bytes([1, 2])]), in: dir)
        let tensor = try #require(checkpoint.root.dictValue?["w"]?.tensorValue)
        let error = conversionError { try checkpoint.check(tensor, key: "w") }
        #expect(error?.code == .missingEntry)
        #expect(error?.key == "w")
        #expect(error?.file == dir.file("model.pt"))
        #expect(error?.message.contains("archive/data/7") == true)
    }

    @Test func storageSmallerThanDeclaredIsRefused() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        // Declares 1,000 elements; the entry holds 2.
        let pickle = PickleBuilder.dict([("w", { $0.tensor(storage: "0", numel: 1000, size: [1000], stride: [1]) })])
        let checkpoint = try open(
            ZipBuilder.checkpoint(pickle: pickle, storages: ["0": float32Bytes([1, 2])]), in: dir)
        let tensor = try #require(checkpoint.root.dictValue?["w"]?.tensorValue)
        let error = conversionError { try checkpoint.check(tensor, key: "w") }
        #expect(error?.code == .storageOutOfRange)
        #expect(error?.key == "w")
        let streamError = conversionError { _ = try bytes(of: checkpoint, "w") }
        #expect(streamError?.code == .storageOutOfRange)
    }

    @Test func unsupportedStorageTypeIsNamed() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let pickle = PickleBuilder.dict([
            ("w", { $0.tensor(storage: "0", type: "ComplexFloatStorage", numel: 1, size: [1], stride: [1]) })
        ])
        let checkpoint = try open(
            ZipBuilder.checkpoint(pickle: pickle, storages: ["0": [UInt8](repeating: 0, count: 8)]), in: dir)
        let tensor = try #require(checkpoint.root.dictValue?["w"]?.tensorValue)
        let error = conversionError { try checkpoint.check(tensor, key: "w") }
        #expect(error?.code == .unsupportedDType)
        #expect(error?.message.contains("ComplexFloatStorage") == true)
    }

    @Test func damagedArchivesAreErrors() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let pickle = PickleBuilder.dict([("w", { $0.tensor(storage: "0", numel: 64, size: [64], stride: [1]) })])
        let good = ZipBuilder.checkpoint(pickle: pickle, storages: ["0": float32Bytes((0..<64).map(Float.init))])
        _ = try open(good, in: dir)

        // Cut anywhere: opening fails, or reading the tensor does — never a crash or a wrong tensor.
        for cut in stride(from: 0, to: good.count, by: 7) {
            do {
                let checkpoint = try open(Array(good[..<cut]), in: dir, name: "cut.pt")
                let read = try bytes(of: checkpoint, "w")
                Issue.record("a checkpoint cut at \(cut) of \(good.count) bytes gave \(read.count) bytes")
            } catch let error as ConversionError {
                #expect(error.file == dir.file("cut.pt"))
            }
        }
        let truncated = conversionError { _ = try open(Array(good.dropLast(30)), in: dir, name: "cut.pt") }
        #expect(truncated?.code == .truncated)

        // A flipped bit in the storage: the CRC-32 check catches it.
        var flipped = good
        let dataStart = try #require(find(float32Bytes([1, 2]), in: good))
        flipped[dataStart] ^= 0x01
        let checkpoint = try open(flipped, in: dir, name: "flipped.pt")
        let crc = conversionError { _ = try bytes(of: checkpoint, "w") }
        #expect(crc?.code == .badArchive)
        #expect(crc?.message.contains("CRC") == true)

        let notZip = conversionError { _ = try open(Array("hello, world".utf8), in: dir, name: "text.pt") }
        #expect(notZip?.code == .badArchive)
        // A pre-1.6 torch file starts with a bare pickle.
        let legacy = conversionError { _ = try open([0x80, 0x02, 0x8A, 0x0A, 0x6C, 0xFC], in: dir, name: "old.pt") }
        #expect(legacy?.code == .legacyFormat)
        let missing = conversionError { _ = try TorchCheckpoint(path: dir.file("absent.pt")) }
        #expect(missing?.code == .missingFile)
        let noPickle = conversionError {
            _ = try open(ZipBuilder.archive([("archive/data/0", [1, 2, 3, 4])]), in: dir, name: "nopkl.pt")
        }
        #expect(noPickle?.code == .missingEntry)
        let bigEndian = conversionError {
            _ = try open(ZipBuilder.checkpoint(pickle: pickle, storages: [:], byteorder: "big"), in: dir, name: "be.pt")
        }
        #expect(bigEndian?.code == .unsupportedDType)
    }

    /// Flipping every byte of a small checkpoint in turn: each result opens and reads correctly, or is an error.
    @Test func corruptedBytesNeverCrash() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let pickle = PickleBuilder.dict([("w", { $0.tensor(storage: "0", numel: 4, size: [2, 2], stride: [2, 1]) })])
        let good = ZipBuilder.checkpoint(pickle: pickle, storages: ["0": float32Bytes([1, 2, 3, 4])])
        for i in good.indices {
            var bad = good
            bad[i] ^= 0xA5
            do {
                let checkpoint = try open(bad, in: dir, name: "bad.pt")
                if let tensor = checkpoint.root.dictValue?["w"]?.tensorValue {
                    var out: [UInt8] = []
                    try checkpoint.stream(tensor, key: "w") { chunk throws(ConversionError) in out += chunk }
                    #expect(out == float32Bytes([1, 2, 3, 4]), "byte \(i) flipped: read \(out)")
                }
            } catch {
                #expect(error.file == dir.file("bad.pt"))
            }
        }
    }

    func find(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard needle.count <= haystack.count else { return nil }
        return (0...(haystack.count - needle.count)).first { Array(haystack[$0..<($0 + needle.count)]) == needle }
    }
}
