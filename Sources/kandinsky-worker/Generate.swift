import ArgumentParser
import Foundation
import Kandinsky
import ResultStore

/// `generate PROMPT --model DIR`: text to image (img2img, inpainting) on this machine, no Redis.
struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate images from a prompt with a model directory, without Redis.",
        discussion: """
            Defaults come from the model's model.json "defaults", then: 512×512, 50 steps, guidance scale 7, \
            sampler ddim, eta 0.05, dynamic threshold 99.5. Image k of N uses seed + k. With --init-image and \
            --strength, img2img (the official reading: the sampler runs the last ⌊steps·(1 − strength)⌋ steps, so a \
            larger strength stays closer to the image); with --init-image and --mask, inpainting (mask white = keep).
            """)

    @Argument(help: "The prompt, in any language.")
    var prompt: String

    @Option(help: "The model directory (default: the embedded multilingual shapes demo model).")
    var model: String?

    @Option(
        name: [.short, .customLong("output")], help: "Output PNG; several images get -1, -2, … before the extension.")
    var output = "out.png"

    @OptionGroup var options: GenerationOptions
    @Option(help: "Starting image (PNG, exactly width × height) for img2img or inpainting.") var initImage: String?
    @Option(help: "img2img strength in (0, 1]: the share of steps skipped.") var strength: Double?
    @Option(help: "Inpainting mask (PNG, width × height): white keeps, black regenerates.") var mask: String?

    @Flag(help: "Keep weights stored as F16/BF16 in half precision, expanded to float32 at each use.")
    var halfWeights = false

    func run() throws {
        var directory =
            try model.map { path throws(KandinskyError) in try ModelDirectory(path: path) }
            ?? ModelDirectory.embeddedDemo()
        directory.keepHalfPrecision = halfWeights
        let defaults = directory.config.defaults
        let o = options
        var request = ImageRequest(
            prompt: prompt, negativePrompt: o.negativePrompt ?? "", width: o.width ?? defaults?.width ?? 512,
            height: o.height ?? defaults?.height ?? 512, numImages: o.numImages ?? 1,
            steps: o.steps ?? defaults?.steps ?? 50,
            guidanceScale: Float(o.guidanceScale ?? defaults?.guidanceScale ?? 7),
            sampler: try parseSampler(o.sampler ?? defaults?.sampler ?? "ddim"), eta: o.eta ?? defaults?.eta ?? 0.05,
            dynamicThreshold: try parseThreshold(defaults?.dynamicThreshold ?? 99.5),
            seed: o.seed ?? UInt64.random(in: 0..<(1 << 32)))
        if let initImage { request.initImage = try readRGB(initImage) }
        request.strength = strength
        if let mask { request.mask = try readMask(mask) }
        try request.validate()  // every parameter checked before any model is loaded

        let loadStart = Date()
        let pipeline = try KandinskyPipeline(directory: directory, modelName: Self.modelName(directory))
        FileHandle.standardError.write(
            Data(String(format: "model loaded in %.1f s\n", Date().timeIntervalSince(loadStart)).utf8))
        let start = Date()
        let bar = ProgressBar()
        let images = try pipeline.generate([request]) { done, total in
            bar.update(done, total)
            return true
        }[0]
        bar.finish()
        let seconds = Date().timeIntervalSince(start)
        for (k, image) in images.enumerated() {
            let path = images.count == 1 ? output : numbered(output, k)
            let parameters = KandinskyPipeline.parametersText(request, seed: image.seed, model: pipeline.modelName)
            let png = try PNGCodec.encode(
                PixelImage(width: image.width, height: image.height, channels: 3, pixels: image.rgb),
                text: [("parameters", parameters)])
            try Data(png).write(to: URL(fileURLWithPath: path), options: .atomic)
            print("\(path)  seed \(image.seed)")
        }
        FileHandle.standardError.write(
            Data(
                String(
                    format: "%d image(s) in %.2f s (%.3f s per step)\n", images.count, seconds,
                    seconds / Double(max(1, request.steps))
                ).utf8))
    }

    /// The name PNGs record: `kandinsky-2.0`, or the demo model's name.
    static func modelName(_ directory: ModelDirectory) -> String {
        directory.path == ModelDirectory.embeddedDemoPath ? "kandinsky-2.0-shapes-demo" : "kandinsky-2.0"
    }

    func parseSampler(_ name: String) throws -> SamplerKind {
        guard let kind = SamplerKind(rawValue: name) else {
            throw ValidationError("unknown sampler \(name) (ddim, p_sampler, ddim_ldm, plms, dpmpp_2m)")
        }
        return kind
    }

    func parseThreshold(_ fallback: Double?) throws -> Double? {
        guard let dynamicThreshold = options.dynamicThreshold else { return fallback }
        if dynamicThreshold == "none" { return nil }
        guard let p = Double(dynamicThreshold) else {
            throw ValidationError("--dynamic-threshold must be a number or none")
        }
        return p
    }

    func readPNG(_ path: String, what: String) throws -> PixelImage {
        let bytes: [UInt8]
        do {
            bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        } catch {
            throw ValidationError("\(what) \(path): cannot read (\(error.localizedDescription))")
        }
        guard bytes.count <= 16 << 20 else { throw ValidationError("\(what) \(path): larger than 16 MB") }
        do {
            return try PNGCodec.decode(bytes, source: path).image
        } catch {
            throw ValidationError("\(what) \(path): \(error.message)")
        }
    }

    func readRGB(_ path: String) throws -> RGBImage {
        let image = try readPNG(path, what: "--init-image")
        var rgb: [UInt8] = []
        rgb.reserveCapacity(image.width * image.height * 3)
        for p in 0..<(image.width * image.height) {
            rgb += image.pixels[(p * image.channels)..<(p * image.channels + 3)]
        }
        return RGBImage(width: image.width, height: image.height, pixels: rgb)
    }

    func readMask(_ path: String) throws -> [Float] {
        let image = try readPNG(path, what: "--mask")
        return (0..<(image.width * image.height)).map { Float(image.pixels[$0 * image.channels]) / 255 }
    }

    func numbered(_ path: String, _ k: Int) -> String {
        let ext = (path as NSString).pathExtension
        let stem = ext.isEmpty ? path : String(path.dropLast(ext.count + 1))
        return "\(stem)-\(k + 1)\(ext.isEmpty ? "" : ".\(ext)")"
    }
}

/// A one-line progress bar on standard error when it is a terminal; silent otherwise.
final class ProgressBar: @unchecked Sendable {
    let enabled = isatty(STDERR_FILENO) != 0
    let start = Date()

    func update(_ done: Int, _ total: Int) {
        guard enabled, total > 0 else { return }
        let width = 30
        let filled = width * done / total
        let elapsed = Date().timeIntervalSince(start)
        let line =
            "\r[" + String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
            + "] \(done)/\(total)  " + String(format: "%.1f s", elapsed)
        FileHandle.standardError.write(Data(line.utf8))
    }

    func finish() {
        if enabled { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}
