import Foundation
import Tensor

/// Text encoder 1: multilingual CLIP = XLM-RoBERTa (post-LN BERT, erf GELU, RoBERTa position ids) → last hidden
/// state, and masked mean pooling → `LinearTransformation` (spec §3.1; `text_encoders.py:MultilingualCLIP`).
public struct MultilingualCLIP: Sendable {
    struct Layer: Sendable {
        let query: Linear, key: Linear, value: Linear
        let attentionOutput: Linear, attentionNorm: LayerNorm
        let intermediate: Linear, output: Linear, outputNorm: LayerNorm
    }

    public let config: TextEncoder1Config
    let wordEmbeddings: Tensor, positionEmbeddings: Tensor, tokenTypeEmbeddings: Tensor
    let embeddingNorm: LayerNorm
    let layers: [Layer]
    let projection: Linear
    /// The backend this encoder's weights live on and its passes compute on.
    public let backend: any ComputeBackend

    public init(_ w: WeightFile, config: TextEncoder1Config) throws(KandinskyError) {
        self.config = config
        backend = w.backend
        let c = config.xlmRoberta
        guard c.hiddenAct == "gelu" else {
            throw KandinskyError(
                .modelDirectory, "hidden_act \(c.hiddenAct) (only gelu)", key: "text_encoder1.xlm_roberta.hidden_act")
        }
        guard c.numAttentionHeads > 0, c.hiddenSize % c.numAttentionHeads == 0 else {
            throw KandinskyError(
                .modelDirectory, "hidden_size is not a multiple of num_attention_heads",
                key: "text_encoder1.xlm_roberta")
        }
        let (d, eps) = (c.hiddenSize, Float(c.layerNormEps))
        let t = "transformer"
        wordEmbeddings = try w.tensor("\(t).embeddings.word_embeddings.weight", [c.vocabSize, d])
        positionEmbeddings = try w.tensor("\(t).embeddings.position_embeddings.weight", [c.maxPositionEmbeddings, d])
        tokenTypeEmbeddings = try w.tensor("\(t).embeddings.token_type_embeddings.weight", [c.typeVocabSize, d])
        embeddingNorm = try LayerNorm(w, "\(t).embeddings.LayerNorm", width: d, eps: eps)
        var layers: [Layer] = []
        for i in 0..<c.numHiddenLayers {
            let p = "\(t).encoder.layer.\(i)"
            layers.append(
                Layer(
                    query: try Linear(w, "\(p).attention.self.query", in: d, out: d),
                    key: try Linear(w, "\(p).attention.self.key", in: d, out: d),
                    value: try Linear(w, "\(p).attention.self.value", in: d, out: d),
                    attentionOutput: try Linear(w, "\(p).attention.output.dense", in: d, out: d),
                    attentionNorm: try LayerNorm(w, "\(p).attention.output.LayerNorm", width: d, eps: eps),
                    intermediate: try Linear(w, "\(p).intermediate.dense", in: d, out: c.intermediateSize),
                    output: try Linear(w, "\(p).output.dense", in: c.intermediateSize, out: d),
                    outputNorm: try LayerNorm(w, "\(p).output.LayerNorm", width: d, eps: eps)))
        }
        self.layers = layers
        projection = try Linear(w, "LinearTransformation", in: d, out: config.linearOutFeatures)
        // The Hugging Face model builds a pooler that M-CLIP never uses: present in checkpoints, reported unused.
        w.declareUnused("\(t).pooler.dense.weight", [d, d])
        w.declareUnused("\(t).pooler.dense.bias", [d])
    }

    /// Encodes token ids `[N][L]` with their attention mask.
    /// - Returns: `full` = last hidden state `[N, L, hidden]`, `pooled` = `[N, linear_out_features]`.
    public func callAsFunction(ids: [[Int]], mask: [[Int]]) throws(KandinskyError) -> (full: Tensor, pooled: Tensor) {
        let c = config.xlmRoberta
        let (n, length, d) = (ids.count, ids.first?.count ?? 0, c.hiddenSize)
        let pad = c.padTokenId
        var flatIds: [Int] = []
        var positions: [Int] = []
        for row in ids {
            guard row.count == length else {
                throw KandinskyError(.invalidParameter, "token rows of different lengths")
            }
            // RoBERTa position ids: real tokens count up from padding_idx + 1, pads get padding_idx.
            var running = 0
            for id in row {
                guard id >= 0 && id < c.vocabSize else {
                    throw KandinskyError(.invalidParameter, "token id \(id) outside the vocabulary of \(c.vocabSize)")
                }
                flatIds.append(id)
                if id != pad { running += 1 }
                positions.append(id != pad ? running + pad : pad)
            }
        }
        guard (positions.max() ?? 0) < c.maxPositionEmbeddings else {
            throw KandinskyError(
                .invalidParameter, "sequence of \(length) tokens exceeds \(c.maxPositionEmbeddings - pad - 1) positions"
            )
        }
        var h = backend.add(
            backend.embedding(wordEmbeddings, ids: flatIds), backend.embedding(positionEmbeddings, ids: positions))
        h = backend.addRows(h, backend.slice(tokenTypeEmbeddings, axis: 0, 0..<1).reshaped([d]))
        h = embeddingNorm(h).reshaped([n, length, d])

        // Additive key mask: 0 for real tokens, the float minimum for pads (as Hugging Face builds it).
        let maskValues = mask.flatMap { $0.map { $0 != 0 ? Float(0) : -Float.greatestFiniteMagnitude } }
        let keyMask = backend.upload(maskValues, shape: [n, 1, length])
        let heads = c.numAttentionHeads
        let headDim = d / heads
        for layer in layers {
            let q = backend.splitHeads(layer.query(h), heads: heads)
            let k = backend.splitHeads(layer.key(h), heads: heads)
            let v = backend.splitHeads(layer.value(h), heads: heads)
            let context = backend.attention(q: q, k: k, v: v, scale: 1 / Float(headDim).squareRoot(), mask: keyMask)
            let merged = backend.mergeHeads(context, heads: heads)
            h = layer.attentionNorm(backend.add(layer.attentionOutput(merged), h))
            let ff = layer.output(backend.gelu(layer.intermediate(h)))
            h = layer.outputNorm(backend.add(ff, h))
        }

        // Masked mean over the sequence (the count includes <s> and </s>), then the linear map.
        let pooledInput = backend.maskedMean(h, mask: mask)
        return (h, projection(pooledInput))
    }
}
