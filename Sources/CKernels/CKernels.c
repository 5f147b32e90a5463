#include "CKernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

// r[j][i] = r[i][j] for i, j in 0..<8, in registers: three rounds (unpack, shuffle, 128-bit permute), eight
// instructions each.
__attribute__((target("avx2"))) static inline void kw_transpose_registers(__m256 r[8]) {
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
    r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
    r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
    r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
    r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
    r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
    r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

__attribute__((target("avx2")))
void kw_transpose8(const float *src, ptrdiff_t srcStride, float *dst, ptrdiff_t dstStride) {
    __m256 r[8];
    for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(src + i * srcStride);
    kw_transpose_registers(r);
    for (int i = 0; i < 8; i++) _mm256_storeu_ps(dst + i * dstStride, r[i]);
}

int kw_has_avx512(void) {
    static int known = -1;
    if (known < 0) {
        __builtin_cpu_init();
        known = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
    }
    return known;
}

// Twelve independent chains of eight-lane multiply-adds (enough to keep two pipes of four cycles' latency busy) for
// `iterations` rounds, on registers only; returns a value computed from them, so the loop stays.
__attribute__((target("avx2,fma"))) static float kw_fma_loop(ptrdiff_t iterations) {
    __m256 acc[12];
    for (int i = 0; i < 12; i++) acc[i] = _mm256_set1_ps(0.001f * (float)i);
    const __m256 m = _mm256_set1_ps(0.9999f), c = _mm256_set1_ps(0.0001f);
    for (ptrdiff_t n = 0; n < iterations; n++) {
        _Pragma("clang loop unroll(full)") for (int i = 0; i < 12; i++) acc[i] = _mm256_fmadd_ps(acc[i], m, c);
    }
    __m256 sum = acc[0];
    for (int i = 1; i < 12; i++) sum = _mm256_add_ps(sum, acc[i]);
    return sum[0];
}

// The same with sixteen-lane vectors (AVX-512F).
__attribute__((target("avx2,fma,avx512f"))) static float kw_fma_loop16(ptrdiff_t iterations) {
    __m512 acc[12];
    for (int i = 0; i < 12; i++) acc[i] = _mm512_set1_ps(0.001f * (float)i);
    const __m512 m = _mm512_set1_ps(0.9999f), c = _mm512_set1_ps(0.0001f);
    for (ptrdiff_t n = 0; n < iterations; n++) {
        _Pragma("clang loop unroll(full)") for (int i = 0; i < 12; i++) acc[i] = _mm512_fmadd_ps(acc[i], m, c);
    }
    __m512 sum = acc[0];
    for (int i = 1; i < 12; i++) sum = _mm512_add_ps(sum, acc[i]);
    return sum[0];
}

static int kw_has_fma(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

// Floating-point operations per round of `kw_fma_loop` per lane; `kw_fma_peak` (after the processor-specific code)
// runs it or `kw_fma_loop16`.
#define KW_FMA_FLOPS_PER_LANE_ROUND (12.0 * 2)
#define KW_FMA_PEAK
#define KW_AVX512 __attribute__((target("avx2,fma,avx512f,avx512vl")))

// The steps of k of a rows-by-eight tile (`STEP(acc, a, pairStride, b)` one step), in runs of eight with one prefetch
// each (`lines` cache lines from `prefetch`, when not null, spread evenly over the runs), then the rest.
#define KW_ROWS_STEPS(STEP)                                                                                            \
    ptrdiff_t i = 0;                                                                                                   \
    if (!prefetch) lines = 0;                                                                                          \
    ptrdiff_t per = k >= 8 ? (lines * 8 + k - 1) / k : lines;                                                          \
    for (ptrdiff_t line = 0; i + 8 <= k; i += 8) {                                                                     \
        for (ptrdiff_t q = 0; q < per && line < lines; q++, line++) __builtin_prefetch(prefetch + 64 * line, 0, 2);     \
        _Pragma("clang loop unroll(full)") for (int u = 0; u < 8; u++)                                                 \
            STEP(acc, a + 8 * (i + u), pairStride, b + bStride * (i + u));                                             \
    }                                                                                                                  \
    for (; i < k; i++) STEP(acc, a + 8 * i, pairStride, b + bStride * i);

// `PAIRS` pairs of A against eight columns of B; acc[t][p] holds rows 8p…8p+7 of column t. The steps of k come in
// runs of eight (one prefetch each), fully unrolled: with the runs as a loop of their own the compiler copied the
// accumulators between registers on every step and spilled two.
#define KW_ROWS_X8(PAIRS)                                                                                             \
    KW_AVX512 static inline void kw_rows_x8_step_##PAIRS(__m256 acc[8][PAIRS], const float *a, ptrdiff_t pairStride,  \
                                                        const float *b) {                                             \
        __m256 av[PAIRS];                                                                                              \
        for (int p = 0; p < PAIRS; p++) av[p] = _mm256_loadu_ps(a + p * pairStride);                                  \
        for (int t = 0; t < 8; t++) {                                                                                  \
            __m256 bt = _mm256_broadcast_ss(b + t);                                                                    \
            for (int p = 0; p < PAIRS; p++) acc[t][p] = _mm256_fmadd_ps(av[p], bt, acc[t][p]);                        \
        }                                                                                                              \
    }                                                                                                                  \
    KW_AVX512 static void kw_gemm_rows_x8_##PAIRS(ptrdiff_t k, const float *a, ptrdiff_t pairStride, const float *b,  \
                                                 ptrdiff_t bStride, float *c, ptrdiff_t ldc, int add,                 \
                                                 const char *prefetch, ptrdiff_t lines) {                             \
        __m256 acc[8][PAIRS];                                                                                          \
        for (int t = 0; t < 8; t++)                                                                                    \
            for (int p = 0; p < PAIRS; p++) acc[t][p] = _mm256_setzero_ps();                                          \
        KW_ROWS_STEPS(kw_rows_x8_step_##PAIRS)                                                                         \
        for (int p = 0; p < PAIRS; p++) {                                                                              \
            __m256 r[8];                                                                                               \
            for (int t = 0; t < 8; t++) r[t] = acc[t][p];                                                              \
            kw_transpose_registers(r);                                                                                 \
            for (int j = 0; j < 8; j++) {                                                                              \
                float *row = c + (8 * p + j) * ldc;                                                                    \
                _mm256_storeu_ps(row, add ? _mm256_add_ps(r[j], _mm256_loadu_ps(row)) : r[j]);                          \
            }                                                                                                          \
        }                                                                                                              \
    }

KW_ROWS_X8(1)
KW_ROWS_X8(2)
KW_ROWS_X8(3)

void kw_gemm_rows_x8(ptrdiff_t k, ptrdiff_t pairs, const float *a, ptrdiff_t pairStride, const float *b,
                     ptrdiff_t bStride, float *c, ptrdiff_t ldc, int add, const char *prefetch, ptrdiff_t lines) {
    switch (pairs) {
    case 1: kw_gemm_rows_x8_1(k, a, pairStride, b, bStride, c, ldc, add, prefetch, lines); break;
    case 2: kw_gemm_rows_x8_2(k, a, pairStride, b, bStride, c, ldc, add, prefetch, lines); break;
    default: kw_gemm_rows_x8_3(k, a, pairStride, b, bStride, c, ldc, add, prefetch, lines); break;
    }
}

// `2Q` consecutive pairs of A against eight columns of B in sixteen-lane vectors: acc[t][q] holds rows 16q…16q+15 of
// column t (pair 2q in the low half, 2q + 1 in the high one). Each element is the same chain of multiply-adds as in
// `kw_gemm_rows_x8`.
#define KW_ROWS_X16(Q)                                                                                                \
    KW_AVX512 static inline void kw_rows_x16_step_##Q(__m512 acc[8][Q], const float *a, ptrdiff_t pairStride,        \
                                                      const float *b) {                                               \
        __m512 av[Q];                                                                                                  \
        for (int q = 0; q < Q; q++)                                                                                    \
            av[q] = _mm512_castpd_ps(_mm512_insertf64x4(                                                               \
                _mm512_castpd256_pd512(_mm256_castps_pd(_mm256_loadu_ps(a + 2 * q * pairStride))),                    \
                _mm256_castps_pd(_mm256_loadu_ps(a + (2 * q + 1) * pairStride)), 1));                                 \
        for (int t = 0; t < 8; t++) {                                                                                  \
            __m512 bt = _mm512_set1_ps(b[t]);                                                                          \
            for (int q = 0; q < Q; q++) acc[t][q] = _mm512_fmadd_ps(av[q], bt, acc[t][q]);                            \
        }                                                                                                              \
    }                                                                                                                  \
    KW_AVX512 static void kw_gemm_rows_x16_##Q(ptrdiff_t k, const float *a, ptrdiff_t pairStride, const float *b,    \
                                              ptrdiff_t bStride, float *c, ptrdiff_t ldc, int add,                    \
                                              const char *prefetch, ptrdiff_t lines) {                                \
        __m512 acc[8][Q];                                                                                              \
        for (int t = 0; t < 8; t++)                                                                                    \
            for (int q = 0; q < Q; q++) acc[t][q] = _mm512_setzero_ps();                                              \
        KW_ROWS_STEPS(kw_rows_x16_step_##Q)                                                                            \
        for (int q = 0; q < Q; q++)                                                                                    \
            for (int h = 0; h < 2; h++) {                                                                              \
                __m256 r[8];                                                                                           \
                for (int t = 0; t < 8; t++)                                                                            \
                    r[t] = h ? _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[t][q]), 1))                \
                             : _mm512_castps512_ps256(acc[t][q]);                                                      \
                kw_transpose_registers(r);                                                                             \
                for (int j = 0; j < 8; j++) {                                                                          \
                    float *row = c + (16 * q + 8 * h + j) * ldc;                                                       \
                    _mm256_storeu_ps(row, add ? _mm256_add_ps(r[j], _mm256_loadu_ps(row)) : r[j]);                      \
                }                                                                                                      \
            }                                                                                                          \
    }

KW_ROWS_X16(1)
KW_ROWS_X16(2)
KW_ROWS_X16(3)

void kw_gemm_rows_x16(ptrdiff_t k, ptrdiff_t pairs, const float *a, ptrdiff_t pairStride, const float *b,
                      ptrdiff_t bStride, float *c, ptrdiff_t ldc, int add, const char *prefetch, ptrdiff_t lines) {
    switch (pairs) {
    case 2: kw_gemm_rows_x16_1(k, a, pairStride, b, bStride, c, ldc, add, prefetch, lines); break;
    case 4: kw_gemm_rows_x16_2(k, a, pairStride, b, bStride, c, ldc, add, prefetch, lines); break;
    default: kw_gemm_rows_x16_3(k, a, pairStride, b, bStride, c, ldc, add, prefetch, lines); break;
    }
}

// One step of k of the 8 × 24 tile: three vectors of B, eight broadcasts of A, 24 multiply-adds. The steps come in
// runs of four, fully unrolled.
KW_AVX512 static inline void kw_8x24_step(__m256 acc[8][3], const float *a, const float *b) {
    __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8), b2 = _mm256_loadu_ps(b + 16);
    for (int r = 0; r < 8; r++) {
        __m256 s = _mm256_broadcast_ss(a + r);
        acc[r][0] = _mm256_fmadd_ps(s, b0, acc[r][0]);
        acc[r][1] = _mm256_fmadd_ps(s, b1, acc[r][1]);
        acc[r][2] = _mm256_fmadd_ps(s, b2, acc[r][2]);
    }
}

KW_AVX512 void kw_gemm_8x24(ptrdiff_t k, const float *a, const float *b, float *c, ptrdiff_t ldc) {
    __m256 acc[8][3];
    for (int r = 0; r < 8; r++)
        for (int j = 0; j < 3; j++) acc[r][j] = _mm256_setzero_ps();
    ptrdiff_t i = 0;
    for (; i + 4 <= k; i += 4) {
        _Pragma("clang loop unroll(full)") for (int u = 0; u < 4; u++)
            kw_8x24_step(acc, a + 8 * (i + u), b + 24 * (i + u));
    }
    for (; i < k; i++) kw_8x24_step(acc, a + 8 * i, b + 24 * i);
    for (int r = 0; r < 8; r++)
        for (int j = 0; j < 3; j++) _mm256_storeu_ps(c + r * ldc + 8 * j, acc[r][j]);
}

// One step of k of the 8 × 48 tile: two neighbouring panels of 24 columns (b and b2) as three 16-lane vectors
// (columns 16–23 of the first and 0–7 of the second joined in one), eight broadcasts of A, 24 multiply-adds.
KW_AVX512 static inline void kw_8x48_step(__m512 acc[8][3], const float *a, const float *b, const float *b2) {
    __m512 x0 = _mm512_loadu_ps(b);
    __m512 x1 = _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(_mm256_loadu_ps(b + 16))),
                                                    _mm256_castps_pd(_mm256_loadu_ps(b2)), 1));
    __m512 x2 = _mm512_loadu_ps(b2 + 8);
    for (int r = 0; r < 8; r++) {
        __m512 s = _mm512_set1_ps(a[r]);
        acc[r][0] = _mm512_fmadd_ps(s, x0, acc[r][0]);
        acc[r][1] = _mm512_fmadd_ps(s, x1, acc[r][1]);
        acc[r][2] = _mm512_fmadd_ps(s, x2, acc[r][2]);
    }
}

// Every element of C is the same chain of multiply-adds over k, in the same order, as in `kw_gemm_8x24`.
KW_AVX512 void kw_gemm_8x48(ptrdiff_t k, const float *a, const float *b, ptrdiff_t bHalf, float *c, ptrdiff_t ldc,
                             ptrdiff_t cHalf) {
    __m512 acc[8][3];
    for (int r = 0; r < 8; r++)
        for (int j = 0; j < 3; j++) acc[r][j] = _mm512_setzero_ps();
    const float *b2 = b + bHalf;
    ptrdiff_t i = 0;
    for (; i + 4 <= k; i += 4) {
        _Pragma("clang loop unroll(full)") for (int u = 0; u < 4; u++)
            kw_8x48_step(acc, a + 8 * (i + u), b + 24 * (i + u), b2 + 24 * (i + u));
    }
    for (; i < k; i++) kw_8x48_step(acc, a + 8 * i, b + 24 * i, b2 + 24 * i);
    if (cHalf == 24) {
        for (int r = 0; r < 8; r++)
            for (int j = 0; j < 3; j++) _mm512_storeu_ps(c + r * ldc + 16 * j, acc[r][j]);
        return;
    }
    // The second panel's columns elsewhere: the middle vector holds the first's last eight and the second's first.
    for (int r = 0; r < 8; r++) {
        float *row = c + r * ldc;
        _mm512_storeu_ps(row, acc[r][0]);
        _mm256_storeu_ps(row + 16, _mm512_castps512_ps256(acc[r][1]));
        _mm256_storeu_pd((double *)(row + cHalf), _mm512_extractf64x4_pd(_mm512_castps_pd(acc[r][1]), 1));
        _mm512_storeu_ps(row + cHalf + 8, acc[r][2]);
    }
}

// The first `count` floats of v at p (all eight at once when count is 8).
__attribute__((target("avx2"))) static inline void kw_store_first(float *p, __m256 v, ptrdiff_t count) {
    if (count >= 8) {
        _mm256_storeu_ps(p, v);
    } else if (count > 0) {
        __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        _mm256_maskstore_ps(p, mask, v);
    }
}

// F(4×4)'s input transform Bᵀ·d on eight lanes. Bᵀ rows: [4,0,−5,0,1,0], [0,−4,−4,1,1,0], [0,4,−4,−1,1,0],
// [0,−2,−1,2,1,0], [0,2,−1,−2,1,0], [0,4,0,−5,0,1].
__attribute__((target("avx2,fma"))) static inline void kw_f4_input(__m256 d[6]) {
    const __m256 four = _mm256_set1_ps(4), five = _mm256_set1_ps(5), two = _mm256_set1_ps(2);
    __m256 s34 = _mm256_add_ps(d[3], d[4]), d34 = _mm256_sub_ps(d[4], d[3]);
    __m256 s12 = _mm256_add_ps(d[1], d[2]), d12 = _mm256_sub_ps(d[1], d[2]);
    __m256 d31 = _mm256_sub_ps(d[3], d[1]), d42 = _mm256_sub_ps(d[4], d[2]);
    __m256 r0 = _mm256_add_ps(_mm256_fnmadd_ps(five, d[2], _mm256_mul_ps(four, d[0])), d[4]);
    __m256 r5 = _mm256_add_ps(_mm256_fnmadd_ps(five, d[3], _mm256_mul_ps(four, d[1])), d[5]);
    d[0] = r0;
    d[1] = _mm256_fnmadd_ps(four, s12, s34);
    d[2] = _mm256_fmadd_ps(four, d12, d34);
    d[3] = _mm256_fmadd_ps(two, d31, d42);
    d[4] = _mm256_fnmadd_ps(two, d31, d42);
    d[5] = r5;
}

// F(4×4)'s horizontal passes. Input: eight tiles' 6-wide windows, 4 floats apart, become six vectors (lane l = tile l)
// by a 4 × 4 transpose within 128-bit halves (tiles 0–3 and 4–7) and, for the windows' last two columns, the first
// two vectors moved down one lane with the next tile's values put in the last. Output: the reverse 8 × 4 transpose,
// one 32-float store.
__attribute__((target("avx2,fma")))
void kw_winograd_f4_input_group(const float *t, float *dst, ptrdiff_t pointStride, ptrdiff_t lanes) {
    __m256 a0 = _mm256_loadu_ps(t), a1 = _mm256_loadu_ps(t + 8);
    __m256 a2 = _mm256_loadu_ps(t + 16), a3 = _mm256_loadu_ps(t + 24);
    __m256 p0 = _mm256_permute2f128_ps(a0, a2, 0x20), p1 = _mm256_permute2f128_ps(a0, a2, 0x31);
    __m256 p2 = _mm256_permute2f128_ps(a1, a3, 0x20), p3 = _mm256_permute2f128_ps(a1, a3, 0x31);
    __m256 t0 = _mm256_unpacklo_ps(p0, p1), t1 = _mm256_unpackhi_ps(p0, p1);
    __m256 t2 = _mm256_unpacklo_ps(p2, p3), t3 = _mm256_unpackhi_ps(p2, p3);
    __m256 e0 = _mm256_shuffle_ps(t0, t2, 0x44), e1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 e2 = _mm256_shuffle_ps(t1, t3, 0x44), e3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    // e_m holds value m of tiles 0–3 | 4–7 (p0 = tiles 0 | 4, p1 = 1 | 5, p2 = 2 | 6, p3 = 3 | 7). Values 4 and 5 are
    // values 0 and 1 of the next tile.
    const __m256i down = _mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 0);
    __m256 e4 = _mm256_blend_ps(_mm256_permutevar8x32_ps(e0, down), _mm256_broadcast_ss(t + 32), 0x80);
    __m256 e5 = _mm256_blend_ps(_mm256_permutevar8x32_ps(e1, down), _mm256_broadcast_ss(t + 33), 0x80);
    __m256 e[6] = {e0, e1, e2, e3, e4, e5};
    kw_f4_input(e);
    for (int k = 0; k < 6; k++) kw_store_first(dst + k * pointStride, e[k], lanes);
}

// A Winograd input transform Bᵀ·d of `count` rows down the columns first..<end (the last ones by masked loads and
// stores): shared by both tilings, inlined into each with its own transform.
__attribute__((target("avx2,fma"), always_inline)) static inline void kw_input_columns(
    const float *const *rows, int count, void (*transform)(__m256 *), ptrdiff_t first, ptrdiff_t end, float *out,
    ptrdiff_t stride) {
    __m256 d[8];
    ptrdiff_t j = first;
    for (; j + 8 <= end; j += 8) {
        for (int k = 0; k < count; k++) d[k] = _mm256_loadu_ps(rows[k] + j);
        transform(d);
        for (int k = 0; k < count; k++) _mm256_storeu_ps(out + k * stride + j, d[k]);
    }
    if (j < end) {
        __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(end - j)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        for (int k = 0; k < count; k++) d[k] = _mm256_maskload_ps(rows[k] + j, mask);
        transform(d);
        for (int k = 0; k < count; k++) _mm256_maskstore_ps(out + k * stride + j, mask, d[k]);
    }
}

__attribute__((target("avx2,fma")))
void kw_winograd_f4_input_columns(const float *const rows[6], ptrdiff_t first, ptrdiff_t end, float *out,
                                  ptrdiff_t stride) {
    kw_input_columns(rows, 6, kw_f4_input, first, end, out, stride);
}

__attribute__((target("avx2,fma")))
void kw_winograd_f4_output_group(const float *e, ptrdiff_t stride, float bias, float *dst, ptrdiff_t count) {
    __m256 e0 = _mm256_loadu_ps(e), e1 = _mm256_loadu_ps(e + stride), e2 = _mm256_loadu_ps(e + 2 * stride);
    __m256 e3 = _mm256_loadu_ps(e + 3 * stride), e4 = _mm256_loadu_ps(e + 4 * stride);
    __m256 e5 = _mm256_loadu_ps(e + 5 * stride);
    const __m256 add = _mm256_set1_ps(bias), two = _mm256_set1_ps(2), four = _mm256_set1_ps(4);
    const __m256 eight = _mm256_set1_ps(8);
    // Aᵀ rows: [1,1,1,1,1,0], [0,1,−1,2,−2,0], [0,1,1,4,4,0], [0,1,−1,8,−8,1].
    __m256 p = _mm256_add_ps(e1, e2), q = _mm256_sub_ps(e1, e2);
    __m256 s = _mm256_add_ps(e3, e4), d = _mm256_sub_ps(e3, e4);
    __m256 a = _mm256_add_ps(_mm256_add_ps(e0, p), _mm256_add_ps(s, add));
    __m256 b = _mm256_add_ps(_mm256_fmadd_ps(two, d, q), add);
    __m256 c = _mm256_add_ps(_mm256_fmadd_ps(four, s, p), add);
    __m256 f = _mm256_add_ps(_mm256_add_ps(_mm256_fmadd_ps(eight, d, q), e5), add);
    __m256 t0 = _mm256_unpacklo_ps(a, b), t1 = _mm256_unpackhi_ps(a, b);
    __m256 t2 = _mm256_unpacklo_ps(c, f), t3 = _mm256_unpackhi_ps(c, f);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    kw_store_first(dst, _mm256_permute2f128_ps(s0, s1, 0x20), count);
    kw_store_first(dst + 8, _mm256_permute2f128_ps(s2, s3, 0x20), count - 8);
    kw_store_first(dst + 16, _mm256_permute2f128_ps(s0, s1, 0x31), count - 16);
    kw_store_first(dst + 24, _mm256_permute2f128_ps(s2, s3, 0x31), count - 24);
}

// F(6×6)'s input transform Bᵀ·d on eight lanes (see WinogradF6.swift for Bᵀ).
__attribute__((target("avx2,fma"))) static inline void kw_f6_input(__m256 d[8]) {
    const __m256 c525 = _mm256_set1_ps(5.25f), c425 = _mm256_set1_ps(4.25f), c125 = _mm256_set1_ps(1.25f);
    const __m256 c25 = _mm256_set1_ps(2.5f), c05 = _mm256_set1_ps(0.5f), c025 = _mm256_set1_ps(0.25f);
    const __m256 c2 = _mm256_set1_ps(2), c4 = _mm256_set1_ps(4), c5 = _mm256_set1_ps(5);
    __m256 r0 = _mm256_fmadd_ps(c525, _mm256_sub_ps(d[4], d[2]), _mm256_sub_ps(d[0], d[6]));
    __m256 r7 = _mm256_fmadd_ps(c525, _mm256_sub_ps(d[3], d[5]), _mm256_sub_ps(d[7], d[1]));
    __m256 a = _mm256_fnmadd_ps(c425, d[4], _mm256_add_ps(d[2], d[6]));
    __m256 b = _mm256_fnmadd_ps(c425, d[3], _mm256_add_ps(d[1], d[5]));
    __m256 c = _mm256_add_ps(_mm256_fnmadd_ps(c125, d[4], _mm256_mul_ps(c025, d[2])), d[6]);
    __m256 e = _mm256_fmadd_ps(c2, d[5], _mm256_fnmadd_ps(c25, d[3], _mm256_mul_ps(c05, d[1])));
    __m256 f = _mm256_add_ps(_mm256_fnmadd_ps(c5, d[4], _mm256_mul_ps(c4, d[2])), d[6]);
    __m256 h = _mm256_fmadd_ps(c05, d[5], _mm256_fnmadd_ps(c25, d[3], _mm256_mul_ps(c2, d[1])));
    d[0] = r0;
    d[1] = _mm256_add_ps(a, b);
    d[2] = _mm256_sub_ps(a, b);
    d[3] = _mm256_add_ps(c, e);
    d[4] = _mm256_sub_ps(c, e);
    d[5] = _mm256_add_ps(f, h);
    d[6] = _mm256_sub_ps(f, h);
    d[7] = r7;
}

__attribute__((target("avx2,fma")))
void kw_winograd_f6_input_columns(const float *const rows[8], ptrdiff_t first, ptrdiff_t end, float *out,
                                  ptrdiff_t stride) {
    kw_input_columns(rows, 8, kw_f6_input, first, end, out, stride);
}

__attribute__((target("avx2,fma")))
void kw_winograd_f6_input_group(const float *t, float *dst, ptrdiff_t pointStride, ptrdiff_t lanes) {
    __m256 d[8];
    for (int l = 0; l < 8; l++) d[l] = _mm256_loadu_ps(t + 6 * l);
    kw_transpose_registers(d);
    kw_f6_input(d);
    for (int k = 0; k < 8; k++) kw_store_first(dst + k * pointStride, d[k], lanes);
}

// F(6×6)'s output transform Aᵀ·m on eight lanes, six results (see WinogradF6.swift for Aᵀ).
__attribute__((target("avx2,fma"))) static inline void kw_f6_output(__m256 m[8]) {
    __m256 p = _mm256_add_ps(m[1], m[2]), q = _mm256_sub_ps(m[1], m[2]);
    __m256 s = _mm256_add_ps(m[3], m[4]), d = _mm256_sub_ps(m[3], m[4]);
    __m256 u = _mm256_add_ps(m[5], m[6]), w = _mm256_sub_ps(m[5], m[6]);
    m[0] = _mm256_add_ps(_mm256_add_ps(m[0], p), _mm256_add_ps(s, u));
    m[1] = _mm256_fmadd_ps(_mm256_set1_ps(0.5f), w, _mm256_fmadd_ps(_mm256_set1_ps(2), d, q));
    m[2] = _mm256_fmadd_ps(_mm256_set1_ps(0.25f), u, _mm256_fmadd_ps(_mm256_set1_ps(4), s, p));
    m[3] = _mm256_fmadd_ps(_mm256_set1_ps(0.125f), w, _mm256_fmadd_ps(_mm256_set1_ps(8), d, q));
    m[4] = _mm256_fmadd_ps(_mm256_set1_ps(0.0625f), u, _mm256_fmadd_ps(_mm256_set1_ps(16), s, p));
    m[5] = _mm256_add_ps(_mm256_fmadd_ps(_mm256_set1_ps(0.03125f), w, _mm256_fmadd_ps(_mm256_set1_ps(32), d, q)), m[7]);
}

__attribute__((target("avx2,fma")))
void kw_winograd_f6_output_columns(const float *m, ptrdiff_t stride, ptrdiff_t count, float *out, ptrdiff_t outStride) {
    for (ptrdiff_t j = 0; j < count; j += 8) {
        __m256 v[8];
        for (int k = 0; k < 8; k++) v[k] = _mm256_loadu_ps(m + k * stride + j);
        kw_f6_output(v);
        for (int a = 0; a < 6; a++) _mm256_storeu_ps(out + a * outStride + j, v[a]);
    }
}

__attribute__((target("avx2,fma")))
void kw_winograd_f6_output_group(const float *e, ptrdiff_t stride, float bias, float *dst, ptrdiff_t dstStride) {
    __m256 v[8];
    for (int k = 0; k < 8; k++) v[k] = _mm256_loadu_ps(e + k * stride);
    kw_f6_output(v);
    const __m256 add = _mm256_set1_ps(bias);
    for (int a = 0; a < 6; a++) v[a] = _mm256_add_ps(v[a], add);
    v[6] = v[7] = _mm256_setzero_ps();
    kw_transpose_registers(v);
    for (int l = 0; l < 8; l++) _mm256_storeu_ps(dst + l * dstStride, v[l]);
}

#else

int kw_has_avx512(void) { return 0; }

void kw_gemm_rows_x8(ptrdiff_t k, ptrdiff_t pairs, const float *a, ptrdiff_t pairStride, const float *b,
                     ptrdiff_t bStride, float *c, ptrdiff_t ldc, int add, const char *prefetch, ptrdiff_t lines) {
    (void)prefetch, (void)lines;
    for (ptrdiff_t row = 0; row < 8 * pairs; row++)
        for (int t = 0; t < 8; t++) {
            float sum = 0;
            for (ptrdiff_t i = 0; i < k; i++) sum += a[row / 8 * pairStride + 8 * i + row % 8] * b[bStride * i + t];
            c[row * ldc + t] = add ? c[row * ldc + t] + sum : sum;
        }
}

void kw_gemm_8x24(ptrdiff_t k, const float *a, const float *b, float *c, ptrdiff_t ldc) {
    for (int row = 0; row < 8; row++)
        for (int t = 0; t < 24; t++) {
            float sum = 0;
            for (ptrdiff_t i = 0; i < k; i++) sum += a[8 * i + row] * b[24 * i + t];
            c[row * ldc + t] = sum;
        }
}

void kw_gemm_rows_x16(ptrdiff_t k, ptrdiff_t pairs, const float *a, ptrdiff_t pairStride, const float *b,
                      ptrdiff_t bStride, float *c, ptrdiff_t ldc, int add, const char *prefetch, ptrdiff_t lines) {
    for (ptrdiff_t p = 0; p < pairs; p += 2) {
        kw_gemm_rows_x8(k, 2, a + p * pairStride, pairStride, b, bStride, c + 8 * p * ldc, ldc, add, prefetch, lines);
        prefetch = NULL;
    }
}

void kw_gemm_8x48(ptrdiff_t k, const float *a, const float *b, ptrdiff_t bHalf, float *c, ptrdiff_t ldc,
                  ptrdiff_t cHalf) {
    kw_gemm_8x24(k, a, b, c, ldc);
    kw_gemm_8x24(k, a, b + bHalf, c + cHalf, ldc);
}

static void kw_f6_output_scalar(float m[8]) {
    float p = m[1] + m[2], q = m[1] - m[2], s = m[3] + m[4], d = m[3] - m[4], u = m[5] + m[6], w = m[5] - m[6];
    float o[6] = {m[0] + p + s + u, q + 2 * d + 0.5f * w, p + 4 * s + 0.25f * u, q + 8 * d + 0.125f * w,
                  p + 16 * s + 0.0625f * u, q + 32 * d + 0.03125f * w + m[7]};
    for (int a = 0; a < 6; a++) m[a] = o[a];
    m[6] = m[7] = 0;
}

void kw_winograd_f6_output_columns(const float *m, ptrdiff_t stride, ptrdiff_t count, float *out, ptrdiff_t outStride) {
    for (ptrdiff_t j = 0; j < count; j++) {
        float v[8];
        for (int k = 0; k < 8; k++) v[k] = m[k * stride + j];
        kw_f6_output_scalar(v);
        for (int a = 0; a < 6; a++) out[a * outStride + j] = v[a];
    }
}

void kw_winograd_f6_output_group(const float *e, ptrdiff_t stride, float bias, float *dst, ptrdiff_t dstStride) {
    float tiles[8][8];
    for (int l = 0; l < 8; l++) {
        float v[8];
        for (int k = 0; k < 8; k++) v[k] = e[k * stride + l];
        kw_f6_output_scalar(v);
        for (int a = 0; a < 8; a++) tiles[l][a] = v[a] + (a < 6 ? bias : 0);
    }
    for (int l = 0; l < 8; l++)
        for (int a = 0; a < 8; a++) dst[l * dstStride + a] = tiles[l][a];
}

static void kw_f6_input_scalar(float d[8]) {
    float r0 = (d[0] - d[6]) + 5.25f * (d[4] - d[2]), r7 = (d[7] - d[1]) + 5.25f * (d[3] - d[5]);
    float a = d[2] + d[6] - 4.25f * d[4], b = d[1] + d[5] - 4.25f * d[3];
    float c = 0.25f * d[2] - 1.25f * d[4] + d[6], e = 0.5f * d[1] - 2.5f * d[3] + 2 * d[5];
    float f = 4 * d[2] - 5 * d[4] + d[6], h = 2 * d[1] - 2.5f * d[3] + 0.5f * d[5];
    d[0] = r0, d[1] = a + b, d[2] = a - b, d[3] = c + e, d[4] = c - e, d[5] = f + h, d[6] = f - h, d[7] = r7;
}

void kw_winograd_f6_input_columns(const float *const rows[8], ptrdiff_t first, ptrdiff_t end, float *out,
                                  ptrdiff_t stride) {
    for (ptrdiff_t j = first; j < end; j++) {
        float d[8];
        for (int k = 0; k < 8; k++) d[k] = rows[k][j];
        kw_f6_input_scalar(d);
        for (int k = 0; k < 8; k++) out[k * stride + j] = d[k];
    }
}

void kw_winograd_f6_input_group(const float *t, float *dst, ptrdiff_t pointStride, ptrdiff_t lanes) {
    for (int l = 0; l < lanes && l < 8; l++) {
        float d[8];
        for (int m = 0; m < 8; m++) d[m] = t[6 * l + m];
        kw_f6_input_scalar(d);
        for (int k = 0; k < 8; k++) dst[k * pointStride + l] = d[k];
    }
}

static void kw_f4_input_scalar(const float e[6], float *dst, ptrdiff_t stride) {
    dst[0] = 4 * e[0] - 5 * e[2] + e[4];
    dst[stride] = -4 * (e[1] + e[2]) + e[3] + e[4];
    dst[2 * stride] = 4 * (e[1] - e[2]) - e[3] + e[4];
    dst[3 * stride] = 2 * (e[3] - e[1]) - e[2] + e[4];
    dst[4 * stride] = 2 * (e[1] - e[3]) - e[2] + e[4];
    dst[5 * stride] = 4 * e[1] - 5 * e[3] + e[5];
}

void kw_winograd_f4_input_group(const float *t, float *dst, ptrdiff_t pointStride, ptrdiff_t lanes) {
    for (int l = 0; l < lanes && l < 8; l++) kw_f4_input_scalar(t + 4 * l, dst + l, pointStride);
}

void kw_winograd_f4_input_columns(const float *const rows[6], ptrdiff_t first, ptrdiff_t end, float *out,
                                  ptrdiff_t stride) {
    for (ptrdiff_t j = first; j < end; j++) {
        float e[6];
        for (int k = 0; k < 6; k++) e[k] = rows[k][j];
        kw_f4_input_scalar(e, out + j, stride);
    }
}

void kw_winograd_f4_output_group(const float *e, ptrdiff_t stride, float bias, float *dst, ptrdiff_t count) {
    for (int l = 0; l < 8; l++) {
        float e0 = e[l], e1 = e[stride + l], e2 = e[2 * stride + l], e3 = e[3 * stride + l];
        float e4 = e[4 * stride + l], e5 = e[5 * stride + l];
        float p = e1 + e2, q = e1 - e2, s = e3 + e4, d = e3 - e4;
        float out[4] = {e0 + p + s + bias, q + 2 * d + bias, p + 4 * s + bias, q + 8 * d + e5 + bias};
        for (int k = 0; k < 4; k++)
            if (4 * l + k < count) dst[4 * l + k] = out[k];
    }
}

void kw_transpose8(const float *src, ptrdiff_t srcStride, float *dst, ptrdiff_t dstStride) {
    float t[64];
    for (int r = 0; r < 8; r++)
        for (int j = 0; j < 8; j++) t[8 * j + r] = src[r * srcStride + j];
    for (int j = 0; j < 8; j++)
        for (int r = 0; r < 8; r++) dst[j * dstStride + r] = t[8 * j + r];
}

#endif

// Eight lanes as a GCC/Clang vector: plain arithmetic on it compiles to AVX2 (with the target attribute) or to
// whatever the processor has; the unaligned variant is for loads and stores.
typedef float kw_lanes __attribute__((vector_size(32)));
typedef float kw_lanes_u __attribute__((vector_size(32), aligned(4)));

#if defined(__x86_64__)
#define KW_VECTOR_TARGET __attribute__((target("avx2,fma")))
#else
#define KW_VECTOR_TARGET
#endif

KW_VECTOR_TARGET static inline kw_lanes kw_load(const float *p) { return *(const kw_lanes_u *)p; }
KW_VECTOR_TARGET static inline void kw_store(float *p, kw_lanes v) { *(kw_lanes_u *)p = v; }

/// One row (a, b, c) of G·g expanded along the kernel's columns: (G·(a, b, c)ᵀ) stored at out, out + stride, ….
/// G rows: [¼, 0, 0], [−⅙, −⅙, −⅙], [−⅙, ⅙, −⅙], [1/24, 1/12, ⅙], [1/24, −1/12, ⅙], [0, 0, 1].
KW_VECTOR_TARGET static inline void kw_f4_filter_row(kw_lanes a, kw_lanes b, kw_lanes c, float *out, ptrdiff_t stride) {
    kw_lanes sum = (a + c) * (-1.0f / 6), odd = b * (1.0f / 6);
    kw_lanes even = a * (1.0f / 24) + c * (1.0f / 6), mid = b * (1.0f / 12);
    kw_store(out, a * 0.25f);
    kw_store(out + stride, sum - odd);
    kw_store(out + 2 * stride, sum + odd);
    kw_store(out + 3 * stride, even + mid);
    kw_store(out + 4 * stride, even - mid);
    kw_store(out + 5 * stride, c);
}

KW_VECTOR_TARGET __attribute__((always_inline)) static inline void
kw_f4_filters(const float *g, ptrdiff_t count, float *dst, ptrdiff_t dstStep, ptrdiff_t pointStride) {
    for (ptrdiff_t n = 0; n < count; n++, g += 72, dst += dstStep) {
        kw_lanes k[9];
        for (int e = 0; e < 9; e++) k[e] = kw_load(g + 8 * e);
        // Rows of G·g (G down the kernel's rows), each then expanded along the columns into six points.
        kw_f4_filter_row(k[0] * 0.25f, k[1] * 0.25f, k[2] * 0.25f, dst, pointStride);
        kw_lanes s0 = (k[0] + k[6]) * (-1.0f / 6), s1 = (k[1] + k[7]) * (-1.0f / 6), s2 = (k[2] + k[8]) * (-1.0f / 6);
        kw_lanes o0 = k[3] * (1.0f / 6), o1 = k[4] * (1.0f / 6), o2 = k[5] * (1.0f / 6);
        kw_f4_filter_row(s0 - o0, s1 - o1, s2 - o2, dst + 6 * pointStride, pointStride);
        kw_f4_filter_row(s0 + o0, s1 + o1, s2 + o2, dst + 12 * pointStride, pointStride);
        kw_lanes e0 = k[0] * (1.0f / 24) + k[6] * (1.0f / 6), e1 = k[1] * (1.0f / 24) + k[7] * (1.0f / 6);
        kw_lanes e2 = k[2] * (1.0f / 24) + k[8] * (1.0f / 6);
        kw_lanes m0 = k[3] * (1.0f / 12), m1 = k[4] * (1.0f / 12), m2 = k[5] * (1.0f / 12);
        kw_f4_filter_row(e0 + m0, e1 + m1, e2 + m2, dst + 18 * pointStride, pointStride);
        kw_f4_filter_row(e0 - m0, e1 - m1, e2 - m2, dst + 24 * pointStride, pointStride);
        kw_f4_filter_row(k[6], k[7], k[8], dst + 30 * pointStride, pointStride);
    }
}

#if defined(__x86_64__)
// The same transform with AVX-512VL's 32 registers: with AVX2's 16 the compiler kept a third of its vectors on the
// stack (28 spills and reloads for 8 filters).
__attribute__((target("avx2,fma,avx512f,avx512vl"))) static void
kw_f4_filters_wide(const float *g, ptrdiff_t count, float *dst, ptrdiff_t dstStep, ptrdiff_t pointStride) {
    kw_f4_filters(g, count, dst, dstStep, pointStride);
}
#endif

KW_VECTOR_TARGET
void kw_winograd_f4_filters(const float *g, ptrdiff_t count, float *dst, ptrdiff_t dstStep, ptrdiff_t pointStride) {
#if defined(__x86_64__)
    if (kw_has_avx512()) return kw_f4_filters_wide(g, count, dst, dstStep, pointStride);
#endif
    kw_f4_filters(g, count, dst, dstStep, pointStride);
}

// MARK: - The multiply-add peak

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

struct kw_fma_job {
    ptrdiff_t iterations;
    int lanes;
    atomic_int *go;
    volatile float result;
};

// Waits for the start, then runs its rounds.
static void *kw_fma_thread(void *argument) {
    struct kw_fma_job *job = argument;
    while (!atomic_load_explicit(job->go, memory_order_acquire)) {}
#ifdef KW_FMA_PEAK
    if (job->iterations > 0)
        job->result = job->lanes == 16 ? kw_fma_loop16(job->iterations) : kw_fma_loop(job->iterations);
#endif
    return NULL;
}

static double kw_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

double kw_fma_peak(int threads, ptrdiff_t iterations, int lanes) {
#ifdef KW_FMA_PEAK
    enum { most = 256 };
    if (!kw_has_fma() || threads < 1 || threads > most || iterations < 1) return -1;
    if (lanes != 8 && (lanes != 16 || !kw_has_avx512())) return -1;
    pthread_t ids[most];
    struct kw_fma_job jobs[most];
    atomic_int go = 0;
    int started = 0;
    for (; started < threads; started++) {
        jobs[started] = (struct kw_fma_job){iterations, lanes, &go, 0};
        if (pthread_create(&ids[started], NULL, kw_fma_thread, &jobs[started]) != 0) break;
    }
    if (started < threads) {
        for (int i = 0; i < started; i++) jobs[i].iterations = 0;
    }
    atomic_store_explicit(&go, 1, memory_order_release);
    double begin = kw_seconds();
    for (int i = 0; i < started; i++) pthread_join(ids[i], NULL);
    double elapsed = kw_seconds() - begin;
    if (started < threads) return -1;
    return (double)threads * (double)iterations * lanes * KW_FMA_FLOPS_PER_LANE_ROUND / elapsed / 1e9;
#else
    (void)threads;
    (void)iterations;
    (void)lanes;
    return -1;
#endif
}
