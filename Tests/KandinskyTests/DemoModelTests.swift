import Foundation
import TestSupport
import Testing

@testable import Kandinsky

/// The embedded shapes demo model draws what its captions ask for: a regression anywhere in the pipeline
/// (tokenizers, encoders, UNet, sampler, VAE) shows up as wrong colours or shapes.
@Suite struct DemoModelTests {
    /// Generates `captions` with the model's defaults (caption k at `seedBase + k`) and counts the colours and shapes
    /// the pixel rule finds right.
    func score(_ captions: [ShapesDemo.Caption], seedBase: UInt64) throws -> (colours: Int, shapes: Int) {
        let directory = try ModelDirectory.embeddedDemo()
        let pipeline = try KandinskyPipeline(directory: directory)
        let defaults = GenerationDefaults().overridden(by: directory.config.defaults)
        let requests = captions.enumerated().map { k, c in
            ImageRequest(prompt: c.text, seed: seedBase + UInt64(k), defaults: defaults)
        }
        var (colours, shapes) = (0, 0)
        for (caption, group) in zip(captions, try pipeline.generate(requests)) {
            let verdict = ShapesDemo.judge(rgb: group[0].rgb, width: group[0].width, height: group[0].height)
            if verdict?.color == caption.color { colours += 1 }
            if verdict?.shape == caption.shape { shapes += 1 }
        }
        return (colours, shapes)
    }

    /// `generate` on a GPU draws the CPU's picture: within 2 levels per pixel in f32, at 30 dB PSNR or better in f16.
    @Test(arguments: TestDevice.available.filter { $0.name != "cpu" })
    func theGPUDrawsTheCPUsPicture(device: TestDevice) throws {
        var onDevice = try ModelDirectory.embeddedDemo()
        (onDevice.backend, onDevice.keepHalfPrecision) = (device.backend, device.halfPrecision)
        let defaults = GenerationDefaults().overridden(by: onDevice.config.defaults)
        let requests = [
            ImageRequest(prompt: "a red circle", seed: 21, defaults: defaults),
            ImageRequest(prompt: "ein blaues Quadrat", seed: 22, defaults: defaults),
        ]
        let cpu = try KandinskyPipeline(directory: try ModelDirectory.embeddedDemo()).generate(requests)
        let gpu = try KandinskyPipeline(directory: onDevice).generate(requests)
        for (a, b) in zip(cpu, gpu) {
            let (x, y) = (a[0].rgb, b[0].rgb)
            try #require(x.count == y.count && !x.isEmpty)
            var (worst, squares) = (0, 0.0)
            for (p, q) in zip(x, y) {
                let d = Int(p) - Int(q)
                worst = max(worst, abs(d))
                squares += Double(d * d)
            }
            let mse = squares / Double(x.count)
            let psnr = mse == 0 ? Double.infinity : 10 * log10(255 * 255 / mse)
            print("demo model on \(device.name): max pixel difference \(worst), PSNR \(psnr) dB")
            if device.halfPrecision {
                #expect(psnr >= 30, "PSNR \(psnr) dB against the CPU's picture")
            } else {
                #expect(worst <= 2, "max pixel difference \(worst) against the CPU's picture")
            }
        }
    }

    @Test func drawsTheCaptionsColourAndShapeInSeveralLanguages() throws {
        let demo = try ShapesDemo(directory: try ModelDirectory.embeddedDemo())
        // One caption per (language, colour, shape) picked to cover six languages, every colour and every shape.
        let picks: [(String, Int)] = [
            ("en", 0), ("ru", 9), ("fr", 14), ("de", 19), ("ar", 23), ("hi", 6), ("es", 17), ("fa", 11),
        ]
        let captions = picks.map { language, i in demo.captions.filter { $0.language == language }[i] }
        let (colours, shapes) = try score(captions, seedBase: 2000)
        // The model scores 96–100 % colour and shape in these languages with the official sampler (its README); over
        // 8 images allow one miss of colour and two of shape.
        #expect(colours >= 7, "\(colours)/8 colours right")
        #expect(shapes >= 6, "\(shapes)/8 shapes right")
    }

    /// Chinese and Japanese colour words (红 绿 蓝, 赤 緑 青) were `<unk>` to version 1's tokenizers, so colours there
    /// were chance (its demo-eval: Chinese 17 %, Japanese 54 %). Six captions per language, one per colour and every
    /// shape among them, judged by the same pixel rule as the other languages.
    @Test(arguments: ["zh", "ja"]) func readsColoursAndShapesInChineseAndJapanese(language: String) throws {
        let demo = try ShapesDemo(directory: try ModelDirectory.embeddedDemo())
        let all = demo.captions.filter { $0.language == language }
        // Caption i draws colour i / 4 as shape i % 4: colour k with shape k % 4 covers six colours, four shapes.
        let captions = (0..<demo.colors.count).map { k in all[k * demo.shapes.count + k % demo.shapes.count] }
        let (colours, shapes) = try score(captions, seedBase: 3000)
        // Version 2 scores 100 % colour and 96–100 % shape in both languages over 24 images each (its README); over
        // six allow one miss of each. Chance colours (version 1) give about one right in six.
        #expect(colours >= 5, "\(language): \(colours)/6 colours right")
        #expect(shapes >= 5, "\(language): \(shapes)/6 shapes right")
    }

    /// Version 2's tokenizers were trained with every caption, so no caption piece is `<unk>` (version 1's tiny
    /// fixture tokenizers turned 红 绿 蓝 赤 緑 青 into it, and with them every Chinese colour read the same).
    @Test func noCaptionPieceIsUnknownToEitherTokenizer() throws {
        let directory = try ModelDirectory.embeddedDemo()
        let demo = try ShapesDemo(directory: directory)
        #expect(demo.languages.count == 12)
        for file in [ModelDirectory.File.tokenizer1, .tokenizer2] {
            let model = try SentencePieceModel(path: directory.file(file))
            for caption in demo.captions {
                let ids = try model.encode(caption.text)
                #expect(!ids.isEmpty && !ids.contains(model.unknownID), "\(file.rawValue): \"\(caption.text)\"")
            }
        }
    }

    @Test func anyPromptGivesAnImage() throws {
        let directory = try ModelDirectory.embeddedDemo()
        let pipeline = try KandinskyPipeline(directory: directory)
        for prompt in ["", "a photograph of a cat on the moon, 8k", "🙂 ∑ \u{0}"] {
            let image = try pipeline.generate([ImageRequest(prompt: prompt, width: 64, height: 64, steps: 3, seed: 1)])[
                0][0]
            #expect(image.rgb.count == 64 * 64 * 3)
        }
    }

    @Test func judgeRecognisesDrawnShapes() {
        // Hand-drawn 64×64 pictures on grey: the rule must tell them apart.
        func picture(_ inside: (Int, Int) -> Bool, _ rgb: (UInt8, UInt8, UInt8)) -> [UInt8] {
            var out = [UInt8]()
            for y in 0..<64 {
                for x in 0..<64 { out += inside(x, y) ? [rgb.0, rgb.1, rgb.2] : [200, 200, 200] }
            }
            return out
        }
        let cases: [([UInt8], String, String)] = [
            (picture({ ($0 - 32) * ($0 - 32) + ($1 - 32) * ($1 - 32) < 300 }, (220, 30, 30)), "red", "circle"),
            (picture({ (16..<48).contains($0) && (16..<48).contains($1) }, (30, 60, 230)), "blue", "square"),
            (
                picture({ x, y in y >= 12 && y < 52 && abs(x - 32) * 2 <= (y - 12) }, (240, 210, 20)), "yellow",
                "triangle"
            ),
            (picture({ abs($0 - 32) + abs($1 - 32) < 20 }, (30, 160, 40)), "green", "diamond"),
            (picture({ (10..<40).contains($0) && (20..<50).contains($1) }, (140, 40, 200)), "purple", "square"),
            (picture({ (10..<40).contains($0) && (20..<50).contains($1) }, (250, 140, 20)), "orange", "square"),
        ]
        for (rgb, colour, shape) in cases {
            #expect(
                ShapesDemo.judge(rgb: rgb, width: 64, height: 64) == .init(color: colour, shape: shape),
                "\(colour) \(shape)")
        }
        #expect(ShapesDemo.judge(rgb: [UInt8](repeating: 128, count: 64 * 64 * 3), width: 64, height: 64) == nil)
    }
}
