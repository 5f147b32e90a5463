import Foundation
import Tensor

/// Builds model directories with random weights (`model init-random`): each component's exact key list is taken
/// from the model code itself (a recording build), so the files load strictly; values follow PyTorch's default
/// initialisation scale (uniform ±1/√fan_in for weights, zero biases, unit norm weights) from a seeded generator.
public enum RandomModel {
    /// The components a model directory holds.
    public enum Component: String, CaseIterable, Sendable {
        case unet, unetInpaint = "unet_inpaint", vae, textEncoder1 = "text_encoder1", textEncoder2 = "text_encoder2"

        public var file: ModelDirectory.File {
            switch self {
            case .unet: return .unet
            case .unetInpaint: return .unetInpaint
            case .vae: return .vae
            case .textEncoder1: return .textEncoder1
            case .textEncoder2: return .textEncoder2
            }
        }
    }

    /// Every key and shape of `component` under `config`, in the order the model code takes them.
    public static func keys(
        of component: Component, config: ModelConfig
    ) throws(KandinskyError) -> [(key: String, shape: [Int])] {
        let recorder = WeightFile(recording: component.rawValue)
        switch component {
        case .unet:
            var c = config.unet
            c.inpainting = false
            _ = try Text2ImUNet(recorder, config: c)
        case .unetInpaint:
            var c = config.unet
            c.inpainting = true
            _ = try Text2ImUNet(recorder, config: c)
        case .vae: _ = try AutoencoderKL(recorder, config: config.vae)
        case .textEncoder1: _ = try MultilingualCLIP(recorder, config: config.textEncoder1)
        case .textEncoder2: _ = try MT5Encoder(recorder, config: config.textEncoder2)
        }
        return recorder.recorded
    }

    /// Writes a complete model directory for `preset` into `directory` (created if needed).
    ///
    /// - Parameters:
    ///   - components: which weight files to write (all by default).
    ///   - dtype: storage type of the weights (F32, F16 or BF16).
    ///   - progress: called with each file written.
    public static func write(
        preset: ModelPreset, to directory: String, seed: UInt64, components: [Component] = Component.allCases,
        dtype: DType = .f32, progress: (String) -> Void = { _ in }
    ) throws(KandinskyError) {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw KandinskyError(.modelDirectory, "cannot create: \(error.localizedDescription)", file: directory)
        }
        let config = preset.config
        for component in components {
            let path = (directory as NSString).appendingPathComponent(component.file.rawValue)
            try writeWeights(try keys(of: component, config: config), to: path, seed: seed, dtype: dtype)
            progress(path)
        }
        for (resource, file) in [
            ("shapes-demo/tokenizer1.model", ModelDirectory.File.tokenizer1),
            ("shapes-demo/tokenizer2.model", .tokenizer2),
        ] {
            let path = (directory as NSString).appendingPathComponent(file.rawValue)
            try copyResource(resource, to: path)
            progress(path)
        }
        let jsonPath = (directory as NSString).appendingPathComponent("model.json")
        do {
            try Data((preset.modelJSON + "\n").utf8).write(to: URL(fileURLWithPath: jsonPath), options: .atomic)
        } catch {
            throw KandinskyError(.modelDirectory, "cannot write: \(error.localizedDescription)", file: jsonPath)
        }
        progress(jsonPath)
    }

    /// Streams random tensors for `keys` into a safetensors file.
    static func writeWeights(
        _ keys: [(key: String, shape: [Int])], to path: String, seed: UInt64, dtype: DType
    ) throws(KandinskyError) {
        do {
            let writer = try SafetensorsStreamWriter(
                path: path, entries: keys.map { .init(name: $0.key, dtype: dtype, shape: $0.shape) },
                metadata: ["format": "pt", "generator": "kandinsky-worker model init-random", "seed": String(seed)])
            let chunk = 1 << 22
            let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: chunk)
            defer { buffer.deallocate() }
            for (key, shape) in keys.sorted(by: { $0.key < $1.key }) {
                let count = shape.reduce(1, *)
                let fanIn = shape.count > 1 ? shape.dropFirst().reduce(1, *) : 1
                let kind = ParameterKind(key: key, rank: shape.count)
                var tensorSeed = seed ^ stableHash(key)
                var done = 0
                while done < count {
                    let n = min(chunk, count - done)
                    fill(buffer, count: n, kind: kind, fanIn: fanIn, seed: &tensorSeed)
                    try writer.append(UnsafeBufferPointer(rebasing: buffer[0..<n]))
                    done += n
                }
            }
            try writer.finish()
        } catch {
            throw KandinskyError(.modelDirectory, error.message, file: path, key: error.tensor)
        }
    }

    enum ParameterKind {
        case normWeight, bias, weight

        /// Every one-dimensional weight of these models scales a normalization (GroupNorm, LayerNorm, RMS norm).
        init(key: String, rank: Int) {
            if key.hasSuffix(".bias") {
                self = .bias
            } else if rank == 1 {
                self = .normWeight
            } else {
                self = .weight
            }
        }
    }

    static func fill(
        _ buffer: UnsafeMutableBufferPointer<Float>, count: Int, kind: ParameterKind, fanIn: Int, seed: inout UInt64
    ) {
        switch kind {
        case .normWeight: buffer.baseAddress!.update(repeating: 1, count: count)
        case .bias: buffer.baseAddress!.update(repeating: 0, count: count)
        case .weight:
            let bound = 1 / Float(max(1, fanIn)).squareRoot()
            let base = seed
            let p = buffer.baseAddress!
            ComputePool.current.parallelFor(count, minimumChunk: 1 << 16) { range in
                var state = base &+ UInt64(range.lowerBound) &* 0x9E37_79B9_7F4A_7C15
                for i in range {
                    state &+= 0x9E37_79B9_7F4A_7C15
                    var z = state
                    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
                    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
                    z ^= z >> 31
                    p[i] = (Float(z >> 40) / Float(1 << 23) - 1) * bound
                }
            }
            seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        }
    }

    /// FNV-1a of the key, so each tensor's values depend only on the seed and its name.
    static func stableHash(_ s: String) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        for b in s.utf8 {
            h ^= UInt64(b)
            h = h &* 0x100_0000_01B3
        }
        return h
    }

    /// Copies one of the module's resource files.
    static func copyResource(_ name: String, to path: String) throws(KandinskyError) {
        guard let source = Resources.path(name) else {
            throw KandinskyError(
                .modelDirectory,
                "resource \(name) not found (install the kandinsky-worker_Kandinsky.resources folder beside the binary)"
            )
        }
        do {
            if FileManager.default.fileExists(atPath: path) { try FileManager.default.removeItem(atPath: path) }
            try FileManager.default.copyItem(atPath: source, toPath: path)
        } catch {
            throw KandinskyError(.modelDirectory, "cannot copy \(name): \(error.localizedDescription)", file: path)
        }
    }
}

/// Files shipped with the Kandinsky module (SwiftPM resources), found without `Bundle.module`, which aborts the
/// process when the bundle is missing: beside the executable, or under `KANDINSKY_WORKER_RESOURCES`.
public enum Resources {
    static let bundleName = "kandinsky-worker_Kandinsky.resources"

    /// The path of resource `name`, or nil when no resource folder holds it.
    public static func path(_ name: String) -> String? {
        var roots: [String] = []
        if let env = ProcessInfo.processInfo.environment["KANDINSKY_WORKER_RESOURCES"] { roots.append(env) }
        let executable = URL(fileURLWithPath: CommandLine.arguments.first ?? "").resolvingSymlinksInPath()
        roots.append(executable.deletingLastPathComponent().appendingPathComponent(bundleName).path)
        roots.append(Bundle.main.bundleURL.appendingPathComponent(bundleName).path)
        // Test runners live in the same build folder as the bundle, one level up from the .xctest.
        roots.append(Bundle.main.bundleURL.deletingLastPathComponent().appendingPathComponent(bundleName).path)
        for root in roots {
            for candidate in [root + "/Resources/" + name, root + "/" + name]
            where FileManager.default.fileExists(atPath: candidate) {
                return candidate
            }
        }
        return nil
    }
}
