import CPNG

/// 8-bit pixels, rows packed, channels interleaved (3 = RGB, 4 = RGBA, 1 = gray).
public struct PixelImage: Equatable, Sendable {
    public var width: Int
    public var height: Int
    public var channels: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, channels: Int, pixels: [UInt8]) {
        precondition(
            pixels.count == width * height * channels, "\(pixels.count) bytes for \(width)×\(height)×\(channels)")
        (self.width, self.height, self.channels, self.pixels) = (width, height, channels, pixels)
    }
}

/// An error encoding or decoding a PNG, with libpng's message.
public struct PNGError: Error, CustomStringConvertible, Equatable {
    public var message: String
    public var source: String?
    public init(_ message: String, source: String? = nil) { (self.message, self.source) = (message, source) }
    public var description: String { source.map { "\($0): \(message)" } ?? message }
}

/// PNG encoding and decoding through libpng, with text chunks.
public enum PNGCodec {
    /// Encodes `image` as PNG bytes, with text chunks written in order: a text that `tEXt` can hold (printable
    /// Latin-1 and line feeds) as `tEXt` in Latin-1 bytes, any other as `iTXt` in UTF-8 — so a reader that follows
    /// the PNG specification shows `diplômée` and `синий квадрат` alike.
    public static func encode(
        _ image: PixelImage, text: [(key: String, value: String)] = []
    ) throws(PNGError) -> [UInt8] {
        guard image.width > 0, image.height > 0, image.width <= 1 << 24, image.height <= 1 << 24 else {
            throw PNGError("image size \(image.width)×\(image.height) is not encodable")
        }
        for entry in text {
            guard (1...79).contains(entry.key.utf8.count),
                entry.key.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value <= 0xFF && $0 != "\u{7F}" }),
                entry.key.utf8.allSatisfy({ $0 < 0x80 })
            else { throw PNGError("text chunk key \"\(entry.key)\" must be 1-79 printable ASCII characters") }
        }
        // C strings that live until the call returns: Latin-1 bytes for tEXt, UTF-8 for iTXt.
        let international = text.map { !fitsTEXt($0.value) }
        let keys = text.map { strdup($0.key)! }
        let values = zip(text, international).map { entry, international in
            cString(international ? Array(entry.value.utf8) : entry.value.unicodeScalars.map { UInt8($0.value) })
        }
        defer {
            keys.forEach { free($0) }
            values.forEach { free($0) }
        }
        var chunks = (0..<text.count).map { i in
            kd_png_text(key: keys[i], text: values[i], international: international[i] ? 1 : 0)
        }
        var output: UnsafeMutablePointer<UInt8>?
        var size = 0
        var message = [CChar](repeating: 0, count: 256)
        let status = image.pixels.withUnsafeBufferPointer { pixels in
            chunks.withUnsafeMutableBufferPointer { chunkBuffer in
                kd_png_encode(
                    pixels.baseAddress, UInt32(image.width), UInt32(image.height), Int32(image.channels),
                    chunkBuffer.baseAddress, Int32(chunkBuffer.count), &output, &size, &message, message.count)
            }
        }
        guard status == 0, let output else { throw PNGError(decodeCString(message)) }
        defer { free(output) }
        return Array(UnsafeBufferPointer(start: output, count: size))
    }

    /// Decodes PNG bytes to 8-bit RGB or RGBA, refusing images larger than `maxWidth` × `maxHeight` before
    /// allocating their pixels. Returns the image and its text chunks in file order.
    public static func decode(
        _ bytes: [UInt8], maxWidth: Int = 4096, maxHeight: Int = 4096, source: String? = nil
    ) throws(PNGError) -> (image: PixelImage, text: [(key: String, value: String)]) {
        var width: UInt32 = 0
        var height: UInt32 = 0
        var channels: Int32 = 0
        var pixels: UnsafeMutablePointer<UInt8>?
        var texts: UnsafeMutablePointer<kd_png_decoded_text>?
        var textCount: Int32 = 0
        var message = [CChar](repeating: 0, count: 256)
        let status = bytes.withUnsafeBufferPointer { buffer in
            kd_png_decode(
                buffer.baseAddress, buffer.count, UInt32(maxWidth), UInt32(maxHeight), &width, &height, &channels,
                &pixels, &texts, &textCount, &message, message.count)
        }
        guard status == 0, let pixels else { throw PNGError(decodeCString(message), source: source) }
        defer {
            free(pixels)
            kd_png_free_texts(texts, textCount)
        }
        let count = Int(width) * Int(height) * Int(channels)
        let image = PixelImage(
            width: Int(width), height: Int(height), channels: Int(channels),
            pixels: Array(UnsafeBufferPointer(start: pixels, count: count)))
        var text: [(key: String, value: String)] = []
        for i in 0..<Int(textCount) {
            let chunk = texts![i]
            let bytes = Array(UnsafeBufferPointer(start: chunk.text, count: strlen(chunk.text)))
                .map { UInt8(bitPattern: $0) }
            // tEXt and zTXt hold Latin-1: each byte is the code point of the same value.
            let value =
                chunk.international != 0
                ? String(decoding: bytes, as: UTF8.self)
                : String(String.UnicodeScalarView(bytes.map { Unicode.Scalar($0) }))
            text.append((String(cString: chunk.key), value))
        }
        return (image, text)
    }
}

/// Whether `tEXt` can hold `value`: printable Latin-1 (0x20–0x7E, 0xA1–0xFF) and line feeds (PNG 1.2 §11.3.4.3).
func fitsTEXt(_ value: String) -> Bool {
    value.unicodeScalars.allSatisfy { s in
        s == "\n" || (0x20...0x7E).contains(s.value) || (0xA1...0xFF).contains(s.value)
    }
}

/// A malloc'ed NUL-terminated copy of `bytes` (cut at a NUL byte, which neither text chunk can hold).
private func cString(_ bytes: [UInt8]) -> UnsafeMutablePointer<CChar> {
    let kept = bytes.prefix { $0 != 0 }
    let buffer = malloc(kept.count + 1)!.assumingMemoryBound(to: CChar.self)
    for (i, byte) in kept.enumerated() { buffer[i] = CChar(bitPattern: byte) }
    buffer[kept.count] = 0
    return buffer
}

/// The text of a NUL-terminated C buffer.
private func decodeCString(_ buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
