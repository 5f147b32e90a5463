import Foundation

/// Time spent in each kind of kernel, for the per-layer-type breakdown of `kandinsky-worker bench`: one per CPU
/// backend (`CPUResources.profile`).
///
/// Off unless a benchmark turns it on; then each instrumented kernel adds its wall time to its category, in the
/// profile of the resources it runs on (`CPUResources.current`). Only the outermost instrumented call counts (a
/// kernel calling another is not counted twice). For one calling thread at a time (the model's): the kernels record
/// on the thread that called them, their own parallel regions run inside the measured calls, and only the thread that
/// turned profiling on records.
public final class KernelProfile: @unchecked Sendable {
    public enum Category: String, CaseIterable, Sendable {
        case conv3x3 = "conv3x3", conv1x1 = "conv1x1", linear, attention, norms
    }

    /// Time, calls and direct-method FLOPs of one layer shape.
    public struct ShapeTotal: Sendable {
        public var seconds = 0.0, calls = 0, flops = 0.0
    }

    /// Whether kernels called on this thread record their time. Set on the thread that runs the model: kernels that
    /// other threads run meanwhile (tests beside a benchmark in the same process) neither count in its totals nor
    /// race on them.
    public static var enabled: Bool {
        get { profiling.value }
        set { profiling.value = newValue }
    }
    private static let profiling = ThreadLocalFlag()
    /// Whether instrumented kernels that name their shape (the convolutions) also record time per shape.
    public var byShape = false
    private var shapes: [String: ShapeTotal] = [:]
    private var seconds = [Double](repeating: 0, count: Category.allCases.count)
    private var categoryFlops = [Double](repeating: 0, count: Category.allCases.count)
    private var depth = 0
    /// Direct-method FLOPs since the last `reset`: 2·m·n·k per product as issued, and for a Winograd convolution
    /// the FLOPs im2col + GEMM would have spent (so GFLOP/s figures are effective ones).
    public private(set) var flops = 0.0

    public init() {}

    /// Adds to the current profile's `flops` when profiling is on.
    @inline(__always)
    static func addFlops(_ count: Double) {
        if enabled { CPUResources.current.profile.flops += count }
    }

    /// Clears the totals.
    public func reset() {
        for i in seconds.indices { (seconds[i], categoryFlops[i]) = (0, 0) }
        flops = 0
        shapes = [:]
    }

    /// Seconds per category since the last `reset`.
    public var totals: [Category: Double] {
        Dictionary(uniqueKeysWithValues: Category.allCases.enumerated().map { ($0.element, seconds[$0.offset]) })
    }

    /// Direct-method FLOPs per category since the last `reset`.
    public var flopTotals: [Category: Double] {
        Dictionary(uniqueKeysWithValues: Category.allCases.enumerated().map { ($0.element, categoryFlops[$0.offset]) })
    }

    /// Time, calls and FLOPs per layer shape since the last `reset` (when `byShape` is on).
    public var shapeTotals: [String: ShapeTotal] { shapes }

    /// Runs `body`, adding its wall time to `category` (and to `shape`, when `byShape` is on) of the current
    /// profile when profiling is on.
    @inline(__always)
    static func measure<R>(_ category: Category, shape: @autoclosure () -> String? = nil, _ body: () -> R) -> R {
        if !enabled { return body() }
        return CPUResources.current.profile.record(category, shape: shape(), body)
    }

    private func record<R>(_ category: Category, shape: @autoclosure () -> String?, _ body: () -> R) -> R {
        if depth > 0 { return body() }
        depth += 1
        let (start, flopsBefore) = (DispatchTime.now().uptimeNanoseconds, flops)
        let result = body()
        let index = Category.allCases.firstIndex(of: category) ?? 0
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        seconds[index] += elapsed
        categoryFlops[index] += flops - flopsBefore
        if byShape, let label = shape() {
            shapes[label, default: ShapeTotal()].seconds += elapsed
            shapes[label, default: ShapeTotal()].calls += 1
            shapes[label, default: ShapeTotal()].flops += flops - flopsBefore
        }
        depth -= 1
        return result
    }
}
