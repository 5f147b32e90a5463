import Foundation
import JSON

/// Where a command's lines go. With `--json`, stdout holds exactly one JSON document (so `| jq` works) and the human
/// lines (headers, progress, per-case figures) go to stderr; without it everything is on stdout.
struct Console {
    var json: Bool

    /// A human line: stdout, or stderr in JSON mode.
    func line(_ text: String) {
        if json {
            FileHandle.standardError.write(Data((text + "\n").utf8))
        } else {
            print(text)
        }
    }

    /// The one JSON document, keys sorted, on stdout.
    func document(_ value: JSONValue) {
        print(value.serialized)
    }

    /// The one JSON document, already serialised (one line), on stdout.
    func document(json text: String) {
        print(text)
    }
}
