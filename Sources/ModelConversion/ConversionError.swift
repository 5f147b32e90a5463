import Tensor

/// An error from converting release files: a code, what went wrong, and where — the file and, when known, the key
/// (a state-dict key, a model.json field or an archive entry) — so an operator can fix it without reading code.
public typealias ConversionError = LocatedError<ConversionErrorCode>

/// What went wrong converting release files.
public enum ConversionErrorCode: String, Sendable {
    /// A file could not be read, written or renamed.
    case io
    /// A release file the conversion needs is not there.
    case missingFile
    /// The file is not a zip archive, or its zip structure is damaged.
    case badArchive
    /// A checkpoint in the pre-1.6 torch format (a bare pickle stream, not a zip).
    case legacyFormat
    /// An archive entry or the pickle ends early, or holds fewer bytes than it declares.
    case truncated
    /// An archive entry the checkpoint refers to (`data.pkl`, `data/<n>`) is absent.
    case missingEntry
    /// The pickle breaks its own rules (stack underflow, bad argument types, invalid UTF-8).
    case malformedPickle
    /// The pickle uses an opcode or feature this reader does not implement.
    case unsupportedPickle
    /// A pickle or archive exceeds a size limit (memo, nesting, string length, entry size).
    case limitExceeded
    /// The checkpoint is not shaped as expected (no state dict where one should be, a non-string key).
    case notAStateDict
    /// A value the model needs is not a tensor (e.g. the result of a call this reader never makes).
    case notATensor
    /// A tensor's storage type has no safetensors dtype, or the file is big-endian.
    case unsupportedDType
    /// A tensor reaches outside its storage, or the storage entry is smaller than it claims.
    case storageOutOfRange
    /// A model.json value, a configuration file or an override is invalid.
    case badConfig
    /// The configuration disagrees with the shape of a weight.
    case configMismatch
    /// A tensor the configuration checks rely on is absent.
    case missingKey
    /// The output file exists and overwriting was not asked for.
    case outputExists
}
