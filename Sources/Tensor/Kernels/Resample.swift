extension Kernels {
    /// Nearest-neighbour 2× upsampling (PyTorch `interpolate(scale_factor=2, mode="nearest")`):
    /// `y[b, c, i, j] = x[b, c, i/2, j/2]`.
    public static func upsampleNearest2x(_ x: Tensor) -> Tensor {
        precondition(x.rank == 4, "upsampling needs [B, C, H, W], got \(x.shape)")
        let (planes, h, w) = (x.shape[0] * x.shape[1], x.shape[2], x.shape[3])
        let y = Tensor(uninitialized: [x.shape[0], x.shape[1], 2 * h, 2 * w])
        let (xp, yp) = (x.storage.pointer, y.storage.pointer)
        ComputePool.current.parallelFor(planes, minimumChunk: max(1, 4096 / max(1, h * w))) { range in
            for plane in range {
                let src = xp + plane * h * w
                let dst = yp + plane * 4 * h * w
                for i in 0..<h {
                    let row = dst + 2 * i * 2 * w
                    for j in 0..<w {
                        let v = src[i * w + j]
                        row[2 * j] = v
                        row[2 * j + 1] = v
                    }
                    (row + 2 * w).update(from: row, count: 2 * w)
                }
            }
        }
        return y
    }

    /// 2×2 average pooling with stride 2 (PyTorch `avg_pool2d(kernel_size=2, stride=2)`; an odd last row or
    /// column is dropped).
    public static func avgPool2x2(_ x: Tensor) -> Tensor {
        precondition(x.rank == 4, "pooling needs [B, C, H, W], got \(x.shape)")
        let (planes, h, w) = (x.shape[0] * x.shape[1], x.shape[2], x.shape[3])
        let (oh, ow) = (h / 2, w / 2)
        let y = Tensor(uninitialized: [x.shape[0], x.shape[1], oh, ow])
        let (xp, yp) = (x.storage.pointer, y.storage.pointer)
        ComputePool.current.parallelFor(planes, minimumChunk: max(1, 4096 / max(1, h * w))) { range in
            for plane in range {
                let src = xp + plane * h * w
                let dst = yp + plane * oh * ow
                for i in 0..<oh {
                    for j in 0..<ow {
                        let top = src + 2 * i * w + 2 * j
                        dst[i * ow + j] = (top[0] + top[1] + top[w] + top[w + 1]) * 0.25
                    }
                }
            }
        }
        return y
    }
}
