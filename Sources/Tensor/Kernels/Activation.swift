import Foundation

extension Kernels {
    /// GELU, exact form (PyTorch `gelu`, approximate "none"): `0.5·x·(1 + erf(x/√2))` (`VectorMath.gelu`).
    public static func gelu(_ x: Tensor) -> Tensor {
        mapLanes(x, VectorMath.gelu)
    }

    /// Applies `f` to every element, eight lanes at a time (the last partial vector padded with zeros), in parallel.
    static func mapLanes(_ x: Tensor, _ f: (VectorMath.Vector) -> VectorMath.Vector) -> Tensor {
        let y = Tensor(uninitialized: x.shape)
        let (xp, yp) = (x.storage.pointer, y.storage.pointer)
        ComputePool.current.parallelFor((x.count + 7) / 8, minimumChunk: 512) { range in
            for i in range {
                let first = 8 * i
                if first + 8 <= x.count {
                    VectorMath.store(f(VectorMath.load(xp + first)), yp + first)
                } else {
                    var lanes = VectorMath.Vector.zero
                    for l in 0..<(x.count - first) { lanes[l] = xp[first + l] }
                    let out = f(lanes)
                    for l in 0..<(x.count - first) { yp[first + l] = out[l] }
                }
            }
        }
        return y
    }

    /// GELU, tanh form (HF `gelu_new`, T5's gated-gelu): `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`
    /// (`VectorMath.geluTanh`).
    public static func geluTanh(_ x: Tensor) -> Tensor {
        mapLanes(x, VectorMath.geluTanh)
    }

    /// SiLU (swish): `x·σ(x)`.
    public static func silu(_ x: Tensor) -> Tensor {
        map(x) { v in v / (1 + expf(-v)) }
    }

    /// Applies `f` to every element, in parallel.
    public static func map(_ x: Tensor, _ f: (Float) -> Float) -> Tensor {
        let y = Tensor(uninitialized: x.shape)
        let (xp, yp) = (x.storage.pointer, y.storage.pointer)
        ComputePool.current.parallelFor(x.count, minimumChunk: 4096) { range in
            for i in range { yp[i] = f(xp[i]) }
        }
        return y
    }

    /// Softmax over the last dimension, stable (the row maximum is subtracted first).
    public static func softmax(_ x: Tensor) -> Tensor {
        var y = x
        y.makeUnique()
        let width = x.shape.last ?? 1
        softmaxRows(y.storage.pointer, rows: x.count / max(1, width), width: width)
        return y
    }

    /// In-place softmax of `rows` rows of `width` floats.
    static func softmaxRows(_ p: UnsafeMutablePointer<Float>, rows: Int, width: Int) {
        ComputePool.current.parallelFor(rows, minimumChunk: 4) { range in
            for r in range { VectorMath.softmaxRow(p + r * width, width: width) }
        }
    }
}
