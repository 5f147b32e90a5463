// ancestral — the ancestral (p_sample, learned range) step, element by element:
//   mean = c1·x0 + c2·x;  frac = (v + 1)/2;  logσ² = frac·upper + (1 − frac)·lower
//   y = mean + exp(½·logσ²)·noise when addNoise, else mean
// in the CPU's order (precise: no contraction); only exp differs from the CPU's.
// Bindings: 0 x0, 1 x, 2 v, 3 noise (float, read), 4 y (float, written).
// Push: count; c1; c2; lower; upper; addNoise (0/1).
// Dispatched with dispatch1D.
#version 450

layout(local_size_x = 256) in;

layout(std430, set = 0, binding = 0) readonly buffer X0 { float x0[]; };
layout(std430, set = 0, binding = 1) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 2) readonly buffer V { float v[]; };
layout(std430, set = 0, binding = 3) readonly buffer Z { float noise[]; };
layout(std430, set = 0, binding = 4) writeonly buffer Y { float y[]; };

layout(push_constant) uniform Push {
    uint count;
    float c1;
    float c2;
    float lower;
    float upper;
    uint addNoise;
} p;

void main() {
    uint e = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 256u;
    if (e >= p.count) return;
    precise float mean = p.c1 * x0[e] + p.c2 * x[e];
    if (p.addNoise != 0u) {
        precise float frac = (v[e] + 1.0) * 0.5;
        precise float logVariance = frac * p.upper + (1.0 - frac) * p.lower;
        precise float r = mean + exp(0.5 * logVariance) * noise[e];
        y[e] = r;
    } else {
        y[e] = mean;
    }
}
