import Foundation
import Tensor

/// Text encoder 2: the mT5 encoder (`MT5EncoderModel`, spec §3.2): pre-norm T5 blocks with RMS norm, a relative
/// position bias computed once from layer 0 and shared by every layer, no 1/√d scaling, gated tanh-GELU.
public struct MT5Encoder: Sendable {
    struct Block: Sendable {
        let norm1: Tensor
        let q: Linear, k: Linear, v: Linear, o: Linear
        let norm2: Tensor
        let wi0: Linear, wi1: Linear, wo: Linear
    }

    public let config: TextEncoder2Config
    let shared: Tensor
    let relativeBias: Tensor
    let blocks: [Block]
    let finalNorm: Tensor
    /// The backend this encoder's weights live on and its passes compute on.
    public let backend: any ComputeBackend

    public init(_ w: WeightFile, config: TextEncoder2Config) throws(KandinskyError) {
        self.config = config
        backend = w.backend
        let c = config.mt5
        guard c.feedForwardProj == "gated-gelu" else {
            throw KandinskyError(
                .modelDirectory, "feed_forward_proj \(c.feedForwardProj) (only gated-gelu)",
                key: "text_encoder2.mt5.feed_forward_proj")
        }
        let inner = c.numHeads * c.dKV
        shared = try w.tensor("shared.weight", [c.vocabSize, c.dModel])
        // The encoder's embedding is the same tensor saved a second time.
        if w.isRecording || w.has("encoder.embed_tokens.weight") {
            _ = try w.tensor("encoder.embed_tokens.weight", [c.vocabSize, c.dModel])
        }
        relativeBias = try w.tensor(
            "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
            [c.relativeAttentionNumBuckets, c.numHeads])
        var blocks: [Block] = []
        for i in 0..<c.numLayers {
            let p = "encoder.block.\(i).layer"
            blocks.append(
                Block(
                    norm1: try w.tensor("\(p).0.layer_norm.weight", [c.dModel]),
                    q: try Linear(w, "\(p).0.SelfAttention.q", in: c.dModel, out: inner, bias: false),
                    k: try Linear(w, "\(p).0.SelfAttention.k", in: c.dModel, out: inner, bias: false),
                    v: try Linear(w, "\(p).0.SelfAttention.v", in: c.dModel, out: inner, bias: false),
                    o: try Linear(w, "\(p).0.SelfAttention.o", in: inner, out: c.dModel, bias: false),
                    norm2: try w.tensor("\(p).1.layer_norm.weight", [c.dModel]),
                    wi0: try Linear(w, "\(p).1.DenseReluDense.wi_0", in: c.dModel, out: c.dFF, bias: false),
                    wi1: try Linear(w, "\(p).1.DenseReluDense.wi_1", in: c.dModel, out: c.dFF, bias: false),
                    wo: try Linear(w, "\(p).1.DenseReluDense.wo", in: c.dFF, out: c.dModel, bias: false)))
        }
        self.blocks = blocks
        finalNorm = try w.tensor("encoder.final_layer_norm.weight", [c.dModel])
    }

    /// T5's bidirectional relative-position bucket of `relative = key − query` (float32 logarithm, as PyTorch).
    static func bucket(_ relative: Int, buckets: Int, maxDistance: Int) -> Int {
        let half = buckets / 2
        var bucket = relative > 0 ? half : 0
        let n = abs(relative)
        let maxExact = half / 2
        if n < maxExact { return bucket + n }
        let ratio = logf(Float(n) / Float(maxExact)) / Float(log(Double(maxDistance) / Double(maxExact)))
        let large = maxExact + Int(ratio * Float(half - maxExact))
        bucket += min(large, half - 1)
        return bucket
    }

    /// Encodes token ids `[N][L]`; returns the last hidden state `[N, L, d_model]` (pads included).
    public func callAsFunction(ids: [[Int]], mask: [[Int]]) throws(KandinskyError) -> Tensor {
        let c = config.mt5
        let (n, length, d) = (ids.count, ids.first?.count ?? 0, c.dModel)
        let heads = c.numHeads
        for row in ids {
            guard row.count == length else {
                throw KandinskyError(.invalidParameter, "token rows of different lengths")
            }
            for id in row where id < 0 || id >= c.vocabSize {
                throw KandinskyError(.invalidParameter, "token id \(id) outside the vocabulary of \(c.vocabSize)")
            }
        }
        var h = backend.embedding(shared, ids: ids.flatMap { $0 }).reshaped([n, length, d])
        let eps = Float(c.layerNormEpsilon)

        // Position bias [H, L, L] from layer 0's table plus the key mask, computed once and shared by all layers:
        // made on the host from the small table ([buckets, heads]) and uploaded.
        let maxDistance = c.relativeAttentionMaxDistance ?? 128
        let table = backend.download(relativeBias)
        var bias = [Float](repeating: 0, count: n * heads * length * length)
        for b in 0..<n {
            for head in 0..<heads {
                let base = ((b * heads + head) * length) * length
                for qi in 0..<length {
                    for ki in 0..<length {
                        let bucket = Self.bucket(
                            ki - qi, buckets: c.relativeAttentionNumBuckets, maxDistance: maxDistance)
                        let masked = mask[b][ki] != 0 ? Float(0) : -Float.greatestFiniteMagnitude
                        bias[base + qi * length + ki] = table[bucket * heads + head] + masked
                    }
                }
            }
        }
        let biasValues = backend.upload(bias, shape: [n * heads, length, length])

        for block in blocks {
            let normed = backend.rmsNorm(h, weight: block.norm1, eps: eps)
            let q = backend.splitHeads(block.q(normed), heads: heads)
            let k = backend.splitHeads(block.k(normed), heads: heads)
            let v = backend.splitHeads(block.v(normed), heads: heads)
            // Scores carry the bias as a per-slice mask: one [L, L] matrix for each (item, head).
            let context = backend.attention(q: q, k: k, v: v, scale: 1, mask: biasValues)
            let merged = backend.mergeHeads(context, heads: heads)
            h = backend.add(h, block.o(merged))
            let normed2 = backend.rmsNorm(h, weight: block.norm2, eps: eps)
            let gated = backend.mul(backend.geluTanh(block.wi0(normed2)), block.wi1(normed2))
            h = backend.add(h, block.wo(gated))
        }
        return backend.rmsNorm(h, weight: finalNorm, eps: eps)
    }
}
