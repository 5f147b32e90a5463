import Foundation

/// A file written under a temporary name beside its destination, then fsynced and renamed into place, so a reader
/// never sees a partial file. Writes are buffered; a file never committed is removed.
final class OutputFile {
    let path: String
    private let temporaryPath: String
    private var descriptor: Int32
    private var buffer: [UInt8] = []
    private static let bufferSize = 4 << 20

    /// Creates the temporary file. `overwrite` false: an existing `path` is an error.
    init(path: String, overwrite: Bool) throws(ConversionError) {
        self.path = path
        if !overwrite && FileManager.default.fileExists(atPath: path) {
            throw ConversionError(.outputExists, "already exists (pass --overwrite to replace it)", file: path)
        }
        let directory = (path as NSString).deletingLastPathComponent
        let name = (path as NSString).lastPathComponent
        temporaryPath = (directory as NSString).appendingPathComponent(".\(name).\(getpid()).partial")
        descriptor = open(temporaryPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw ConversionError(.io, "cannot create: \(String(cString: strerror(errno)))", file: temporaryPath)
        }
        buffer.reserveCapacity(Self.bufferSize)
    }

    deinit {
        if descriptor >= 0 {
            close(descriptor)
            unlink(temporaryPath)
        }
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws(ConversionError) {
        if buffer.count + bytes.count > Self.bufferSize { try flush() }
        if bytes.count >= Self.bufferSize {
            try writeAll(bytes)
        } else {
            buffer.append(contentsOf: bytes)
        }
    }

    func write(_ bytes: [UInt8]) throws(ConversionError) {
        try bytes.withRawBytes { raw throws(ConversionError) in try write(raw) }
    }

    /// Flushes, fsyncs, closes and renames the file into place.
    func commit() throws(ConversionError) {
        try flush()
        guard fsync(descriptor) == 0 else {
            throw ConversionError(.io, "cannot fsync: \(String(cString: strerror(errno)))", file: temporaryPath)
        }
        close(descriptor)
        descriptor = -1
        guard rename(temporaryPath, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporaryPath)
            throw ConversionError(.io, "cannot rename \(temporaryPath) into place: \(reason)", file: path)
        }
        // Make the rename itself durable.
        let parent = (path as NSString).deletingLastPathComponent
        let directory = open(parent.isEmpty ? "." : parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directory >= 0 {
            fsync(directory)
            close(directory)
        }
    }

    private func flush() throws(ConversionError) {
        if buffer.isEmpty { return }
        try buffer.withRawBytes { raw throws(ConversionError) in try writeAll(raw) }
        buffer.removeAll(keepingCapacity: true)
    }

    private func writeAll(_ bytes: UnsafeRawBufferPointer) throws(ConversionError) {
        var done = 0
        while done < bytes.count {
            let n = Foundation.write(descriptor, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                throw ConversionError(.io, "cannot write: \(String(cString: strerror(errno)))", file: temporaryPath)
            }
            done += n
        }
    }
}

extension [UInt8] {
    /// `withUnsafeBytes` for a body that throws `ConversionError` (the standard one rethrows untyped errors).
    func withRawBytes(_ body: (UnsafeRawBufferPointer) throws(ConversionError) -> Void) throws(ConversionError) {
        var failure: ConversionError?
        withUnsafeBytes { raw in
            do throws(ConversionError) { try body(raw) } catch { failure = error }
        }
        if let failure { throw failure }
    }
}
