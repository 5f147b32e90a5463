// copy — a strided copy of a region of up to six dimensions (every layout operation: slice, concat parts,
// head split and merge, transposes, nearest upsampling with zero source strides):
//   for each index (i0 … i5) of shape (row-major, element e < count):
//     dst[dstOffset + Σ i_d·dstStride[d]] = src[srcOffset + Σ i_d·srcStride[d]]
// Bindings: 0 src (float, or float16_t in the f16 variant: widened to float), 1 dst (float, written).
// Push: count (the product of shape); srcOffset; dstOffset; shape[6]; srcStride[6]; dstStride[6] (elements; unused
// leading dimensions have shape 1).
// Dispatched with dispatch1D. Exact.
// variants: =; f16=-DWEIGHT_F16
#version 450
#ifdef WEIGHT_F16
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#define SRC_T float16_t
#else
#define SRC_T float
#endif

layout(local_size_x = 256) in;

layout(std430, set = 0, binding = 0) readonly buffer Src { SRC_T src[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Dst { float dst[]; };

layout(push_constant) uniform Push {
    uint count;
    uint srcOffset;
    uint dstOffset;
    uint shape[6];
    uint srcStride[6];
    uint dstStride[6];
} p;

void main() {
    uint e = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 256u;
    if (e >= p.count) return;
    uint rest = e;
    uint s = p.srcOffset;
    uint d = p.dstOffset;
    for (int k = 5; k >= 0; --k) {
        uint i = rest % p.shape[k];
        rest /= p.shape[k];
        s += i * p.srcStride[k];
        d += i * p.dstStride[k];
    }
    dst[d] = float(src[s]);
}
