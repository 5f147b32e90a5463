// weighted_sum — one term of the samplers' weighted sum, for up to 16 images per dispatch (images imageBase …):
//   first term:  y = c[img]·t              later terms: y = y + c[img]·t
//   and then, when divide, y = y / divisor
// Each pass rounds to float32 like the CPU's (CPUBackend.weightedSum), and `precise` keeps the compiler from
// contracting c·t + y into a fused multiply-add, so everything but the division is bit for bit the CPU's.
// Bindings: 0 t (float [B, per], read), 1 y (float [B, per], read and written).
// Push: per (elements per image); images (in this dispatch, ≤ 16); imageBase; accumulate (0 first term, 1 later);
// divide (0/1); divisor; c[16] (the coefficient of each image of this dispatch).
// Dispatched with dispatch1D over images·per.
#version 450

layout(local_size_x = 256) in;

layout(std430, set = 0, binding = 0) readonly buffer T { float t[]; };
layout(std430, set = 0, binding = 1) buffer Y { float y[]; };

layout(push_constant) uniform Push {
    uint per;
    uint images;
    uint imageBase;
    uint accumulate;
    uint divide;
    float divisor;
    float c[16];
} p;

void main() {
    uint e = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 256u;
    if (e >= p.images * p.per) return;
    uint o = p.imageBase * p.per + e;
    precise float term = p.c[e / p.per] * t[o];
    precise float v = p.accumulate != 0u ? y[o] + term : term;
    if (p.divide != 0u) v = v / p.divisor;
    y[o] = v;
}
