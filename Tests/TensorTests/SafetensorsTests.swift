import Foundation
import TestSupport
import Testing

@testable import Tensor

@Suite struct SafetensorsTests {
    /// Writes `bytes` to a temporary file and opens it.
    func open(_ bytes: [UInt8]) throws -> (SafetensorsFile?, TensorError?) {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let path = dir.file("t.safetensors")
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        do {
            return (try SafetensorsFile(path: path), nil)
        } catch {
            return (nil, error)
        }
    }

    /// A file with a hand-written header (padded to 8 bytes) and `dataSize` bytes of data.
    func file(header: String, dataSize: Int) -> [UInt8] {
        var h = Array(header.utf8)
        while h.count % 8 != 0 { h.append(0x20) }
        var out: [UInt8] = []
        withUnsafeBytes(of: UInt64(h.count).littleEndian) { out += $0 }
        return out + h + [UInt8](repeating: 0, count: dataSize)
    }

    @Test func roundTripEveryDType() throws {
        var rng = SeededGenerator(seed: 7)
        let values = rng.floats(30, in: -4...4)
        let t = Tensor(shape: [2, 3, 5], values: values)
        let bytes = SafetensorsWriter.serialize(
            [
                "a.f32": .float(t, .f32), "b.f16": .float(t, .f16), "c.bf16": .float(t, .bf16),
                "ids": .integers([5, -1, 1 << 40], shape: [3], .i64), "small": .integers([7, 8], shape: [1, 2], .i32),
                "mask": .integers([1, 0, 1], shape: [3], .bool), "empty": .float(Tensor(zeros: [0, 4]), .f32),
            ], metadata: ["format": "pt"])
        let (opened, error) = try open(bytes)
        let f = try #require(opened, "\(String(describing: error))")
        #expect(f.metadata == ["format": "pt"])
        #expect(try f.tensor("a.f32").scalars == values)
        // f16 keeps 11 significant bits, bf16 8: relative error at most 2⁻¹¹ and 2⁻⁸.
        for (name, tolerance) in [("b.f16", Float(1) / 2048), ("c.bf16", Float(1) / 256)] {
            let back = try f.tensor(name)
            #expect(back.shape == [2, 3, 5])
            #expect(zip(back.scalars, values).allSatisfy { abs($0 - $1) <= tolerance * abs($1) }, "\(name)")
        }
        #expect(try f.integers("ids").values == [5, -1, 1 << 40])
        #expect(try f.integers("small").shape == [1, 2])
        #expect(try f.integers("mask").values == [1, 0, 1])
        #expect(try f.tensor("empty").shape == [0, 4])
        #expect(throws: TensorError.self) { try f.tensor("ids") }
        #expect(throws: TensorError.self) { try f.tensor("no-such-tensor") }
    }

    @Test func float32IsMappedNotCopied() throws {
        let path = Fixtures.kandinsky2("cases/unet.case.safetensors")
        let f = try SafetensorsFile(path: path)
        let x = try f.tensor("x")
        #expect(x.storage.isReadOnly)
        var copy = x
        copy[0, 0, 0, 0] = 123
        #expect(x[0, 0, 0, 0] != 123 && !copy.storage.isReadOnly)
    }

    @Test func readsEveryFixtureFile() throws {
        let root = Fixtures.kandinsky2("")
        let files = FileManager.default.enumerator(atPath: root)!.compactMap { $0 as? String }
            .filter { $0.hasSuffix(".safetensors") }
        #expect(files.count == 15, "found only \(files)")
        for name in files {
            let f = try SafetensorsFile(path: (root as NSString).appendingPathComponent(name))
            #expect(!f.names.isEmpty, "\(name)")
            for tensorName in f.names {
                let entry = try f.entry(tensorName)
                if entry.dtype == .f64 {
                    #expect(try f.doubles(tensorName).count == entry.shape.reduce(1, *))
                } else if entry.dtype.isFloatingPoint {
                    let t = try f.tensor(tensorName)
                    #expect(t.shape == entry.shape)
                } else {
                    _ = try f.integers(tensorName)
                }
            }
        }
        // The schedule is stored in float64: the official 1000-step linear betas.
        let schedule = try SafetensorsFile(path: Fixtures.kandinsky2("cases/schedule.safetensors"))
        let betas = try schedule.doubles("betas")
        #expect(betas.count == 1000 && abs(betas[0] - 1e-4) < 1e-12 && abs(betas[999] - 0.02) < 1e-12)
        // Spot check: the tiny UNet's first convolution has the official key and a 4-channel input.
        let unet = try SafetensorsFile(path: Fixtures.kandinsky2("tiny-model/unet.safetensors"))
        #expect(try unet.entry("input_blocks.0.0.weight").shape == [32, 4, 3, 3])
    }

    @Test func malformedFilesAreClearErrors() throws {
        let good = #"{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#
        let cases: [(String, [UInt8], TensorError.Code, String?)] = [
            ("shorter than the length field", [1, 2, 3], .truncated, nil),
            ("absurd header length", [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F], .headerTooLarge, nil),
            ("header past the end", Array(file(header: good, dataSize: 16).prefix(20)), .truncated, nil),
            ("data truncated", Array(file(header: good, dataSize: 16).dropLast(4)), .badOffsets, "w"),
            ("header not JSON", file(header: "{\"w\": [", dataSize: 0), .malformedHeader, nil),
            ("header not an object", file(header: "[1,2]", dataSize: 0), .malformedHeader, nil),
            (
                "unknown dtype", file(header: #"{"w":{"dtype":"F8","shape":[1],"data_offsets":[0,1]}}"#, dataSize: 1),
                .unknownDType, "w"
            ),
            (
                "duplicate name",
                file(
                    header:
                        #"{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#,
                    dataSize: 2),
                .duplicateName, "w"
            ),
            (
                "metadata twice", file(header: #"{"__metadata__":{},"__metadata__":{}}"#, dataSize: 0), .duplicateName,
                nil
            ),
            (
                "a field twice in an entry",
                file(header: #"{"w":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#, dataSize: 1),
                .malformedHeader, "w"
            ),
            (
                "overlapping tensors",
                file(
                    header:
                        #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                    dataSize: 12),
                .badOffsets, nil
            ),
            (
                "size does not match shape",
                file(header: #"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, dataSize: 8), .badOffsets, "w"
            ),
            (
                "offsets reversed",
                file(header: #"{"w":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}}"#, dataSize: 8), .badOffsets, "w"
            ),
            (
                "negative dimension",
                file(header: #"{"w":{"dtype":"U8","shape":[-1],"data_offsets":[0,0]}}"#, dataSize: 0), .malformedHeader,
                "w"
            ),
            (
                "shape overflows",
                file(
                    header: #"{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}}"#, dataSize: 0),
                .badOffsets, "w"
            ),
            ("missing offsets", file(header: #"{"w":{"dtype":"U8","shape":[1]}}"#, dataSize: 1), .malformedHeader, "w"),
        ]
        for (what, bytes, code, tensor) in cases {
            let (f, error) = try open(bytes)
            #expect(f == nil, "\(what): opened")
            #expect(error?.code == code, "\(what): \(String(describing: error))")
            #expect(error?.file?.hasSuffix("t.safetensors") == true, "\(what): error does not name the file")
            if let tensor { #expect(error?.tensor == tensor, "\(what): error does not name the tensor") }
        }
    }

    @Test func randomCorruptionNeverCrashes() throws {
        // Flip bytes of a valid file's header at random: every outcome is a clean open or a TensorError.
        let valid = SafetensorsWriter.serialize(["x": .float(Tensor(shape: [3, 2], values: [1, 2, 3, 4, 5, 6]), .f32)])
        var rng = SeededGenerator(seed: 99)
        let headerEnd = 8 + Int(valid[0])
        for _ in 0..<300 {
            var bytes = valid
            for _ in 0..<Int.random(in: 1...3, using: &rng) {
                bytes[Int.random(in: 0..<headerEnd, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
            }
            if Bool.random(using: &rng) { bytes = Array(bytes.prefix(Int.random(in: 0...bytes.count, using: &rng))) }
            let (f, error) = try open(bytes)
            #expect(f != nil || error != nil)
            if let f { for name in f.names { _ = try? f.tensor(name) } }
        }
    }
}
