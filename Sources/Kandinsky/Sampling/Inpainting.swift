import Tensor

/// Inpainting helpers (spec §6.11).
public enum Inpainting {
    /// The release's `prepare_mask`: every 0 cell (regenerate) of the original mask also clears its neighbours
    /// above, left, above-left, below, right and below-right (an asymmetric 6-neighbourhood), reading the
    /// original mask so the growth does not cascade. `mask` is `[1, 1, h, w]`, 1 = keep.
    public static func growMask(_ mask: Tensor) -> Tensor {
        precondition(mask.rank == 4 && mask.shape[1] == 1, "mask must be [N, 1, h, w], got \(mask.shape)")
        let (n, h, w) = (mask.shape[0], mask.shape[2], mask.shape[3])
        var out = mask
        out.makeUnique()
        for b in 0..<n {
            let src = mask.storage.pointer + b * h * w
            let dst = out.storage.pointer + b * h * w
            for i in 0..<h {
                for j in 0..<w where src[i * w + j] != 1 {
                    for (di, dj) in [(-1, 0), (0, -1), (-1, -1), (1, 0), (0, 1), (1, 1)] {
                        let (y, x) = (i + di, j + dj)
                        if y >= 0 && y < h && x >= 0 && x < w { dst[y * w + x] = 0 }
                    }
                }
            }
        }
        return out
    }
}
