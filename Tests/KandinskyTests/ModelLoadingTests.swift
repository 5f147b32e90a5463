import Foundation
import Tensor
import TestSupport
import Testing

@testable import Kandinsky

/// Strict loading, presets and random model directories.
@Suite struct ModelLoadingTests {
    /// `full-size-<name>-keys.tsv` as key → shape.
    func manifest(_ name: String) throws -> [String: [Int]] {
        let text = try String(contentsOfFile: Fixtures.kandinsky2("full-size-\(name)-keys.tsv"), encoding: .utf8)
        var out: [String: [Int]] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: "\t")
            let dims = parts[1].trimmingCharacters(in: CharacterSet(charactersIn: "[]")).split(separator: ",")
            out[String(parts[0])] = dims.map { Int($0.trimmingCharacters(in: .whitespaces))! }
        }
        return out
    }

    @Test(arguments: [
        (RandomModel.Component.unet, "unet", 1_223_352_584),
        (.unetInpaint, "unet-inpaint", 1_223_369_864),
        (.vae, "vae", 83_653_863),
        (.textEncoder1, "text_encoder1", 0),
        (.textEncoder2, "text_encoder2", 0),
    ])
    func fullPresetMatchesTheOfficialManifests(_ c: (RandomModel.Component, String, Int)) throws {
        let keys = try RandomModel.keys(of: c.0, config: ModelPreset.full.config)
        let ours = Dictionary(keys.map { ($0.key, $0.shape) }, uniquingKeysWith: { a, _ in a })
        #expect(ours.count == keys.count, "a key was taken twice")
        let official = try manifest(c.1)
        #expect(
            Set(ours.keys) == Set(official.keys),
            "missing: \(Set(official.keys).subtracting(ours.keys).sorted().prefix(5)), extra: \(Set(ours.keys).subtracting(official.keys).sorted().prefix(5))"
        )
        for (key, shape) in official where ours[key] != nil {
            #expect(ours[key] == shape, "\(key): \(ours[key]!) vs \(shape)")
        }
        if c.2 > 0 { #expect(keys.reduce(0) { $0 + $1.shape.reduce(1, *) } == c.2) }
    }

    /// The finiteness check finds the first bad value wherever it lies: inside a vector, in a later chunk than
    /// another one, in the scalar tail, or nowhere.
    @Test func firstNonFiniteFindsTheFirstBadValue() {
        let count = 3 * (1 << 16) + 13
        func first(_ bad: [(Int, Float)]) -> (Int, Float)? {
            var t = Tensor(zeros: [count])
            for (i, v) in bad { t[i] = v }
            return WeightFile.firstNonFinite(t)
        }
        #expect(first([]) == nil)
        #expect(first([(5, -.infinity)])! == (5, -.infinity))
        let nan = first([(140_001, .nan), (70_000, .infinity), (190_000, .nan)])!
        #expect(nan.0 == 70_000 && nan.1 == .infinity)
        #expect(first([(count - 1, .nan)])!.0 == count - 1)
        #expect(first([(count - 20, .greatestFiniteMagnitude)]) == nil)
    }

    @Test func tinyPresetIsTheFixtureModel() throws {
        let fixture = try ModelConfig.load(path: Fixtures.kandinsky2("tiny-model/model.json"))
        #expect(ModelPreset.tiny.config == fixture)
        // Every tensor of the fixture files is one the model code takes (text encoder 1: plus the pooler).
        for component in RandomModel.Component.allCases {
            let file = try SafetensorsFile(path: Fixtures.kandinsky2("tiny-model/\(component.file.rawValue)"))
            let keys = try RandomModel.keys(of: component, config: fixture)
            #expect(Set(keys.map(\.key)) == Set(file.names), "\(component)")
            for (key, shape) in keys { #expect(file.entries[key]?.shape == shape, "\(component) \(key)") }
        }
    }

    @Test func randomTinyModelLoadsAndRuns() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let path = dir.file("model")
        try RandomModel.write(preset: .tiny, to: path, seed: 7, dtype: .f16)
        let model = try ModelDirectory(path: path)
        let unet = try model.unet()
        #expect(unet.unusedKeys.isEmpty && unet.dtypes == ["F16": unet.dtypes["F16"] ?? -1])
        let tokens = try model.tokenizers()
        let batch = try tokens.encode1(["a red circle", ""])
        let batch2 = try tokens.encode2(["a red circle", ""])
        let (full1, pooled1) = try model.textEncoder1().module(ids: batch.ids, mask: batch.mask)
        let full2 = try model.textEncoder2().module(ids: batch2.ids, mask: batch2.mask)
        let text = unet.module.textConditioning(full1: full1, pooled1: pooled1, full2: full2)
        let out = unet.module(Tensor(shape: [2, 4, 8, 8], repeating: 0.5), timesteps: [999, 999], text: text)
        #expect(out.shape == [2, 8, 8, 8] && out.scalars.allSatisfy(\.isFinite))
        let image = try model.vae().module.decode(Kernels.slice(out, axis: 1, 0..<4))
        // The tiny VAE downsamples twice (ch_mult [1, 2]).
        #expect(image.shape == [2, 3, 16, 16] && image.scalars.allSatisfy(\.isFinite))
        // The same seed gives the same bytes.
        let again = dir.file("again")
        try RandomModel.write(preset: .tiny, to: again, seed: 7, components: [.vae], dtype: .f16)
        #expect(
            try Data(contentsOf: URL(fileURLWithPath: "\(path)/vae.safetensors"))
                == Data(contentsOf: URL(fileURLWithPath: "\(again)/vae.safetensors")))
    }

    /// Weights kept in half precision (expanded at each use) give exactly what the same F16 file gives converted to
    /// float32 at load, for the UNet (Linear, Conv2d, Conv1x1 layers) and the VAE; a NaN stored in half precision is
    /// still an error naming the key.
    @Test func halfPrecisionWeightsMatchTheirFloat32Expansion() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let path = dir.file("model")
        try RandomModel.write(preset: .tiny, to: path, seed: 11, components: [.unet, .vae], dtype: .f16)
        let converted = try ModelDirectory(path: path)
        var half = converted
        half.keepHalfPrecision = true
        let (unetF32, unetHalf) = (try converted.unet().module, try half.unet().module)
        let kinds = Self.storedWeights(unetHalf)
        #expect(kinds.half > 100 && kinds.full == 0, "\(kinds)")
        #expect(Self.storedWeights(unetF32).half == 0)
        var rng = SeededGenerator(seed: 3)
        let config = converted.config.unet
        let text = (
            Tensor(shape: [2, 77, config.textEncoderInDim1], values: rng.floats(2 * 77 * config.textEncoderInDim1)),
            Tensor(shape: [2, config.textEncoderInDim2], values: rng.floats(2 * config.textEncoderInDim2)),
            Tensor(shape: [2, 77, Text2ImUNet.mt5Width], values: rng.floats(2 * 77 * Text2ImUNet.mt5Width))
        )
        let x = Tensor(shape: [2, 4, 8, 8], values: rng.floats(2 * 4 * 64))
        func run(_ unet: Text2ImUNet) -> Tensor {
            unet(
                x, timesteps: [400, 900],
                text: unet.textConditioning(full1: text.0, pooled1: text.1, full2: text.2))
        }
        #expect(run(unetHalf).scalars == run(unetF32).scalars)
        let z = Tensor(shape: [1, 4, 8, 8], values: rng.floats(4 * 64))
        #expect(try half.vae().module.decode(z).scalars == converted.vae().module.decode(z).scalars)

        // A NaN (0x7E00) in the first element of a half-precision convolution weight.
        let file = try SafetensorsFile(path: "\(path)/vae.safetensors")
        let key = "decoder.conv_in.weight"
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: "\(path)/vae.safetensors")))
        let headerLength = bytes.withUnsafeBytes { Int($0.loadUnaligned(as: UInt64.self).littleEndian) }
        let start = 8 + headerLength + file.entries[key]!.range.lowerBound
        (bytes[start], bytes[start + 1]) = (0x00, 0x7E)
        try Data(bytes).write(to: URL(fileURLWithPath: "\(path)/vae.safetensors"))
        do {
            _ = try half.vae()
            Issue.record("a NaN half-precision weight loaded")
        } catch {
            #expect(error.code == .badWeight && error.key == key, "\(error)")
        }
    }

    /// How many layer weights in `module` (searched recursively) are held in half precision and in float32.
    static func storedWeights(_ module: Any) -> (half: Int, full: Int) {
        let weight = (module as? Linear)?.weight ?? (module as? Conv2d)?.weight ?? (module as? Conv1x1)?.weight
        if let weight {
            if weight.dtype == .f16 || weight.dtype == .bf16 { return (1, 0) }
            return (0, 1)
        }
        return Mirror(reflecting: module).children.reduce((0, 0)) { total, child in
            let inner = storedWeights(child.value)
            return (total.0 + inner.half, total.1 + inner.full)
        }
    }

    // MARK: - Corrupt input

    /// A copy of the tiny model whose `file` is replaced by `bytes`.
    func corruptedModel(_ dir: TemporaryDirectory, file: String, bytes: [UInt8]) throws -> ModelDirectory {
        let path = dir.file("model")
        try FileManager.default.copyItem(atPath: Fixtures.kandinsky2("tiny-model"), toPath: path)
        try Data(bytes).write(to: URL(fileURLWithPath: "\(path)/\(file)"))
        return try ModelDirectory(path: path)
    }

    /// The fixture's VAE tensors, to rebuild with one change.
    func vaeTensors() throws -> [String: SafetensorsPayload] {
        let f = try SafetensorsFile(path: Fixtures.kandinsky2("tiny-model/vae.safetensors"))
        var out: [String: SafetensorsPayload] = [:]
        for name in f.names { out[name] = .float(try f.tensor(name), .f32) }
        return out
    }

    func expectLoadError(_ model: ModelDirectory, _ code: KandinskyError.Code, key: String?, _ what: String) {
        do {
            _ = try model.vae()
            Issue.record("\(what): loaded")
        } catch {
            #expect(error.code == code, "\(what): \(error)")
            #expect(error.file?.hasSuffix("vae.safetensors") == true, "\(what): \(error)")
            if let key { #expect(error.key == key, "\(what): \(error)") }
        }
    }

    @Test func corruptWeightsAreClearErrors() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let original = [UInt8](
            try Data(contentsOf: URL(fileURLWithPath: Fixtures.kandinsky2("tiny-model/vae.safetensors"))))
        expectLoadError(
            try corruptedModel(dir, file: "vae.safetensors", bytes: Array(original.prefix(original.count - 100))),
            .badWeight, key: nil, "truncated")
        dir.remove()

        var tensors = try vaeTensors()
        tensors["decoder.conv_in.weight"] = .float(Tensor(zeros: [64, 4, 3, 2]), .f32)
        let dir2 = try TemporaryDirectory()
        defer { dir2.remove() }
        expectLoadError(
            try corruptedModel(dir2, file: "vae.safetensors", bytes: SafetensorsWriter.serialize(tensors)), .badWeight,
            key: "decoder.conv_in.weight", "wrong shape")

        tensors = try vaeTensors()
        tensors["decoder.mid.attn_1.q.bias"] = nil
        let dir3 = try TemporaryDirectory()
        defer { dir3.remove() }
        expectLoadError(
            try corruptedModel(dir3, file: "vae.safetensors", bytes: SafetensorsWriter.serialize(tensors)),
            .missingWeight, key: "decoder.mid.attn_1.q.bias", "missing key")

        tensors = try vaeTensors()
        var bad = Tensor(zeros: [32])
        bad[17] = .nan
        tensors["decoder.norm_out.weight"] = .float(bad, .f32)
        let dir4 = try TemporaryDirectory()
        defer { dir4.remove() }
        expectLoadError(
            try corruptedModel(dir4, file: "vae.safetensors", bytes: SafetensorsWriter.serialize(tensors)), .badWeight,
            key: "decoder.norm_out.weight", "NaN weight")

        tensors = try vaeTensors()
        tensors["quant_conv.bias"] = .integers(Array(repeating: 0, count: 8), shape: [8], .i64)
        let dir5 = try TemporaryDirectory()
        defer { dir5.remove() }
        expectLoadError(
            try corruptedModel(dir5, file: "vae.safetensors", bytes: SafetensorsWriter.serialize(tensors)), .badWeight,
            key: "quant_conv.bias", "integer weight")

        // An extra tensor is not an error, but it is reported.
        tensors = try vaeTensors()
        tensors["loss.logvar"] = .float(Tensor(zeros: [1]), .f32)
        let dir6 = try TemporaryDirectory()
        defer { dir6.remove() }
        let extra = try corruptedModel(dir6, file: "vae.safetensors", bytes: SafetensorsWriter.serialize(tensors)).vae()
        #expect(extra.unusedKeys == ["loss.logvar"])
    }

    /// `JSONDecoder` kept the last of two equal names; model.json goes through the project's parser, which refuses
    /// them and names the member.
    @Test func modelJSONWithARepeatedMemberIsRefused() throws {
        let text = try String(contentsOfFile: Fixtures.kandinsky2("tiny-model/model.json"), encoding: .utf8)
        let doubled = text.replacingOccurrences(
            of: "\"num_res_blocks\": 1,", with: "\"num_res_blocks\": 1, \"num_res_blocks\": 2,")
        #expect(doubled != text)
        #expect(throws: Never.self) { try ModelConfig.decode(Data(text.utf8)) }
        do {
            _ = try ModelConfig.decode(Data(doubled.utf8), path: "dir/model.json")
            Issue.record("decoded")
        } catch {
            #expect(error.code == .modelDirectory && error.file == "dir/model.json")
            #expect(error.key == "unet.num_res_blocks", "\(error)")
            #expect(error.message.contains("duplicate key \"num_res_blocks\""), "\(error)")
        }
    }

    @Test func malformedModelJSONNamesTheField() throws {
        let text = try String(contentsOfFile: Fixtures.kandinsky2("tiny-model/model.json"), encoding: .utf8)
        let cases: [(String, String)] = [
            (
                text.replacingOccurrences(of: "\"num_res_blocks\": 1", with: "\"num_res_blocks\": \"one\""),
                "unet.num_res_blocks"
            ),
            (text.replacingOccurrences(of: "\"scale\": 0.0512", with: "\"scale\": null"), "vae.scale"),
            (
                text.replacingOccurrences(of: "\"format\": \"kandinsky-2.0\"", with: "\"format\": \"kandinsky-2.1\""),
                "format"
            ),
            (
                text.replacingOccurrences(of: "\"channel_mult\": \"1,2,2\"", with: "\"channel_mult\": \"1,x\""),
                "unet.channel_mult"
            ),
            ("{\"format\": \"kandinsky-2.0\"", ""),
        ]
        for (json, key) in cases {
            #expect(json != text || key.isEmpty, "replacement did not apply for \(key)")
            do {
                _ = try ModelConfig.decode(Data(json.utf8))
                Issue.record("\(key): decoded")
            } catch {
                #expect(error.code == .modelDirectory)
                if !key.isEmpty { #expect(error.key == key, "\(error)") }
            }
        }
    }
}
