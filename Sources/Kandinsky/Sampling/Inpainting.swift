import Tensor

/// Inpainting helpers (spec §6.11).
public enum Inpainting {
    /// The release's `prepare_mask`: every 0 cell (regenerate) of the original mask also clears its neighbours
    /// above, left, above-left, below, right and below-right (an asymmetric 6-neighbourhood), reading the
    /// original mask so the growth does not cascade. `mask` is `[1, 1, h, w]`, 1 = keep; a host tensor (masks are
    /// made on the host and uploaded).
    public static func growMask(_ mask: Tensor) -> Tensor {
        precondition(mask.rank == 4 && mask.shape[1] == 1, "mask must be [N, 1, h, w], got \(mask.shape)")
        let (n, h, w) = (mask.shape[0], mask.shape[2], mask.shape[3])
        let src = mask.scalars
        var dst = src
        for b in 0..<n {
            let base = b * h * w
            for i in 0..<h {
                for j in 0..<w where src[base + i * w + j] != 1 {
                    for (di, dj) in [(-1, 0), (0, -1), (-1, -1), (1, 0), (0, 1), (1, 1)] {
                        let (y, x) = (i + di, j + dj)
                        if y >= 0 && y < h && x >= 0 && x < w { dst[base + y * w + x] = 0 }
                    }
                }
            }
        }
        return Tensor(shape: mask.shape, values: dst)
    }

    /// A pixel mask (`height × width`, 1 = keep) on the latent grid, nearest neighbour: latent cell (i, j) takes
    /// pixel (f·i, f·j) (the last row or column for cells in the padding), as the release's 512 → 64 "nearest".
    /// Values are rounded to 0 or 1. A host tensor.
    public static func latentMask(
        _ mask: [Float], width: Int, height: Int, latent: (height: Int, width: Int), factor: Int = 8
    ) -> Tensor {
        precondition(mask.count == width * height, "mask of \(mask.count) values for \(width)×\(height)")
        var out = [Float](repeating: 0, count: latent.height * latent.width)
        for i in 0..<latent.height {
            for j in 0..<latent.width {
                let v = mask[min(factor * i, height - 1) * width + min(factor * j, width - 1)]
                out[i * latent.width + j] = v >= 0.5 ? 1 : 0
            }
        }
        return Tensor(shape: [1, 1, latent.height, latent.width], values: out)
    }
}
