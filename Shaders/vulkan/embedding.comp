// embedding — rows of a [V, D] table: y[r, c] = table[ids[r], c] for r < rows (ids checked on the host).
// Bindings: 0 table (float, or float16_t in the f16 variant: widened to float), 1 ids (int), 2 y (float, written).
// Push: count (rows·D); width (D).
// Dispatched with dispatch1D. Exact.
// variants: =; f16=-DWEIGHT_F16
#version 450
#ifdef WEIGHT_F16
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#define WEIGHT_T float16_t
#else
#define WEIGHT_T float
#endif

layout(local_size_x = 256) in;

layout(std430, set = 0, binding = 0) readonly buffer Table { WEIGHT_T table[]; };
layout(std430, set = 0, binding = 1) readonly buffer Ids { int ids[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Y { float y[]; };

layout(push_constant) uniform Push {
    uint count;
    uint width;
} p;

void main() {
    uint e = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 256u;
    if (e >= p.count) return;
    uint row = e / p.width;
    uint column = e % p.width;
    y[e] = float(table[uint(ids[row]) * p.width + column]);
}
