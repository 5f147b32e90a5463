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
