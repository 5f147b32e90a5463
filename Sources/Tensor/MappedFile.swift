import Foundation

/// A whole file mapped read-only into memory (`mmap`, `MAP_PRIVATE`), unmapped when the last reference goes.
public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let bytes: UnsafeRawBufferPointer

    /// Maps `path`. An empty file maps to an empty buffer.
    public init(path: String) throws(TensorError) {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw TensorError(.io, "cannot open: \(String(cString: strerror(errno)))", file: path) }
        defer { close(fd) }
        var info = stat()
        if fstat(fd, &info) != 0 {
            throw TensorError(.io, "cannot stat: \(String(cString: strerror(errno)))", file: path)
        }
        if (info.st_mode & S_IFMT) != S_IFREG { throw TensorError(.io, "not a regular file", file: path) }
        let size = Int(info.st_size)
        if size == 0 {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        guard let base = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), base != MAP_FAILED else {
            throw TensorError(.io, "cannot map: \(String(cString: strerror(errno)))", file: path)
        }
        bytes = UnsafeRawBufferPointer(start: base, count: size)
    }

    deinit {
        if let base = bytes.baseAddress { munmap(UnsafeMutableRawPointer(mutating: base), bytes.count) }
    }
}

/// An error from the tensor layer: a code, what went wrong, and where (file and tensor name when known).
public struct TensorError: Error, CustomStringConvertible, Equatable {
    public enum Code: String, Sendable {
        case io, headerTooLarge, truncated, malformedHeader, unknownDType, duplicateName, badOffsets, shapeMismatch
        case wrongDType, missingTensor
    }

    public var code: Code
    public var message: String
    public var file: String?
    public var tensor: String?

    public init(_ code: Code, _ message: String, file: String? = nil, tensor: String? = nil) {
        (self.code, self.message, self.file, self.tensor) = (code, message, file, tensor)
    }

    public var description: String {
        var where_ = ""
        if let file { where_ += file }
        if let tensor { where_ += where_.isEmpty ? "tensor \"\(tensor)\"" : ", tensor \"\(tensor)\"" }
        return where_.isEmpty ? message : "\(where_): \(message)"
    }
}

/// Read-only zero memory that costs nothing until read: an anonymous private mapping, whose pages the kernel
/// supplies (as zeros) only when touched.
public enum ZeroPages {
    final class Mapping: @unchecked Sendable {
        let base: UnsafeMutableRawPointer
        let size: Int
        init(size: Int) {
            self.size = max(size, 1)
            guard let p = mmap(nil, self.size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0),
                p != MAP_FAILED
            else { fatalError("cannot reserve \(size) bytes of address space") }
            base = p
        }
        deinit { munmap(base, size) }
    }

    /// Storage of `count` zero floats.
    public static func storage(count: Int) -> TensorStorage {
        let mapping = Mapping(size: count * MemoryLayout<Float>.stride)
        return TensorStorage(readOnly: mapping.base.assumingMemoryBound(to: Float.self), count: count, owner: mapping)
    }
}
