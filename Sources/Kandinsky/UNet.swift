import Foundation
import Tensor

/// `ResBlock` of `unet.py` with `use_scale_shift_norm` and optional resampling (`resblock_updown`, spec §4.4).
struct ResBlock: Sendable {
    enum Resample: Sendable { case none, up, down }

    let inNorm: GroupNorm, inConv: Conv2d
    let embedding: Linear
    let outNorm: GroupNorm, outConv: Conv2d
    let skip: Conv2d?
    let resample: Resample
    let backend: any ComputeBackend

    init(
        _ w: WeightFile, _ p: String, channels: Int, out: Int, embedDim: Int, resample: Resample = .none
    ) throws(KandinskyError) {
        inNorm = try GroupNorm(w, "\(p).in_layers.0", channels: channels, eps: 1e-5)
        inConv = try Conv2d(w, "\(p).in_layers.2", in: channels, out: out, kernel: 3)
        embedding = try Linear(w, "\(p).emb_layers.1", in: embedDim, out: 2 * out)
        outNorm = try GroupNorm(w, "\(p).out_layers.0", channels: out, eps: 1e-5)
        outConv = try Conv2d(w, "\(p).out_layers.3", in: out, out: out, kernel: 3)
        skip = channels == out ? nil : try Conv2d(w, "\(p).skip_connection", in: channels, out: out, kernel: 1)
        self.resample = resample
        backend = w.backend
    }

    /// - Parameter activatedEmbedding: `SiLU(emb)`, `[N, time_embed_dim]` (the same for every block of a forward).
    func callAsFunction(_ x: Tensor, activatedEmbedding: Tensor) -> Tensor {
        self(x, modulation: embedding(activatedEmbedding))
    }

    /// - Parameter modulation: `emb_layers(SiLU(emb))`, `[N, 2 · out]`: scale, then shift.
    func callAsFunction(_ x: Tensor, modulation: Tensor) -> Tensor {
        var input = x
        let a = inNorm(x, silu: true)
        var h: Tensor
        switch resample {
        case .none:
            h = inConv(a)
        case .up:
            h = inConv(upsampling: a)
            input = backend.upsampleNearest2x(x)
        case .down:
            h = inConv(backend.avgPool2x2(a))
            input = backend.avgPool2x2(x)
        }
        // GN(h)·(1 + scale) + shift, then SiLU; scale and shift are the two halves of emb_layers(SiLU(emb)).
        h = outNorm(consume h, modulation: modulation, silu: true)
        h = outConv(h)
        backend.add(skip.map { $0(input) } ?? input, into: &h)
        return h
    }
}

/// `AttentionBlock` of `unet.py`: self-attention over image positions jointly with the text tokens
/// (`encoder_kv`), legacy per-head `[q|k|v]` channel order, text keys first, no padding mask (spec §4.4, §7.1).
struct AttentionBlock: Sendable {
    let norm: GroupNorm
    let qkv: Conv1x1
    let encoderKV: Conv1x1
    let projOut: Conv1x1
    let channels: Int, heads: Int
    let backend: any ComputeBackend

    init(_ w: WeightFile, _ p: String, channels: Int, heads: Int, encoderChannels: Int) throws(KandinskyError) {
        guard heads > 0, channels % heads == 0 else {
            throw KandinskyError(.modelDirectory, "\(channels) channels do not split into \(heads) heads", key: p)
        }
        norm = try GroupNorm(w, "\(p).norm", channels: channels, eps: 1e-5)
        qkv = try Conv1x1(w, "\(p).qkv", in: channels, out: 3 * channels)
        encoderKV = try Conv1x1(w, "\(p).encoder_kv", in: encoderChannels, out: 2 * channels)
        projOut = try Conv1x1(w, "\(p).proj_out", in: channels, out: channels)
        self.channels = channels
        self.heads = heads
        backend = w.backend
    }

    /// The text keys and values of this block, `[N·H, 2·ch, S]` (per head `[k | v]`): they depend only on the
    /// prompt, so a sampling run computes them once.
    func textKeysValues(_ xfOut: Tensor) -> Tensor {
        let (n, s) = (xfOut.shape[0], xfOut.shape[2])
        return encoderKV(xfOut).reshaped([n * heads, 2 * channels / heads, s])
    }

    func callAsFunction(_ x: Tensor, textKV: Tensor) -> Tensor {
        let (n, c) = (x.shape[0], x.shape[1])
        let t = x.count / (n * c)
        let ch = c / heads
        let flat = x.reshaped([n, c, t])
        let qkv = self.qkv(norm(flat)).reshaped([n * heads, 3 * ch, t])
        // softmax((q·ch^-¼)ᵀ(k·ch^-¼)) = softmax(qᵀk / √ch), one joint softmax over text and image keys.
        let a = backend.attentionChannelsFirst(qkv: qkv, textKV: textKV, scale: 1 / Float(ch).squareRoot())
        var out = projOut(a.reshaped([n, c, t]))
        backend.add(flat, into: &out)
        return out.reshaped(x.shape)
    }
}

/// `AttentionPooling` of `text_encoders.py` (the UNet's `proj2`): multi-head attention over all mT5 tokens (no
/// padding mask), output kept at sequence position 0 only.
struct AttentionPooling: Sendable {
    let q: Linear, k: Linear, v: Linear, out: Linear
    let heads: Int
    let backend: any ComputeBackend

    init(_ w: WeightFile, _ p: String, heads: Int, width: Int, outWidth: Int) throws(KandinskyError) {
        q = try Linear(w, "\(p).q_linear", in: width, out: width)
        k = try Linear(w, "\(p).k_linear", in: width, out: width)
        v = try Linear(w, "\(p).v_linear", in: width, out: width)
        out = try Linear(w, "\(p).out", in: width, out: outWidth)
        self.heads = heads
        backend = w.backend
    }

    /// `[N, L, width] → [N, outWidth]`.
    func callAsFunction(_ x: Tensor) -> Tensor {
        let (n, d) = (x.shape[0], x.shape[2])
        let context = backend.attention(
            q: backend.splitHeads(q(x), heads: heads), k: backend.splitHeads(k(x), heads: heads),
            v: backend.splitHeads(v(x), heads: heads), scale: 1 / Float(d / heads).squareRoot())
        let first = backend.slice(backend.mergeHeads(context, heads: heads), axis: 1, 0..<1).reshaped([n, d])
        return out(first)
    }
}

/// The text conditioning of one sampling run (`Text2ImUNet.get_text_emb`, spec §4.3), computed once.
public struct TextConditioning: Sendable {
    /// `ln_model2(proj(pooled_emb1)) + ln_model3(proj2(full_emb2))`, `[N, time_embed_dim]`.
    public var pooled: Tensor
    /// `ln_model1([to_model_dim(full_emb1); to_model_dim2(full_emb2)])` transposed, `[N, model_dim, 154]`.
    public var tokens: Tensor
    /// Every attention block's text keys and values, in traversal order.
    var keysValues: [Tensor]
    /// The ResBlocks' time modulations for the timesteps of a sampling run (`expect(timesteps:)`), or nil.
    var steps: StepModulations?

    public var batch: Int { pooled.shape[0] }

    /// Tells the UNet which timesteps this run's forwards will take (one per forward, the same for every row), so
    /// that it computes every ResBlock's `emb_layers(SiLU(emb))` for `window` of them at once, in one pass over
    /// those layers' weights (440 MB for the full-size UNet) instead of one per forward. A forward at a timestep not
    /// in the list computes its own.
    public mutating func expect(timesteps: [Float], window: Int = StepModulations.defaultWindow) {
        steps = StepModulations(timesteps: timesteps, window: window)
    }
}

/// Every ResBlock's `emb_layers(SiLU(emb))` for a window of the timesteps a sampling run visits, computed together on
/// the first forward that needs one of them and dropped when the run moves past them.
public final class StepModulations: @unchecked Sendable {
    /// Timesteps per window: 25 keep 25 · 70 K floats per row (14 MB for two rows of the full-size UNet).
    public static let defaultWindow = 25
    let timesteps: [Float]
    let window: Int
    private let lock = NSLock()
    /// The current window: per timestep, per ResBlock, `[N, 2 · out]`.
    private var cached: [Float: [Tensor]] = [:]
    /// Windows computed so far (tests check that a run computes as few as it should).
    private(set) var windows = 0

    init(timesteps: [Float], window: Int) {
        precondition(window >= 1, "window of \(window) timesteps")
        (self.timesteps, self.window) = (timesteps, window)
    }

    /// The modulations at `t`: from the current window, or from a new one computed by `compute` (from t's place in
    /// the list onwards); nil when t is not in the list.
    func modulations(at t: Float, compute: ([Float]) -> [[Tensor]]) -> [Tensor]? {
        lock.lock()
        defer { lock.unlock() }
        if let hit = cached[t] { return hit }
        guard let first = timesteps.firstIndex(of: t) else { return nil }
        var upcoming: [Float] = []
        for u in timesteps[first...] where !upcoming.contains(u) {
            upcoming.append(u)
            if upcoming.count == window { break }
        }
        cached = [:]
        for (u, table) in zip(upcoming, compute(upcoming)) { cached[u] = table }
        windows += 1
        return cached[t]
    }
}

/// `Text2ImUNet` (and `InpaintText2ImUNet`) of Kandinsky 2.0 (spec §4).
public final class Text2ImUNet: @unchecked Sendable {
    enum Layer: Sendable {
        case conv(Conv2d)
        case res(ResBlock, index: Int)
        case attention(AttentionBlock, index: Int)
    }

    public let config: UNetConfig
    public let inputChannels: Int
    /// The backend this UNet's weights live on and its forwards compute on.
    public let backend: any ComputeBackend
    let inputBlocks: [[Layer]]
    let middleBlock: [Layer]
    let outputBlocks: [[Layer]]
    let timeEmbed0: Linear, timeEmbed2: Linear
    let outNorm: GroupNorm, outConv: Conv2d
    let toModelDim: Linear, toModelDim2: Linear, proj: Linear
    let proj2: AttentionPooling
    let lnModel1: LayerNorm, lnModel2: LayerNorm, lnModel3: LayerNorm
    let attentionBlocks: [AttentionBlock]
    /// Every ResBlock, in traversal order (the index of `Layer.res`).
    let resBlocks: [ResBlock]

    /// Width of the mT5 hidden state, hard-coded in the official module.
    public static let mt5Width = 512

    /// Builds the UNet from its weights, taking every tensor strictly.
    public init(_ w: WeightFile, config: UNetConfig) throws(KandinskyError) {
        self.config = config
        backend = w.backend
        let mc = config.numChannels
        let mults = try config.channelMultipliers
        let attentionAt = try config.attentionFactors
        let embedDim = 4 * mc
        let encoderChannels = config.modelDim
        inputChannels = config.inpainting ? 2 * config.inChannels + 1 : config.inChannels
        var attention: [AttentionBlock] = []
        var res: [ResBlock] = []

        func resBlock(
            _ p: String, _ channels: Int, _ out: Int, resample: ResBlock.Resample = .none
        ) throws(KandinskyError) -> Layer {
            res.append(try ResBlock(w, p, channels: channels, out: out, embedDim: embedDim, resample: resample))
            return .res(res[res.count - 1], index: res.count - 1)
        }

        func attentionBlock(_ p: String, _ ch: Int, upsampling: Bool) throws(KandinskyError) -> Layer {
            let block = try AttentionBlock(
                w, p, channels: ch, heads: config.heads(channels: ch, upsampling: upsampling),
                encoderChannels: encoderChannels)
            attention.append(block)
            return .attention(block, index: attention.count - 1)
        }

        // MARK: input blocks
        var ch = mults[0] * mc
        var input: [[Layer]] = [[.conv(try Conv2d(w, "input_blocks.0.0", in: inputChannels, out: ch, kernel: 3))]]
        var skipChannels = [ch]
        var ds = 1
        for (level, mult) in mults.enumerated() {
            for _ in 0..<config.numResBlocks {
                let p = "input_blocks.\(input.count)"
                var layers: [Layer] = [
                    try resBlock("\(p).0", ch, mult * mc)
                ]
                ch = mult * mc
                if attentionAt.contains(ds) { layers.append(try attentionBlock("\(p).1", ch, upsampling: false)) }
                input.append(layers)
                skipChannels.append(ch)
            }
            if level != mults.count - 1 {
                let p = "input_blocks.\(input.count)"
                input.append([
                    try resBlock("\(p).0", ch, ch, resample: .down)
                ])
                skipChannels.append(ch)
                ds *= 2
            }
        }
        inputBlocks = input

        // MARK: middle
        middleBlock = [
            try resBlock("middle_block.0", ch, ch),
            try attentionBlock("middle_block.1", ch, upsampling: false),
            try resBlock("middle_block.2", ch, ch),
        ]

        // MARK: output blocks
        var output: [[Layer]] = []
        for (level, mult) in mults.enumerated().reversed() {
            for i in 0...config.numResBlocks {
                let p = "output_blocks.\(output.count)"
                let skip = skipChannels.removeLast()
                var layers: [Layer] = [
                    try resBlock("\(p).0", ch + skip, mc * mult)
                ]
                ch = mc * mult
                if attentionAt.contains(ds) { layers.append(try attentionBlock("\(p).1", ch, upsampling: true)) }
                if level > 0 && i == config.numResBlocks {
                    layers.append(try resBlock("\(p).\(layers.count)", ch, ch, resample: .up))
                    ds /= 2
                }
                output.append(layers)
            }
        }
        outputBlocks = output
        attentionBlocks = attention
        resBlocks = res

        timeEmbed0 = try Linear(w, "time_embed.0", in: mc, out: embedDim)
        timeEmbed2 = try Linear(w, "time_embed.2", in: embedDim, out: embedDim)
        outNorm = try GroupNorm(w, "out.0", channels: ch, eps: 1e-5)
        outConv = try Conv2d(w, "out.2", in: ch, out: config.outChannels, kernel: 3)

        // MARK: text conditioning
        toModelDim = try Linear(w, "to_model_dim", in: config.textEncoderInDim1, out: config.modelDim)
        toModelDim2 = try Linear(w, "to_model_dim2", in: Self.mt5Width, out: config.modelDim)
        proj = try Linear(w, "proj", in: config.textEncoderInDim2, out: embedDim)
        proj2 = try AttentionPooling(w, "proj2", heads: 8, width: Self.mt5Width, outWidth: embedDim)
        lnModel1 = try LayerNorm(w, "ln_model1", width: config.modelDim, eps: 1e-5)
        lnModel2 = try LayerNorm(w, "ln_model2", width: embedDim, eps: 1e-5)
        lnModel3 = try LayerNorm(w, "ln_model3", width: embedDim, eps: 1e-5)
    }

    /// The text part of the forward pass, to be computed once per sampling run.
    ///
    /// - Parameters:
    ///   - full1: XLM-R last hidden state `[N, 77, text_encoder_in_dim1]`.
    ///   - pooled1: M-CLIP pooled embedding `[N, text_encoder_in_dim2]`.
    ///   - full2: mT5 last hidden state `[N, 77, 512]`.
    public func textConditioning(full1: Tensor, pooled1: Tensor, full2: Tensor) -> TextConditioning {
        let n = full1.shape[0]
        precondition(pooled1.shape == [n, config.textEncoderInDim2], "pooled_emb1 \(pooled1.shape)")
        precondition(full1.rank == 3 && full1.shape[2] == config.textEncoderInDim1, "full_emb1 \(full1.shape)")
        precondition(
            full2.rank == 3 && full2.shape[0] == n && full2.shape[2] == Self.mt5Width, "full_emb2 \(full2.shape)")
        let pooled = backend.add(lnModel2(proj(pooled1)), lnModel3(proj2(full2)))
        let tokens = lnModel1(backend.concat([toModelDim(full1), toModelDim2(full2)], axis: 1))
        let xfOut = backend.transposeLast2(tokens)
        return TextConditioning(
            pooled: pooled, tokens: xfOut, keysValues: attentionBlocks.map { $0.textKeysValues(xfOut) })
    }

    /// Sinusoidal timestep embedding (`nn.py:timestep_embedding`): cos first, then sin, float32, `[T, dim]` row-major.
    /// A small table made on the host and uploaded.
    static func timestepEmbedding(_ timesteps: [Float], dim: Int) -> [Float] {
        let half = dim / 2
        var out = [Float](repeating: 0, count: timesteps.count * dim)
        let logPeriod = Float(-log(10000.0))
        for (row, t) in timesteps.enumerated() {
            for i in 0..<half {
                let freq = expf(logPeriod * Float(i) / Float(half))
                let arg = t * freq
                out[row * dim + i] = cosf(arg)
                out[row * dim + half + i] = sinf(arg)
            }
        }
        return out
    }

    /// Every ResBlock's `emb_layers(SiLU(emb))` for several forwards, each given its N rows' timesteps: per forward,
    /// per ResBlock, `[N, 2 · out]`. All of them in one pass over each block's weights (`[S · N, time_embed_dim]`
    /// rows at once), each row computed the same, bit for bit, whatever the rows around it: a forward gives the same
    /// with or without `TextConditioning.expect`, and a batched image stays the image its request gives alone.
    public func modulationTable(_ forwards: [[Float]], text: TextConditioning) -> [[Tensor]] {
        let n = text.batch
        precondition(forwards.allSatisfy { $0.count == n }, "timesteps for other than \(n) rows")
        let count = forwards.count
        let timesteps = forwards.flatMap { $0 }
        let temb = backend.upload(
            Self.timestepEmbedding(timesteps, dim: config.numChannels), shape: [timesteps.count, config.numChannels])
        let pooled = count == 1 ? text.pooled : backend.concat(Array(repeating: text.pooled, count: count), axis: 0)
        let hidden = backend.silu(timeEmbed0(temb, rowIndependent: true))
        let activated = backend.silu(backend.add(timeEmbed2(hidden, rowIndependent: true), pooled))
        let all = resBlocks.map { $0.embedding(activated, rowIndependent: true) }
        if count == 1 { return [all] }
        return (0..<count).map { s in all.map { backend.slice($0, axis: 0, s * n..<(s + 1) * n) } }
    }

    /// The freed activations a forward keeps for the next one (`ComputeBackend.keepFreedActivations`): 192 MiB a row at a
    /// 64×64 latent, in proportion to the plane. Below the default 512 MiB up to 2 rows; at 8 rows (4 images a guided
    /// step) 512 MiB and 1 GiB held too few, and every step page-faulted and zeroed its activations again, about a
    /// tenth slower than with 1.5 GiB; 2 GiB was no faster, for a higher peak resident memory.
    static func reusedActivationBytes(rows: Int, height: Int, width: Int) -> Int {
        (192 << 20) * rows * height * width / (64 * 64)
    }

    /// One forward pass: ε (channels 0..<4) and the variance interpolation value (4..<8).
    ///
    /// - Parameters:
    ///   - x: `[N, in_channels, h, w]`.
    ///   - timesteps: N timesteps on the original 0…999 scale.
    ///   - text: the conditioning from `textConditioning` for these N rows.
    ///   - inpaint: for the inpainting UNet, the masked known latent `[N, 4, h, w]` and the mask `[N, 1, h, w]`.
    public func callAsFunction(
        _ x: Tensor, timesteps: [Float], text: TextConditioning, inpaint: (image: Tensor, mask: Tensor)? = nil
    ) -> Tensor {
        let n = x.shape[0]
        precondition(
            timesteps.count == n && text.batch == n,
            "batch of \(n) with \(timesteps.count) timesteps, text for \(text.batch)")
        var h = x
        if let inpaint {
            precondition(config.inpainting, "inpainting inputs given to a text-to-image UNet")
            h = backend.concat([x, inpaint.image, inpaint.mask], axis: 1)
        }
        precondition(h.shape[1] == inputChannels, "UNet input has \(h.shape[1]) channels, expected \(inputChannels)")
        backend.keepFreedActivations(
            upTo: Self.reusedActivationBytes(rows: n, height: x.shape[2], width: x.shape[3]))

        let modulations: [Tensor]
        if let steps = text.steps, let t = timesteps.first, timesteps.allSatisfy({ $0 == t }),
            let table = steps.modulations(
                at: t, compute: { modulationTable($0.map { Array(repeating: $0, count: n) }, text: text) })
        {
            modulations = table
        } else {
            modulations = modulationTable([timesteps], text: text)[0]
        }

        func run(_ layers: [Layer], _ h: Tensor) -> Tensor {
            var h = h
            for layer in layers {
                switch layer {
                case .conv(let conv): h = conv(h)
                case .res(let block, let index): h = block(h, modulation: modulations[index])
                case .attention(let block, let index): h = block(h, textKV: text.keysValues[index])
                }
            }
            return h
        }

        var skips: [Tensor] = []
        for block in inputBlocks {
            h = run(block, h)
            skips.append(h)
        }
        h = run(middleBlock, h)
        for block in outputBlocks {
            // The current activations first, then the skip: GroupNorm groups straddle the seam.
            h = run(block, backend.concat([h, skips.removeLast()], axis: 1))
        }
        return outConv(outNorm(h, silu: true))
    }
}
