import Foundation
import JSON
import Tensor
import TestSupport
import Testing

@testable import ModelConversion

/// Converting the fixtures' `tiny-release/` (the official release formats, in miniature) must give `tiny-model/`
/// (the same tiny model in our layout): every tensor with the same name, dtype, shape and bytes, the same
/// tokenizer files, an equivalent model.json. Expected values are the fixture files, never our own output.
@Suite struct ReleaseConversionTests {
    static let release = Fixtures.kandinsky2("tiny-release")
    static let expected = Fixtures.kandinsky2("tiny-model")
    static let weightFiles = [
        "unet.safetensors", "unet_inpaint.safetensors", "vae.safetensors", "text_encoder1.safetensors",
        "text_encoder2.safetensors",
    ]

    /// The fixture's model.json reduced to the sections the release has no configuration for.
    func override(in dir: TemporaryDirectory) throws -> String {
        let model = try parseJSON(Self.expected + "/model.json")
        let sections = try #require(model.objectValue).filter { ["unet", "diffusion", "vae"].contains($0.key) }
        let path = dir.file("override.json")
        try writeFile(Array(JSONValue.object(JSONObject(sections)).serialized.utf8), to: path)
        return path
    }

    func parseJSON(_ path: String) throws -> JSONValue {
        try JSONValue.parse(Array(try Data(contentsOf: URL(fileURLWithPath: path))))
    }

    /// Objects compared member by member regardless of order (model.json's order is not part of its meaning).
    func sameJSON(_ a: JSONValue, _ b: JSONValue, path: String = "") -> [String] {
        switch (a, b) {
        case (.object(let x), .object(let y)):
            let keys = Set(x.keys).union(y.keys)
            return keys.sorted().flatMap { key -> [String] in
                guard let u = a[key], let v = b[key] else { return ["\(path).\(key) only on one side"] }
                return sameJSON(u, v, path: "\(path).\(key)")
            }
        case (.array(let x), .array(let y)) where x.count == y.count:
            return zip(x, y).enumerated().flatMap { sameJSON($1.0, $1.1, path: "\(path)[\($0)]") }
        default:
            return a == b ? [] : ["\(path): \(a.serialized) vs \(b.serialized)"]
        }
    }

    @Test func tinyReleaseConvertsBitForBit() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let output = dir.file("model")
        var lines: [String] = []
        let report = try ReleaseConverter(
            releaseDirectory: Self.release, modelDirectory: output, configOverride: try override(in: dir)
        ).run { lines.append($0) }
        #expect(!lines.isEmpty)

        for name in Self.weightFiles {
            let ours = try SafetensorsFile(path: "\(output)/\(name)")
            let theirs = try SafetensorsFile(path: "\(Self.expected)/\(name)")
            #expect(Set(ours.names) == Set(theirs.names), "\(name): tensor names differ")
            for key in theirs.names where ours.entries[key] != nil {
                let (a, b) = (try ours.entry(key), try theirs.entry(key))
                #expect(a.dtype == b.dtype, "\(name) \(key): dtype \(a.dtype) vs \(b.dtype)")
                #expect(a.shape == b.shape, "\(name) \(key): shape \(a.shape) vs \(b.shape)")
                let (x, y) = (try ours.rawBytes(key), try theirs.rawBytes(key))
                #expect(x.elementsEqual(y), "\(name) \(key): bytes differ")
            }
        }
        for name in ["tokenizer1.model", "tokenizer2.model"] {
            let ours = try Data(contentsOf: URL(fileURLWithPath: "\(output)/\(name)"))
            let theirs = try Data(contentsOf: URL(fileURLWithPath: "\(Self.expected)/\(name)"))
            #expect(ours == theirs, "\(name) differs")
        }
        // The text-encoder sections come from the release's config.json files, the rest from the override.
        let differences = sameJSON(try parseJSON("\(output)/model.json"), try parseJSON("\(Self.expected)/model.json"))
        #expect(differences.isEmpty, "model.json: \(differences)")

        // What was left out: the keys the release has and tiny-model does not (read off the fixtures).
        let dropped = Dictionary(uniqueKeysWithValues: report.files.map { ($0.name, Set($0.dropped)) })
        #expect(dropped["vae.safetensors"] == ["loss.logvar", "loss.discriminator.main.0.weight"])
        #expect(dropped["text_encoder1.safetensors"] == ["transformer.embeddings.position_ids"])
        #expect(dropped["unet.safetensors"] == [])
        #expect(report.files.allSatisfy { $0.tiedCopies.isEmpty })
        // No temporary file is left behind.
        let left = try FileManager.default.contentsOfDirectory(atPath: output).filter { $0.hasPrefix(".") }
        #expect(left.isEmpty)
    }

    /// Without the override, model.json starts from the full-size CONFIG_2_0, which the tiny weights contradict:
    /// the conversion stops before writing anything.
    @Test func configContradictingTheWeightsWritesNothing() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let output = dir.file("model")
        do {
            try ReleaseConverter(releaseDirectory: Self.release, modelDirectory: output).run()
            Issue.record("converted with a configuration that contradicts the weights")
        } catch {
            #expect(error.code == .configMismatch)
            #expect(error.key == "unet.num_channels")
            #expect(error.message.contains("input_blocks.0.0.weight"))
        }
        #expect(!FileManager.default.fileExists(atPath: output))
    }

    @Test func overrideMistakesAreNamed() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let cases: [(String, String)] = [
            (#"{"unet": {"num_channel": 32}}"#, "unet.num_channel"),
            (#"{"vae": {"ddconfig": {"ch": "32"}}}"#, "vae.ddconfig.ch"),
            (#"{"sampler": {}}"#, "sampler"),
            (#"{"format": "kandinsky-2.1"}"#, "format"),
        ]
        for (text, key) in cases {
            let path = dir.file("bad.json")
            try writeFile(Array(text.utf8), to: path)
            do {
                try ReleaseConverter(
                    releaseDirectory: Self.release, modelDirectory: dir.file("model"), configOverride: path
                ).run()
                Issue.record("\(text) was accepted")
            } catch {
                #expect(error.code == .badConfig, "\(text): \(error)")
                #expect(error.key == key, "\(text): \(error)")
                #expect(error.file == path)
            }
        }
    }

    @Test func existingOutputNeedsOverwrite() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let output = dir.file("model")
        try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
        try writeFile(Array("old".utf8), to: "\(output)/vae.safetensors")
        let config = try override(in: dir)
        do {
            try ReleaseConverter(releaseDirectory: Self.release, modelDirectory: output, configOverride: config).run()
            Issue.record("replaced a file without --overwrite")
        } catch {
            #expect(error.code == .outputExists)
            #expect(error.file == "\(output)/vae.safetensors")
        }
        try ReleaseConverter(
            releaseDirectory: Self.release, modelDirectory: output, configOverride: config, overwrite: true
        ).run()
        #expect(try SafetensorsFile(path: "\(output)/vae.safetensors").names.count == 124)
    }

    /// A release directory of links to the fixture files, with some files left out or replaced.
    func release(
        in dir: TemporaryDirectory, without: Set<String> = [], replacing: [String: [UInt8]] = [:]
    ) throws
        -> String
    {
        let root = dir.file("release")
        let fm = FileManager.default
        for sub in ["text_encoder1", "text_encoder2"] {
            try fm.createDirectory(atPath: "\(root)/\(sub)", withIntermediateDirectories: true)
        }
        let files = [
            "Kandinsky-2-0.pt", "Kandinsky-2-0-inpainting.pt", "vae.ckpt", "text_encoder1/config.json",
            "text_encoder1/pytorch_model.bin", "text_encoder1/sentencepiece.bpe.model", "text_encoder2/config.json",
            "text_encoder2/pytorch_model.bin", "text_encoder2/spiece.model",
        ]
        for file in files where !without.contains(file) {
            if let bytes = replacing[file] {
                try writeFile(bytes, to: "\(root)/\(file)")
            } else {
                try fm.createSymbolicLink(atPath: "\(root)/\(file)", withDestinationPath: "\(Self.release)/\(file)")
            }
        }
        return root
    }

    @Test func inpaintingIsOptionalTheRestIsNot() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let config = try override(in: dir)
        let partial = try release(in: dir, without: ["Kandinsky-2-0-inpainting.pt"])
        let report = try ReleaseConverter(
            releaseDirectory: partial, modelDirectory: dir.file("model"), configOverride: config
        ).run()
        #expect(!report.files.contains { $0.name == "unet_inpaint.safetensors" })
        #expect(!FileManager.default.fileExists(atPath: dir.file("model/unet_inpaint.safetensors")))
        #expect(FileManager.default.fileExists(atPath: dir.file("model/model.json")))

        for missing in ["vae.ckpt", "text_encoder2/spiece.model", "text_encoder1/config.json"] {
            let sub = try TemporaryDirectory()
            defer { sub.remove() }
            let broken = try release(in: sub, without: [missing])
            do {
                try ReleaseConverter(
                    releaseDirectory: broken, modelDirectory: sub.file("model"), configOverride: config
                )
                .run()
                Issue.record("converted without \(missing)")
            } catch {
                #expect(error.code == .missingFile, "\(missing): \(error)")
                #expect(error.file == "\(broken)/\(missing)")
            }
            #expect(!FileManager.default.fileExists(atPath: sub.file("model")))
        }
    }

    /// A UNet checkpoint whose weight is built by `os.system(…)` (GLOBAL + REDUCE): the call is never made, and
    /// the conversion stops with an error naming the file and the key.
    @Test func unknownCallableWhereATensorIsNeeded() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let marker = dir.file("pwned")
        let pickle = PickleBuilder.dict([
            ("input_blocks.0.0.bias", { $0.tensor(storage: "0", numel: 2, size: [2], stride: [1]) }),
            (
                "input_blocks.0.0.weight",
                { p in
                    p.global("os", "system")
                    p.mark()
                    p.string("touch \(marker)")
                    p.tuple()
                    p.reduce()
                }
            ),
        ])
        let unet = ZipBuilder.checkpoint(pickle: pickle, storages: ["0": float32Bytes([1, 2])])
        let hostile = try release(in: dir, replacing: ["Kandinsky-2-0.pt": unet])
        let config = try override(in: dir)
        do {
            try ReleaseConverter(releaseDirectory: hostile, modelDirectory: dir.file("model"), configOverride: config)
                .run()
            Issue.record("converted a checkpoint whose weight is not a tensor")
        } catch {
            #expect(error.code == .notATensor)
            #expect(error.key == "input_blocks.0.0.weight")
            #expect(error.file == "\(hostile)/Kandinsky-2-0.pt")
            #expect(error.message.contains("os.system"))
        }
        #expect(!FileManager.default.fileExists(atPath: marker))
        #expect(!FileManager.default.fileExists(atPath: dir.file("model")))
    }

    /// A truncated real checkpoint (the fixture's vae.ckpt cut in half) is a clear error naming it.
    @Test func truncatedReleaseFile() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let vae = try Data(contentsOf: URL(fileURLWithPath: "\(Self.release)/vae.ckpt"))
        let cut = try release(in: dir, replacing: ["vae.ckpt": Array(vae.prefix(vae.count / 2))])
        let config = try override(in: dir)
        do {
            try ReleaseConverter(releaseDirectory: cut, modelDirectory: dir.file("model"), configOverride: config).run()
            Issue.record("converted a truncated vae.ckpt")
        } catch {
            #expect(error.code == .truncated, "\(error)")
            #expect(error.file == "\(cut)/vae.ckpt")
        }
    }

    /// The tie rule: an mT5 checkpoint that saved `shared.weight` only (built here from the fixture's tensors)
    /// still gives both names, the missing one a copy of its twin — as in tiny-model, which has both.
    @Test func tiedEmbeddingIsWrittenUnderBothNames() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let fixture = try SafetensorsFile(path: "\(Self.expected)/text_encoder2.safetensors")
        var storages: [String: [UInt8]] = [:]
        var entries: [(String, (inout PickleBuilder) -> Void)] = []
        for (index, name) in fixture.names.enumerated() where name != "encoder.embed_tokens.weight" {
            let entry = try fixture.entry(name)
            #expect(entry.dtype == .f32)
            storages[String(index)] = Array(try fixture.rawBytes(name))
            let shape = entry.shape
            let strides = shape.indices.map { shape[($0 + 1)...].reduce(1, *) }
            entries.append(
                (
                    name,
                    { $0.tensor(storage: String(index), numel: shape.reduce(1, *), size: shape, stride: strides) }
                ))
        }
        let checkpoint = ZipBuilder.checkpoint(pickle: PickleBuilder.dict(entries), storages: storages)
        let untied = try release(in: dir, replacing: ["text_encoder2/pytorch_model.bin": checkpoint])
        let report = try ReleaseConverter(
            releaseDirectory: untied, modelDirectory: dir.file("model"), configOverride: try override(in: dir)
        ).run()
        let file = try #require(report.files.first { $0.name == "text_encoder2.safetensors" })
        #expect(file.tiedCopies == ["encoder.embed_tokens.weight"])
        let ours = try SafetensorsFile(path: dir.file("model/text_encoder2.safetensors"))
        #expect(Set(ours.names) == Set(fixture.names))
        for name in fixture.names {
            #expect(try ours.rawBytes(name).elementsEqual(try fixture.rawBytes(name)), "\(name) differs")
        }
    }

    @Test func keyRules() {
        #expect(ReleaseLayout.vae.keeps("decoder.conv_in.weight"))
        #expect(ReleaseLayout.vae.keeps("post_quant_conv.bias"))
        #expect(!ReleaseLayout.vae.keeps("loss.logvar"))
        #expect(!ReleaseLayout.vae.keeps("model_ema.decay"))
        #expect(!ReleaseLayout.textEncoder1.keeps("transformer.embeddings.position_ids"))
        #expect(ReleaseLayout.textEncoder1.keeps("transformer.pooler.dense.weight"))
        #expect(ReleaseLayout.unet.keeps("input_blocks.0.0.weight"))
    }
}
