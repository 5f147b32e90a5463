import Foundation
import TestSupport
import Testing

@testable import ResultStore

/// libpng round trips, text chunks, and refusal of bad input.
@Suite struct PNGCodecTests {
    func gradient(width: Int, height: Int, channels: Int) -> PixelImage {
        var pixels: [UInt8] = []
        for y in 0..<height {
            for x in 0..<width {
                for c in 0..<channels { pixels.append(UInt8((x * 7 + y * 13 + c * 50) % 256)) }
            }
        }
        return PixelImage(width: width, height: height, channels: channels, pixels: pixels)
    }

    @Test(arguments: [3, 4])
    func roundTripWithTextChunks(channels: Int) throws {
        let image = gradient(width: 37, height: 21, channels: channels)
        let parameters =
            "красная машина\nNegative prompt: blurry\nSteps: 50, Sampler: ddim, CFG scale: 7, Seed: 1, Size: 37x21"
        let bytes = try PNGCodec.encode(image, text: [("parameters", parameters), ("Software", "kandinsky-worker")])
        #expect(Array(bytes.prefix(8)) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        // Non-Latin-1 text goes in an iTXt chunk, Latin-1 in tEXt.
        #expect(bytes.containsSubsequence(Array("iTXtparameters".utf8)))
        #expect(bytes.containsSubsequence(Array("tEXtSoftware".utf8)))
        let (decoded, text) = try PNGCodec.decode(bytes)
        #expect(decoded == image)
        #expect(text.map(\.key) == ["parameters", "Software"])
        #expect(text.first?.value == parameters)
    }

    /// The chunks as the file holds them, read without libpng: (type, data) in file order.
    func rawChunks(_ bytes: [UInt8]) -> [(type: String, data: [UInt8])] {
        var chunks: [(String, [UInt8])] = []
        var offset = 8
        while offset + 12 <= bytes.count {
            let length = bytes[offset..<offset + 4].reduce(0) { $0 << 8 | Int($1) }
            let type = String(decoding: bytes[offset + 4..<offset + 8], as: UTF8.self)
            chunks.append((type, Array(bytes[offset + 8..<offset + 8 + length])))
            offset += 12 + length
        }
        return chunks
    }

    /// What a reader other than ours finds: `tEXt` holds Latin-1 bytes (a UTF-8 `ô` there shows as `Ã´` in every
    /// other tool), `iTXt` holds UTF-8 after its keyword, flags, language tag and translated keyword.
    @Test(arguments: [
        ("une diplômée, eine grüne Wiese, ¿qué?", "tEXt"),
        ("синий квадрат", "iTXt"),
        ("一个红色的圆形 赤い円", "iTXt"),
        ("control \u{85} character", "iTXt"),
    ])
    func textChunksHoldWhatThePNGSpecificationSays(prompt: String, type: String) throws {
        let parameters = prompt + "\nSteps: 30, Sampler: ddim, CFG scale: 4, Seed: 1, Size: 8x8"
        let bytes = try PNGCodec.encode(gradient(width: 8, height: 8, channels: 3), text: [("parameters", parameters)])
        let chunk = try #require(rawChunks(bytes).first { $0.type == "tEXt" || $0.type == "iTXt" })
        #expect(chunk.type == type)
        let keyword = Array("parameters".utf8) + [0]
        #expect(Array(chunk.data.prefix(keyword.count)) == keyword)
        if type == "tEXt" {
            let latin1 = parameters.unicodeScalars.map { UInt8($0.value) }
            #expect(Array(chunk.data.dropFirst(keyword.count)) == latin1)
            #expect(String(data: Data(chunk.data.dropFirst(keyword.count)), encoding: .isoLatin1) == parameters)
        } else {
            // Compression flag 0, method 0, empty language tag, empty translated keyword, then the UTF-8 text.
            #expect(Array(chunk.data.dropFirst(keyword.count).prefix(4)) == [0, 0, 0, 0])
            #expect(Array(chunk.data.dropFirst(keyword.count + 4)) == Array(parameters.utf8))
        }
        #expect(try PNGCodec.decode(bytes).text.first?.value == parameters)
    }

    @Test func refusesBadInput() throws {
        let bytes = try PNGCodec.encode(gradient(width: 16, height: 16, channels: 3))
        #expect(throws: PNGError.self) { try PNGCodec.decode(Array("not a png at all".utf8)) }
        #expect(throws: PNGError.self) { try PNGCodec.decode(Array(bytes.prefix(bytes.count / 2))) }
        var corrupt = bytes
        corrupt[40] ^= 0xFF  // inside IHDR/IDAT: CRC or zlib error
        #expect(throws: PNGError.self) { try PNGCodec.decode(corrupt) }
        do {
            _ = try PNGCodec.decode(bytes, maxWidth: 8, maxHeight: 8)
            Issue.record("decoded an image larger than the limit")
        } catch {
            #expect(error.message.lowercased().contains("larger than the 8x8 limit"), "\(error.message)")
        }
        #expect(throws: PNGError.self) {
            try PNGCodec.encode(gradient(width: 4, height: 4, channels: 3), text: [("", "x")])
        }
    }
}

extension Array where Element == UInt8 {
    func containsSubsequence(_ needle: [UInt8]) -> Bool {
        guard needle.count <= count else { return false }
        return (0...(count - needle.count)).contains { Array(self[$0..<($0 + needle.count)]) == needle }
    }
}
