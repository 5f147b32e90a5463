import Foundation
import Tensor
import TestSupport
import Testing

@testable import Kandinsky

/// The whole text-to-image pipeline on the tiny fixture model: batching, seeds, parameters, img2img, inpainting.
@Suite struct PipelineTests {
    /// The tiny model's pipeline on `device` (each test runs once per device of `TestDevice.semantics`, in f32).
    func pipeline(_ device: TestDevice) throws -> KandinskyPipeline {
        try KandinskyPipeline(directory: try device.tinyModel())
    }

    func request(_ prompt: String, seed: UInt64, sampler: Sampler = .ddim) -> ImageRequest {
        ImageRequest(
            prompt: prompt, width: 64, height: 64, steps: 4, guidanceScale: 4, sampler: sampler, eta: 0.05, seed: seed)
    }

    /// Largest difference between two images' latents relative to the first's spread.
    func latentError(_ a: GeneratedImage, _ b: GeneratedImage, on device: TestDevice) -> Double {
        device.host(a.latent).relativeMaxError(to: device.host(b.latent))
    }

    /// Every sampler on the CPU; on another device the release's ddim (the samplers' arithmetic is checked per
    /// device against the fixtures by SamplerTests; this is about batching).
    @Test(
        arguments: TestDevice.semantics.flatMap { device in
            (device.name == "cpu" ? [Sampler.ddim, .pSampler, .dpmpp2M] : [.ddim]).map { (device, $0) }
        })
    func batchEqualsSingle(device: TestDevice, sampler: Sampler) throws {
        let pipeline = try pipeline(device)
        var a = request("красная машина", seed: 11, sampler: sampler)
        a.guidanceScale = 6
        var b = request("a blue circle", seed: 40, sampler: sampler)
        b.eta = 0.5
        b.negativePrompt = "red"
        b.numImages = 2
        let batched = try pipeline.generate([a, b])
        let aloneA = try pipeline.generate([a])[0]
        let aloneB = try pipeline.generate([b])[0]
        // Every image equals (within 1e-4 of the output's spread) the image its request gives alone.
        #expect(latentError(batched[0][0], aloneA[0], on: device) <= 1e-4 * device.toleranceFactor)
        #expect(latentError(batched[1][0], aloneB[0], on: device) <= 1e-4 * device.toleranceFactor)
        #expect(latentError(batched[1][1], aloneB[1], on: device) <= 1e-4 * device.toleranceFactor)
        #expect(batched[1].map(\.seed) == [40, 41])
        // Different seeds give different images.
        #expect(latentError(batched[1][0], batched[1][1], on: device) > 1e-2)
    }

    @Test(arguments: TestDevice.semantics)
    func sameRequestSameBytes(device: TestDevice) throws {
        let pipeline = try pipeline(device)
        let r = request("a red car", seed: 5)
        let one = try pipeline.generate([r])[0][0]
        let two = try pipeline.generate([r])[0][0]
        #expect(one.rgb == two.rgb && one.width == 64 && one.height == 64)
    }

    @Test(arguments: TestDevice.semantics)
    func cropsToTheRequestedSize(device: TestDevice) throws {
        let pipeline = try pipeline(device)
        var r = request("a red car", seed: 5)
        (r.width, r.height) = (100, 70)
        let image = try pipeline.generate([r])[0][0]
        #expect(image.width == 100 && image.height == 70 && image.rgb.count == 100 * 70 * 3)
        // The tiny autoencoder halves once (ch_mult [1, 2]): a 100×70 request needs a 56×40 latent, sides rounded
        // up to multiples of 8 cells; Kandinsky's (8×) gives the official ⌈H/64⌉·8.
        #expect(pipeline.vae.downsamplingFactor == 2)
        #expect(r.latentSize(factor: 2) == (40, 56))
        #expect(image.latent.shape == [4, 40, 56], "\(image.latent.shape)")
        #expect(r.latentSize(factor: 8) == (16, 16))
    }

    @Test(arguments: TestDevice.semantics)
    func invalidParametersFailBeforeCompute(device: TestDevice) throws {
        let pipeline = try pipeline(device)
        let base = request("x", seed: 1)
        var cases: [(ImageRequest, String)] = []
        var r = base
        r.width = 0
        cases.append((r, "width"))
        r = base
        r.height = 5000
        cases.append((r, "height"))
        r = base
        r.steps = 0
        cases.append((r, "steps"))
        r = base
        r.guidanceScale = .nan
        cases.append((r, "guidance_scale"))
        r = base
        r.initImage = RGBImage(width: 64, height: 64, pixels: Array(repeating: 128, count: 64 * 64 * 3))
        r.strength = 1.5
        cases.append((r, "strength"))
        r.strength = nil
        r.mask = Array(repeating: 1, count: 10)
        cases.append((r, "mask_image"))
        r = base
        r.initImage = RGBImage(width: 32, height: 64, pixels: Array(repeating: 0, count: 32 * 64 * 3))
        r.strength = 0.5
        cases.append((r, "init_image"))
        for (request, field) in cases {
            var steps = 0
            do {
                _ = try pipeline.generate([request]) { _, _ in
                    steps += 1
                    return true
                }
                Issue.record("\(field): accepted")
            } catch let error as KandinskyError {
                #expect(error.key == field, "\(error)")
            }
            #expect(steps == 0)
        }
        #expect(Sampler(rawValue: "euler") == nil)
    }

    /// Any seed the job decoder takes runs (it used to be refused at run time from 2³³ on), and, as with
    /// `torch.manual_seed`, the noise depends on its low 32 bits: seed 2⁴⁰ + 5 draws what seed 5 draws.
    @Test(arguments: TestDevice.semantics)
    func largeSeedsRunAndKeepTorchsLow32Bits(device: TestDevice) throws {
        let pipeline = try pipeline(device)
        let big = try pipeline.generate([request("x", seed: (1 << 40) + 5)])[0][0]
        let small = try pipeline.generate([request("x", seed: 5)])[0][0]
        #expect(big.seed == (1 << 40) + 5)
        #expect(big.rgb == small.rgb)
        var r = request("x", seed: UInt64(Int64.max))
        try r.validate()
        r.seed = UInt64(Int64.max) + 1
        #expect(throws: KandinskyError.self) { try r.validate() }
    }

    @Test(arguments: TestDevice.semantics)
    func cancellationStopsBetweenSteps(device: TestDevice) throws {
        let pipeline = try pipeline(device)
        var seen = 0
        do {
            _ = try pipeline.generate([request("x", seed: 1)]) { done, _ in
                seen = done
                return done < 2
            }
            Issue.record("not cancelled")
        } catch let cancelled as SamplingCancelled {
            #expect(cancelled.step == 2 && seen == 2)
        }
    }

    @Test(arguments: TestDevice.semantics)
    func imageToImageAndInpainting(device: TestDevice) throws {
        let pipeline = try pipeline(device)
        let source = try pipeline.generate([request("a red car", seed: 3)])[0][0]
        var img2img = request("a red car", seed: 9)
        img2img.initImage = RGBImage(width: 64, height: 64, pixels: source.rgb)
        img2img.strength = 1
        // Strength 1 runs no step: the result is the encoded image itself (the posterior sample, scaled).
        var steps = 0
        let same = try pipeline.generate([img2img]) { _, total in
            steps = total
            return true
        }[0][0]
        #expect(steps == 0)
        var noise = SeededNoise(seeds: [9])
        _ = noise.next(image: 0, shape: [1, 4, 32, 32])  // the starting noise comes first in the stream
        let encoded = try pipeline.encodeImages([img2img], latentSize: (32, 32), noise: &noise)
        #expect(device.host(same.latent).relativeMaxError(to: device.host(encoded).reshaped([4, 32, 32])) == 0)
        img2img.strength = 0.5
        _ = try pipeline.generate([img2img]) { _, total in
            steps = total
            return true
        }
        #expect(steps == 2, "half of 4 steps")

        // Inpainting needs the 9-channel UNet.
        let full = try ModelDirectory(path: Fixtures.kandinsky2("tiny-model"))
        let withInpainting = try KandinskyPipeline(directory: full)
        #expect(withInpainting.inpaintingUNet != nil)
        var inpaint = request("a blue circle", seed: 2)
        inpaint.initImage = img2img.initImage
        inpaint.mask = (0..<(64 * 64)).map { $0 % 64 < 32 ? 1 : 0 }
        let filled = try withInpainting.generate([inpaint])[0][0]
        #expect(filled.rgb.count == 64 * 64 * 3)
    }
}
