import Foundation
import TestSupport
import Testing

@testable import Kandinsky

/// libsentencepiece through the C++ shim, checked against the official tokenizers' ids in `tokenizer.case.json`.
@Suite struct SentencePieceTests {
    struct Case: Decodable {
        struct Ids: Decodable {
            var input_ids: [[Int]]
            var attention_mask: [[Int]]
        }
        var prompts: [String]
        var text_encoder1: Ids
        var text_encoder2: Ids
    }

    func loadCase() throws -> Case {
        let data = try Data(contentsOf: URL(fileURLWithPath: Fixtures.kandinsky2("cases/tokenizer.case.json")))
        return try JSONDecoder().decode(Case.self, from: data)
    }

    @Test func xlmRobertaPiecesMatchTheOfficialTokenizer() throws {
        let model = try SentencePieceModel(path: Fixtures.kandinsky2("tiny-model/tokenizer1.model"))
        let fixture = try loadCase()
        #expect(model.pieceCount == 3000)
        for (i, prompt) in fixture.prompts.enumerated() {
            // The official XLM-R ids are the SentencePiece ids shifted by the fairseq offset (+1), with <unk> → 3,
            // between <s> (0) and </s> (2), then padding.
            let expected = fixture.text_encoder1.input_ids[i]
            let length = fixture.text_encoder1.attention_mask[i].reduce(0, +)
            let inner = Array(expected[1..<(length - 1)])
            let ours = try model.encode(prompt).prefix(inner.count).map { $0 == model.unknownID ? 3 : $0 + 1 }
            #expect(ours == inner, "prompt \(i) \"\(prompt)\"")
        }
    }

    @Test func mt5PiecesMatchTheOfficialTokenizer() throws {
        let model = try SentencePieceModel(path: Fixtures.kandinsky2("tiny-model/tokenizer2.model"))
        let fixture = try loadCase()
        for (i, prompt) in fixture.prompts.enumerated() {
            // mT5: raw SentencePiece ids, then </s> (1), no BOS.
            let expected = fixture.text_encoder2.input_ids[i]
            let length = fixture.text_encoder2.attention_mask[i].reduce(0, +)
            let ours = try model.encode(prompt).prefix(length - 1)
            #expect(Array(ours) + [1] == Array(expected.prefix(length)), "prompt \(i) \"\(prompt)\"")
        }
    }

    @Test func piecesAndIdsRoundTripAndBadModelsFail() throws {
        let path = Fixtures.kandinsky2("tiny-model/tokenizer2.model")
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        let model = try SentencePieceModel(bytes: bytes)
        let ids = try model.encode("a red car")
        #expect(!ids.isEmpty)
        for id in ids {
            let piece = try #require(model.piece(for: id))
            #expect(model.id(of: piece) == id)
        }
        #expect(model.piece(for: -1) == nil && model.piece(for: model.pieceCount) == nil)
        #expect(try model.encode("").isEmpty)
        #expect(throws: KandinskyError.self) { try SentencePieceModel(bytes: Array(bytes.prefix(100))) }
        #expect(throws: KandinskyError.self) { try SentencePieceModel(path: "/nonexistent/tokenizer.model") }
    }
}
