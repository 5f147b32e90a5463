/// The shapes of the layout operations, checked: every backend's `concat` and `slice` take them from here, so a bad
/// call stops with the same message on every device.
public enum LayoutShapes {
    /// The result of concatenating tensors of `shapes` along `axis` (they must agree on every other dimension), with
    /// the element counts before and after that axis.
    public static func concat(_ shapes: [[Int]], axis: Int) -> (shape: [Int], outer: Int, inner: Int) {
        precondition(!shapes.isEmpty, "nothing to concatenate")
        let first = shapes[0]
        precondition(axis >= 0 && axis < first.count, "axis \(axis) for rank \(first.count)")
        for s in shapes {
            precondition(
                s.count == first.count && s[..<axis] == first[..<axis] && s[(axis + 1)...] == first[(axis + 1)...],
                "cannot concatenate \(s) with \(first) along \(axis)")
        }
        var shape = first
        shape[axis] = shapes.reduce(0) { $0 + $1[axis] }
        return (shape, first[..<axis].reduce(1, *), first[(axis + 1)...].reduce(1, *))
    }

    /// The result of taking `range` along `axis` of a tensor of `shape`, with the element counts before and after
    /// that axis.
    public static func slice(_ shape: [Int], axis: Int, _ range: Range<Int>) -> (shape: [Int], outer: Int, inner: Int) {
        precondition(axis >= 0 && axis < shape.count, "axis \(axis) for rank \(shape.count)")
        precondition(range.lowerBound >= 0 && range.upperBound <= shape[axis], "slice \(range) of \(shape) on \(axis)")
        var result = shape
        result[axis] = range.count
        return (result, shape[..<axis].reduce(1, *), shape[(axis + 1)...].reduce(1, *))
    }
}
