// Small kernels written in C because Swift cannot ask for a particular vector shuffle: the optimiser turned the same
// transposes written with Swift's SIMD types into single-float loads and inserts where they read overlapping windows
// (F(6×6)'s input transform). The Winograd weight transform interleaves eight filters with the same transpose.
#ifndef CKERNELS_H
#define CKERNELS_H

#include <stddef.h>

/// dst[j · dstStride + r] = src[r · srcStride + j] for r, j in 0..<8: an 8 × 8 transpose between strided rows. The
/// eight rows of dst are written in order, each as eight floats, so rows closer than eight floats apart (dstStride < 8)
/// overwrite the end of the one before.
void kw_transpose8(const float *src, ptrdiff_t srcStride, float *dst, ptrdiff_t dstStride);

#endif
