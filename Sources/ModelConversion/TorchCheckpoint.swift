import Foundation
import Tensor
import ZIPFoundation

/// A checkpoint written by `torch.save` in the zip format (torch 1.6 and later): `<archive>/data.pkl` (the pickled
/// object), `<archive>/data/<key>` (one entry per storage, raw little-endian elements), and optionally
/// `<archive>/byteorder` and `<archive>/version`.
///
/// The pickle is read by `Unpickler` (nothing executed). Storage bytes are streamed from the archive in chunks —
/// never the whole file in memory — so a 5 GB UNet converts in constant memory. The zip structure is read by
/// ZIPFoundation; every size it reports is checked against the file and the storage's declared element count
/// before a byte is trusted, and whole-entry reads are checked against the entry's CRC-32.
public final class TorchCheckpoint {
    /// Bytes per read from the archive.
    static let chunkSize = 1 << 20
    /// Most entries an archive may list (a real UNet checkpoint has about 610).
    static let maxEntries = 1 << 20

    public let path: String
    /// The unpickled `data.pkl`.
    public let root: PickleValue
    private let archive: Archive
    /// `<archive>/`, the folder every entry of this checkpoint lives in.
    private let prefix: String
    private let entries: [String: Entry]
    private let fileSize: UInt64

    /// Opens `path`, checks its zip structure and unpickles `data.pkl`.
    public init(path: String, limits: Unpickler.Limits = Unpickler.Limits()) throws(ConversionError) {
        self.path = path
        // stat follows symbolic links (a Hugging Face cache links release files to its blobs).
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw ConversionError(.missingFile, "cannot read: \(String(cString: strerror(errno)))", file: path)
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else { throw ConversionError(.io, "not a regular file", file: path) }
        let size = UInt64(info.st_size)
        fileSize = size
        let magic = try Self.readPrefix(path, count: 4)
        if magic.first == 0x80 {
            throw ConversionError(
                .legacyFormat,
                "a pre-1.6 torch checkpoint (a bare pickle, not a zip); re-save it with torch.save in a current torch",
                file: path)
        }
        guard magic == [0x50, 0x4B, 0x03, 0x04] else {
            throw ConversionError(.badArchive, "not a zip archive (no local file header at its start)", file: path)
        }
        do {
            archive = try Archive(url: URL(fileURLWithPath: path), accessMode: .read)
        } catch Archive.ArchiveError.missingEndOfCentralDirectoryRecord {
            throw ConversionError(
                .truncated, "the zip end-of-central-directory record is missing: the file is truncated", file: path)
        } catch {
            throw ConversionError(.badArchive, "cannot open the zip archive (\(error))", file: path)
        }
        var entries: [String: Entry] = [:]
        for entry in archive {
            guard entries.count < Self.maxEntries else {
                throw ConversionError(.limitExceeded, "more than \(Self.maxEntries) zip entries", file: path)
            }
            if entries[entry.path] == nil { entries[entry.path] = entry }
        }
        self.entries = entries
        let pickles = entries.keys.filter { name in
            let parts = name.split(separator: "/", omittingEmptySubsequences: false)
            return parts.count == 2 && parts[1] == "data.pkl" && !parts[0].isEmpty
        }
        guard pickles.count == 1, let pickle = pickles.first else {
            throw ConversionError(
                pickles.isEmpty ? .missingEntry : .badArchive,
                pickles.isEmpty
                    ? "no <archive>/data.pkl entry: not a torch.save checkpoint, or its zip directory is damaged"
                    : "several data.pkl entries (\(pickles.sorted().joined(separator: ", ")))",
                file: path, key: pickles.isEmpty ? nil : pickles.sorted().first)
        }
        prefix = String(pickle.dropLast("data.pkl".count))
        if entries[prefix + "byteorder"] != nil {
            let order = try Self.readWhole(
                archive, entries[prefix + "byteorder"]!, limit: 64, path: path, name: prefix + "byteorder")
            guard order == Array("little".utf8) else {
                throw ConversionError(
                    .unsupportedDType,
                    "byte order \"\(String(decoding: order, as: UTF8.self))\"; only little-endian checkpoints are read",
                    file: path, key: prefix + "byteorder")
            }
        }
        let pickleBytes = try Self.readWhole(
            archive, entries[pickle]!, limit: limits.maxBytes, path: path, name: pickle)
        root = try Unpickler.load(pickleBytes, file: path, limits: limits)
    }

    // MARK: - Tensors

    /// Checks that `tensor`'s storage entry exists, is a plain file and holds every element the storage declares,
    /// and that its type has a safetensors dtype; returns that dtype. `key` names the tensor in errors.
    @discardableResult
    public func check(_ tensor: TorchTensor, key: String) throws(ConversionError) -> DType {
        _ = try storageEntry(tensor.storage, key: key)
        return tensor.storage.dtype!
    }

    /// Streams `tensor`'s elements in row-major order, as raw little-endian bytes of its dtype, to `sink` in
    /// chunks (gathering them first when the tensor is not contiguous).
    public func stream(
        _ tensor: TorchTensor, key: String, to sink: (UnsafeRawBufferPointer) throws(ConversionError) -> Void
    ) throws(ConversionError) {
        let entry = try storageEntry(tensor.storage, key: key)
        let size = tensor.storage.dtype!.byteSize
        let count = tensor.count
        if count == 0 { return }
        if tensor.isContiguous {
            let range = (tensor.offset * size)..<((tensor.offset + count) * size)
            try read(entry, bytes: range, key: key, sink)
            return
        }
        // A strided view: read the window it spans, then pick its elements in row-major order.
        let window = (tensor.offset * size)..<(tensor.extent * size)
        var source: [UInt8] = []
        source.reserveCapacity(window.count)
        try read(entry, bytes: window, key: key) { chunk throws(ConversionError) in source += chunk }
        var out: [UInt8] = []
        out.reserveCapacity(min(count * size, Self.chunkSize))
        var index = [Int](repeating: 0, count: tensor.shape.count)
        var element = 0  // relative to the window start, in elements
        for _ in 0..<count {
            let start = element * size
            out += source[start..<(start + size)]
            if out.count >= Self.chunkSize {
                try out.withRawBytes { raw throws(ConversionError) in try sink(raw) }
                out.removeAll(keepingCapacity: true)
            }
            // Advance the multi-index, last dimension fastest.
            var d = tensor.shape.count - 1
            while d >= 0 {
                index[d] += 1
                element += tensor.stride[d]
                if index[d] < tensor.shape[d] { break }
                element -= tensor.stride[d] * tensor.shape[d]
                index[d] = 0
                d -= 1
            }
        }
        if !out.isEmpty { try out.withRawBytes { raw throws(ConversionError) in try sink(raw) } }
    }

    private func storageEntry(_ storage: TorchStorage, key: String) throws(ConversionError) -> Entry {
        guard let dtype = storage.dtype else {
            throw ConversionError(
                .unsupportedDType,
                "stored as torch.\(storage.typeName); readable: \(TorchStorage.dtypes.keys.sorted().joined(separator: ", "))",
                file: path, key: key)
        }
        let name = prefix + "data/" + storage.key
        guard let entry = entries[name] else {
            throw ConversionError(
                .missingEntry, "its storage \(name) is not in the archive (truncated or damaged checkpoint)",
                file: path, key: key)
        }
        guard entry.type == .file else {
            throw ConversionError(.badArchive, "its storage entry \(name) is not a plain file", file: path, key: key)
        }
        let (needed, overflow) = storage.count.multipliedReportingOverflow(by: dtype.byteSize)
        guard !overflow, entry.uncompressedSize >= UInt64(needed) else {
            throw ConversionError(
                .storageOutOfRange,
                "its storage \(name) holds \(entry.uncompressedSize) bytes, fewer than the \(storage.count) "
                    + "\(dtype.rawValue) elements it declares",
                file: path, key: key)
        }
        // Sizes the zip claims are bounded by the file (stored entries) or by deflate's largest ratio, so a
        // hostile archive cannot make the output larger than about a thousand times its own size.
        guard entry.compressedSize <= fileSize else {
            throw ConversionError(
                .truncated, "its storage \(name) claims \(entry.compressedSize) bytes, more than the file has",
                file: path, key: key)
        }
        let (bound, huge) = entry.compressedSize.multipliedReportingOverflow(by: entry.isCompressed ? 1032 : 1)
        guard huge || entry.uncompressedSize <= bound else {
            throw ConversionError(
                .badArchive,
                "its storage \(name) claims \(entry.uncompressedSize) bytes from \(entry.compressedSize) stored",
                file: path, key: key)
        }
        return entry
    }

    // MARK: - Archive reading

    /// Thrown by a consumer to stop reading an entry once the bytes it wants have gone by.
    private struct EnoughRead: Error {}

    /// Passes bytes `range` of `entry` to `sink`. A read that covers the entry's end checks its CRC-32.
    private func read(
        _ entry: Entry, bytes range: Range<Int>, key: String?,
        _ sink: (UnsafeRawBufferPointer) throws(ConversionError) -> Void
    ) throws(ConversionError) {
        try Self.read(archive, entry, bytes: range, path: path, key: key, sink)
    }

    private static func read(
        _ archive: Archive, _ entry: Entry, bytes range: Range<Int>, path: String, key: String?,
        _ sink: (UnsafeRawBufferPointer) throws(ConversionError) -> Void
    ) throws(ConversionError) {
        let total = Int(clamping: entry.uncompressedSize)
        guard range.upperBound <= total else {
            throw ConversionError(
                .storageOutOfRange, "bytes \(range) lie outside the \(total)-byte entry \(entry.path)", file: path,
                key: key)
        }
        let toEnd = range.upperBound == total
        var position = 0
        do {
            let checksum = try archive.extract(entry, bufferSize: chunkSize, skipCRC32: !toEnd) { data in
                guard !data.isEmpty || position >= total else {
                    throw ConversionError(
                        .truncated, "entry \(entry.path) ends after \(position) of its \(total) bytes", file: path,
                        key: key)
                }
                let chunk = position..<(position + data.count)
                let wanted = chunk.clamped(to: range)
                if !wanted.isEmpty {
                    try data.withUnsafeBytes { raw in
                        try sink(
                            UnsafeRawBufferPointer(
                                rebasing: raw[(wanted.lowerBound - position)..<(wanted.upperBound - position)]))
                    }
                }
                position += data.count
                if position >= range.upperBound && !toEnd { throw EnoughRead() }
            }
            if toEnd && checksum != entry.checksum {
                throw ConversionError(
                    .badArchive, "entry \(entry.path) fails its CRC-32 check (corrupt file)", file: path, key: key)
            }
        } catch is EnoughRead {
        } catch let error as ConversionError {
            throw error
        } catch {
            throw ConversionError(.badArchive, "cannot read entry \(entry.path) (\(error))", file: path, key: key)
        }
        guard position >= range.upperBound else {
            throw ConversionError(
                .truncated, "entry \(entry.path) ends after \(position) of its \(total) bytes", file: path, key: key)
        }
    }

    /// A whole (small) entry, at most `limit` bytes.
    private static func readWhole(
        _ archive: Archive, _ entry: Entry, limit: Int, path: String, name: String
    )
        throws(ConversionError) -> [UInt8]
    {
        guard entry.uncompressedSize <= UInt64(limit) else {
            throw ConversionError(
                .limitExceeded, "entry of \(entry.uncompressedSize) bytes exceeds the \(limit)-byte limit", file: path,
                key: name)
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Int(entry.uncompressedSize))
        try read(archive, entry, bytes: 0..<Int(entry.uncompressedSize), path: path, key: name) {
            chunk throws(ConversionError) in bytes += chunk
        }
        return bytes
    }

    private static func readPrefix(_ path: String, count: Int) throws(ConversionError) -> [UInt8] {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw ConversionError(.io, "cannot open for reading", file: path)
        }
        defer { try? handle.close() }
        do {
            return Array(try handle.read(upToCount: count) ?? Data())
        } catch {
            throw ConversionError(.io, "cannot read: \(error.localizedDescription)", file: path)
        }
    }
}
