import Foundation
@_exported import Generation
import JSON

/// `model.json` of a model directory (DESIGN §2): the official `CONFIG_2_0` field names for `unet` and
/// `diffusion`, `{embed_dim, ddconfig, scale}` for `vae`, Hugging Face config fields for the text encoders.
public struct ModelConfig: Codable, Sendable, Equatable {
    public var format: String
    public var unet: UNetConfig
    public var diffusion: DiffusionConfig
    public var vae: VAEConfig
    public var textEncoder1: TextEncoder1Config
    public var textEncoder2: TextEncoder2Config
    /// Generation parameters the model is meant for, used when a request leaves them out.
    public var defaults: ModelDefaults?

    enum CodingKeys: String, CodingKey {
        case format, unet, diffusion, vae, defaults
        case textEncoder1 = "text_encoder1"
        case textEncoder2 = "text_encoder2"
    }

    /// Reads and checks `model.json`; a malformed file or a field of the wrong type is an error naming the field.
    public static func load(path: String) throws(KandinskyError) -> ModelConfig {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw KandinskyError(.modelDirectory, "cannot read: \(error.localizedDescription)", file: path)
        }
        return try decode(data, path: path)
    }

    /// Decodes `model.json` bytes. A member named twice is an error naming it, not a silent choice of one value.
    public static func decode(_ data: Data, path: String = "model.json") throws(KandinskyError) -> ModelConfig {
        let config: ModelConfig
        do {
            config = try JSONValueDecoder().decode(ModelConfig.self, from: Array(data))
        } catch let error as JSONParseError {
            let key = error.path + (error.key.map { [$0] } ?? [])
            throw KandinskyError(
                .modelDirectory, "invalid JSON: \(error)", file: path,
                key: key.isEmpty ? nil : key.joined(separator: "."))
        } catch let error as DecodingError {
            throw KandinskyError(.modelDirectory, describe(error), file: path, key: codingPath(error))
        } catch {
            throw KandinskyError(.modelDirectory, "\(error)", file: path)
        }
        guard config.format == "kandinsky-2.0" else {
            throw KandinskyError(
                .modelDirectory, "format is \"\(config.format)\", expected \"kandinsky-2.0\"", file: path, key: "format"
            )
        }
        try config.unet.validate(path: path)
        return config
    }

    private static func codingPath(_ error: DecodingError) -> String? {
        let path: [CodingKey]
        switch error {
        case .typeMismatch(_, let c), .valueNotFound(_, let c), .dataCorrupted(let c): path = c.codingPath
        case .keyNotFound(let key, let c): path = c.codingPath + [key]
        @unknown default: return nil
        }
        return path.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".")
    }

    private static func describe(_ error: DecodingError) -> String {
        switch error {
        case .typeMismatch(let type, _): return "wrong type: expected \(type)"
        case .valueNotFound(let type, _): return "missing value: expected \(type)"
        case .keyNotFound: return "required field is missing"
        case .dataCorrupted(let c): return "invalid value: \(c.debugDescription)"
        @unknown default: return "\(error)"
        }
    }
}

/// The official UNet configuration (`CONFIG_2_0["model_config"]`).
public struct UNetConfig: Codable, Sendable, Equatable {
    public var imageSize: Int
    public var numChannels: Int
    public var numResBlocks: Int
    /// Comma-separated multipliers; empty means the official default for the image size.
    public var channelMult: String
    public var numHeads: Int
    public var numHeadChannels: Int
    public var numHeadsUpsample: Int
    /// Comma-separated resolutions (image_size / downsampling factor) that get attention.
    public var attentionResolutions: String
    public var dropout: Double
    public var modelDim: Int
    public var useScaleShiftNorm: Bool
    public var resblockUpdown: Bool
    public var useFP16: Bool
    public var cacheTextEmb: Bool
    public var textEncoderInDim1: Int
    public var textEncoderInDim2: Int
    public var poolingType: String
    public var inChannels: Int
    public var outChannels: Int
    public var up: Bool
    public var inpainting: Bool

    enum CodingKeys: String, CodingKey {
        case imageSize = "image_size", numChannels = "num_channels", numResBlocks = "num_res_blocks"
        case channelMult = "channel_mult", numHeads = "num_heads", numHeadChannels = "num_head_channels"
        case numHeadsUpsample = "num_heads_upsample", attentionResolutions = "attention_resolutions", dropout
        case modelDim = "model_dim", useScaleShiftNorm = "use_scale_shift_norm", resblockUpdown = "resblock_updown"
        case useFP16 = "use_fp16", cacheTextEmb = "cache_text_emb", textEncoderInDim1 = "text_encoder_in_dim1"
        case textEncoderInDim2 = "text_encoder_in_dim2", poolingType = "pooling_type", inChannels = "in_channels"
        case outChannels = "out_channels", up, inpainting
    }

    /// Channel multipliers per level (`create_model`'s defaults when the string is empty).
    public var channelMultipliers: [Int] {
        get throws(KandinskyError) {
            if channelMult.isEmpty {
                switch imageSize {
                case 512: return [1, 1, 2, 2, 4, 4]
                case 256: return [1, 1, 2, 2, 4, 4]
                case 128: return [1, 1, 2, 3, 4]
                case 64: return [1, 2, 3, 4]
                default:
                    throw KandinskyError(
                        .modelDirectory, "no default channel_mult for image_size \(imageSize)", key: "unet.channel_mult"
                    )
                }
            }
            return try Self.integers(channelMult, key: "unet.channel_mult")
        }
    }

    /// Downsampling factors at which attention blocks are used.
    public var attentionFactors: Set<Int> {
        get throws(KandinskyError) {
            Set(try Self.integers(attentionResolutions, key: "unet.attention_resolutions").map { imageSize / $0 })
        }
    }

    /// Heads of an attention block over `channels` channels.
    public func heads(channels: Int, upsampling: Bool) -> Int {
        if numHeadChannels != -1 { return channels / numHeadChannels }
        return upsampling && numHeadsUpsample != -1 ? numHeadsUpsample : numHeads
    }

    func validate(path: String) throws(KandinskyError) {
        let mults = try channelMultipliers
        _ = try attentionFactors
        guard numChannels > 0, numResBlocks > 0, !mults.isEmpty, mults.allSatisfy({ $0 > 0 }), modelDim > 0 else {
            throw KandinskyError(
                .modelDirectory, "num_channels, num_res_blocks, channel_mult and model_dim must be positive",
                file: path, key: "unet")
        }
        guard useScaleShiftNorm, resblockUpdown, poolingType == "from_model", !up else {
            throw KandinskyError(
                .modelDirectory,
                "only the Kandinsky 2.0 variant is supported (use_scale_shift_norm, resblock_updown, pooling_type from_model, up false)",
                file: path, key: "unet")
        }
        for mult in mults where (mult * numChannels) % 32 != 0 {
            throw KandinskyError(
                .modelDirectory, "level width \(mult * numChannels) is not divisible into 32 groups", file: path,
                key: "unet.channel_mult")
        }
    }

    static func integers(_ text: String, key: String) throws(KandinskyError) -> [Int] {
        var out: [Int] = []
        for part in text.split(separator: ",") {
            guard let v = Int(part.trimmingCharacters(in: .whitespaces)), v > 0 else {
                throw KandinskyError(
                    .modelDirectory, "\"\(text)\" is not a comma-separated list of positive integers", key: key)
            }
            out.append(v)
        }
        return out
    }
}

/// `CONFIG_2_0["diffusion_config"]`.
public struct DiffusionConfig: Codable, Sendable, Equatable {
    public var learnSigma: Bool
    public var sigmaSmall: Bool
    public var steps: Int
    public var noiseSchedule: String
    public var timestepRespacing: String
    public var useKL: Bool
    public var predictXstart: Bool
    public var rescaleTimesteps: Bool
    public var rescaleLearnedSigmas: Bool
    public var linearStart: Double?
    public var linearEnd: Double?

    enum CodingKeys: String, CodingKey {
        case learnSigma = "learn_sigma", sigmaSmall = "sigma_small", steps, noiseSchedule = "noise_schedule"
        case timestepRespacing = "timestep_respacing", useKL = "use_kl", predictXstart = "predict_xstart"
        case rescaleTimesteps = "rescale_timesteps", rescaleLearnedSigmas = "rescale_learned_sigmas"
        case linearStart = "linear_start", linearEnd = "linear_end"
    }
}

/// The autoencoder: `{embed_dim, ddconfig, scale}`.
public struct VAEConfig: Codable, Sendable, Equatable {
    public struct DDConfig: Codable, Sendable, Equatable {
        public var attnResolutions: [Int]
        public var ch: Int
        public var chMult: [Int]
        public var doubleZ: Bool
        public var dropout: Double
        public var inChannels: Int
        public var numResBlocks: Int
        public var outCh: Int
        public var resolution: Int
        public var zChannels: Int

        enum CodingKeys: String, CodingKey {
            case attnResolutions = "attn_resolutions", ch, chMult = "ch_mult", doubleZ = "double_z", dropout
            case inChannels = "in_channels", numResBlocks = "num_res_blocks", outCh = "out_ch", resolution
            case zChannels = "z_channels"
        }
    }

    public var embedDim: Int
    public var ddconfig: DDConfig
    /// Latents are `sample · scale` (0.0512 for Kandinsky 2.0).
    public var scale: Double

    enum CodingKeys: String, CodingKey {
        case embedDim = "embed_dim", ddconfig, scale
    }
}

/// Text encoder 1: `{xlm_roberta: <XLMRobertaConfig>, linear_out_features}`.
public struct TextEncoder1Config: Codable, Sendable, Equatable {
    public struct XLMRoberta: Codable, Sendable, Equatable {
        public var hiddenSize: Int
        public var intermediateSize: Int
        public var layerNormEps: Double
        public var maxPositionEmbeddings: Int
        public var numAttentionHeads: Int
        public var numHiddenLayers: Int
        public var padTokenId: Int
        public var typeVocabSize: Int
        public var vocabSize: Int
        public var hiddenAct: String

        enum CodingKeys: String, CodingKey {
            case hiddenSize = "hidden_size", intermediateSize = "intermediate_size", layerNormEps = "layer_norm_eps"
            case maxPositionEmbeddings = "max_position_embeddings", numAttentionHeads = "num_attention_heads"
            case numHiddenLayers = "num_hidden_layers", padTokenId = "pad_token_id", typeVocabSize = "type_vocab_size"
            case vocabSize = "vocab_size", hiddenAct = "hidden_act"
        }
    }

    public var xlmRoberta: XLMRoberta
    public var linearOutFeatures: Int

    enum CodingKeys: String, CodingKey {
        case xlmRoberta = "xlm_roberta", linearOutFeatures = "linear_out_features"
    }
}

/// Text encoder 2: `{mt5: <MT5Config>}`.
public struct TextEncoder2Config: Codable, Sendable, Equatable {
    public struct MT5: Codable, Sendable, Equatable {
        public var dFF: Int
        public var dKV: Int
        public var dModel: Int
        public var numHeads: Int
        public var numLayers: Int
        public var layerNormEpsilon: Double
        public var relativeAttentionNumBuckets: Int
        public var relativeAttentionMaxDistance: Int?
        public var vocabSize: Int
        public var feedForwardProj: String

        enum CodingKeys: String, CodingKey {
            case dFF = "d_ff", dKV = "d_kv", dModel = "d_model", numHeads = "num_heads", numLayers = "num_layers"
            case layerNormEpsilon = "layer_norm_epsilon", relativeAttentionNumBuckets = "relative_attention_num_buckets"
            case relativeAttentionMaxDistance = "relative_attention_max_distance", vocabSize = "vocab_size"
            case feedForwardProj = "feed_forward_proj"
        }
    }

    public var mt5: MT5
}
