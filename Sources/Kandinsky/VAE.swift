import Foundation
import Tensor

/// `ResnetBlock` of `vqgan_blocks.py` (no time embedding): norm1, SiLU, conv1, norm2, SiLU, conv2, plus the
/// input (through `nin_shortcut` when the width changes). GroupNorm eps 1e-6.
struct VAEResnetBlock: Sendable {
    let norm1: GroupNorm, conv1: Conv2d, norm2: GroupNorm, conv2: Conv2d
    let shortcut: Conv2d?
    let backend: any ComputeBackend

    init(_ w: WeightFile, _ p: String, in inChannels: Int, out: Int) throws(KandinskyError) {
        norm1 = try GroupNorm(w, "\(p).norm1", channels: inChannels, eps: 1e-6)
        conv1 = try Conv2d(w, "\(p).conv1", in: inChannels, out: out, kernel: 3)
        norm2 = try GroupNorm(w, "\(p).norm2", channels: out, eps: 1e-6)
        conv2 = try Conv2d(w, "\(p).conv2", in: out, out: out, kernel: 3)
        shortcut = inChannels == out ? nil : try Conv2d(w, "\(p).nin_shortcut", in: inChannels, out: out, kernel: 1)
        backend = w.backend
    }

    /// With a shortcut, x's last use is its normalization, done in x's storage (at the 512×512 level, where the
    /// width changes 256 → 128, that is one 268 MB tensor fewer at the decoder's peak).
    func callAsFunction(_ x: consuming Tensor) -> Tensor {
        if let shortcut {
            let skip = shortcut(x)
            var h = conv2(norm2(conv1(norm1(consume x, silu: true)), silu: true))
            backend.add(skip, into: &h)
            return h
        }
        var h = conv2(norm2(conv1(norm1(copy x, silu: true)), silu: true))
        backend.add(x, into: &h)
        return h
    }
}

/// `AttnBlock` of `vqgan_blocks.py`: single-head self-attention over positions with separate 1×1 convs.
struct VAEAttentionBlock: Sendable {
    let norm: GroupNorm, q: Conv2d, k: Conv2d, v: Conv2d, projOut: Conv2d
    let backend: any ComputeBackend

    init(_ w: WeightFile, _ p: String, channels: Int) throws(KandinskyError) {
        norm = try GroupNorm(w, "\(p).norm", channels: channels, eps: 1e-6)
        q = try Conv2d(w, "\(p).q", in: channels, out: channels, kernel: 1)
        k = try Conv2d(w, "\(p).k", in: channels, out: channels, kernel: 1)
        v = try Conv2d(w, "\(p).v", in: channels, out: channels, kernel: 1)
        projOut = try Conv2d(w, "\(p).proj_out", in: channels, out: channels, kernel: 1)
        backend = w.backend
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        let (n, c) = (x.shape[0], x.shape[1])
        let t = x.count / (n * c)
        let h = norm(x)
        // softmax(qᵀk · c^-½) over keys, then v weighted: [N, C, T].
        let a = backend.attentionChannelsFirst(
            q: q(h).reshaped([n, c, t]), k: k(h).reshaped([n, c, t]), v: v(h).reshaped([n, c, t]),
            scale: 1 / Float(c).squareRoot())
        var out = projOut(a.reshaped(x.shape))
        backend.add(x, into: &out)
        return out
    }
}

/// `AutoencoderKL` (spec §5): the decoder turns latents into images, the encoder images into the posterior's
/// mean and log-variance.
public final class AutoencoderKL: @unchecked Sendable {
    struct Level: Sendable {
        var blocks: [VAEResnetBlock]
        var attentions: [VAEAttentionBlock]
        var resample: Conv2d?
    }

    public let config: VAEConfig
    /// The backend this autoencoder's weights live on and its passes compute on.
    public let backend: any ComputeBackend
    // Encoder
    let encoderConvIn: Conv2d
    let encoderLevels: [Level]
    let encoderMid: (VAEResnetBlock, VAEAttentionBlock, VAEResnetBlock)
    let encoderNormOut: GroupNorm, encoderConvOut: Conv2d
    let quantConv: Conv2d
    // Decoder
    let postQuantConv: Conv2d
    let decoderConvIn: Conv2d
    let decoderMid: (VAEResnetBlock, VAEAttentionBlock, VAEResnetBlock)
    /// Stored by level index; run from the last level to level 0.
    let decoderLevels: [Level]
    let decoderNormOut: GroupNorm, decoderConvOut: Conv2d

    public init(_ w: WeightFile, config: VAEConfig) throws(KandinskyError) {
        self.config = config
        backend = w.backend
        let dd = config.ddconfig
        let mults = dd.chMult
        guard !mults.isEmpty, dd.ch > 0, dd.numResBlocks > 0 else {
            throw KandinskyError(
                .modelDirectory, "ch, ch_mult and num_res_blocks must be positive", key: "vae.ddconfig")
        }
        let levels = mults.count

        // MARK: encoder
        encoderConvIn = try Conv2d(w, "encoder.conv_in", in: dd.inChannels, out: dd.ch, kernel: 3)
        var resolution = dd.resolution
        var blockIn = dd.ch
        var encoder: [Level] = []
        for i in 0..<levels {
            let inMult = i == 0 ? 1 : mults[i - 1]
            blockIn = dd.ch * inMult
            let blockOut = dd.ch * mults[i]
            var level = Level(blocks: [], attentions: [], resample: nil)
            for b in 0..<dd.numResBlocks {
                level.blocks.append(try VAEResnetBlock(w, "encoder.down.\(i).block.\(b)", in: blockIn, out: blockOut))
                blockIn = blockOut
                if dd.attnResolutions.contains(resolution) {
                    level.attentions.append(try VAEAttentionBlock(w, "encoder.down.\(i).attn.\(b)", channels: blockIn))
                }
            }
            if i != levels - 1 {
                // Zero pad right and bottom by one, then a stride-2 convolution without padding.
                level.resample = try Conv2d(
                    w, "encoder.down.\(i).downsample.conv", in: blockIn, out: blockIn, kernel: 3, stride: 2,
                    padding: Padding(top: 0, left: 0, bottom: 1, right: 1))
                resolution /= 2
            }
            encoder.append(level)
        }
        encoderLevels = encoder
        encoderMid = (
            try VAEResnetBlock(w, "encoder.mid.block_1", in: blockIn, out: blockIn),
            try VAEAttentionBlock(w, "encoder.mid.attn_1", channels: blockIn),
            try VAEResnetBlock(w, "encoder.mid.block_2", in: blockIn, out: blockIn)
        )
        encoderNormOut = try GroupNorm(w, "encoder.norm_out", channels: blockIn, eps: 1e-6)
        let moments = dd.doubleZ ? 2 * dd.zChannels : dd.zChannels
        encoderConvOut = try Conv2d(w, "encoder.conv_out", in: blockIn, out: moments, kernel: 3)
        quantConv = try Conv2d(w, "quant_conv", in: 2 * dd.zChannels, out: 2 * config.embedDim, kernel: 1)

        // MARK: decoder
        postQuantConv = try Conv2d(w, "post_quant_conv", in: config.embedDim, out: dd.zChannels, kernel: 1)
        blockIn = dd.ch * mults[levels - 1]
        resolution = dd.resolution >> (levels - 1)
        decoderConvIn = try Conv2d(w, "decoder.conv_in", in: dd.zChannels, out: blockIn, kernel: 3)
        decoderMid = (
            try VAEResnetBlock(w, "decoder.mid.block_1", in: blockIn, out: blockIn),
            try VAEAttentionBlock(w, "decoder.mid.attn_1", channels: blockIn),
            try VAEResnetBlock(w, "decoder.mid.block_2", in: blockIn, out: blockIn)
        )
        var decoder = [Level](repeating: Level(blocks: [], attentions: [], resample: nil), count: levels)
        for i in stride(from: levels - 1, through: 0, by: -1) {
            let blockOut = dd.ch * mults[i]
            for b in 0...dd.numResBlocks {
                decoder[i].blocks.append(
                    try VAEResnetBlock(w, "decoder.up.\(i).block.\(b)", in: blockIn, out: blockOut))
                blockIn = blockOut
                if dd.attnResolutions.contains(resolution) {
                    decoder[i].attentions.append(
                        try VAEAttentionBlock(w, "decoder.up.\(i).attn.\(b)", channels: blockIn))
                }
            }
            if i != 0 {
                decoder[i].resample = try Conv2d(
                    w, "decoder.up.\(i).upsample.conv", in: blockIn, out: blockIn, kernel: 3)
                resolution *= 2
            }
        }
        decoderLevels = decoder
        decoderNormOut = try GroupNorm(w, "decoder.norm_out", channels: blockIn, eps: 1e-6)
        decoderConvOut = try Conv2d(w, "decoder.conv_out", in: blockIn, out: dd.outCh, kernel: 3)
    }

    /// How many pixels one latent cell spans per side (8 for Kandinsky 2.0's autoencoder).
    public var downsamplingFactor: Int { 1 << (config.ddconfig.chMult.count - 1) }

    /// Decodes a latent in the UNet's scale: `decoder(post_quant_conv(z / scale))` → `[N, 3, 8h, 8w]` ≈ [-1, 1].
    ///
    /// The decoder's activations grow with the images decoded at once, so how many go through together is the
    /// backend's memory policy (`ComputeBackend.imagesPerPass`), given the largest activation one image needs.
    public func decode(_ z: Tensor) -> Tensor {
        let n = z.shape[0]
        let perPass = backend.imagesPerPass(
            activationBytesPerImage: largestDecoderActivationBytes(latentHeight: z.shape[2], latentWidth: z.shape[3]),
            images: n)
        if perPass >= n { return decodeImages(z) }
        let passes = stride(from: 0, to: n, by: perPass).map { start in
            decodeImages(backend.slice(z, axis: 0, start..<min(n, start + perPass)))
        }
        return backend.concat(passes, axis: 0)
    }

    /// The bytes of the decoder's largest float32 activation for one image of `latentHeight × latentWidth`: the most
    /// channels × pixels of any level's blocks or of its upsampled output (256 × 512² at Kandinsky 2.0's 64² latent).
    func largestDecoderActivationBytes(latentHeight: Int, latentWidth: Int) -> Int {
        let dd = config.ddconfig
        var largest = 0
        var pixels = latentHeight * latentWidth
        for i in stride(from: dd.chMult.count - 1, through: 0, by: -1) {
            let channels = dd.ch * dd.chMult[i]
            if i != 0 { pixels *= 4 }  // the level's upsampling convolution, at the next level's size
            largest = max(largest, channels * pixels)
        }
        return 4 * largest
    }

    /// `decode` for `[n, embed_dim, h, w]`, the images together.
    private func decodeImages(_ z: Tensor) -> Tensor {
        var h = postQuantConv(backend.scale(z, by: Float(1 / config.scale)))
        h = decoderConvIn(h)
        h = decoderMid.2(decoderMid.1(decoderMid.0(h)))
        for i in stride(from: decoderLevels.count - 1, through: 0, by: -1) {
            let level = decoderLevels[i]
            for (b, block) in level.blocks.enumerated() {
                h = block(consume h)
                if b < level.attentions.count { h = level.attentions[b](h) }
            }
            if let up = level.resample { h = up(upsampling: h) }
        }
        return decoderConvOut(decoderNormOut(h, silu: true))
    }

    /// Encodes images in [-1, 1] `[N, 3, H, W]` to the posterior's mean and log-variance (clamped to [-30, 20]),
    /// before latent scaling.
    public func encode(_ image: Tensor) -> (mean: Tensor, logvar: Tensor) {
        var h = encoderConvIn(image)
        for level in encoderLevels {
            for (b, block) in level.blocks.enumerated() {
                h = block(h)
                if b < level.attentions.count { h = level.attentions[b](h) }
            }
            if let down = level.resample { h = down(h) }
        }
        h = encoderMid.2(encoderMid.1(encoderMid.0(h)))
        let moments = quantConv(encoderConvOut(encoderNormOut(h, silu: true)))
        let half = moments.shape[1] / 2
        let mean = backend.slice(moments, axis: 1, 0..<half)
        let logvar = backend.clamp(backend.slice(moments, axis: 1, half..<(2 * half)), lower: -30, upper: 20)
        return (mean, logvar)
    }
}
