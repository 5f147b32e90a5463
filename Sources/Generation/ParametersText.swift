/// The `parameters` text chunk of DESIGN §4 for one image (its own seed), in the format other diffusion tools write:
/// the prompt, `Negative prompt: …` when there is one, then the settings line (`Eta:` for the samplers that use it).
/// `serve` and `generate` both write it, so the same request gives the same PNG bytes from either.
public func parametersText(_ p: GenerationParameters, seed: UInt64, model: String) -> String {
    var lines = [p.prompt]
    if !p.negativePrompt.isEmpty { lines.append("Negative prompt: \(p.negativePrompt)") }
    var settings =
        "Steps: \(p.steps), Sampler: \(p.sampler.rawValue), CFG scale: \(formatNumber(p.guidanceScale)), Seed: \(seed), "
        + "Size: \(p.width)x\(p.height), Model: \(model)"
    if p.sampler.usesEta { settings += ", Eta: \(formatNumber(p.eta))" }
    lines.append(settings)
    return lines.joined(separator: "\n")
}

/// The text chunks of every PNG the product writes, in order: `parameters`, then `Software`.
public func pngTextChunks(_ p: GenerationParameters, seed: UInt64, model: String) -> [(key: String, value: String)] {
    [("parameters", parametersText(p, seed: seed, model: model)), ("Software", "kandinsky-worker \(productVersion)")]
}

/// The product's version, as `--version` prints it and PNGs record it.
public let productVersion = "0.1.0"

/// A whole number without a fraction (7, not 7.0); others as Swift writes them.
func formatNumber(_ v: Double) -> String {
    v.rounded() == v && abs(v) < 1e9 ? String(Int(v)) : String(v)
}
