import Foundation
import JobQueue
import ResultStore
import TestSupport
import Testing

@testable import Worker

/// `kandinsky-worker generate` as a user runs it: the real binary on the tiny fixture model.
@Suite struct GenerateCommandTests {
    /// Runs the binary to completion; returns its exit status and stderr.
    func run(_ arguments: [String], in dir: TemporaryDirectory) throws -> (Int32, String) {
        let process = try WorkerProcess(name: "generate", command: arguments, logDirectory: dir.path)
        #expect(eventually(timeout: 120) { !process.isRunning })
        return (process.terminate(), process.log)
    }

    @Test func writesAPNGWhoseParametersRoundTripAndRepeatsByteForByte() throws {
        let dir = try TemporaryDirectory(prefix: "kd-generate")
        defer { dir.remove() }
        let model = Fixtures.kandinsky2("tiny-model")
        let common = [
            "generate", "красная машина", "--model", model, "--width", "96", "--height", "64", "--steps", "3", "--seed",
            "7", "--negative-prompt", "blurry", "--guidance-scale", "5",
        ]
        let (status, log) = try run(common + ["--output", dir.file("a.png")], in: dir)
        #expect(status == 0, "\(log)")
        let (status2, _) = try run(common + ["--output", dir.file("b.png")], in: dir)
        #expect(status2 == 0)
        let a = [UInt8](try Data(contentsOf: URL(fileURLWithPath: dir.file("a.png"))))
        let b = [UInt8](try Data(contentsOf: URL(fileURLWithPath: dir.file("b.png"))))
        #expect(a == b, "the same request gave different PNG bytes")
        let (image, text) = try PNGCodec.decode(a)
        #expect(image.width == 96 && image.height == 64)
        let parameters = try #require(text.first { $0.key == "parameters" }?.value)
        #expect(
            parameters == """
                красная машина
                Negative prompt: blurry
                Steps: 3, Sampler: ddim, CFG scale: 5, Seed: 7, Size: 96x64, Model: kandinsky-2.0, Eta: 0
                """)
        #expect(text.map(\.key) == ["parameters", "Software"])
    }

    @Test func badInputFailsBeforeAnyCompute() throws {
        let dir = try TemporaryDirectory(prefix: "kd-generate-bad")
        defer { dir.remove() }
        let model = Fixtures.kandinsky2("tiny-model")
        try Data("not a png".utf8).write(to: URL(fileURLWithPath: dir.file("init.png")))
        let cases: [([String], String)] = [
            (["--width", "5000"], "width"),
            (["--steps", "0"], "steps"),
            (["--sampler", "euler"], "sampler"),
            (["--init-image", dir.file("init.png"), "--strength", "0.5"], "init-image"),
            (["--init-image", dir.file("missing.png"), "--strength", "0.5"], "cannot be read"),
            (["--mask", dir.file("missing.png")], "mask_image is given without init_image"),
        ]
        for (extra, expected) in cases {
            let (status, log) = try run(
                ["generate", "x", "--model", model, "--output", dir.file("o.png")] + extra, in: dir)
            #expect(status != 0, "\(extra) succeeded")
            #expect(log.contains(expected), "\(extra): \(log)")
            #expect(!log.contains("model loaded"), "\(extra): the model was loaded before the check")
        }
    }
}
