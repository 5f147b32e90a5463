import Foundation
import JobQueue
import Kandinsky
import ResultStore

/// The one generation service behind `serve` (through `KandinskyGenerator`) and `generate`: the model, the defaults
/// merge (the configuration's, then the model's own), the one reader of input images, the model's name and the PNG
/// encoding with the one `parameters` text — so the same request gives the same PNG bytes from either.
public final class GenerationService: @unchecked Sendable {
    public let pipeline: KandinskyPipeline
    /// What PNGs and events record: `kandinsky-2.0`, or the demo model's name.
    public let modelName: String
    /// Where a request leaves a parameter out.
    public let defaults: GenerationDefaults
    /// Where `init_image` and `mask_image` paths of jobs are resolved; nil: jobs may not name input images.
    public let inputRoot: String?

    /// Input images: at most 16 MB and 4096 × 4096 pixels.
    public static let maxInputBytes = 16 << 20
    public static let maxInputSide = 4096

    /// Loads the model of `directory`.
    public init(
        directory: ModelDirectory, configurationDefaults: GenerationDefaults = GenerationDefaults(),
        inputRoot: String? = nil
    ) throws(KandinskyError) {
        modelName = Self.modelName(of: directory)
        defaults = Self.defaults(for: directory, configuration: configurationDefaults)
        pipeline = try KandinskyPipeline(directory: directory, modelName: modelName)
        self.inputRoot = inputRoot
    }

    /// The name PNGs and events record for a model directory.
    public static func modelName(of directory: ModelDirectory) -> String {
        directory.path == ModelDirectory.embeddedDemoPath ? "kandinsky-2.0-shapes-demo" : "kandinsky-2.0"
    }

    /// The defaults a request meets: the configuration's, with the model's `model.json` `defaults` in their place
    /// where it states them (DESIGN §2). Needs no weights, so a command can check a request before loading any.
    public static func defaults(
        for directory: ModelDirectory, configuration: GenerationDefaults = GenerationDefaults()
    ) -> GenerationDefaults {
        configuration.overridden(by: directory.config.defaults)
    }

    // MARK: - Requests

    /// A job's parameters as a pipeline request, its input images read from below the input root.
    public func imageRequest(_ p: GenerationParameters) throws(GenerationFailure) -> ImageRequest {
        try imageRequest(
            p,
            initImage: try p.initImage.map { path throws(GenerationFailure) in try readJobInput(path, "init_image") },
            mask: try p.maskImage.map { path throws(GenerationFailure) in try readJobInput(path, "mask_image") })
    }

    /// Parameters and images already read as a pipeline request, checked against the model's rules.
    public func imageRequest(
        _ p: GenerationParameters, initImage: PixelImage?, mask: PixelImage?
    ) throws(GenerationFailure) -> ImageRequest {
        var image = ImageRequest(p)
        if let initImage {
            var rgb: [UInt8] = []
            rgb.reserveCapacity(initImage.width * initImage.height * 3)
            for i in 0..<(initImage.width * initImage.height) {
                rgb += initImage.pixels[(i * initImage.channels)..<(i * initImage.channels + 3)]
            }
            image.initImage = RGBImage(width: initImage.width, height: initImage.height, pixels: rgb)
        }
        if let mask {
            // White keeps, black regenerates: the first channel, scaled to 0…1.
            image.mask = (0..<(mask.width * mask.height)).map { Float(mask.pixels[$0 * mask.channels]) / 255 }
        }
        do {
            try image.validate()
        } catch {
            throw GenerationFailure(.invalidValue, error.description, retryable: false)
        }
        return image
    }

    /// A job's input image: resolved below the input root (no absolute paths, no `..`, no symlinks out of it).
    func readJobInput(_ relative: String, _ field: String) throws(GenerationFailure) -> PixelImage {
        guard let inputRoot else {
            throw GenerationFailure(.invalidValue, "\(field) given but this worker has no input root", retryable: false)
        }
        let path: String
        do {
            path = try InputPath.resolve(relative, root: inputRoot, field: field)
        } catch {
            throw GenerationFailure(error.code, error.message, retryable: false)
        }
        return try Self.readImage(atPath: path, shown: relative, field: field)
    }

    /// The one reader of input images: a PNG of at most 16 MB and 4096 × 4096 pixels, as 8-bit RGB or RGBA.
    public static func readImage(
        atPath path: String, shown: String, field: String
    ) throws(GenerationFailure)
        -> PixelImage
    {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
            let size = attributes[.size] as? Int
        else { throw GenerationFailure(.invalidValue, "\(field) \(shown) cannot be read", retryable: false) }
        guard size <= maxInputBytes else {
            throw GenerationFailure(.invalidValue, "\(field) \(shown) is larger than 16 MB", retryable: false)
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw GenerationFailure(.invalidValue, "\(field) \(shown) cannot be read", retryable: false)
        }
        do {
            return try PNGCodec.decode([UInt8](data), maxWidth: maxInputSide, maxHeight: maxInputSide, source: shown)
                .image
        } catch {
            throw GenerationFailure(.invalidValue, "\(field) \(error.description)", retryable: false)
        }
    }

    // MARK: - Output

    /// Image `n` of a request as PNG bytes, with the text chunks every PNG of the product carries.
    public func png(_ image: PixelImage, parameters: GenerationParameters, index n: Int) throws(PNGError) -> [UInt8] {
        try PNGCodec.encode(image, text: pngTextChunks(parameters, seed: parameters.seed(ofImage: n), model: modelName))
    }
}
