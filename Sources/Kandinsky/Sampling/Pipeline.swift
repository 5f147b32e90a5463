import Foundation
import Tensor

/// One generation as the pipeline runs it: the decided parameters, in the request vocabulary the queue, the
/// configuration and the command line share (`GenerationParameters`), and the input images they name, already read.
/// Parameters read through it (`request.width`); only the pixels are its own.
@dynamicMemberLookup
public struct ImageRequest: Sendable, Equatable {
    public var parameters: GenerationParameters
    /// img2img or inpainting: the starting image, exactly width × height (`parameters.initImage` names its file).
    /// img2img's `strength` is the share of the sampler's steps skipped, as the official code reads it: the sampler
    /// runs the last ⌊K·(1 − strength)⌋ of its K steps from the image noised to that step's level, so a larger
    /// strength stays closer to the image (1 returns it re-encoded). In (0, 1].
    public var initImage: RGBImage?
    /// Inpainting: per pixel of width × height, 1 = keep, 0 = regenerate.
    public var mask: [Float]?

    public init(_ parameters: GenerationParameters, initImage: RGBImage? = nil, mask: [Float]? = nil) {
        (self.parameters, self.initImage, self.mask) = (parameters, initImage, mask)
    }

    /// A text-to-image request with the configuration's defaults for what is not given (tests and tools).
    public init(
        prompt: String, negativePrompt: String = "", width: Int? = nil, height: Int? = nil, numImages: Int? = nil,
        steps: Int? = nil, guidanceScale: Double? = nil, sampler: Sampler? = nil, eta: Double? = nil,
        dynamicThreshold: Double?? = nil, seed: UInt64, defaults d: GenerationDefaults = GenerationDefaults()
    ) {
        parameters = GenerationParameters(
            prompt: prompt, negativePrompt: negativePrompt, width: width ?? d.width, height: height ?? d.height,
            numImages: numImages ?? d.numImages, steps: steps ?? d.steps,
            guidanceScale: guidanceScale ?? d.guidanceScale,
            sampler: sampler ?? d.sampler, eta: eta ?? d.eta, dynamicThreshold: dynamicThreshold ?? d.dynamicThreshold,
            seed: seed)
    }

    public subscript<T>(dynamicMember path: WritableKeyPath<GenerationParameters, T>) -> T {
        get { parameters[keyPath: path] }
        set { parameters[keyPath: path] = newValue }
    }

    /// The latent size for an autoencoder that downsamples by `factor`: sides rounded up to multiples of 8 latent
    /// cells, `⌈H/(8·f)⌉·8` (`get_new_h_w`: `⌈H/64⌉·8` for Kandinsky's f = 8); the decoded image is cropped back
    /// to H×W.
    public func latentSize(factor: Int = 8) -> (height: Int, width: Int) {
        let cell = 8 * factor
        return ((parameters.height + cell - 1) / cell * 8, (parameters.width + cell - 1) / cell * 8)
    }

    /// Requests that may share one UNet batch: same latent size, sampler, step count and mode (and, for img2img,
    /// the same number of steps to run).
    public func isCompatible(with other: ImageRequest) -> Bool {
        let (p, q) = (parameters, other.parameters)
        return latentSize() == other.latentSize() && p.sampler == q.sampler && p.steps == q.steps
            && mode == other.mode && p.strength == q.strength
    }

    /// Checks ranges before any compute.
    public func validate() throws(KandinskyError) {
        let (width, height, numImages, steps) = (
            parameters.width, parameters.height, parameters.numImages, parameters.steps
        )
        let (guidanceScale, eta, dynamicThreshold) = (
            parameters.guidanceScale, parameters.eta, parameters.dynamicThreshold
        )
        let (seed, strength) = (parameters.seed, parameters.strength)
        func bad(_ field: String, _ rule: String) -> KandinskyError {
            KandinskyError(.invalidParameter, "\(field) \(rule)", key: field)
        }
        // The one table of request limits (DESIGN §3), shared with the job decoder and the configuration.
        let limits = JobLimits()
        func range<T>(_ r: ClosedRange<T>) -> String { "between \(r.lowerBound) and \(r.upperBound)" }
        guard limits.size.contains(width) else { throw bad("width", "must be \(range(limits.size)) (got \(width))") }
        guard limits.size.contains(height) else {
            throw bad("height", "must be \(range(limits.size)) (got \(height))")
        }
        guard limits.numImages.contains(numImages) else {
            throw bad("num_images", "must be \(range(limits.numImages)) (got \(numImages))")
        }
        guard limits.steps.contains(steps) else { throw bad("steps", "must be \(range(limits.steps)) (got \(steps))") }
        guard guidanceScale.isFinite, limits.guidanceScale.contains(guidanceScale) else {
            throw bad("guidance_scale", "must be \(range(limits.guidanceScale)) (got \(guidanceScale))")
        }
        guard eta.isFinite, (0...1).contains(eta) else { throw bad("eta", "must be between 0 and 1 (got \(eta))") }
        if let p = dynamicThreshold, !(p > 0 && p <= 100) {
            throw bad("dynamic_threshold", "must be a percentile in (0, 100] or null (got \(p))")
        }
        guard limits.seed.contains(seed) else { throw bad("seed", "must be \(range(limits.seed)) (got \(seed))") }
        if let initImage, initImage.width != width || initImage.height != height {
            throw bad("init_image", "is \(initImage.width)×\(initImage.height) but the request is \(width)×\(height)")
        }
        if let strength {
            guard initImage != nil else { throw bad("strength", "needs an init_image") }
            guard strength > 0 && strength <= 1 else { throw bad("strength", "must be in (0, 1] (got \(strength))") }
        }
        if let mask {
            guard initImage != nil else { throw bad("mask_image", "needs an init_image") }
            guard mask.count == width * height else {
                throw bad("mask_image", "has \(mask.count) pixels but the request is \(width)×\(height)")
            }
            guard strength == nil else { throw bad("strength", "does not apply to inpainting") }
        }
        if initImage != nil && mask == nil && strength == nil { throw bad("strength", "is required with init_image") }
    }

    /// What kind of generation this is.
    public var mode: Mode { mask != nil ? .inpainting : initImage != nil ? .imageToImage : .textToImage }

    public enum Mode: String, Sendable { case textToImage, imageToImage, inpainting }
}

/// 8-bit RGB pixels, rows top to bottom.
public struct RGBImage: Sendable, Equatable {
    public var width: Int
    public var height: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height * 3, "\(pixels.count) bytes for \(width)×\(height) RGB")
        (self.width, self.height, self.pixels) = (width, height, pixels)
    }

    /// `[1, 3, H, W]` in [-1, 1] (`/127.5 − 1`), padded by repeating the last row and column up to `H × W`, made
    /// in host memory (to be uploaded).
    func tensor(paddedTo size: (height: Int, width: Int)) -> Tensor {
        var out = [Float](repeating: 0, count: 3 * size.height * size.width)
        for c in 0..<3 {
            for y in 0..<size.height {
                for x in 0..<size.width {
                    let v = pixels[(min(y, height - 1) * width + min(x, width - 1)) * 3 + c]
                    out[(c * size.height + y) * size.width + x] = Float(v) / 127.5 - 1
                }
            }
        }
        return Tensor(shape: [1, 3, size.height, size.width], values: out)
    }
}

/// One generated image.
public struct GeneratedImage: Sendable {
    public var seed: UInt64
    /// RGB, `height × width × 3`, rows top to bottom.
    public var rgb: [UInt8]
    public var width: Int
    public var height: Int
    /// The latent the sampler returned, `[4, h, w]`.
    public var latent: Tensor
}

/// Text to image with Kandinsky 2.0: tokenizers, both encoders, classifier-free guided sampling with the UNet,
/// VAE decoding, uint8 conversion as the official code.
public final class KandinskyPipeline: @unchecked Sendable {
    public let tokenizers: KandinskyTokenizers
    public let textEncoder1: MultilingualCLIP
    public let textEncoder2: MT5Encoder
    public let unet: Text2ImUNet
    public let vae: AutoencoderKL
    /// The 9-channel inpainting UNet, when the model directory has one.
    public let inpaintingUNet: Text2ImUNet?
    public let schedule: DiffusionSchedule
    public let modelName: String

    public init(
        tokenizers: KandinskyTokenizers, textEncoder1: MultilingualCLIP, textEncoder2: MT5Encoder, unet: Text2ImUNet,
        vae: AutoencoderKL, inpaintingUNet: Text2ImUNet? = nil, schedule: DiffusionSchedule,
        modelName: String = "kandinsky-2.0"
    ) {
        (self.tokenizers, self.textEncoder1, self.textEncoder2) = (tokenizers, textEncoder1, textEncoder2)
        (self.unet, self.vae, self.inpaintingUNet) = (unet, vae, inpaintingUNet)
        (self.schedule, self.modelName) = (schedule, modelName)
    }

    /// Loads every component of a model directory (the inpainting UNet when present).
    public convenience init(directory: ModelDirectory, modelName: String = "kandinsky-2.0") throws(KandinskyError) {
        self.init(
            tokenizers: try directory.tokenizers(), textEncoder1: try directory.textEncoder1().module,
            textEncoder2: try directory.textEncoder2().module, unet: try directory.unet().module,
            vae: try directory.vae().module,
            inpaintingUNet: directory.hasInpaintingUNet ? try directory.inpaintingUNet().module : nil,
            schedule: try DiffusionSchedule(directory.config.diffusion), modelName: modelName)
    }

    /// Text conditioning for rows `prompts` (conditional rows first, then unconditional ones).
    public func encode(_ prompts: [String]) throws(KandinskyError) -> TextConditioning {
        let one = try tokenizers.encode1(prompts)
        let two = try tokenizers.encode2(prompts)
        let (full1, pooled1) = try textEncoder1(ids: one.ids, mask: one.mask)
        let full2 = try textEncoder2(ids: two.ids, mask: two.mask)
        return unet.textConditioning(full1: full1, pooled1: pooled1, full2: full2)
    }

    /// The guided model function of `generate_img`: the UNet on `[x; x]` with conditional then unconditional
    /// text rows; `ε = ε_u + g·(ε_c − ε_u)` per image on channels 0..<4; v from the conditional rows, unguided.
    ///
    /// - Parameter timesteps: the run's timesteps (`SamplingRun.timesteps`), when known: the ResBlocks' time
    ///   modulations are then computed for several of them at once (`TextConditioning.expect(timesteps:)`).
    public static func guidedDenoiser(
        unet: Text2ImUNet, text: TextConditioning, scales: [Float], inpaint: (image: Tensor, mask: Tensor)? = nil,
        timesteps: [Int]? = nil
    ) -> Denoiser {
        var text = text
        if let timesteps { text.expect(timesteps: timesteps.map(Float.init)) }
        let backend = unet.backend
        // The inpainting inputs are the same at every step: masked and doubled once, here.
        let extra: (image: Tensor, mask: Tensor)? = inpaint.map { inpaint in
            let image = backend.multiplyByMask(inpaint.image, inpaint.mask)
            return (backend.concat([image, image], axis: 0), backend.concat([inpaint.mask, inpaint.mask], axis: 0))
        }
        return { x, t in
            let b = x.shape[0]
            precondition(
                text.batch == 2 * b && scales.count == b,
                "text rows \(text.batch) and scales \(scales.count) for \(b) images")
            let doubled = backend.concat([x, x], axis: 0)
            let out = unet(doubled, timesteps: Array(repeating: Float(t), count: 2 * b), text: text, inpaint: extra)
            return backend.guidanceCombine(out, scales: scales)
        }
    }

    /// Generates the images of compatible requests as one batch; returns them per request, in order.
    ///
    /// - Parameter progress: called after each step with (done, total); returning false cancels.
    public func generate(
        _ requests: [ImageRequest], progress: @escaping (Int, Int) -> Bool = { _, _ in true }
    ) throws -> [[GeneratedImage]] {
        guard let first = requests.first else { return [] }
        // Large activations are reused from step to step; an idle worker gives them back.
        defer { unet.backend.releaseCachedMemory() }
        for r in requests {
            try r.validate()
            guard r.isCompatible(with: first) else {
                throw KandinskyError(
                    .invalidParameter, "requests in one batch must share latent size, sampler and steps")
            }
        }
        let (h, w) = first.latentSize(factor: vae.downsamplingFactor)
        var prompts: [String] = []
        var negatives: [String] = []
        var images: [ImageSampling] = []
        var seeds: [UInt64] = []
        for r in requests {
            for k in 0..<r.numImages {
                prompts.append(r.prompt)
                negatives.append(r.negativePrompt)
                images.append(
                    ImageSampling(
                        guidanceScale: Float(r.guidanceScale), eta: r.eta, dynamicThreshold: r.dynamicThreshold))
                seeds.append(r.seed + UInt64(k))
            }
        }
        let mode = first.mode
        if mode == .inpainting && inpaintingUNet == nil {
            throw KandinskyError(
                .invalidParameter, "this model has no inpainting UNet (unet_inpaint.safetensors)", key: "mask_image")
        }
        let model = mode == .inpainting ? inpaintingUNet! : unet
        let backend = model.backend
        let one = try tokenizers.encode1(prompts + negatives)
        let two = try tokenizers.encode2(prompts + negatives)
        let (full1, pooled1) = try textEncoder1(ids: one.ids, mask: one.mask)
        let text = model.textConditioning(
            full1: full1, pooled1: pooled1, full2: try textEncoder2(ids: two.ids, mask: two.mask))

        // Each image's stream: first its starting noise, then (img2img, inpainting) the posterior sample and the
        // q_sample noise, then the sampler's draws.
        var noise = SeededNoise(seeds: seeds)
        var start = backend.concat(
            (0..<seeds.count).map { backend.upload(noise.next(image: $0, shape: [1, 4, h, w])) }, axis: 0)
        var run = SamplingRun(kind: first.sampler, steps: first.steps, images: images, schedule: schedule)
        run.progress = progress
        run.backend = backend
        var inpaint: (image: Tensor, mask: Tensor)?
        if mode != .textToImage {
            let encoded = try encodeImages(requests, latentSize: (h, w), noise: &noise)
            switch mode {
            case .imageToImage:
                let total = run.timesteps.count
                let remaining = Int(Double(total) * (1 - (first.strength ?? 1)))
                run.startStep = remaining
                if remaining == 0 {
                    start = encoded
                } else {
                    // q_sample to the level of the first step run: √ᾱ·z + √(1 − ᾱ)·n.
                    let t = run.timesteps.reversed()[remaining - 1]
                    let a = schedule.alphasCumprod[t]
                    let n = backend.concat(
                        (0..<seeds.count).map { backend.upload(noise.next(image: $0, shape: [1, 4, h, w])) }, axis: 0)
                    let (ca, cn) = (Float(a.squareRoot()), Float((1 - a).squareRoot()))
                    start = backend.weightedSum([encoded, n], [ca, cn])
                }
            default:
                let masks = backend.concat(
                    requests.flatMap { r in
                        Array(
                            repeating: backend.upload(
                                Inpainting.growMask(
                                    Inpainting.latentMask(
                                        r.mask!, width: r.width, height: r.height, latent: (h, w),
                                        factor: vae.downsamplingFactor))), count: r.numImages)
                    }, axis: 0)
                run.known = KnownRegion(latent: encoded, mask: masks)
                inpaint = (encoded, masks)
            }
        }
        let denoise = Self.guidedDenoiser(
            unet: model, text: text, scales: images.map(\.guidanceScale), inpaint: inpaint, timesteps: run.timesteps)
        let latents =
            (mode == .imageToImage && run.startStep == 0)
            ? start : try run.sample(from: start, denoise: denoise, noise: &noise)
        // The UNet's cached activations are not the decoder's sizes: give them back before its larger ones.
        backend.releaseCachedMemory()
        let decoded = vae.decode(latents)
        var out: [[GeneratedImage]] = []
        var index = 0
        for r in requests {
            var group: [GeneratedImage] = []
            for _ in 0..<r.numImages {
                let rgb = vae.backend.rgb8(decoded, image: index, width: r.width, height: r.height)
                group.append(
                    GeneratedImage(
                        seed: seeds[index], rgb: rgb, width: r.width, height: r.height,
                        latent: backend.slice(latents, axis: 0, index..<(index + 1)).reshaped([4, h, w])))
                index += 1
            }
            out.append(group)
        }
        return out
    }

    /// The init images of `requests` (one row per image), encoded and sampled from the posterior:
    /// `(mean + exp(½·logvar)·n)·scale`, with n from each image's stream.
    func encodeImages(
        _ requests: [ImageRequest], latentSize: (Int, Int), noise: inout SeededNoise
    ) throws(KandinskyError) -> Tensor {
        let (h, w) = latentSize
        var rows: [Tensor] = []
        var index = 0
        for r in requests {
            guard let image = r.initImage else {
                throw KandinskyError(.invalidParameter, "init_image missing", key: "init_image")
            }
            let f = vae.downsamplingFactor
            let (mean, logvar) = vae.encode(vae.backend.upload(image.tensor(paddedTo: (h * f, w * f))))
            guard mean.shape == [1, 4, h, w] else {
                throw KandinskyError(
                    .invalidParameter,
                    "the autoencoder maps \(r.width)×\(r.height) to \(mean.shape), not a \(h)×\(w) latent")
            }
            for _ in 0..<r.numImages {
                let n = vae.backend.upload(noise.next(image: index, shape: [1, 4, h, w]))
                rows.append(
                    vae.backend.gaussianSample(
                        mean: mean, logVariance: logvar, noise: n, scale: Float(vae.config.scale)))
                index += 1
            }
        }
        return vae.backend.concat(rows, axis: 0)
    }

    /// `process_images`: `(x + 1)·127.5`, rounded half to even, clamped to 0…255, HWC, cropped to width × height
    /// (`ComputeBackend.rgb8`).
    public static func toUInt8(
        _ decoded: Tensor, image: Int, width: Int, height: Int, on backend: any ComputeBackend = CPUBackend.shared
    ) -> [UInt8] {
        backend.rgb8(decoded, image: image, width: width, height: height)
    }
}
