import ArgumentParser
import Foundation
import JSON
import Kandinsky
import Tensor
import Worker

/// `forward COMPONENT`: runs one component on tensors from a safetensors file, with the fixtures' tensor names.
struct Forward: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run one model component on inputs from a safetensors file (tensor names as the fixtures).",
        discussion: """
            tokenize:       --text T (repeated) → JSON {"text_encoder1": {input_ids, attention_mask}, "text_encoder2": …}
            text-encoder1:  input_ids, attention_mask → full_emb, pooled_emb
            text-encoder2:  input_ids, attention_mask → last_hidden_state
            unet:           x, timesteps, full_emb1, pooled_emb1, full_emb2 → out
            unet-inpaint:   the same plus inpaint_image, inpaint_mask → out
            vae-decode:     z → decoded
            vae-encode:     image → posterior_mean, posterior_logvar
            sample:         x_T, full_emb1, pooled_emb1, full_emb2 (conditional rows, then unconditional), optional \
            step_noise [steps, rows, 4, h, w] to replay draws, optional init_latent + mask (inpainting, latent size, \
            1 = keep, already grown) → latent
            """)

    enum Component: String, ExpressibleByArgument, CaseIterable {
        case tokenize, textEncoder1 = "text-encoder1", textEncoder2 = "text-encoder2", unet, unetInpaint =
            "unet-inpaint"
        case vaeDecode = "vae-decode", vaeEncode = "vae-encode", sample
    }

    @Argument(help: "tokenize, text-encoder1, text-encoder2, unet, unet-inpaint, vae-decode, vae-encode or sample.")
    var component: Component

    @Option(help: "The model directory.")
    var model: String

    @OptionGroup var placement: DeviceOptions

    @Option(help: "Input tensors (safetensors).")
    var inputs: String?

    @Option(help: "Where to write the outputs (safetensors; JSON for tokenize, or stdout when omitted).")
    var output: String?

    @Option(name: .customLong("text"), help: "A prompt to tokenize (repeat for several).")
    var texts: [String] = []

    @Option(help: "sample: ddim, p_sampler, ddim_ldm, plms or dpmpp_2m.") var sampler = "ddim"
    @Option(help: "sample: sampling steps.") var steps = 50
    @Option(help: "sample: guidance scale.") var guidanceScale: Float = 7
    @Option(help: "sample: eta (ddim).") var eta: Double = 0
    @Option(help: "sample: dynamic thresholding percentile, or none.") var dynamicThreshold = "99.5"

    func validate() throws {
        if component == .tokenize {
            guard !texts.isEmpty else { throw ValidationError("tokenize needs at least one --text") }
        } else {
            guard inputs != nil else { throw ValidationError("--inputs is required for \(component.rawValue)") }
            guard output != nil else { throw ValidationError("--output is required for \(component.rawValue)") }
        }
    }

    func run() throws {
        _ = try placement.select()
        var directory = try ModelDirectory(path: model)
        try placement.place(&directory)
        if component == .tokenize {
            try tokenize(directory)
            return
        }
        let input = try SafetensorsFile(path: inputs!)
        func rows(_ name: String) throws -> [[Int]] {
            let (shape, values) = try input.integers(name)
            guard shape.count == 2 else { throw ValidationError("\(name) must be [N, L], got \(shape)") }
            return (0..<shape[0]).map { Array(values[($0 * shape[1])..<(($0 + 1) * shape[1])]) }
        }
        let backend = directory.backend
        /// An input tensor on the model's device.
        func tensor(_ name: String) throws -> Tensor { backend.upload(try input.tensor(name)) }
        var out: [String: Tensor] = [:]
        switch component {
        case .tokenize: return
        case .textEncoder1:
            let (full, pooled) = try directory.textEncoder1().module(
                ids: try rows("input_ids"), mask: try rows("attention_mask"))
            out = ["full_emb": full, "pooled_emb": pooled]
        case .textEncoder2:
            out["last_hidden_state"] = try directory.textEncoder2().module(
                ids: try rows("input_ids"), mask: try rows("attention_mask"))
        case .unet, .unetInpaint:
            let inpainting = component == .unetInpaint
            let unet = inpainting ? try directory.inpaintingUNet() : try directory.unet()
            let x = try tensor("x")
            let text = unet.module.textConditioning(
                full1: try tensor("full_emb1"), pooled1: try tensor("pooled_emb1"), full2: try tensor("full_emb2"))
            let inpaint = inpainting ? (image: try tensor("inpaint_image"), mask: try tensor("inpaint_mask")) : nil
            out["out"] = unet.module(x, timesteps: try input.tensor("timesteps").scalars, text: text, inpaint: inpaint)
        case .vaeDecode:
            out["decoded"] = try directory.vae().module.decode(try tensor("z"))
        case .vaeEncode:
            let (mean, logvar) = try directory.vae().module.encode(try tensor("image"))
            out = ["posterior_mean": mean, "posterior_logvar": logvar]
        case .sample:
            out["latent"] = try sample(directory, input)
        }
        // Results come back to host memory to be written.
        let host = out.mapValues { t in t.device == .cpu ? t : Tensor(shape: t.shape, values: backend.download(t)) }
        try SafetensorsWriter.write(host.mapValues { .float($0, .f32) }, to: output!)
        print("wrote \(out.keys.sorted().joined(separator: ", ")) to \(output!)")
    }

    /// The sampler alone on given embeddings and starting noise, replaying recorded draws when given.
    func sample(_ directory: ModelDirectory, _ input: SafetensorsFile) throws -> Tensor {
        guard let kind = Sampler(rawValue: sampler) else { throw ValidationError("unknown sampler \(sampler)") }
        let threshold: Double? = dynamicThreshold == "none" ? nil : Double(dynamicThreshold)
        if dynamicThreshold != "none" && threshold == nil {
            throw ValidationError("--dynamic-threshold must be a number or none")
        }
        let inpainting = input.entries["init_latent"] != nil
        let unet = inpainting ? try directory.inpaintingUNet().module : try directory.unet().module
        let backend = directory.backend
        let full1 = backend.upload(try input.tensor("full_emb1"))
        let rows = full1.shape[0]
        guard rows % 2 == 0 else {
            throw ValidationError("embeddings need conditional and unconditional rows (an even count)")
        }
        let b = rows / 2
        let text = unet.textConditioning(
            full1: full1, pooled1: backend.upload(try input.tensor("pooled_emb1")),
            full2: backend.upload(try input.tensor("full_emb2")))
        let xT = try input.tensor("x_T")
        guard xT.rank == 4, xT.shape[0] >= b else {
            throw ValidationError("x_T must be [≥\(b), 4, h, w], got \(xT.shape)")
        }
        let images = Array(
            repeating: ImageSampling(guidanceScale: guidanceScale, eta: eta, dynamicThreshold: threshold), count: b)
        var run = SamplingRun(
            kind: kind, steps: steps, images: images, schedule: try DiffusionSchedule(directory.config.diffusion))
        run.backend = backend
        var inpaint: (image: Tensor, mask: Tensor)?
        if inpainting {
            let known = backend.upload(try input.tensor("init_latent"))
            let mask = backend.upload(try input.tensor("mask"))
            run.known = KnownRegion(latent: known, mask: mask)
            inpaint = (known, mask)
        }
        let denoise = KandinskyPipeline.guidedDenoiser(
            unet: unet, text: text, scales: images.map(\.guidanceScale), inpaint: inpaint, timesteps: run.timesteps)
        let x = backend.upload(Kernels.slice(xT, axis: 0, 0..<b))
        if input.entries["step_noise"] != nil {
            let recorded = try input.tensor("step_noise")
            let draws = (0..<b).map { i in
                (0..<recorded.shape[0]).map { k in
                    Kernels.slice(
                        Kernels.slice(recorded, axis: 0, k..<(k + 1)).reshaped(Array(recorded.shape.dropFirst())),
                        axis: 0, i..<(i + 1))
                }
            }
            var noise = RecordedNoise(draws: draws)
            return try run.sample(from: x, denoise: denoise, noise: &noise)
        }
        var noise = SeededNoise(seeds: (0..<b).map { UInt64($0) })
        return try run.sample(from: x, denoise: denoise, noise: &noise)
    }

    func tokenize(_ directory: ModelDirectory) throws {
        let tokenizers = try directory.tokenizers()
        let one = try tokenizers.encode1(texts)
        let two = try tokenizers.encode2(texts)
        func rows(_ table: [[Int]]) -> JSONValue { .array(table.map { .array($0.map { .integer($0) }) }) }
        let text = JSONValue.object([
            "text_encoder1": .object(["input_ids": rows(one.ids), "attention_mask": rows(one.mask)]),
            "text_encoder2": .object(["input_ids": rows(two.ids), "attention_mask": rows(two.mask)]),
        ]).serialized
        if let output {
            try Data(text.utf8).write(to: URL(fileURLWithPath: output), options: .atomic)
        } else {
            print(text)
        }
    }
}
