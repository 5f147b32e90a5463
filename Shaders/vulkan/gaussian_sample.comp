// gaussian_sample — a draw from the autoencoder's posterior in the UNet's scale, element by element:
//   y = (mean + exp(½·logVariance)·noise)·scale
// in the CPU's order (precise: no contraction); only exp differs from the CPU's.
// Bindings: 0 mean, 1 logVariance, 2 noise (float, read), 3 y (float, written).
// Push: count; scale.
// Dispatched with dispatch1D.
#version 450

layout(local_size_x = 256) in;

layout(std430, set = 0, binding = 0) readonly buffer M { float mean[]; };
layout(std430, set = 0, binding = 1) readonly buffer L { float logVariance[]; };
layout(std430, set = 0, binding = 2) readonly buffer Z { float noise[]; };
layout(std430, set = 0, binding = 3) writeonly buffer Y { float y[]; };

layout(push_constant) uniform Push {
    uint count;
    float scale;
} p;

void main() {
    uint e = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 256u;
    if (e >= p.count) return;
    float std = exp(0.5 * logVariance[e]);
    precise float r = (mean[e] + std * noise[e]) * p.scale;
    y[e] = r;
}
