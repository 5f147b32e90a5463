import Foundation
import Tensor
import TestSupport
import Testing

@testable import Kandinsky

/// Schedules, noise and every sampler against the official code's outputs (`sampler.case`, `sampler_release.case`,
/// `pipeline.case`, `noise.case`, `schedule`).
///
/// Tolerances (fixtures README): whole samplers `max|ours − official| / std(official) ≤ 2e-3` (an 8-step sampler
/// moves by ~1e-4 of its spread when the weights move by one part in a million); images within 2 levels; torch
/// noise within 1e-6.
///
/// The model-driven cases run once per device of `TestDevice.available`, tolerances times the device's factor.
@Suite struct SamplerTests {

    func fixture(_ name: String) throws -> SafetensorsFile {
        try SafetensorsFile(path: Fixtures.kandinsky2("cases/\(name).safetensors"))
    }

    func expectMatch(
        _ ours: Tensor, _ official: Tensor, _ what: String, on device: TestDevice, tolerance: Double = 2e-3
    ) {
        let ours = device.host(ours)
        #expect(ours.shape == official.shape, "\(what): shape \(ours.shape) vs \(official.shape)")
        guard ours.shape == official.shape else { return }
        let error = ours.relativeMaxError(to: official)
        print("conformance: \(what) on \(device.name): max|ours − official| / std = \(error)")
        #expect(
            error <= tolerance * device.toleranceFactor,
            "\(what) on \(device.name): max|ours − official| / std = \(error)")
    }

    @Test func scheduleMatchesFloat64Tables() throws {
        let f = try fixture("schedule")
        let ours = DiffusionSchedule.linear()
        let betas = try f.doubles("betas")
        let cumulative = try f.doubles("alphas_cumprod")
        #expect(zip(ours.betas, betas).allSatisfy { abs($0 - $1) <= 1e-15 })
        #expect(zip(ours.alphasCumprod, cumulative).allSatisfy { abs($0 - $1) <= 1e-14 * max(1, $1) })
        // The spec's reference values and step sets.
        #expect(abs(ours.alphasCumprod[500] - 0.077796658365) < 1e-11)
        #expect(ours.ddimTimesteps(75).count == 77 && ours.ddimTimesteps(30).count == 31)
        #expect(ours.ddimTimesteps(50).prefix(3) == [1, 21, 41])
        #expect(Array(ours.spacedTimesteps(100).prefix(8)) == [0, 10, 20, 30, 40, 50, 61, 71])
        #expect(Array(ours.spacedTimesteps(50).prefix(5)) == [0, 20, 41, 61, 82])
        let spaced = SpacedSchedule(ours, timesteps: ours.spacedTimesteps(100))
        #expect(abs(spaced.betas[1] - 2.09363686e-3) < 1e-10 && abs(spaced.betas[99] - 0.18217953) < 1e-8)
        #expect(abs(spaced.posteriorLogVarianceClipped[0] - -9.25690308) < 1e-7)
        #expect(abs(spaced.posteriorLogVarianceClipped[2] - -6.55108021) < 1e-7)
    }

    @Test func torchCompatibleNoise() throws {
        let f = try fixture("noise.case")
        for name in f.names {
            let seed = UInt64(name.dropFirst("randn_seed".count))!
            let official = try f.tensor(name)
            var generator = TorchRandom(seed: seed)
            let ours = generator.randn(official.shape)
            let worst = zip(ours.scalars, official.scalars).map { abs($0 - $1) }.max() ?? 0
            #expect(worst <= 1e-6, "\(name): max difference \(worst)")
        }
    }

    /// The fixtures' text conditioning (conditional row, then the empty prompt's row) and guidance, with the ResBlocks'
    /// time modulations computed for the run's timesteps in advance, as `generate` does.
    func denoiser(
        _ f: SafetensorsFile, unet: Text2ImUNet, on device: TestDevice, inpaint: (image: Tensor, mask: Tensor)? = nil,
        timesteps: [Int]
    ) throws -> Denoiser {
        let text = unet.textConditioning(
            full1: device.upload(try f.tensor("full_emb1")), pooled1: device.upload(try f.tensor("pooled_emb1")),
            full2: device.upload(try f.tensor("full_emb2")))
        return KandinskyPipeline.guidedDenoiser(
            unet: unet, text: text, scales: [try f.tensor("guidance_scale").scalars[0]], inpaint: inpaint,
            timesteps: timesteps)
    }

    /// The release case's guidance scale, eta and thresholding percentile.
    func releaseSettings(_ f: SafetensorsFile) throws -> ImageSampling {
        ImageSampling(
            guidanceScale: try f.tensor("guidance_scale").scalars[0], eta: Double(try f.tensor("eta").scalars[0]),
            dynamicThreshold: Double(try f.tensor("dynamic_threshold_percentile").scalars[0]))
    }

    /// Replays the draws the official sampler made for the first (conditional) row: `[steps, rows, 4, h, w]`.
    func recordedDraws(_ f: SafetensorsFile, _ name: String, steps: Int) throws -> RecordedNoise {
        let recorded = try f.tensor(name)
        let draws = (0..<steps).map {
            Kernels.slice(
                Kernels.slice(recorded, axis: 0, $0..<($0 + 1)).reshaped(Array(recorded.shape.dropFirst())), axis: 0,
                0..<1)
        }
        return RecordedNoise(draws: [draws])
    }

    /// Forwards whose ResBlock modulations come from windows computed in advance (`TextConditioning.expect`) give
    /// exactly what plain forwards give, window after window, with one window per `window` distinct timesteps in order; a
    /// timestep the run did not announce is computed on its own.
    @Test(arguments: TestDevice.available)
    func timeModulationsComputedInWindowsMatchPlainForwards(device: TestDevice) throws {
        let f = try fixture("sampler.case")
        let unet = try device.tinyModel().unet().module
        let plain = unet.textConditioning(
            full1: device.upload(try f.tensor("full_emb1")), pooled1: device.upload(try f.tensor("pooled_emb1")),
            full2: device.upload(try f.tensor("full_emb2")))
        var windowed = plain
        let timesteps: [Float] = [981, 761, 541, 541, 321, 101]
        windowed.expect(timesteps: timesteps, window: 2)
        let x = Kernels.slice(try f.tensor("x_T"), axis: 0, 0..<1)
        let rows = device.upload(Kernels.concat([x, x], axis: 0))
        for t in timesteps + [500] {
            let ours = device.host(unet(rows, timesteps: [t, t], text: windowed))
            let reference = device.host(unet(rows, timesteps: [t, t], text: plain))
            #expect(ours.scalars == reference.scalars, "t = \(t): \(ours.relativeMaxError(to: reference))")
        }
        // 981 and 761, then 541 and 321 (541 twice in the list), then 101; 500 was not announced.
        #expect(windowed.steps?.windows == 3)
    }

    @Test(arguments: TestDevice.available, [Sampler.ddimLDM, .plms])
    func todaysSamplersMatchOfficial(device: TestDevice, kind: Sampler) throws {
        let f = try fixture("sampler.case")
        let unet = try device.tinyModel().unet().module
        let steps = try f.integers("steps").values[0]
        var run = SamplingRun(
            kind: kind, steps: steps, images: [ImageSampling(guidanceScale: 4, eta: 0, dynamicThreshold: nil)])
        run.backend = device.backend
        #expect(run.timesteps.reversed() == (try f.integers("ddim_timesteps").values))
        var noise = SeededNoise(seeds: [0])
        var calls = 0
        let denoise = try denoiser(f, unet: unet, on: device, timesteps: run.timesteps)
        run.progress = { _, _ in true }
        let x = device.upload(Kernels.slice(try f.tensor("x_T"), axis: 0, 0..<1))
        let out = try run.sample(
            from: x,
            denoise: {
                calls += 1; return denoise($0, $1)
            }, noise: &noise)
        expectMatch(out, try f.tensor(kind == .plms ? "plms_out" : "ddim_out"), kind.rawValue, on: device)
        #expect(calls == steps + (kind == .plms ? 1 : 0))
    }

    @Test(arguments: TestDevice.available, [Sampler.ddim, .pSampler])
    func releaseSamplersMatchOfficial(device: TestDevice, kind: Sampler) throws {
        let f = try fixture("sampler_release.case")
        let unet = try device.tinyModel().unet().module
        let prefix = kind == .ddim ? "release_ddim" : "release_p"
        let steps = try f.integers("steps").values[0]
        var run = SamplingRun(kind: kind, steps: steps, images: [try releaseSettings(f)])
        run.backend = device.backend
        #expect(run.timesteps.reversed() == (try f.integers("\(prefix)_timestep_map").values))
        var noise = try recordedDraws(f, "\(prefix)_step_noise", steps: steps)
        let x = device.upload(Kernels.slice(try f.tensor("x_T"), axis: 0, 0..<1))
        let out = try run.sample(
            from: x, denoise: try denoiser(f, unet: unet, on: device, timesteps: run.timesteps), noise: &noise)
        expectMatch(out, try f.tensor("\(prefix)_out"), prefix, on: device)
    }

    @Test(arguments: TestDevice.available, [Sampler.ddim, .pSampler])
    func releaseInpaintingMatchesOfficial(device: TestDevice, kind: Sampler) throws {
        let f = try fixture("sampler_release.case")
        let unet = try device.tinyModel().inpaintingUNet().module
        let prefix = kind == .ddim ? "inpaint_ddim" : "inpaint_p"
        let steps = try f.integers("steps").values[0]
        let mask = Inpainting.growMask(try f.tensor("inpaint_raw_mask"))
        #expect(mask.scalars == (try f.tensor("inpaint_mask").scalars), "prepare_mask growth")
        let known = device.upload(try f.tensor("inpaint_known_latent"))
        let onDevice = device.upload(mask)
        var run = SamplingRun(kind: kind, steps: steps, images: [try releaseSettings(f)])
        run.backend = device.backend
        run.known = KnownRegion(latent: known, mask: onDevice)
        var noise = try recordedDraws(f, "\(prefix)_step_noise", steps: steps)
        let x = device.upload(Kernels.slice(try f.tensor("x_T"), axis: 0, 0..<1))
        let out = try run.sample(
            from: x,
            denoise: try denoiser(f, unet: unet, on: device, inpaint: (known, onDevice), timesteps: run.timesteps),
            noise: &noise)
        expectMatch(out, try f.tensor("\(prefix)_out"), prefix, on: device)
    }

    @Test(arguments: TestDevice.available)
    func decodedImageMatchesOfficialPixels(device: TestDevice) throws {
        let sampler = try fixture("sampler.case")
        let f = try fixture("pipeline.case")
        let decoded = try device.tinyModel().vae().module.decode(device.upload(try sampler.tensor("ddim_out")))
        expectMatch(decoded, try f.tensor("decoded_float"), "decoded_float", on: device, tolerance: 1e-3)
        let ours = device.backend.rgb8(decoded, image: 0, width: 48, height: 32)
        let official = try f.integers("image_uint8").values
        let worst = zip(ours, official).map { abs(Int($0) - $1) }.max() ?? 255
        #expect(ours.count == official.count && worst <= 2, "max pixel difference \(worst)")
    }
}
