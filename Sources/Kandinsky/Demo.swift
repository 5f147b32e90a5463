import Foundation
import JSON

/// The shapes demo model's captions (`model.json` `demo`), and a pixel rule that says which coloured shape an
/// image shows, so a regression anywhere in the pipeline shows up as wrong pictures.
public struct ShapesDemo: Sendable {
    public struct Caption: Sendable, Equatable {
        public var language: String
        public var text: String
        public var color: String
        public var shape: String
    }

    public let colors: [String]
    public let shapes: [String]
    public let languages: [String]
    public let captions: [Caption]

    /// `model.json`'s `demo` section.
    private struct Section: Decodable {
        struct Demo: Decodable {
            var colors: [String]
            var shapes: [String]
            var languages: [String]
            var captions: [String: [String]]
        }
        var demo: Demo
    }

    /// Reads the `demo` section of a model directory's `model.json` (captions per language, colour-major:
    /// caption i draws colour i / 4 as shape i % 4).
    public init(directory: ModelDirectory) throws(KandinskyError) {
        let path = directory.file("model.json")
        guard let data = FileManager.default.contents(atPath: path) else {
            throw KandinskyError(.modelDirectory, "cannot read", file: path)
        }
        let section: Section
        do {
            section = try JSONValueDecoder().decode(Section.self, from: Array(data))
        } catch {
            throw KandinskyError(
                .modelDirectory, "no demo section (colors, shapes, languages, captions): \(error)", file: path,
                key: "demo")
        }
        let (colors, shapes, languages, table) = (
            section.demo.colors, section.demo.shapes, section.demo.languages, section.demo.captions
        )
        var captions: [Caption] = []
        for language in languages {
            guard let texts = table[language], texts.count == colors.count * shapes.count else {
                throw KandinskyError(
                    .modelDirectory, "captions of \(language) do not cover every colour and shape", file: path,
                    key: "demo.captions")
            }
            for (i, text) in texts.enumerated() {
                captions.append(
                    Caption(
                        language: language, text: text, color: colors[i / shapes.count], shape: shapes[i % shapes.count]
                    ))
            }
        }
        (self.colors, self.shapes, self.languages, self.captions) = (colors, shapes, languages, captions)
    }

    /// What an image shows: the colour and shape of its largest saturated region, or nil when nothing is saturated.
    public struct Verdict: Sendable, Equatable {
        public var color: String
        public var shape: String
    }

    /// Hue (degrees) of each colour name the demo uses.
    static let hues: [String: Double] = [
        "red": 0, "orange": 30, "yellow": 58, "green": 120, "blue": 228, "purple": 285,
    ]

    /// The pixel rule: pixels with saturation ≥ 0.35 and value ≥ 0.25 are "saturated"; the largest 4-connected
    /// region of them is the shape. Its colour is the hue of its mean RGB, nearest of the demo's colours. Its shape
    /// comes from how it fills its bounding box (square ≥ 0.88, circle ≥ 0.66, otherwise triangle or diamond) and,
    /// for the half-filling ones, where its mass sits (a triangle pointing up is heavier below the box centre).
    public static func judge(rgb: [UInt8], width: Int, height: Int) -> Verdict? {
        let n = width * height
        var saturated = [Bool](repeating: false, count: n)
        for p in 0..<n {
            let (r, g, b) = (Double(rgb[3 * p]) / 255, Double(rgb[3 * p + 1]) / 255, Double(rgb[3 * p + 2]) / 255)
            let hi = max(r, g, b)
            let lo = min(r, g, b)
            saturated[p] = hi >= 0.25 && (hi - lo) / hi >= 0.35
        }
        // Largest 4-connected region.
        var label = [Int](repeating: -1, count: n)
        var best: [Int] = []
        for seed in 0..<n where saturated[seed] && label[seed] < 0 {
            var region: [Int] = []
            var stack = [seed]
            label[seed] = seed
            while let p = stack.popLast() {
                region.append(p)
                let (x, y) = (p % width, p / width)
                for (nx, ny) in [(x - 1, y), (x + 1, y), (x, y - 1), (x, y + 1)]
                where nx >= 0 && nx < width && ny >= 0 && ny < height {
                    let q = ny * width + nx
                    if saturated[q] && label[q] < 0 {
                        label[q] = seed
                        stack.append(q)
                    }
                }
            }
            if region.count > best.count { best = region }
        }
        guard best.count >= 12 else { return nil }

        var (sr, sg, sb) = (0.0, 0.0, 0.0)
        var (minX, maxX, minY, maxY) = (width, 0, height, 0)
        var sumY = 0.0
        for p in best {
            sr += Double(rgb[3 * p])
            sg += Double(rgb[3 * p + 1])
            sb += Double(rgb[3 * p + 2])
            let (x, y) = (p % width, p / width)
            (minX, maxX, minY, maxY) = (min(minX, x), max(maxX, x), min(minY, y), max(maxY, y))
            sumY += Double(y)
        }
        let hue = Self.hue(r: sr, g: sg, b: sb)
        let color = hues.min { circularDistance($0.value, hue) < circularDistance($1.value, hue) }!.key
        let boxArea = Double((maxX - minX + 1) * (maxY - minY + 1))
        let fill = Double(best.count) / boxArea
        let centroid = (sumY / Double(best.count) - Double(minY)) / Double(max(1, maxY - minY))
        let shape: String
        if fill >= 0.88 {
            shape = "square"
        } else if fill >= 0.66 {
            shape = "circle"
        } else {
            shape = centroid > 0.56 ? "triangle" : "diamond"
        }
        return Verdict(color: color, shape: shape)
    }

    static func hue(r: Double, g: Double, b: Double) -> Double {
        let hi = max(r, g, b)
        let lo = min(r, g, b)
        guard hi > lo else { return 0 }
        var h: Double
        if hi == r {
            h = (g - b) / (hi - lo)
        } else if hi == g {
            h = 2 + (b - r) / (hi - lo)
        } else {
            h = 4 + (r - g) / (hi - lo)
        }
        h *= 60
        return h < 0 ? h + 360 : h
    }

    static func circularDistance(_ a: Double, _ b: Double) -> Double {
        let d = abs(a - b).truncatingRemainder(dividingBy: 360)
        return min(d, 360 - d)
    }
}
