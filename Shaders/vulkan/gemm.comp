#version 450
// gemm: batched C = alpha·A·B (+ bias), any strides; nn.Linear is x·Wᵀ + b with A = x and B = Wᵀ read in place.
// variants: =; f16=-DWEIGHT_F16
//
// Bindings (set 0): 0 A (float), 1 B (float, or float16_t with WEIGHT_F16: the weight), 2 C (float, written),
//   3 bias (float; any float buffer when biasMode is 0).
// Push constants (uint unless said): M, N, K; aOff, aBatch, aRow, aCol; bOff, bBatch, bK, bN; cOff, cBatch, cRow,
//   cCol; alpha (float); biasMode (0 none, 1 bias[biasOff + n] per column, 2 bias[biasOff + m] per row); biasOff.
// Element (z, m, k) of A is A[aOff + z·aBatch + m·aRow + k·aCol], (z, k, n) of B is B[bOff + z·bBatch + k·bK + n·bN],
// and C[cOff + z·cBatch + m·cRow + n·cCol] = alpha·Σ_k A·B (+ bias), the sum in f32 over ascending k.
// Dispatch: (⌈N / BN⌉, ⌈M / BM⌉, batches) workgroups of gemm_tile.glsl's 16 × 16 invocations.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#ifdef WEIGHT_F16
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#define WTYPE float16_t
#else
#define WTYPE float
#endif

#include "gemm_tile.glsl"

layout(std430, set = 0, binding = 0) readonly buffer ABuffer { float a[]; };
layout(std430, set = 0, binding = 1) readonly buffer BBuffer { WTYPE b[]; };
layout(std430, set = 0, binding = 2) writeonly buffer CBuffer { float c[]; };
layout(std430, set = 0, binding = 3) readonly buffer BiasBuffer { float bias[]; };

layout(push_constant) uniform Push {
    uint M, N, K;
    uint aOff, aBatch, aRow, aCol;
    uint bOff, bBatch, bK, bN;
    uint cOff, cBatch, cRow, cCol;
    float alpha;
    uint biasMode, biasOff;
} p;

void main() {
    const uint tx = gl_LocalInvocationID.x, ty = gl_LocalInvocationID.y;
    const uint t = ty * WX + tx;
    const uint n0 = gl_WorkGroupID.x * BN, m0 = gl_WorkGroupID.y * BM, z = gl_WorkGroupID.z;
    const uint aBase = p.aOff + z * p.aBatch, bBase = p.bOff + z * p.bBatch;

    float acc[TM][TN];
    [[unroll]] for (uint i = 0; i < TM; i++) {
        [[unroll]] for (uint j = 0; j < TN; j++) acc[i][j] = 0.0;
    }

    for (uint k0 = 0; k0 < p.K; k0 += BK) {
        // Stage the slices, consecutive invocations along whichever dimension is contiguous in memory.
        [[unroll]] for (uint i = 0; i < LOADS_A; i++) {
            const uint e = t + THREADS * i;
            const uint m = p.aCol == 1 ? e / BK : e % BM;
            const uint k = p.aCol == 1 ? e % BK : e / BM;
            float v = 0.0;
            if (m0 + m < p.M && k0 + k < p.K) v = a[aBase + (m0 + m) * p.aRow + (k0 + k) * p.aCol];
            As[k][m] = v;
        }
        [[unroll]] for (uint i = 0; i < LOADS_B; i++) {
            const uint e = t + THREADS * i;
            const uint n = p.bK == 1 ? e / BK : e % BN;
            const uint k = p.bK == 1 ? e % BK : e / BN;
            float v = 0.0;
            if (n0 + n < p.N && k0 + k < p.K) v = float(b[bBase + (k0 + k) * p.bK + (n0 + n) * p.bN]);
            Bs[k][n] = v;
        }
        barrier();
        tileAccumulate(acc, tx, ty);
        barrier();
    }

    const uint cBase = p.cOff + z * p.cBatch;
    [[unroll]] for (uint i = 0; i < TM; i++) {
        const uint m = m0 + ty + WY * i;
        if (m >= p.M) continue;
        [[unroll]] for (uint j = 0; j < TN; j++) {
            const uint n = n0 + tx + WX * j;
            if (n >= p.N) continue;
            float v = p.alpha * acc[i][j];
            if (p.biasMode == 1) v += bias[p.biasOff + n];
            else if (p.biasMode == 2) v += bias[p.biasOff + m];
            c[cBase + m * p.cRow + n * p.cCol] = v;
        }
    }
}
