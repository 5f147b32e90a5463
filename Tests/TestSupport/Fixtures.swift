import Foundation

/// The committed fixtures under `Tests/Fixtures` (see its README for where they come from).
public enum Fixtures {
    /// `Tests/Fixtures`, found from this source file's location so tests run from any working directory.
    public static let root: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures")

    /// `Tests/Fixtures/kandinsky2/<relative>`.
    public static func kandinsky2(_ relative: String) -> String {
        root.appendingPathComponent("kandinsky2").appendingPathComponent(relative).path
    }
}

/// A seeded generator (SplitMix64) so random test inputs are the same on every run.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// `count` floats uniform in `range`.
    public mutating func floats(_ count: Int, in range: ClosedRange<Float> = -1...1) -> [Float] {
        (0..<count).map { _ in Float.random(in: range, using: &self) }
    }
}

/// A fresh temporary directory, removed by `remove()`.
public struct TemporaryDirectory: Sendable {
    public let path: String
    public init(prefix: String = "kd-test") throws {
        let template = (NSTemporaryDirectory() as NSString).appendingPathComponent("\(prefix).XXXXXX")
        var bytes = Array(template.utf8CString)
        guard let made = mkdtemp(&bytes) else {
            throw NSError(
                domain: "TemporaryDirectory", code: Int(errno), userInfo: [NSLocalizedDescriptionKey: "mkdtemp failed"])
        }
        path = String(cString: made)
    }

    public func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }
    public func remove() { try? FileManager.default.removeItem(atPath: path) }
}
