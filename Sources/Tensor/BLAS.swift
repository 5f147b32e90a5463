import COpenBLAS

/// The one place that calls OpenBLAS. Every product in the kernels goes through `sgemm` here.
public enum BLAS {
    /// C ← α·op(A)·op(B) + β·C, row-major, float32 (`cblas_sgemm`).
    ///
    /// - Parameters:
    ///   - transA, transB: whether A (M×K, or K×M stored) and B (K×N, or N×K stored) are used transposed.
    ///   - m, n, k: the product's dimensions.
    ///   - a, lda, b, ldb, c, ldc: the operands and their row strides, in elements.
    @inlinable
    public static func sgemm(
        transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
        alpha: Float = 1, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        if m == 0 || n == 0 { return }
        cblas_sgemm(
            CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
            blasint(m), blasint(n), blasint(k), alpha, a, blasint(lda), b, blasint(ldb), beta, c, blasint(ldc))
    }

    /// Threads OpenBLAS uses for one product.
    public static var threads: Int {
        get { Int(openblas_get_num_threads()) }
        set { openblas_set_num_threads(Int32(max(1, newValue))) }
    }

    /// The kernel family OpenBLAS picked for this processor (affected by `OPENBLAS_CORETYPE`).
    public static var coreName: String {
        guard let name = openblas_get_corename() else { return "unknown" }
        return String(cString: name)
    }
}
