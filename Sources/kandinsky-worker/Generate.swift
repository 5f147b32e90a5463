import ArgumentParser
import Foundation
import JobQueue
import Kandinsky
import ResultStore
import Worker

/// `generate PROMPT --model DIR`: text to image (img2img, inpainting) on this machine, no Redis.
struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate images from a prompt with a model directory, without Redis.",
        discussion: """
            Defaults come from the model's model.json "defaults", then the worker's built-in ones (Config/worker.yaml): \
            512×512, 50 steps, guidance scale 7, sampler ddim, eta 0, dynamic threshold 99.5. The same request through \
            `serve` gives the same PNG bytes. Image k of N uses seed + k. With --init-image and \
            --strength, img2img (the official reading: the sampler runs the last ⌊steps·(1 − strength)⌋ steps, so a \
            larger strength stays closer to the image); with --init-image and --mask, inpainting (mask white = keep).
            """)

    @Argument(help: "The prompt, in any language.")
    var prompt: String

    @OptionGroup var model: ModelOptions

    @Option(
        name: [.short, .customLong("output")], help: "Output PNG; several images get -1, -2, … before the extension.")
    var output = "out.png"

    @OptionGroup var options: GenerationOptions
    @Option(help: "Starting image (PNG, exactly width × height) for img2img or inpainting.") var initImage: String?
    @Option(help: "img2img strength in (0, 1]: the share of steps skipped.") var strength: Double?
    @Option(help: "Inpainting mask (PNG, width × height): white keeps, black regenerates.") var mask: String?

    func run() throws {
        let directory = try model.directory()
        // The request goes through the workers' job decoder and defaults, so it meets the same rules and limits and
        // gives the same PNG bytes as the same job through `serve`; every parameter is checked before any weight
        // is loaded.
        var fields = try options.job(id: "generate", prompt: prompt)
        if let strength { fields["strength"] = .double(strength) }
        // Input images are read from the paths given (below); the decoder sees that they are there.
        if initImage != nil { fields["init_image"] = .string("init.png") }
        if mask != nil { fields["mask_image"] = .string("mask.png") }
        let request: GenerationRequest
        switch JobDecoder().decode(Array(JSONValue.object(fields).serialized.utf8)) {
        case .valid(let r): request = r
        case .invalid(_, let error), .unidentifiable(let error):
            throw ValidationError(error.message)
        }
        let defaults = GenerationService.defaults(for: directory)
        let parameters = request.resolved(defaults: defaults) { UInt64.random(in: 0..<(1 << 32)) }
        let initPNG = try initImage.map { try readInput($0, field: "--init-image") }
        let maskPNG = try mask.map { try readInput($0, field: "--mask") }

        let loadStart = Date()
        let service = try GenerationService(directory: directory)
        let imageRequest: ImageRequest
        do {
            imageRequest = try service.imageRequest(parameters, initImage: initPNG, mask: maskPNG)
        } catch {
            throw ValidationError(error.message)
        }
        FileHandle.standardError.write(
            Data(String(format: "model loaded in %.1f s\n", Date().timeIntervalSince(loadStart)).utf8))
        let start = Date()
        let bar = ProgressBar()
        let images = try service.pipeline.generate([imageRequest]) { done, total in
            bar.update(done, total)
            return true
        }[0]
        bar.finish()
        let seconds = Date().timeIntervalSince(start)
        for (k, image) in images.enumerated() {
            let path = images.count == 1 ? output : numbered(output, k)
            let png = try service.png(
                PixelImage(width: image.width, height: image.height, channels: 3, pixels: image.rgb),
                parameters: parameters, index: k)
            try Data(png).write(to: URL(fileURLWithPath: path), options: .atomic)
            print("\(path)  seed \(image.seed)")
        }
        FileHandle.standardError.write(
            Data(
                String(
                    format: "%d image(s) in %.2f s (%.3f s per step)\n", images.count, seconds,
                    seconds / Double(max(1, imageRequest.steps))
                ).utf8))
    }

    /// An input image through the service's one reader (size and dimension limits, PNG decoding).
    func readInput(_ path: String, field: String) throws -> PixelImage {
        do {
            return try GenerationService.readImage(atPath: path, shown: path, field: field)
        } catch {
            throw ValidationError(error.message)
        }
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
