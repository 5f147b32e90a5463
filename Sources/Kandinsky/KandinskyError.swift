import Tensor

/// An error from the model layer, naming what an operator needs to fix it: the file, and the key or field.
public typealias KandinskyError = LocatedError<KandinskyErrorCode>

/// What went wrong in the model layer.
public enum KandinskyErrorCode: String, Sendable {
    case tokenizer, modelDirectory, missingWeight, badWeight, unusedWeight, invalidParameter
}
