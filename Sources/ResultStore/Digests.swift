import Crypto

/// Content digests of stored files (the `sha256` of events), through swift-crypto.
public enum Digests {
    /// SHA-256 of `bytes` as 64 lowercase hex digits.
    public static func sha256Hex(_ bytes: [UInt8]) -> String { hex(Crypto.SHA256.hash(data: bytes)) }

    /// Lowercase hex of a digest's bytes.
    public static func hex<D: Sequence>(_ digest: D) -> String where D.Element == UInt8 {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for b in digest {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
