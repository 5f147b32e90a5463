// gemm_tile.glsl: the tiling shared by gemm.comp and conv2d.comp (an include, not a kernel).
//
// A workgroup of WX × WY = (BN / TN) × (BM / TM) invocations (16 × 16 with the defaults) computes one BM × BN block
// of C = A·B, BK steps of the reduction at a time: the shader stages A's BM × BK slice in As[k][m] and B's BK × BN
// slice in Bs[k][n] (zero outside the matrices), then every invocation (tx, ty) adds that slice's products to its
// TM × TN outputs m = ty + WY·i, n = tx + WX·j, held in registers. Each output's sum runs over k in ascending order
// whatever M, N and the other outputs are (no split-K), so a row's result does not depend on the rows beside it.
// Tile sizes are defines (-DBM=128 …); BM·BK and BK·BN must be multiples of the invocation count.

#ifndef BM
#define BM 64
#endif
#ifndef BN
#define BN 64
#endif
#ifndef BK
#define BK 16
#endif
#ifndef TM
#define TM 4
#endif
#ifndef TN
#define TN 4
#endif

#define WX (BN / TN)
#define WY (BM / TM)
#define THREADS (WX * WY)
// Elements of the A and B slices each invocation stages per step.
#define LOADS_A (BM * BK / THREADS)
#define LOADS_B (BK * BN / THREADS)

layout(local_size_x = WX, local_size_y = WY, local_size_z = 1) in;

// One float of padding per row: invocations that stage consecutive k write 65 floats apart, not 64 (bank conflicts).
shared float As[BK][BM + 1];
shared float Bs[BK][BN + 1];

// acc += As·Bs for this invocation's outputs, k ascending.
void tileAccumulate(inout float acc[TM][TN], uint tx, uint ty) {
    [[unroll]] for (uint k = 0; k < BK; k++) {
        float a[TM];
        float b[TN];
        [[unroll]] for (uint i = 0; i < TM; i++) a[i] = As[k][ty + WY * i];
        [[unroll]] for (uint j = 0; j < TN; j++) b[j] = Bs[k][tx + WX * j];
        [[unroll]] for (uint i = 0; i < TM; i++) {
            [[unroll]] for (uint j = 0; j < TN; j++) acc[i][j] += a[i] * b[j];
        }
    }
}
