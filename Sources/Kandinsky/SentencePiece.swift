import CSentencePiece

/// A SentencePiece model (libsentencepiece), loaded from a file or from bytes. Raw piece ids: the XLM-R and mT5
/// conventions (offsets, BOS/EOS, padding) are applied by the tokenizers on top.
public final class SentencePieceModel: @unchecked Sendable {
    private let handle: OpaquePointer

    /// Loads the model at `path`.
    public init(path: String) throws(KandinskyError) {
        var message = [CChar](repeating: 0, count: 512)
        guard let h = kd_spm_load_file(path, &message, message.count) else {
            throw KandinskyError(.tokenizer, "cannot load SentencePiece model: \(decodeCString(message))", file: path)
        }
        handle = h
    }

    /// Loads a model from the bytes of its serialized ModelProto.
    public init(bytes: [UInt8]) throws(KandinskyError) {
        var message = [CChar](repeating: 0, count: 512)
        let loaded = bytes.withUnsafeBytes { kd_spm_load_bytes($0.baseAddress, $0.count, &message, message.count) }
        guard let h = loaded else {
            throw KandinskyError(.tokenizer, "cannot load SentencePiece model: \(decodeCString(message))")
        }
        handle = h
    }

    deinit { kd_spm_free(handle) }

    /// Number of pieces in the vocabulary.
    public var pieceCount: Int { Int(kd_spm_piece_count(handle)) }

    /// The id of the unknown piece.
    public var unknownID: Int { Int(kd_spm_unk_id(handle)) }

    /// The id of `piece` (the unknown id if absent).
    public func id(of piece: String) -> Int { Int(kd_spm_piece_to_id(handle, piece)) }

    /// The piece with id `id`, or nil when out of range.
    public func piece(for id: Int) -> String? {
        var buffer = [CChar](repeating: 0, count: 1024)
        guard kd_spm_id_to_piece(handle, Int32(truncatingIfNeeded: id), &buffer, buffer.count) >= 0 else { return nil }
        return decodeCString(buffer)
    }

    /// Piece ids of `text` (NFKC-normalized by the model as it was trained).
    public func encode(_ text: String) throws(KandinskyError) -> [Int] {
        // NUL-terminated for C, but passed with its length: the text itself may hold NUL characters.
        var utf8 = Array(text.utf8CString)
        let length = utf8.count - 1
        var capacity = max(16, length * 2 + 8)
        while true {
            var ids = [Int32](repeating: 0, count: capacity)
            var message = [CChar](repeating: 0, count: 512)
            let n = utf8.withUnsafeMutableBufferPointer { chars in
                kd_spm_encode(handle, chars.baseAddress!, length, &ids, capacity, &message, message.count)
            }
            if n < 0 { throw KandinskyError(.tokenizer, "SentencePiece encoding failed: \(decodeCString(message))") }
            if Int(n) <= capacity { return ids.prefix(Int(n)).map(Int.init) }
            capacity = Int(n)
        }
    }
}

/// The text of a NUL-terminated C buffer.
private func decodeCString(_ buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
