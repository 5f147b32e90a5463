/// Token ids and attention mask for a batch of prompts, `[rows][length]`, padded on the right.
public struct TokenBatch: Sendable, Equatable {
    public var ids: [[Int]]
    public var mask: [[Int]]
}

/// The two tokenizers of Kandinsky 2.0 over their SentencePiece models (spec §2): 77 tokens, truncation,
/// right padding.
public struct KandinskyTokenizers: Sendable {
    public static let maxLength = 77

    /// Text encoder 1 (XLM-R, fairseq conventions): `<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, piece id + 1.
    public let xlmr: SentencePieceModel
    /// Text encoder 2 (mT5): raw piece ids, pad 0, `</s>` 1 appended, no BOS.
    public let mt5: SentencePieceModel

    public init(xlmr: SentencePieceModel, mt5: SentencePieceModel) {
        self.xlmr = xlmr
        self.mt5 = mt5
    }

    /// `<s> pieces(≤ 75) </s>` then `<pad>`s, with the SentencePiece unknown mapped to 3 and the rest shifted by one.
    public func encode1(_ prompts: [String], maxLength: Int = maxLength) throws(KandinskyError) -> TokenBatch {
        var batch = TokenBatch(ids: [], mask: [])
        for prompt in prompts {
            let pieces = try xlmr.encode(prompt).prefix(maxLength - 2).map { $0 == xlmr.unknownID ? 3 : $0 + 1 }
            let ids = [0] + pieces + [2]
            batch.ids.append(ids + Array(repeating: 1, count: maxLength - ids.count))
            batch.mask.append(Array(repeating: 1, count: ids.count) + Array(repeating: 0, count: maxLength - ids.count))
        }
        return batch
    }

    /// `pieces(≤ 76) </s>` then pad 0.
    public func encode2(_ prompts: [String], maxLength: Int = maxLength) throws(KandinskyError) -> TokenBatch {
        var batch = TokenBatch(ids: [], mask: [])
        for prompt in prompts {
            let ids = Array(try mt5.encode(prompt).prefix(maxLength - 1)) + [1]
            batch.ids.append(ids + Array(repeating: 0, count: maxLength - ids.count))
            batch.mask.append(Array(repeating: 1, count: ids.count) + Array(repeating: 0, count: maxLength - ids.count))
        }
        return batch
    }
}
