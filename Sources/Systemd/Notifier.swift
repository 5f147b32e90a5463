import CSystemd
import Foundation

/// Talks to the service manager through `sd_notify`: readiness, watchdog pings, status lines, stopping.
///
/// Outside systemd (`NOTIFY_SOCKET` unset) every call is a no-op that returns false.
public struct SystemdNotifier: Sendable {
    public init() {}

    /// Whether a notification socket is configured.
    public var isEnabled: Bool { ProcessInfo.processInfo.environment["NOTIFY_SOCKET"] != nil }

    /// Sends raw `KEY=VALUE` lines. Returns true when a message was sent, false outside systemd; throws with errno's
    /// text when sending failed.
    @discardableResult
    public func notify(_ lines: [String]) throws(SystemdError) -> Bool {
        let state = lines.joined(separator: "\n")
        let result = sd_notify(0, state)
        if result < 0 {
            throw SystemdError("sd_notify(\(lines.first ?? "")) failed: \(String(cString: strerror(-result)))")
        }
        return result > 0
    }

    /// `READY=1`, with an optional status line.
    @discardableResult
    public func ready(status: String? = nil) throws(SystemdError) -> Bool {
        try notify(["READY=1"] + (status.map { ["STATUS=\($0)"] } ?? []))
    }

    /// `WATCHDOG=1`.
    @discardableResult
    public func watchdog() throws(SystemdError) -> Bool { try notify(["WATCHDOG=1"]) }

    /// `STATUS=…`, shown by `systemctl status`.
    @discardableResult
    public func status(_ text: String) throws(SystemdError) -> Bool {
        try notify(["STATUS=\(text.replacingOccurrences(of: "\n", with: " "))"])
    }

    /// `STOPPING=1`.
    @discardableResult
    public func stopping() throws(SystemdError) -> Bool { try notify(["STOPPING=1"]) }

    /// The watchdog interval systemd expects pings within (`WATCHDOG_USEC`), or nil when no watchdog is set.
    public var watchdogInterval: Duration? {
        var usec: UInt64 = 0
        guard sd_watchdog_enabled(0, &usec) > 0 else { return nil }
        return .microseconds(Int64(usec))
    }
}

/// A failed call into libsystemd.
public struct SystemdError: Error, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
