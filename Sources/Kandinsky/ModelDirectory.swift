import Foundation
import Tensor

/// A model directory (DESIGN §2): `model.json`, the weights of each component as safetensors, two tokenizers.
/// Each component loads strictly from its memory-mapped file, on demand.
public struct ModelDirectory: Sendable {
    public let path: String
    public let config: ModelConfig
    /// `--precision f16`: the text encoders' and UNets' layer weights in 16 bits. On the CPU, those stored as F16/BF16
    /// stay as stored and are expanded to float32 at each use (half the resident memory, a conversion pass per layer
    /// call); on a GPU they are uploaded as f16 (F32 ones converted). The autoencoder stays in f32 (the official 2.0
    /// code runs it in fp32, and fp16 VAEs are known to overflow). Off: every weight is float32.
    public var keepHalfPrecision = false
    /// The backend the components are loaded onto (their weights uploaded once) and compute on.
    public var backend: any ComputeBackend = CPUBackend.shared

    /// The files of a model directory.
    public enum File: String, CaseIterable, Sendable {
        case unet = "unet.safetensors"
        case unetInpaint = "unet_inpaint.safetensors"
        case vae = "vae.safetensors"
        case textEncoder1 = "text_encoder1.safetensors"
        case textEncoder2 = "text_encoder2.safetensors"
        case tokenizer1 = "tokenizer1.model"
        case tokenizer2 = "tokenizer2.model"
    }

    /// Opens `path` and reads its `model.json`.
    public init(path: String) throws(KandinskyError) {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw KandinskyError(.modelDirectory, "not a directory", file: path)
        }
        self.path = path
        config = try ModelConfig.load(path: (path as NSString).appendingPathComponent("model.json"))
    }

    /// The demo model shipped with the product (multilingual coloured shapes, 64×64), the default wherever no
    /// model is configured; nil when the resource folder is not installed.
    public static var embeddedDemoPath: String? {
        Resources.path("shapes-demo/model.json").map { ($0 as NSString).deletingLastPathComponent }
    }

    /// Opens the embedded demo model, or explains how to install it.
    public static func embeddedDemo() throws(KandinskyError) -> ModelDirectory {
        guard let path = embeddedDemoPath else {
            throw KandinskyError(
                .modelDirectory,
                "no model given and the embedded demo model is not installed (the kandinsky-worker_Kandinsky.resources folder belongs beside the binary, or set KANDINSKY_WORKER_RESOURCES)"
            )
        }
        return try ModelDirectory(path: path)
    }

    public func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }
    public func file(_ f: File) -> String { file(f.rawValue) }

    /// Whether the optional inpainting UNet is present.
    public var hasInpaintingUNet: Bool { FileManager.default.fileExists(atPath: file(.unetInpaint)) }

    public func tokenizers() throws(KandinskyError) -> KandinskyTokenizers {
        KandinskyTokenizers(
            xlmr: try SentencePieceModel(path: file(.tokenizer1)), mt5: try SentencePieceModel(path: file(.tokenizer2)))
    }

    public func textEncoder1(checkFinite: Bool = true) throws(KandinskyError) -> Loaded<MultilingualCLIP> {
        try load(.textEncoder1, checkFinite: checkFinite) { w throws(KandinskyError) in
            try MultilingualCLIP(w, config: config.textEncoder1)
        }
    }

    public func textEncoder2(checkFinite: Bool = true) throws(KandinskyError) -> Loaded<MT5Encoder> {
        try load(.textEncoder2, checkFinite: checkFinite) { w throws(KandinskyError) in
            try MT5Encoder(w, config: config.textEncoder2)
        }
    }

    public func unet(checkFinite: Bool = true) throws(KandinskyError) -> Loaded<Text2ImUNet> {
        var c = config.unet
        c.inpainting = false
        return try load(.unet, checkFinite: checkFinite) { w throws(KandinskyError) in try Text2ImUNet(w, config: c) }
    }

    /// The inpainting UNet: the same configuration with `inpainting` set (9 input channels).
    public func inpaintingUNet(checkFinite: Bool = true) throws(KandinskyError) -> Loaded<Text2ImUNet> {
        var c = config.unet
        c.inpainting = true
        return try load(.unetInpaint, checkFinite: checkFinite) { w throws(KandinskyError) in
            try Text2ImUNet(w, config: c)
        }
    }

    public func vae(checkFinite: Bool = true) throws(KandinskyError) -> Loaded<AutoencoderKL> {
        try load(.vae, checkFinite: checkFinite) { w throws(KandinskyError) in try AutoencoderKL(w, config: config.vae)
        }
    }

    private func load<M>(
        _ f: File, checkFinite: Bool, _ build: (WeightFile) throws(KandinskyError) -> M
    ) throws(KandinskyError) -> Loaded<M> {
        let path = file(f)
        guard FileManager.default.fileExists(atPath: path) else {
            throw KandinskyError(.modelDirectory, "missing weights file", file: path)
        }
        let weights = try WeightFile(
            path: path, checkFinite: checkFinite, keepHalf: keepHalfPrecision && f != .vae, backend: backend)
        let module = try build(weights)
        return Loaded(
            module: module, file: path, parameters: weights.parameterCount, dtypes: weights.dtypes,
            unusedKeys: weights.unusedKeys)
    }
}

extension ModelDirectory {
    /// The bytes the weights take once loaded, and the largest tensor.
    public struct WeightSizes: Sendable {
        public var total: Int
        public var largest: (key: String, file: String, bytes: Int)
    }

    /// What the weights files present take in f32, or with `halfPrecision` with layer matrices (rank ≥ 2) in 16 bits;
    /// read from the files' headers, nothing loaded.
    public func weightSizes(halfPrecision: Bool) throws(KandinskyError) -> WeightSizes {
        var sizes = WeightSizes(total: 0, largest: ("", "", 0))
        for f in [File.textEncoder1, .textEncoder2, .unet, .unetInpaint, .vae] {
            let path = file(f)
            guard FileManager.default.fileExists(atPath: path) else { continue }
            let weights: SafetensorsFile
            do {
                weights = try SafetensorsFile(path: path)
            } catch {
                throw KandinskyError(.badWeight, error.message, file: path, key: error.tensor)
            }
            for (key, entry) in weights.entries {
                let count = entry.shape.reduce(1, *)
                let bytes = count * (halfPrecision && entry.shape.count >= 2 && f != .vae ? 2 : 4)
                sizes.total += bytes
                if bytes > sizes.largest.bytes { sizes.largest = (key, f.rawValue, bytes) }
            }
        }
        return sizes
    }
}

/// A component loaded from its weights file, with what the strict loader saw.
public struct Loaded<Module>: @unchecked Sendable {
    public let module: Module
    public let file: String
    public let parameters: Int
    /// Storage dtypes of the weights taken, with counts.
    public let dtypes: [String: Int]
    /// Tensors in the file that no module took (reported, not an error).
    public let unusedKeys: [String]
}
