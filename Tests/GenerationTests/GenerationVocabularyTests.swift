import Testing

@testable import Generation

/// The one vocabulary: the parameters text other tools read, and the one defaults merge.
@Suite struct GenerationVocabularyTests {
    func parameters(_ sampler: Sampler) -> GenerationParameters {
        GenerationParameters(
            prompt: "красная машина", negativePrompt: "blurry", width: 64, height: 64, numImages: 1, steps: 4,
            guidanceScale: 4, sampler: sampler, eta: 0.05, dynamicThreshold: 99.5, seed: 42)
    }

    @Test func parametersTextHasTheCommonFormat() {
        #expect(
            parametersText(parameters(.ddim), seed: 43, model: "kandinsky-2.0") == """
                красная машина
                Negative prompt: blurry
                Steps: 4, Sampler: ddim, CFG scale: 4, Seed: 43, Size: 64x64, Model: kandinsky-2.0, Eta: 0.05
                """)
        // Samplers that ignore eta do not state it; a fractional scale keeps its fraction; no negative prompt line.
        var p = parameters(.plms)
        p.negativePrompt = ""
        p.guidanceScale = 7.5
        #expect(
            parametersText(p, seed: 1, model: "m")
                == "красная машина\nSteps: 4, Sampler: plms, CFG scale: 7.5, Seed: 1, "
                + "Size: 64x64, Model: m")
        #expect(Sampler.allCases.filter(\.usesEta) == [.ddim, .pSampler])
        #expect(pngTextChunks(p, seed: 1, model: "m").map(\.key) == ["parameters", "Software"])
    }

    @Test func theModelsDefaultsWinWhereItStatesThem() {
        var configuration = GenerationDefaults()
        configuration.steps = 40
        configuration.eta = 0.2
        var model = ModelDefaults()
        model.steps = 30
        model.sampler = .plms
        model.dynamicThreshold = 95
        let merged = configuration.overridden(by: model)
        #expect(merged.steps == 30 && merged.sampler == .plms && merged.dynamicThreshold == 95)
        #expect(merged.eta == 0.2 && merged.width == 512, "what the model leaves out stays the configuration's")
        #expect(configuration.overridden(by: nil) == configuration)
    }
}
