import ArgumentParser
import Foundation
import JSON
import Kandinsky

/// `demo-eval`: generates the demo model's captions and scores colour and shape per language with the pixel rule.
struct DemoEval: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo-eval",
        abstract: "Score the shapes demo model: the share of images whose colour and shape match the caption.",
        shouldDisplay: false)

    @OptionGroup var model: ModelOptions

    @Option(help: "Captions per language (taken in order, cycling through colours and shapes).")
    var perLanguage = 24

    @Option(help: "Seed of the first image (caption k uses seed + k).")
    var seed: UInt64 = 1000

    @Option(help: "Images per UNet batch.")
    var batch = 8

    @Flag(help: "Print one JSON document on stdout (the per-language lines go to stderr).")
    var json = false

    func run() throws {
        let directory = try model.directory()
        let demo = try ShapesDemo(directory: directory)
        let pipeline = try KandinskyPipeline(directory: directory)
        let modelDefaults = GenerationDefaults().overridden(by: directory.config.defaults)
        var scores: [String: (color: Int, shape: Int, total: Int)] = [:]
        for language in demo.languages {
            // Every (colour, shape) pair once per 24 captions, spread so a short run still mixes colours and shapes.
            let captions = demo.captions.filter { $0.language == language }
            let chosen = (0..<perLanguage).map { captions[($0 * 5) % captions.count] }
            var index = 0
            while index < chosen.count {
                let slice = chosen[index..<min(chosen.count, index + batch)]
                let requests = slice.enumerated().map { k, c in
                    ImageRequest(prompt: c.text, seed: seed + UInt64(index + k), defaults: modelDefaults)
                }
                let images = try pipeline.generate(requests)
                for (caption, group) in zip(slice, images) {
                    let verdict = ShapesDemo.judge(rgb: group[0].rgb, width: group[0].width, height: group[0].height)
                    var s = scores[language] ?? (0, 0, 0)
                    s.total += 1
                    if verdict?.color == caption.color { s.color += 1 }
                    if verdict?.shape == caption.shape { s.shape += 1 }
                    scores[language] = s
                }
                index += slice.count
            }
            let s = scores[language]!
            report(
                "\(language): colour \(percent(s.color, s.total)) %, shape \(percent(s.shape, s.total)) % of \(s.total)"
            )
        }
        // All the model's languages, and the ten without Chinese and Japanese: version 1 of the demo model could not
        // read colours in those two, so its figures were quoted over the other ten; both totals keep runs comparable.
        let all = total(demo.languages, scores)
        let ten = total(demo.languages.filter { $0 != "zh" && $0 != "ja" }, scores)
        report("\(demo.languages.count) languages: colour \(all.colour) %, shape \(all.shape) % of \(all.images)")
        report("10 languages (all but zh, ja): colour \(ten.colour) %, shape \(ten.shape) % of \(ten.images)")
        if json {
            var object: JSONObject = [
                "colour_pct": .integer(all.colour), "shape_pct": .integer(all.shape), "images": .integer(all.images),
                "without_zh_ja": .object([
                    "colour_pct": .integer(ten.colour), "shape_pct": .integer(ten.shape),
                    "images": .integer(ten.images),
                ]),
            ]
            for (language, s) in scores {
                object[language] = .object([
                    "colour_pct": .integer(percent(s.color, s.total)), "shape_pct": .integer(percent(s.shape, s.total)),
                ])
            }
            Console(json: true).document(.object(object))
        }
    }

    /// Human lines: on stdout, or on stderr with `--json` so that stdout holds the one JSON document.
    func report(_ line: String) { Console(json: json).line(line) }

    /// Colour and shape percentages over the given languages' images.
    func total(
        _ languages: [String], _ scores: [String: (color: Int, shape: Int, total: Int)]
    ) -> (
        colour: Int, shape: Int, images: Int
    ) {
        let c = languages.reduce(0) { $0 + (scores[$1]?.color ?? 0) }
        let s = languages.reduce(0) { $0 + (scores[$1]?.shape ?? 0) }
        let t = languages.reduce(0) { $0 + (scores[$1]?.total ?? 0) }
        return (percent(c, t), percent(s, t), t)
    }

    func percent(_ n: Int, _ total: Int) -> Int { total == 0 ? 0 : Int((100 * Double(n) / Double(total)).rounded()) }
}
