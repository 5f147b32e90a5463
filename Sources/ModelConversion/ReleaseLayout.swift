/// Which release file becomes which model-directory file, and which of its keys are the model's weights.
/// Keys are never renamed: a kept tensor keeps its name, dtype, shape and bytes.
public struct ReleaseComponent: Sendable {
    /// Section name, as in `model.json` (`unet`, `vae`, …).
    public var name: String
    /// Path of the checkpoint inside the release directory.
    public var source: String
    /// File name in the model directory.
    public var output: String
    /// Whether a release may lack it.
    public var isOptional: Bool
    /// Dict keys leading from the pickled object to the state dict (empty: the object is the state dict).
    public var stateDictPath: [String]
    /// Key prefixes kept (empty: every key); others are training-only entries, dropped and reported.
    public var keptPrefixes: [String]
    /// Keys dropped although they match: buffers the model recomputes and does not load.
    public var droppedKeys: Set<String>
    /// Groups of keys holding one tied tensor: a member the checkpoint lacks is written as a copy of the first
    /// member present, so the model directory always has every name the official module's state dict has.
    public var tiedKeys: [[String]]

    /// Whether `key` of this component's state dict is one of the model's weights.
    public func keeps(_ key: String) -> Bool {
        if droppedKeys.contains(key) { return false }
        return keptPrefixes.isEmpty || keptPrefixes.contains { key.hasPrefix($0) }
    }
}

/// The Kandinsky 2.0 release layout (DESIGN.md §2; reference/kandinsky2-spec.md §1).
public enum ReleaseLayout {
    public static let unet = ReleaseComponent(
        name: "unet", source: "Kandinsky-2-0.pt", output: "unet.safetensors", isOptional: false,
        stateDictPath: [], keptPrefixes: [], droppedKeys: [], tiedKeys: [])

    public static let unetInpaint = ReleaseComponent(
        name: "unet_inpaint", source: "Kandinsky-2-0-inpainting.pt", output: "unet_inpaint.safetensors",
        isOptional: true, stateDictPath: [], keptPrefixes: [], droppedKeys: [], tiedKeys: [])

    /// A Lightning checkpoint: the AutoencoderKL weights sit under `state_dict` beside the loss (`loss.*`: LPIPS and
    /// discriminator, training only), optimizer states and hyper-parameters.
    public static let vae = ReleaseComponent(
        name: "vae", source: "vae.ckpt", output: "vae.safetensors", isOptional: false,
        stateDictPath: ["state_dict"], keptPrefixes: ["encoder.", "decoder.", "quant_conv.", "post_quant_conv."],
        droppedKeys: [], tiedKeys: [])

    /// M-CLIP: `transformer.*` (XLM-R, pooler included) and `LinearTransformation.*`. `position_ids` is a buffer
    /// (`arange(max_position_embeddings)`) that recent `transformers` no longer saves; RoBERTa position ids are
    /// computed from the input ids anyway.
    public static let textEncoder1 = ReleaseComponent(
        name: "text_encoder1", source: "text_encoder1/pytorch_model.bin", output: "text_encoder1.safetensors",
        isOptional: false, stateDictPath: [], keptPrefixes: [], droppedKeys: ["transformer.embeddings.position_ids"],
        tiedKeys: [])

    /// `MT5EncoderModel`: `shared.weight` and `encoder.embed_tokens.weight` are the same tensor, saved twice.
    public static let textEncoder2 = ReleaseComponent(
        name: "text_encoder2", source: "text_encoder2/pytorch_model.bin", output: "text_encoder2.safetensors",
        isOptional: false, stateDictPath: [], keptPrefixes: [], droppedKeys: [],
        tiedKeys: [["shared.weight", "encoder.embed_tokens.weight"]])

    public static let components = [unet, unetInpaint, vae, textEncoder1, textEncoder2]

    /// SentencePiece models, copied byte for byte: (release path, model-directory name).
    public static let tokenizers = [
        (source: "text_encoder1/sentencepiece.bpe.model", output: "tokenizer1.model"),
        (source: "text_encoder2/spiece.model", output: "tokenizer2.model"),
    ]

    /// Hugging Face configurations the text-encoder sections of model.json are read from.
    public static let textEncoder1Config = "text_encoder1/config.json"
    public static let textEncoder2Config = "text_encoder2/config.json"
}
