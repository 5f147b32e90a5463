// Small kernels written in C because Swift cannot ask for a particular vector shuffle: the optimiser turned the same
// transposes written with Swift's SIMD types into single-float loads and inserts where they read overlapping windows
// (F(6×6)'s input transform), and the same happened to F(4×4)'s de-interleaving of its overlapping windows, so both
// input transforms (down the columns too, where the optimiser kept F(6×6)'s eight row pointers on the stack), F(4×4)'s
// output transform along the rows and F(6×6)'s whole output transform are here. The Winograd weight transform interleaves eight filters with the same transpose, and F(4×4)'s
// filter transform is here too: written with Swift's SIMD8, the optimiser split it into 128-bit halves, blends and
// stack spills (`perf annotate`).
#ifndef CKERNELS_H
#define CKERNELS_H

#include <stddef.h>

/// dst[j · dstStride + r] = src[r · srcStride + j] for r, j in 0..<8: an 8 × 8 transpose between strided rows. The
/// eight rows of dst are written in order, each as eight floats, so rows closer than eight floats apart (dstStride < 8)
/// overwrite the end of the one before.
void kw_transpose8(const float *src, ptrdiff_t srcStride, float *dst, ptrdiff_t dstStride);

/// Winograd F(4×4, 3×3)'s filter transform U = G·g·Gᵀ of `count` groups of eight 3×3 filters: group n interleaved at
/// `g + 72·n` (tap e of every lane at `+ 8·e`), its 36 points stored as eight floats each at
/// `dst + n·dstStep + point·pointStride`.
void kw_winograd_f4_filters(const float *g, ptrdiff_t count, float *dst, ptrdiff_t dstStep, ptrdiff_t pointStride);

/// Winograd F(4×4, 3×3)'s input transform down the columns: `out[k · stride + j] = (Bᵀ·d)[k]` for the six input rows
/// d[i] = `rows[i][j]`, j in first..<end.
void kw_winograd_f4_input_columns(const float *const rows[6], ptrdiff_t first, ptrdiff_t end, float *out,
                                  ptrdiff_t stride);

/// Winograd F(4×4, 3×3)'s input transform along a row for eight tiles: tile l's window is `t[4·l ..< 4·l + 6]` (34
/// floats read), its six values Bᵀ·window stored as lane l of `dst + k · pointStride`, k = 0…5, for the first `lanes`
/// tiles (1 to 8; nothing is written past them).
void kw_winograd_f4_input_group(const float *t, float *dst, ptrdiff_t pointStride, ptrdiff_t lanes);

/// Winograd F(4×4, 3×3)'s output transform along a row for eight tiles: Aᵀ applied to lane l of the six vectors at
/// `e + k · stride`, plus `bias`, tile l's four outputs at `dst[4·l ..< 4·l + 4]`; only the first `count` of the 32
/// floats are written.
void kw_winograd_f4_output_group(const float *e, ptrdiff_t stride, float bias, float *dst, ptrdiff_t count);

/// Winograd F(6×6, 3×3)'s input transform down the columns: `out[k · stride + j] = (Bᵀ·d)[k]` for the eight input rows
/// d[i] = `rows[i][j]`, j in first..<end.
void kw_winograd_f6_input_columns(const float *const rows[8], ptrdiff_t first, ptrdiff_t end, float *out,
                                  ptrdiff_t stride);

/// Winograd F(6×6, 3×3)'s input transform along a row for eight tiles: tile l's window is `t[6·l ..< 6·l + 8]` (50
/// floats read), its eight values Bᵀ·window stored as lane l of `dst + k · pointStride`, k = 0…7, for the first
/// `lanes` tiles (1 to 8; nothing is written past them).
void kw_winograd_f6_input_group(const float *t, float *dst, ptrdiff_t pointStride, ptrdiff_t lanes);

/// Winograd F(6×6, 3×3)'s output transform down the columns: `out[a · outStride + j] = (Aᵀ·m)[a]`, a = 0…5, for the
/// eight values m[k] = `m[k · stride + j]`, j in 0..<count (a multiple of eight).
void kw_winograd_f6_output_columns(const float *m, ptrdiff_t stride, ptrdiff_t count, float *out, ptrdiff_t outStride);

/// Winograd F(6×6, 3×3)'s output transform along a row for eight tiles: Aᵀ applied to lane l of the eight vectors at
/// `e + k · stride`, plus `bias`; tile l's six outputs and two zeros stored as eight floats at `dst + l · dstStride`,
/// in order of l (so with dstStride 6 each store overwrites the two spare floats of the one before).
void kw_winograd_f6_output_group(const float *e, ptrdiff_t stride, float bias, float *dst, ptrdiff_t dstStride);

/// GFLOP/s of `threads` threads started together, each running `iterations` rounds of twelve independent fused
/// multiply-adds of `lanes` (8 or 16) lanes on registers only (no memory): the cores' multiply-add peak, against
/// which a kernel's speed says how much is left. -1 where the processor has no AVX2 and FMA (or off x86-64), for
/// 16 lanes no AVX-512 (`kw_has_avx512`), or where a thread could not start.
double kw_fma_peak(int threads, ptrdiff_t iterations, int lanes);

/// Whether this processor has AVX-512F and AVX-512VL (so `kw_gemm_rows_x8` and `kw_gemm_8x24` may run, and the F(4×4)
/// filter transform takes its 32-register build): checked once.
int kw_has_avx512(void);

/// C[8·pairs][8] = Aᵀ·B for `pairs` (1 to 3) consecutive pairs of `PanelGEMM`'s packed A (`[k][8]` each, `pairStride`
/// floats apart) and eight columns of B (step i of k at `b + i · bStride`: 8 for an 8-wide panel, 16 for either half
/// of a 16-wide one), C's rows `ldc` apart: the 8 tiles as broadcasts, the rows as vectors, in AVX-512VL's 32
/// registers (24 accumulators for three pairs, 11 loads per 24 multiply-adds); the accumulators are transposed on the
/// way out, added to C's values when `add`. The `lines` cache lines from `prefetch` (when not null) are asked for
/// spread evenly over the runs of eight steps of k. Only where `kw_has_avx512()`.
void kw_gemm_rows_x8(ptrdiff_t k, ptrdiff_t pairs, const float *a, ptrdiff_t pairStride, const float *b,
                     ptrdiff_t bStride, float *c, ptrdiff_t ldc, int add, const char *prefetch, ptrdiff_t lines);

/// `kw_gemm_rows_x8` for 2, 4 or 6 pairs in sixteen-lane vectors (two pairs per vector, joined as they are loaded:
/// 16 accumulators for four pairs, 24 for six), the same bits. Only where `kw_has_avx512()`.
void kw_gemm_rows_x16(ptrdiff_t k, ptrdiff_t pairs, const float *a, ptrdiff_t pairStride, const float *b,
                      ptrdiff_t bStride, float *c, ptrdiff_t ldc, int add, const char *prefetch, ptrdiff_t lines);

/// C[8][24] = Aᵀ·B for one pair of `PanelGEMM`'s packed A (`[k][8]`) and one 24-wide panel of B (`[k][24]`), C's
/// rows `ldc` apart: 24 accumulators in AVX-512VL's 32 registers, 11 loads per 24 multiply-adds (the 4 × 24 tile's
/// 7 per 12), so each step of B is read once for eight rows. Only where `kw_has_avx512()`.
void kw_gemm_8x24(ptrdiff_t k, const float *a, const float *b, float *c, ptrdiff_t ldc);

/// C[8][48] = Aᵀ·B for one pair of packed A and two 24-wide panels of B (the second at `b + bHalf`; neighbours at
/// 24 · k), in sixteen-lane vectors: 24 accumulators, 12 loads per 24 multiply-adds of 16 lanes. C's columns 24–47
/// start at `c + cHalf` in each row (24 where they follow the first panel's). Each element of C is the same chain of
/// multiply-adds as in `kw_gemm_8x24`, so the two give the same bits. Only where `kw_has_avx512()`; faster only
/// where the cores multiply-add 16 lanes at about twice the rate of 8 (two 512-bit units).
void kw_gemm_8x48(ptrdiff_t k, const float *a, const float *b, ptrdiff_t bHalf, float *c, ptrdiff_t ldc,
                  ptrdiff_t cHalf);

/// Asks for the cache line at `p` to be brought into L2 (`prefetcht1`): a hint, never a fault, whatever `p` is.
static inline void kw_prefetch(const void *p) { __builtin_prefetch(p, 0, 2); }

/// Tells the core that the thread is spinning (`pause` on x86-64: less power, no memory-order stall on exit).
static inline void kw_spin_pause(void) {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

#endif
