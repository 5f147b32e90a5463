/// The Redis key names of DESIGN §3 under a configurable prefix (default `kd:`).
///
/// With a `hashTag`, every key carries `{tag}` right after the prefix, so all keys of one deployment hash to one
/// Redis Cluster slot: every script and `BLMOVE` the queue runs touches keys of one slot only (no `CROSSSLOT`).
public struct KeySpace: Equatable, Sendable {
    public var prefix: String
    public var hashTag: String?

    public init(prefix: String = "kd:", hashTag: String? = nil) {
        self.prefix = prefix
        self.hashTag = hashTag
    }

    /// Whether every key shares one hash tag (the `hashTag`, or a `{tag}` in the prefix), hence one Cluster slot.
    public var isSingleSlot: Bool {
        if hashTag.map({ !$0.isEmpty }) == true { return true }
        let bytes = Array(prefix.utf8)
        guard let open = bytes.firstIndex(of: UInt8(ascii: "{")),
            let close = bytes[(open + 1)...].firstIndex(of: UInt8(ascii: "}"))
        else { return false }
        return close > open + 1
    }

    /// The key space a Redis Cluster needs: this one when it is single-slot already, else the prefix in braces
    /// (`kd:` → `{kd}:`, so `{kd}:queue:default`), as BullMQ's `{prefix}` convention.
    public func forCluster() -> KeySpace {
        if isSingleSlot { return self }
        let bare = prefix.hasSuffix(":") ? String(prefix.dropLast()) : prefix
        return bare.isEmpty ? KeySpace(prefix: prefix, hashTag: "kd") : KeySpace(prefix: "{\(bare)}:")
    }

    /// The Cluster slot of every key (meaningful when `isSingleSlot`).
    public var slot: Int { Self.clusterSlot(events) }

    /// The common start of every key.
    public var base: String { prefix + (hashTag.map { "{\($0)}:" } ?? "") }

    public func queue(_ name: String) -> String { base + "queue:" + name }
    public func processing(_ worker: String) -> String { base + "processing:" + worker }
    public func job(_ id: String) -> String { base + "job:" + id }
    public func cancel(_ id: String) -> String { base + "cancel:" + id }
    public func worker(_ name: String) -> String { base + "worker:" + name }
    /// The queues a worker takes from, kept without expiry so a reaper knows where to hand back jobs whose origin
    /// was not yet recorded when the worker died.
    public func workerQueues(_ name: String) -> String { base + "worker-queues:" + name }
    public var workers: String { base + "workers" }
    public var delayed: String { base + "delayed" }
    public var dead: String { base + "dead" }
    /// Both the stream and the pub/sub channel of completion events.
    public var events: String { base + "events" }
    public var reaperLock: String { base + "reaper-lock" }

    /// Queue and worker names: safe inside key names and in logs.
    public static func isValidName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        return (1...128).contains(bytes.count)
            && bytes.allSatisfy { b in
                (0x30...0x39).contains(b) || (0x41...0x5A).contains(b) || (0x61...0x7A).contains(b) || b == 0x2E
                    || b == 0x5F || b == 0x2D || b == 0x3A || b == 0x40
            }
    }

    /// The Redis Cluster slot of `key` (CRC16-XMODEM of the key or of its first non-empty `{…}` tag, mod 16384).
    public static func clusterSlot(_ key: String) -> Int {
        var bytes = Array(key.utf8)
        if let open = bytes.firstIndex(of: UInt8(ascii: "{")),
            let close = bytes[(open + 1)...].firstIndex(of: UInt8(ascii: "}")), close > open + 1
        {
            bytes = Array(bytes[(open + 1)..<close])
        }
        var crc: UInt16 = 0
        for b in bytes {
            crc ^= UInt16(b) << 8
            for _ in 0..<8 { crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1 }
        }
        return Int(crc) % 16384
    }
}
