/// An error from the model layer, naming what an operator needs to fix it: the file, and the key or field.
public struct KandinskyError: Error, CustomStringConvertible {
    public enum Code: String, Sendable {
        case tokenizer, modelDirectory, missingWeight, badWeight, unusedWeight, invalidParameter
    }

    public var code: Code
    public var message: String
    public var file: String?
    public var key: String?

    public init(_ code: Code, _ message: String, file: String? = nil, key: String? = nil) {
        (self.code, self.message, self.file, self.key) = (code, message, file, key)
    }

    public var description: String {
        var place = file ?? ""
        if let key { place += place.isEmpty ? "\"\(key)\"" : ", \"\(key)\"" }
        return place.isEmpty ? message : "\(place): \(message)"
    }
}
