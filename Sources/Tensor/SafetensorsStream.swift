import Foundation

/// Writes a safetensors file tensor by tensor without holding it in memory: the header is written first from the
/// declared entries, then each tensor's data in the declared order, to a temporary name that `finish()` fsyncs
/// and renames into place.
public final class SafetensorsStreamWriter {
    public struct Entry: Sendable {
        public var name: String
        public var dtype: DType
        public var shape: [Int]
        public init(name: String, dtype: DType, shape: [Int]) {
            precondition(dtype == .f32 || dtype == .f16 || dtype == .bf16, "streamed tensors are floating point")
            (self.name, self.dtype, self.shape) = (name, dtype, shape)
        }
    }

    public let path: String
    private let temporaryPath: String
    private let fd: Int32
    private let entries: [Entry]
    private var next = 0
    private var written = 0
    private var finished = false

    /// Creates the temporary file and writes the header for `entries`; their data must then be appended in name
    /// order (the order of the header, as `SafetensorsWriter` lays files out).
    public init(path: String, entries: [Entry], metadata: [String: String] = [:]) throws(TensorError) {
        self.path = path
        temporaryPath = path + ".partial"
        let (header, layout) = SafetensorsWriter.header(
            for: entries.map { ($0.name, $0.dtype, $0.shape) }, metadata: metadata)
        self.entries = layout.map { Entry(name: $0.name, dtype: $0.dtype, shape: $0.shape) }
        fd = open(temporaryPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if fd < 0 { throw TensorError(.io, "cannot create: \(String(cString: strerror(errno)))", file: temporaryPath) }
        try writeAll(header)
    }

    /// Names in the order their data must be appended.
    public var order: [String] { entries.map(\.name) }

    deinit {
        if !finished {
            close(fd)
            unlink(temporaryPath)
        }
    }

    /// Appends the next tensor's values (float32, converted to the entry's dtype); may be called several times
    /// per tensor with consecutive chunks.
    public func append(_ values: UnsafeBufferPointer<Float>) throws(TensorError) {
        guard next < entries.count else { throw TensorError(.badOffsets, "more data than declared", file: path) }
        let entry = entries[next]
        let total = entry.shape.reduce(1, *)
        guard written + values.count <= total else {
            throw TensorError(.badOffsets, "more data than its shape holds", file: path, tensor: entry.name)
        }
        var bytes: [UInt8]
        switch entry.dtype {
        case .f32: bytes = Array(UnsafeRawBufferPointer(values))
        case .f16:
            bytes = [UInt8](repeating: 0, count: values.count * 2)
            bytes.withUnsafeMutableBytes { raw in
                for i in 0..<values.count {
                    raw.storeBytes(of: Float16(values[i]).bitPattern.littleEndian, toByteOffset: 2 * i, as: UInt16.self)
                }
            }
        default:
            bytes = [UInt8](repeating: 0, count: values.count * 2)
            bytes.withUnsafeMutableBytes { raw in
                for i in 0..<values.count {
                    raw.storeBytes(
                        of: HalfPrecision.bf16Bits(values[i]).littleEndian, toByteOffset: 2 * i, as: UInt16.self)
                }
            }
        }
        try writeAll(bytes)
        written += values.count
        if written == total {
            next += 1
            written = 0
        }
    }

    /// Checks every declared tensor was written, fsyncs and renames the file into place.
    public func finish() throws(TensorError) {
        guard next == entries.count else {
            throw TensorError(.truncated, "only \(next) of \(entries.count) tensors written", file: path)
        }
        if fsync(fd) != 0 { throw TensorError(.io, "fsync failed: \(String(cString: strerror(errno)))", file: path) }
        close(fd)
        finished = true
        if rename(temporaryPath, path) != 0 {
            unlink(temporaryPath)
            throw TensorError(.io, "rename failed: \(String(cString: strerror(errno)))", file: path)
        }
    }

    private func writeAll(_ bytes: [UInt8]) throws(TensorError) {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + done, bytes.count - done) }
            if n < 0 {
                if errno == EINTR { continue }
                throw TensorError(.io, "write failed: \(String(cString: strerror(errno)))", file: path)
            }
            done += n
        }
    }
}
