import JSON
import Tensor

/// Builds `model.json` for a converted release.
///
/// - `unet`, `diffusion`, `vae`: the release ships no configuration for them, so they start from the official
///   `CONFIG_2_0` (`kandinsky2/configs.py`; reference/kandinsky2-spec.md §1.1) with `use_fp16` false, as HEAD has it.
/// - `text_encoder1`: `{"xlm_roberta": …, "linear_out_features": N}` — the XLM-R fields below from
///   `text_encoder1/config.json` (a field it lacks takes `XLMRobertaConfig`'s default where that default does not
///   size a weight, and is an error otherwise); `linear_out_features` is M-CLIP's `numDims`, or the first dimension
///   of `LinearTransformation.weight` when the file has no `numDims`.
/// - `text_encoder2`: `{"mt5": …}` — the mT5 fields below from `text_encoder2/config.json`, absent ones taking
///   `MT5Config`'s defaults (which are mT5-small's).
/// - An override (`--config FILE`, a model.json or a part of one) is merged field by field on top: objects merge
///   member-wise, other values replace. A section or field the built file does not have, or a value of another JSON
///   type, is an error (`defaults` is copied as given; the pipeline validates it).
/// - Then every section is checked against the weights' shapes (`ModelConfig.check`), so a directory whose
///   model.json does not describe its weights is never written.
public enum ModelConfig {
    public static let format = "kandinsky-2.0"

    /// `CONFIG_2_0["model_config"]`.
    public static let unetDefaults: JSONValue = .object([
        "image_size": .integer(64), "num_channels": .integer(384), "num_res_blocks": .integer(3),
        "channel_mult": .string(""), "num_heads": .integer(1),
        "num_head_channels": .integer(64), "num_heads_upsample": .integer(-1),
        "attention_resolutions": .string("32,16,8"),
        "dropout": .integer(0), "model_dim": .integer(768), "use_scale_shift_norm": .bool(true),
        "resblock_updown": .bool(true),
        "use_fp16": .bool(false), "cache_text_emb": .bool(true), "text_encoder_in_dim1": .integer(1024),
        "text_encoder_in_dim2": .integer(640), "pooling_type": .string("from_model"), "in_channels": .integer(4),
        "out_channels": .integer(8),
        "up": .bool(false), "inpainting": .bool(false),
    ])

    /// `CONFIG_2_0["diffusion_config"]`.
    public static let diffusionDefaults: JSONValue = .object([
        "learn_sigma": .bool(true), "sigma_small": .bool(false), "steps": .integer(1000),
        "noise_schedule": .string("linear"),
        "timestep_respacing": .string(""), "use_kl": .bool(false), "predict_xstart": .bool(false),
        "rescale_timesteps": .bool(true),
        "rescale_learned_sigmas": .bool(true), "linear_start": .double(0.0001), "linear_end": .double(0.02),
    ])

    /// `CONFIG_2_0["image_enc_params"]` without its `name`.
    public static let vaeDefaults: JSONValue = .object([
        "scale": .double(0.0512), "embed_dim": .integer(4),
        "ddconfig": .object([
            "double_z": .bool(true), "z_channels": .integer(4), "resolution": .integer(256),
            "in_channels": .integer(3), "out_ch": .integer(3),
            "ch": .integer(128), "ch_mult": .array([.integer(1), .integer(2), .integer(4), .integer(4)]),
            "num_res_blocks": .integer(2), "attn_resolutions": .array([]),
            "dropout": .double(0.0),
        ]),
    ])

    /// XLM-R fields kept from `config.json`, with `XLMRobertaConfig`'s default where it does not size a weight
    /// (nil: required).
    public static let xlmRobertaFields: [(String, JSONValue?)] = [
        ("vocab_size", nil), ("hidden_size", nil), ("num_hidden_layers", nil), ("num_attention_heads", nil),
        ("intermediate_size", nil), ("max_position_embeddings", nil), ("type_vocab_size", nil),
        ("hidden_act", .string("gelu")), ("layer_norm_eps", .double(1e-12)), ("pad_token_id", .integer(1)),
        ("bos_token_id", .integer(0)),
        ("eos_token_id", .integer(2)), ("position_embedding_type", .string("absolute")),
    ]

    /// mT5 fields kept from `config.json`, with `MT5Config`'s defaults.
    public static let mt5Fields: [(String, JSONValue)] = [
        ("vocab_size", .integer(250112)), ("d_model", .integer(512)), ("d_kv", .integer(64)), ("d_ff", .integer(1024)),
        ("num_layers", .integer(8)), ("num_heads", .integer(6)),
        ("relative_attention_num_buckets", .integer(32)), ("relative_attention_max_distance", .integer(128)),
        ("layer_norm_epsilon", .double(1e-6)), ("feed_forward_proj", .string("gated-gelu")),
        ("is_encoder_decoder", .bool(true)),
        ("tie_word_embeddings", .bool(false)), ("pad_token_id", .integer(0)), ("eos_token_id", .integer(1)),
    ]

    static let sections = ["unet", "diffusion", "vae", "text_encoder1", "text_encoder2"]

    /// model.json for a release whose text-encoder configurations are `textEncoder1`/`textEncoder2` (parsed
    /// `config.json`s; `files` name them in errors), with `override` merged on top.
    /// - Parameters:
    ///   - linearOutFeatures: the first dimension of `LinearTransformation.weight`, used when the config has no
    ///     `numDims`.
    public static func build(
        textEncoder1: JSONValue, textEncoder2: JSONValue, linearOutFeatures: Int?,
        override: JSONValue?, files: (textEncoder1: String, textEncoder2: String, override: String?)
    ) throws(ConversionError) -> JSONValue {
        guard textEncoder1.objectValue != nil else {
            throw ConversionError(.badConfig, "not a JSON object", file: files.textEncoder1)
        }
        guard textEncoder2.objectValue != nil else {
            throw ConversionError(.badConfig, "not a JSON object", file: files.textEncoder2)
        }
        var xlmr = JSONObject()
        for (field, fallback) in xlmRobertaFields {
            guard let value = textEncoder1[field] ?? fallback else {
                throw ConversionError(
                    .badConfig, "has no \"\(field)\", which sizes the weights", file: files.textEncoder1, key: field)
            }
            xlmr[field] = value
        }
        let linear: JSONValue
        if let numDims = textEncoder1["numDims"] {
            linear = numDims
        } else if let linearOutFeatures {
            linear = .integer(linearOutFeatures)
        } else {
            throw ConversionError(
                .badConfig, "has no \"numDims\" and the weights no LinearTransformation.weight",
                file: files.textEncoder1, key: "numDims")
        }
        let mt5 = JSONObject(mt5Fields.map { (key: $0.0, value: textEncoder2[$0.0] ?? $0.1) })
        var built: JSONValue = .object([
            "format": .string(format), "unet": unetDefaults, "diffusion": diffusionDefaults, "vae": vaeDefaults,
            "text_encoder1": .object(["xlm_roberta": .object(xlmr), "linear_out_features": linear]),
            "text_encoder2": .object(["mt5": .object(mt5)]),
        ])
        if let override {
            built = try merge(override, into: built, file: files.override)
        }
        return built
    }

    /// Merges the override's sections into `built`.
    static func merge(_ override: JSONValue, into built: JSONValue, file: String?) throws(ConversionError) -> JSONValue
    {
        guard let members = override.objectValue else {
            throw ConversionError(.badConfig, "the override is not a JSON object", file: file)
        }
        var result = built.objectValue!
        for (section, value) in members {
            switch section {
            case "format":
                guard value == .string(format) else {
                    throw ConversionError(
                        .badConfig, "format is \(value.serialized), expected \"\(format)\"", file: file, key: section)
                }
            case "defaults":
                guard value.objectValue != nil else {
                    throw ConversionError(.badConfig, "\"defaults\" is not an object", file: file, key: section)
                }
                result[section] = value
            case _ where sections.contains(section):
                result[section] = try mergeFields(value, into: result[section]!, path: section, file: file)
            default:
                throw ConversionError(
                    .badConfig,
                    "unknown section \"\(section)\" (known: format, defaults, \(sections.joined(separator: ", ")))",
                    file: file, key: section)
            }
        }
        return .object(result)
    }

    private static func mergeFields(
        _ override: JSONValue, into base: JSONValue, path: String, file: String?
    )
        throws(ConversionError) -> JSONValue
    {
        guard case .object(var fields) = base else {
            guard sameKind(override, base) else {
                throw ConversionError(
                    .badConfig, "\(override.serialized) is not of the type of \(base.serialized)", file: file, key: path
                )
            }
            return override
        }
        guard let members = override.objectValue else {
            throw ConversionError(.badConfig, "expected an object, found \(override.serialized)", file: file, key: path)
        }
        for (name, value) in members {
            guard let field = fields[name] else {
                throw ConversionError(
                    .badConfig, "unknown field (known: \(fields.keys.sorted().joined(separator: ", ")))",
                    file: file,
                    key: "\(path).\(name)")
            }
            fields[name] = try mergeFields(value, into: field, path: "\(path).\(name)", file: file)
        }
        return .object(fields)
    }

    private static func sameKind(_ a: JSONValue, _ b: JSONValue) -> Bool {
        switch (a, b) {
        case (.null, _), (_, .null), (.bool, .bool), (.number, .number), (.string, .string), (.array, .array):
            return true
        default: return false
        }
    }

    // MARK: - Checks against the weights

    /// Checks `config` against the shapes of the weights (`shapes[component][key]`): channel counts, embedding
    /// widths, vocabulary sizes and layer counts must be those of the tensors.
    public static func check(
        _ config: JSONValue, shapes: [String: [String: [Int]]], file: String
    )
        throws(ConversionError)
    {
        func int(_ path: String) throws(ConversionError) -> Int {
            var value: JSONValue? = config
            for part in path.split(separator: ".") { value = value?[String(part)] }
            guard let n = value?.intValue else {
                throw ConversionError(.badConfig, "is not an integer", file: file, key: path)
            }
            return n
        }
        func bool(_ path: String) -> Bool {
            var value: JSONValue? = config
            for part in path.split(separator: ".") { value = value?[String(part)] }
            return value == .bool(true)
        }
        /// `key` of `component` must have `expected[i]` (a config path and its value) at each listed dimension.
        func expect(
            _ component: String, _ key: String, _ expected: [(dim: Int, field: String, value: Int)]
        )
            throws(ConversionError)
        {
            guard let tensors = shapes[component] else { return }
            guard let shape = tensors[key] else {
                throw ConversionError(
                    .missingKey, "the \(component) weights have no \(key); is this the right file?", file: file,
                    key: key)
            }
            for e in expected where e.dim >= shape.count || shape[e.dim] != e.value {
                throw ConversionError(
                    .configMismatch,
                    "is \(e.value) but \(component) weight \(key) has shape \(shape); "
                        + "pass --config with this model's configuration",
                    file: file, key: e.field)
            }
        }
        func layers(_ component: String, prefix: String) -> Int? {
            guard let tensors = shapes[component] else { return nil }
            let indices = Set(
                tensors.keys.compactMap { key -> Int? in
                    guard key.hasPrefix(prefix) else { return nil }
                    return Int(key.dropFirst(prefix.count).prefix { $0 != "." })
                })
            return indices.count
        }

        let channels = try int("unet.num_channels")
        let inChannels = try int("unet.in_channels")
        for (component, input) in [("unet", inChannels), ("unet_inpaint", 2 * inChannels + 1)] {
            try expect(
                component, "input_blocks.0.0.weight",
                [(0, "unet.num_channels", channels), (1, "unet.in_channels", input)])
            try expect(component, "out.2.weight", [(0, "unet.out_channels", try int("unet.out_channels"))])
            try expect(
                component, "to_model_dim.weight",
                [
                    (0, "unet.model_dim", try int("unet.model_dim")),
                    (1, "unet.text_encoder_in_dim1", try int("unet.text_encoder_in_dim1")),
                ])
            try expect(
                component, "proj.weight", [(1, "unet.text_encoder_in_dim2", try int("unet.text_encoder_in_dim2"))])
        }

        let ch = try int("vae.ddconfig.ch")
        let z = try int("vae.ddconfig.z_channels")
        let embed = try int("vae.embed_dim")
        try expect(
            "vae", "encoder.conv_in.weight",
            [(0, "vae.ddconfig.ch", ch), (1, "vae.ddconfig.in_channels", try int("vae.ddconfig.in_channels"))])
        try expect("vae", "decoder.conv_out.weight", [(0, "vae.ddconfig.out_ch", try int("vae.ddconfig.out_ch"))])
        try expect("vae", "post_quant_conv.weight", [(0, "vae.ddconfig.z_channels", z), (1, "vae.embed_dim", embed)])
        try expect(
            "vae", "quant_conv.weight",
            [
                (0, "vae.embed_dim", 2 * embed),
                (1, "vae.ddconfig.z_channels", (bool("vae.ddconfig.double_z") ? 2 : 1) * z),
            ])

        let x = "text_encoder1.xlm_roberta"
        let hidden = try int("\(x).hidden_size")
        try expect(
            "text_encoder1", "transformer.embeddings.word_embeddings.weight",
            [(0, "\(x).vocab_size", try int("\(x).vocab_size")), (1, "\(x).hidden_size", hidden)])
        try expect(
            "text_encoder1", "transformer.embeddings.position_embeddings.weight",
            [(0, "\(x).max_position_embeddings", try int("\(x).max_position_embeddings"))])
        try expect(
            "text_encoder1", "transformer.embeddings.token_type_embeddings.weight",
            [(0, "\(x).type_vocab_size", try int("\(x).type_vocab_size"))])
        try expect(
            "text_encoder1", "transformer.encoder.layer.0.intermediate.dense.weight",
            [(0, "\(x).intermediate_size", try int("\(x).intermediate_size"))])
        try expect(
            "text_encoder1", "LinearTransformation.weight",
            [
                (0, "text_encoder1.linear_out_features", try int("text_encoder1.linear_out_features")),
                (1, "\(x).hidden_size", hidden),
            ])
        let xlmrLayers = try int("\(x).num_hidden_layers")
        if let found = layers("text_encoder1", prefix: "transformer.encoder.layer."), found != xlmrLayers {
            throw ConversionError(
                .configMismatch, "is \(xlmrLayers) but the text_encoder1 weights have \(found) layers", file: file,
                key: "\(x).num_hidden_layers")
        }

        let m = "text_encoder2.mt5"
        let model = try int("\(m).d_model")
        try expect(
            "text_encoder2", "shared.weight",
            [(0, "\(m).vocab_size", try int("\(m).vocab_size")), (1, "\(m).d_model", model)])
        try expect(
            "text_encoder2", "encoder.block.0.layer.0.SelfAttention.q.weight",
            [(0, "\(m).num_heads", try int("\(m).num_heads") * int("\(m).d_kv")), (1, "\(m).d_model", model)])
        let gated = (config["text_encoder2"]?["mt5"]?["feed_forward_proj"]?.stringValue ?? "").hasPrefix("gated-")
        try expect(
            "text_encoder2", "encoder.block.0.layer.1.DenseReluDense.\(gated ? "wi_0" : "wi").weight",
            [(0, "\(m).d_ff", try int("\(m).d_ff"))])
        let mt5Layers = try int("\(m).num_layers")
        if let found = layers("text_encoder2", prefix: "encoder.block."), found != mt5Layers {
            throw ConversionError(
                .configMismatch, "is \(mt5Layers) but the text_encoder2 weights have \(found) blocks", file: file,
                key: "\(m).num_layers")
        }
    }

    // MARK: - Output

    /// JSON text with two-space indentation and object members sorted at every level.
    public static func pretty(_ value: JSONValue, indent: String = "") -> String {
        let inner = indent + "  "
        switch value {
        case .array(let items) where !items.isEmpty:
            return "[\n" + items.map { inner + pretty($0, indent: inner) }.joined(separator: ",\n") + "\n\(indent)]"
        case .object(let members) where !members.isEmpty:
            let lines = members.sorted { $0.key < $1.key }.map {
                inner + JSONValue.string($0.key).serialized + ": " + pretty($0.value, indent: inner)
            }
            return "{\n" + lines.joined(separator: ",\n") + "\n\(indent)}"
        default:
            return value.serialized
        }
    }
}
