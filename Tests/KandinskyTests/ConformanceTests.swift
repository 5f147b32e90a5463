import Foundation
import Tensor
import TestSupport
import Testing

@testable import Kandinsky

/// Every component against the official PyTorch outputs in `Tests/Fixtures/kandinsky2/cases`.
///
/// Tolerance: `max|ours − official| / std(official) ≤ 1e-3`. Perturbing the weights by one part in a million moves
/// the official outputs by about 5e-5 (UNet) to 1e-4 of their spread (fixtures README), so 1e-3 leaves room for
/// float32 summation order while catching any wrong arithmetic.
///
/// Every model test runs once per device of `TestDevice.available`, its tolerance times the device's factor.
@Suite struct ConformanceTests {
    static let tolerance = 1e-3

    func fixture(_ name: String) throws -> SafetensorsFile {
        try SafetensorsFile(path: Fixtures.kandinsky2("cases/\(name).safetensors"))
    }

    func rows(_ f: SafetensorsFile, _ name: String) throws -> [[Int]] {
        let (shape, values) = try f.integers(name)
        return (0..<shape[0]).map { Array(values[($0 * shape[1])..<(($0 + 1) * shape[1])]) }
    }

    func expectMatch(_ ours: Tensor, _ official: Tensor, _ what: String, on device: TestDevice) {
        let ours = device.host(ours)
        #expect(ours.shape == official.shape, "\(what): shape \(ours.shape) vs \(official.shape)")
        guard ours.shape == official.shape else { return }
        let error = ours.relativeMaxError(to: official)
        print("conformance: \(what) on \(device.name): max|ours − official| / std = \(error)")
        let tolerance = Self.tolerance * device.toleranceFactor
        #expect(error <= tolerance, "\(what) on \(device.name): max|ours − official| / std = \(error)")
    }

    @Test func tokenizersMatchExactly() throws {
        struct Case: Decodable {
            struct Ids: Decodable {
                var input_ids: [[Int]]
                var attention_mask: [[Int]]
            }
            var prompts: [String]
            var text_encoder1: Ids
            var text_encoder2: Ids
        }
        let data = try Data(contentsOf: URL(fileURLWithPath: Fixtures.kandinsky2("cases/tokenizer.case.json")))
        let c = try JSONDecoder().decode(Case.self, from: data)
        let tokenizers = try ModelDirectory(path: Fixtures.kandinsky2("tiny-model")).tokenizers()
        let one = try tokenizers.encode1(c.prompts)
        let two = try tokenizers.encode2(c.prompts)
        for i in c.prompts.indices {
            #expect(one.ids[i] == c.text_encoder1.input_ids[i], "XLM-R ids of prompt \(i)")
            #expect(one.mask[i] == c.text_encoder1.attention_mask[i], "XLM-R mask of prompt \(i)")
            #expect(two.ids[i] == c.text_encoder2.input_ids[i], "mT5 ids of prompt \(i)")
            #expect(two.mask[i] == c.text_encoder2.attention_mask[i], "mT5 mask of prompt \(i)")
        }
        // Truncation: a long prompt keeps 75 (XLM-R) or 76 (mT5) pieces plus the special tokens.
        let long = String(repeating: "машина ", count: 100)
        let t1 = try tokenizers.encode1([long])
        let t2 = try tokenizers.encode2([long])
        #expect(t1.ids[0].count == 77 && t1.ids[0].first == 0 && t1.ids[0].last == 2 && !t1.mask[0].contains(0))
        #expect(t2.ids[0].count == 77 && t2.ids[0].last == 1 && !t2.mask[0].contains(0))
    }

    @Test(arguments: TestDevice.available)
    func textEncoder1MatchesOfficial(device: TestDevice) throws {
        let f = try fixture("text_encoder1.case")
        let encoder = try device.tinyModel().textEncoder1()
        #expect(encoder.unusedKeys.allSatisfy { $0.contains("pooler") })
        let (full, pooled) = try encoder.module(ids: try rows(f, "input_ids"), mask: try rows(f, "attention_mask"))
        expectMatch(full, try f.tensor("full_emb"), "full_emb", on: device)
        expectMatch(pooled, try f.tensor("pooled_emb"), "pooled_emb", on: device)
    }

    @Test(arguments: TestDevice.available)
    func textEncoder2MatchesOfficial(device: TestDevice) throws {
        let f = try fixture("text_encoder2.case")
        let encoder = try device.tinyModel().textEncoder2()
        #expect(encoder.unusedKeys.isEmpty, "unused: \(encoder.unusedKeys)")
        let out = try encoder.module(ids: try rows(f, "input_ids"), mask: try rows(f, "attention_mask"))
        expectMatch(out, try f.tensor("last_hidden_state"), "last_hidden_state", on: device)
    }

    @Test func relativePositionBucketsHitTheFloat32Edges() {
        // The spec's check: distances 16, 32 and 64 land in buckets 10, 12 and 14 (positive side adds 16).
        #expect(MT5Encoder.bucket(-16, buckets: 32, maxDistance: 128) == 10)
        #expect(MT5Encoder.bucket(-32, buckets: 32, maxDistance: 128) == 12)
        #expect(MT5Encoder.bucket(-64, buckets: 32, maxDistance: 128) == 14)
        #expect(MT5Encoder.bucket(64, buckets: 32, maxDistance: 128) == 30)
        #expect(MT5Encoder.bucket(5, buckets: 32, maxDistance: 128) == 21)
        #expect(MT5Encoder.bucket(-500, buckets: 32, maxDistance: 128) == 15)
    }

    @Test(arguments: TestDevice.available, [false, true])
    func unetMatchesOfficial(device: TestDevice, inpainting: Bool) throws {
        let f = try fixture(inpainting ? "unet_inpaint.case" : "unet.case")
        let model = try device.tinyModel()
        let unet = inpainting ? try model.inpaintingUNet() : try model.unet()
        #expect(unet.unusedKeys.isEmpty, "unused: \(unet.unusedKeys)")
        let text = unet.module.textConditioning(
            full1: device.upload(try f.tensor("full_emb1")), pooled1: device.upload(try f.tensor("pooled_emb1")),
            full2: device.upload(try f.tensor("full_emb2")))
        let timesteps = try f.tensor("timesteps").scalars
        let inpaint =
            inpainting
            ? (image: device.upload(try f.tensor("inpaint_image")), mask: device.upload(try f.tensor("inpaint_mask")))
            : nil
        let out = unet.module(device.upload(try f.tensor("x")), timesteps: timesteps, text: text, inpaint: inpaint)
        expectMatch(out, try f.tensor("out"), inpainting ? "inpainting UNet out" : "UNet out", on: device)
    }

    @Test(arguments: TestDevice.available)
    func vaeMatchesOfficial(device: TestDevice) throws {
        let f = try fixture("vae.case")
        let vae = try device.tinyModel().vae()
        #expect(vae.unusedKeys.isEmpty, "unused: \(vae.unusedKeys)")
        expectMatch(vae.module.decode(device.upload(try f.tensor("z"))), try f.tensor("decoded"), "decoded", on: device)
        let (mean, logvar) = vae.module.encode(device.upload(try f.tensor("image")))
        expectMatch(mean, try f.tensor("posterior_mean"), "posterior_mean", on: device)
        expectMatch(logvar, try f.tensor("posterior_logvar"), "posterior_logvar", on: device)
    }
}
