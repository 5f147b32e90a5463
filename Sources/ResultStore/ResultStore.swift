import Foundation

/// A filesystem error of the store, with the path and the `errno` behind it.
public struct StoreError: Error, Equatable, CustomStringConvertible {
    public var message: String
    public var path: String
    /// `errno` of the failing call (0 when not from a system call).
    public var code: Int32

    public init(_ message: String, path: String, code: Int32 = 0) {
        (self.message, self.path, self.code) = (message, path, code)
    }

    static func system(_ call: String, _ path: String, _ code: Int32 = errno) -> StoreError {
        StoreError("\(call) failed: \(String(cString: strerror(code)))", path: path, code: code)
    }

    public var description: String { "\(path): \(message)" }
}

/// The file operations the store needs. The real one is `POSIXFileSystem`; tests wrap it to inject failures
/// (a full disk, say) that cannot be produced on demand otherwise.
public protocol StoreFileSystem: Sendable {
    /// Creates `path` and its missing parents, each made durable (the parent directory fsynced).
    func makeDirectories(_ path: String) throws(StoreError)
    /// Writes `bytes` at `path` so a reader sees the old file or the whole new one, never a part: a temporary file
    /// in the same directory, written, fsynced, renamed over `path`, then the directory fsynced.
    func writeAtomically(_ bytes: [UInt8], to path: String) throws(StoreError)
    /// The names in a directory ([] when it does not exist).
    func list(_ directory: String) throws(StoreError) -> [String]
    func remove(_ path: String) throws(StoreError)
}

/// `StoreFileSystem` on POSIX calls.
public struct POSIXFileSystem: StoreFileSystem {
    public init() {}

    public func makeDirectories(_ path: String) throws(StoreError) {
        var st = stat()
        if stat(path, &st) == 0 {
            guard st.st_mode & S_IFMT == S_IFDIR else { throw StoreError("exists and is not a directory", path: path) }
            return
        }
        let parent = (path as NSString).deletingLastPathComponent
        if !parent.isEmpty, parent != path { try makeDirectories(parent) }
        if mkdir(path, 0o755) != 0, errno != EEXIST { throw .system("mkdir", path) }
        try syncDirectory(parent.isEmpty ? "." : parent)
    }

    public func writeAtomically(_ bytes: [UInt8], to path: String) throws(StoreError) {
        let directory = (path as NSString).deletingLastPathComponent
        let name = (path as NSString).lastPathComponent
        let temporary = (directory as NSString).appendingPathComponent(
            ".\(name).tmp.\(getpid()).\(UInt32.random(in: 0...UInt32.max))")
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .system("open", temporary) }
        var failure: StoreError?
        bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    failure = .system("write", temporary)
                    return
                }
                offset += n
            }
        }
        if failure == nil, fsync(fd) != 0 { failure = .system("fsync", temporary) }
        if close(fd) != 0, failure == nil { failure = .system("close", temporary) }
        if failure == nil, rename(temporary, path) != 0 { failure = .system("rename", path) }
        if let failure {
            unlink(temporary)
            throw failure
        }
        try syncDirectory(directory)
    }

    public func list(_ directory: String) throws(StoreError) -> [String] {
        guard let dir = opendir(directory) else {
            if errno == ENOENT { return [] }
            throw .system("opendir", directory)
        }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != ".", name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    public func remove(_ path: String) throws(StoreError) {
        if unlink(path) != 0, errno != ENOENT { throw .system("unlink", path) }
    }

    private func syncDirectory(_ path: String) throws(StoreError) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw .system("open", path) }
        defer { close(fd) }
        if fsync(fd) != 0 { throw .system("fsync", path) }
    }
}

/// One file the store wrote, for the job's event.
public struct StoredFile: Equatable, Sendable {
    /// Relative to the store root.
    public var path: String
    public var sha256: String
    public var bytes: Int

    public init(path: String, sha256: String, bytes: Int) {
        (self.path, self.sha256, self.bytes) = (path, sha256, bytes)
    }
}

/// The result store of DESIGN §4: `<root>/<YYYY-MM-DD>/<id>/<n>.png` and `<id>/job.json`, every file written
/// atomically. The day is that of the job's first take, so every attempt writes the same paths: a job that runs
/// twice leaves one set of files.
public struct ResultStore: Sendable {
    public let root: String
    public let fileSystem: any StoreFileSystem

    public init(root: String, fileSystem: any StoreFileSystem = POSIXFileSystem()) {
        self.root = root
        self.fileSystem = fileSystem
    }

    /// `YYYY-MM-DD/<id>` for a job first taken at `firstSeenMs` (UTC).
    public static func relativeDirectory(jobId: String, firstSeenMs: Int64) -> String {
        var seconds = time_t(firstSeenMs / 1000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        let day = String(format: "%04d-%02d-%02d", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday))
        return "\(day)/\(jobId)"
    }

    /// Writes a job's PNGs (`0.png`, `1.png`, …) and then its `job.json`; any failure throws and leaves no partial
    /// file under a final name. Temporary files of an earlier, interrupted attempt are removed first.
    public func write(
        jobId: String, firstSeenMs: Int64, pngs: [[UInt8]], jobJSON: [UInt8]
    ) throws(StoreError) -> (images: [StoredFile], jobFile: StoredFile) {
        guard !jobId.isEmpty, jobId != ".", jobId != "..", !jobId.contains("/"), !jobId.contains("\0") else {
            throw StoreError("job id \"\(jobId)\" cannot be a directory name", path: root)
        }
        let relative = Self.relativeDirectory(jobId: jobId, firstSeenMs: firstSeenMs)
        let directory = (root as NSString).appendingPathComponent(relative)
        try fileSystem.makeDirectories(directory)
        for name in try fileSystem.list(directory) where name.hasPrefix(".") && name.contains(".tmp.") {
            try fileSystem.remove((directory as NSString).appendingPathComponent(name))
        }
        var images: [StoredFile] = []
        for (n, png) in pngs.enumerated() {
            let path = "\(relative)/\(n).png"
            try fileSystem.writeAtomically(png, to: (root as NSString).appendingPathComponent(path))
            images.append(StoredFile(path: path, sha256: Digests.sha256Hex(png), bytes: png.count))
        }
        let jobPath = "\(relative)/job.json"
        try fileSystem.writeAtomically(jobJSON, to: (root as NSString).appendingPathComponent(jobPath))
        return (images, StoredFile(path: jobPath, sha256: Digests.sha256Hex(jobJSON), bytes: jobJSON.count))
    }
}
