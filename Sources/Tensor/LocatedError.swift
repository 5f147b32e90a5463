/// An error naming what an operator needs to fix it: a code, the message, and where — the file and, when known, the
/// key (a weight's name, a model.json field, an archive entry). The model layer (`KandinskyError`) and the release
/// converter (`ConversionError`) are this one type over their own codes.
public struct LocatedError<C: RawRepresentable & Sendable>: Error, CustomStringConvertible where C.RawValue == String {
    /// The error's kinds (`KandinskyError.Code`, `ConversionError.Code`).
    public typealias Code = C

    public var code: Code
    public var message: String
    public var file: String?
    public var key: String?

    public init(_ code: Code, _ message: String, file: String? = nil, key: String? = nil) {
        (self.code, self.message, self.file, self.key) = (code, message, file, key)
    }

    /// `file, "key": message`, or as much of it as is known.
    public var description: String {
        var place = file ?? ""
        if let key { place += place.isEmpty ? "\"\(key)\"" : ", \"\(key)\"" }
        return place.isEmpty ? message : "\(place): \(message)"
    }
}

extension LocatedError: Equatable where C: Equatable {}
