#include "CKernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

// Three rounds (unpack, shuffle, 128-bit permute), eight instructions each.
__attribute__((target("avx2")))
void kw_transpose8(const float *src, ptrdiff_t srcStride, float *dst, ptrdiff_t dstStride) {
    __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + srcStride);
    __m256 r2 = _mm256_loadu_ps(src + 2 * srcStride), r3 = _mm256_loadu_ps(src + 3 * srcStride);
    __m256 r4 = _mm256_loadu_ps(src + 4 * srcStride), r5 = _mm256_loadu_ps(src + 5 * srcStride);
    __m256 r6 = _mm256_loadu_ps(src + 6 * srcStride), r7 = _mm256_loadu_ps(src + 7 * srcStride);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_storeu_ps(dst, _mm256_permute2f128_ps(s0, s4, 0x20));
    _mm256_storeu_ps(dst + dstStride, _mm256_permute2f128_ps(s1, s5, 0x20));
    _mm256_storeu_ps(dst + 2 * dstStride, _mm256_permute2f128_ps(s2, s6, 0x20));
    _mm256_storeu_ps(dst + 3 * dstStride, _mm256_permute2f128_ps(s3, s7, 0x20));
    _mm256_storeu_ps(dst + 4 * dstStride, _mm256_permute2f128_ps(s0, s4, 0x31));
    _mm256_storeu_ps(dst + 5 * dstStride, _mm256_permute2f128_ps(s1, s5, 0x31));
    _mm256_storeu_ps(dst + 6 * dstStride, _mm256_permute2f128_ps(s2, s6, 0x31));
    _mm256_storeu_ps(dst + 7 * dstStride, _mm256_permute2f128_ps(s3, s7, 0x31));
}

#else

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

KW_VECTOR_TARGET
void kw_winograd_f4_filters(const float *g, ptrdiff_t count, float *dst, ptrdiff_t dstStep, ptrdiff_t pointStride) {
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
