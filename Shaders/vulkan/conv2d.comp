#version 450
// conv2d: nn.Conv2d (cross-correlation, zero padding) as an implicit GEMM, no im2col buffer: C[Co][n] = W[Co][K]·X[K][n]
// with M = Co, N = batch·OH·OW (n = (b·OH + oh)·OW + ow), K = Ci·KH·KW (k = (ci·KH + kh)·KW + kw), the tiles of
// gemm_tile.glsl; the B slice is gathered from x while it is staged. With upsample = 1 the input is x upsampled ×2
// (nearest) on the fly: it reads x[ih / 2][iw / 2] over a 2H × 2W plane, never made.
// variants: =; f16=-DWEIGHT_F16
//
// Bindings (set 0): 0 x (float, [batch, Ci, H, W]), 1 weight (float, or float16_t with WEIGHT_F16; [Co, Ci, KH, KW]),
//   2 y (float, [batch, Co, OH, OW], written), 3 bias (float [Co]; any float buffer when hasBias is 0).
// Push constants (uint unless said): Ci, H, W (x's plane), KH, KW, stride, padTop, padLeft (int), OH, OW, Co, batch,
//   upsample (0 or 1), hasBias (0 or 1).
// y[b][co][oh][ow] = Σ_{ci,kh,kw} w[co][ci][kh][kw]·in[b][ci][oh·stride − padTop + kh][ow·stride − padLeft + kw]
//   (+ bias[co]), in = x, or x upsampled; 0 outside the (upsampled) plane; summed in f32 over ascending k.
// Dispatch: (⌈batch·OH·OW / BN⌉, ⌈Co / BM⌉, 1) workgroups of 16 × 16 invocations.
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

layout(std430, set = 0, binding = 0) readonly buffer XBuffer { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer WBuffer { WTYPE w[]; };
layout(std430, set = 0, binding = 2) writeonly buffer YBuffer { float y[]; };
layout(std430, set = 0, binding = 3) readonly buffer BiasBuffer { float bias[]; };

layout(push_constant) uniform Push {
    uint Ci, H, W, KH, KW, stride;
    int padTop, padLeft;
    uint OH, OW, Co, batch, upsample, hasBias;
} p;

void main() {
    const uint tx = gl_LocalInvocationID.x, ty = gl_LocalInvocationID.y;
    const uint t = ty * WX + tx;
    const uint n0 = gl_WorkGroupID.x * BN, m0 = gl_WorkGroupID.y * BM;
    const uint plane = p.OH * p.OW, N = p.batch * plane, kernelSize = p.KH * p.KW, K = p.Ci * kernelSize;
    // The (upsampled) input plane the kernel slides over.
    const int inH = int(p.H << p.upsample), inW = int(p.W << p.upsample);

    // This invocation stages column nB of every B slice (THREADS is a multiple of BN): its output position, once.
    const uint nB = t % BN, kB = t / BN;
    const uint col = n0 + nB;
    const bool colValid = col < N;
    const uint colImage = colValid ? col / plane : 0, colPixel = colValid ? col % plane : 0;
    const int ihBase = int((colPixel / p.OW) * p.stride) - p.padTop;
    const int iwBase = int((colPixel % p.OW) * p.stride) - p.padLeft;
    const uint xBase = colImage * p.Ci * p.H * p.W;

    float acc[TM][TN];
    [[unroll]] for (uint i = 0; i < TM; i++) {
        [[unroll]] for (uint j = 0; j < TN; j++) acc[i][j] = 0.0;
    }

    for (uint k0 = 0; k0 < K; k0 += BK) {
        // The weight slice, consecutive invocations along k (contiguous in w).
        [[unroll]] for (uint i = 0; i < LOADS_A; i++) {
            const uint e = t + THREADS * i;
            const uint m = e / BK, k = e % BK;
            float v = 0.0;
            if (m0 + m < p.Co && k0 + k < K) v = float(w[(m0 + m) * K + k0 + k]);
            As[k][m] = v;
        }
        // The input slice, consecutive invocations along output positions.
        [[unroll]] for (uint i = 0; i < LOADS_B; i++) {
            const uint k = kB + (THREADS / BN) * i;
            const uint gk = k0 + k;
            float v = 0.0;
            if (colValid && gk < K) {
                const uint ci = gk / kernelSize, r = gk % kernelSize;
                const int ih = ihBase + int(r / p.KW), iw = iwBase + int(r % p.KW);
                if (ih >= 0 && ih < inH && iw >= 0 && iw < inW) {
                    v = x[xBase + (ci * p.H + (uint(ih) >> p.upsample)) * p.W + (uint(iw) >> p.upsample)];
                }
            }
            Bs[k][nB] = v;
        }
        barrier();
        tileAccumulate(acc, tx, ty);
        barrier();
    }

    [[unroll]] for (uint j = 0; j < TN; j++) {
        const uint n = n0 + tx + WX * j;
        if (n >= N) continue;
        const uint image = n / plane, pixel = n % plane;
        [[unroll]] for (uint i = 0; i < TM; i++) {
            const uint m = m0 + ty + WY * i;
            if (m >= p.Co) continue;
            float v = acc[i][j];
            if (p.hasBias != 0) v += bias[m];
            y[(image * p.Co + m) * plane + pixel] = v;
        }
    }
}
