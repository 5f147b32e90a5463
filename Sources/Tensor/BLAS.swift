import COpenBLAS
import Foundation

/// The one place that calls OpenBLAS. Every product in the kernels goes through `sgemm` here.
///
/// OpenBLAS runs single-threaded; a product large enough to share is cut into one slab per thread of the current
/// compute pool (`ComputePool.current`: the pool of the backend running the operation), so GEMMs and the element-wise
/// kernels between them use the same threads. With OpenBLAS's own threads, its workers kept spinning in `sched_yield`
/// after each product and competed with the pool for the cores (a tenth of all cycles on two cores).
public enum BLAS {
    /// Products below this many multiply-adds run on the calling thread: cutting them costs more than it saves.
    static let parallelThreshold = 1 << 18

    private static let singleThreaded: Void = { openblas_set_num_threads(1) }()

    /// C ← α·op(A)·op(B) + β·C, row-major, float32 (`cblas_sgemm`), spread over the compute pool.
    ///
    /// - Parameters:
    ///   - transA, transB: whether A (M×K, or K×M stored) and B (K×N, or N×K stored) are used transposed.
    ///   - m, n, k: the product's dimensions.
    ///   - a, lda, b, ldb, c, ldc: the operands and their row strides, in elements.
    public static func sgemm(
        transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
        alpha: Float = 1, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        if m == 0 || n == 0 { return }
        KernelProfile.addFlops(2 * Double(m) * Double(n) * Double(k))
        let pool = ComputePool.current
        let pieces = pool.threadCount
        if pieces == 1 || m * n * k < parallelThreshold || pool.isInsideRegion || max(m, n) < 2 * pieces {
            sgemmSerial(
                transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb,
                beta: beta, c: c, ldc: ldc)
            return
        }
        // Cut the longer side of C into one slab per thread, on multiples of 16 (the kernels' register tiles).
        let splitColumns = n >= m
        let side = splitColumns ? n : m
        let step = ((side + pieces - 1) / pieces + 15) / 16 * 16
        let slabs = (side + step - 1) / step
        pool.run(chunks: slabs) { slab in
            let start = slab * step
            let length = min(side, start + step) - start
            if splitColumns {
                // C[:, j₀..<j₁] = op(A) · op(B)[:, j₀..<j₁]
                sgemmSerial(
                    transA: transA, transB: transB, m: m, n: length, k: k, alpha: alpha, a: a, lda: lda,
                    b: transB ? b + start * ldb : b + start, ldb: ldb, beta: beta, c: c + start, ldc: ldc)
            } else {
                // C[i₀..<i₁, :] = op(A)[i₀..<i₁, :] · op(B)
                sgemmSerial(
                    transA: transA, transB: transB, m: length, n: n, k: k, alpha: alpha,
                    a: transA ? a + start : a + start * lda, lda: lda, b: b, ldb: ldb, beta: beta,
                    c: c + start * ldc, ldc: ldc)
            }
        }
    }

    /// `cblas_sgemm` on the calling thread.
    public static func sgemmSerial(
        transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
        alpha: Float = 1, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        if m == 0 || n == 0 { return }
        _ = singleThreaded
        cblas_sgemm(
            CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
            blasint(m), blasint(n), blasint(k), alpha, a, blasint(lda), b, blasint(ldb), beta, c, blasint(ldc))
    }

    /// Threads one product uses here: those of the current compute pool (`ComputePool.current`); a CPU backend's
    /// own are set when it is made (`CPUBackend(threads:)`).
    public static var threads: Int { ComputePool.current.threadCount }

    /// The kernel family OpenBLAS picked for this processor (affected by `OPENBLAS_CORETYPE`).
    public static var coreName: String {
        guard let name = openblas_get_corename() else { return "unknown" }
        return String(cString: name)
    }

    /// `coreName`, and where `kandinsky-worker` chose it (see `coreTypeForProcessor`), what OpenBLAS had detected.
    public static var coreDescription: String {
        let environment = ProcessInfo.processInfo.environment
        guard let detected = environment[detectedCoreVariable], environment[coreTypeVariable] != nil else {
            return coreName
        }
        return "\(coreName) (set by kandinsky-worker; OpenBLAS detected \(detected))"
    }

    /// The variable OpenBLAS reads once, as it loads, to take a kernel family by name instead of detecting one.
    public static let coreTypeVariable = "OPENBLAS_CORETYPE"
    /// Where `kandinsky-worker` keeps what OpenBLAS detected when it restarted itself with `OPENBLAS_CORETYPE` set.
    public static let detectedCoreVariable = "KANDINSKY_WORKER_BLAS_DETECTED"

    /// The widest vector instructions of OpenBLAS's x86-64 kernel families, by name as `openblas_get_corename`
    /// gives them: 2 for AVX-512 (SkylakeX and later), 1 for AVX2 with FMA; the rest (Prescott, Nehalem,
    /// Sandybridge, …: SSE and AVX without FMA) 0.
    public static func vectorLevel(core: String) -> Int {
        switch core.lowercased() {
        case "skylakex", "cooperlake", "sapphirerapids": 2
        case "haswell", "zen", "excavator": 1
        default: 0
        }
    }

    /// The widest vector instructions a processor with these flags offers OpenBLAS's kernels, as in
    /// `vectorLevel(core:)`.
    static func vectorLevel(flags: Set<String>) -> Int {
        if ["avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"].allSatisfy(flags.contains) { return 2 }
        return flags.contains("avx2") && flags.contains("fma") ? 1 : 0
    }

    /// The `OPENBLAS_CORETYPE` to restart with, or nil: where OpenBLAS picked a family for older processors than this
    /// one, because its detection does not know the model yet (Debian 12's 0.3.21 gives an Emerald Rapids Xeon its
    /// SSE3 Prescott kernel, whose sgemm runs at about a sixth of its SkylakeX kernel's speed), the
    /// family that the processor's flags (`/proc/cpuinfo`) allow: SkylakeX for AVX-512 (F, CD, BW, DQ and VL, what
    /// OpenBLAS's AVX-512 kernels use), Haswell for AVX2 with FMA. Never where `OPENBLAS_CORETYPE` is set already:
    /// an operator's choice stands, and the restarted process sees its own.
    public static func coreTypeForProcessor(
        detected: String, flags: Set<String>, environment: [String: String]
    ) -> String? {
        #if arch(x86_64)
            guard environment[coreTypeVariable] == nil else { return nil }
            let level = vectorLevel(flags: flags)
            guard level > vectorLevel(core: detected) else { return nil }
            return level == 2 ? "SkylakeX" : "Haswell"
        #else
            return nil
        #endif
    }
}
