// MARK: - Serialization

extension JSONValue {
    /// The order in which object members are written.
    public enum MemberOrder: Sendable {
        /// Sorted by name, so equal values serialize equally (events, job.json, `--json` output).
        case sorted
        /// As parsed or built (model.json, safetensors headers).
        case document
    }

    /// Compact JSON text with object members sorted by name: the canonical form, for documents other programs read.
    public var serialized: String { serialized(memberOrder: .sorted) }

    /// Compact JSON text. Strings escape `"`, `\`, control characters, DEL and U+2028/U+2029 (which some
    /// JavaScript readers take for line ends); numbers are written as their literal text.
    public func serialized(memberOrder: MemberOrder) -> String {
        var out = ""
        write(to: &out, memberOrder)
        return out
    }

    private func write(to out: inout String, _ order: MemberOrder) {
        switch self {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .number(let n): out += n
        case .string(let s): Self.writeString(s, to: &out)
        case .array(let items):
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += "," }
                item.write(to: &out, order)
            }
            out += "]"
        case .object(let object):
            out += "{"
            let members = order == .sorted ? object.members.sorted { $0.key < $1.key } : object.members
            for (i, member) in members.enumerated() {
                if i > 0 { out += "," }
                Self.writeString(member.key, to: &out)
                out += ":"
                member.value.write(to: &out, order)
            }
            out += "}"
        }
    }

    private static func writeString(_ s: String, to out: inout String) {
        out += "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _
            where scalar.value < 0x20 || scalar.value == 0x7F || scalar.value == 0x2028 || scalar.value == 0x2029:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        out += "\""
    }
}
