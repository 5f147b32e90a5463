// masked_blend — the inpainting blend y = x0·(1 − m) + k·m on [B, C, h, w] (plane = h·w), known and mask broadcast:
//   k = known[b·knownStride + c·plane + p]   (knownStride C·plane for [B, C, h, w], 0 for [1, C, h, w])
//   m = mask[b·maskStride + p]                (maskStride plane for [B, 1, h, w], 0 for [1, 1, h, w])
// Bit for bit the CPU's (precise: no contraction).
// Bindings: 0 x0, 1 known, 2 mask (float, read), 3 y (float, written).
// Push: count; channels; plane; knownStride; maskStride.
// Dispatched with dispatch1D.
#version 450

layout(local_size_x = 256) in;

layout(std430, set = 0, binding = 0) readonly buffer X0 { float x0[]; };
layout(std430, set = 0, binding = 1) readonly buffer K { float known[]; };
layout(std430, set = 0, binding = 2) readonly buffer M { float mask[]; };
layout(std430, set = 0, binding = 3) writeonly buffer Y { float y[]; };

layout(push_constant) uniform Push {
    uint count;
    uint channels;
    uint plane;
    uint knownStride;
    uint maskStride;
} p;

void main() {
    uint e = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 256u;
    if (e >= p.count) return;
    uint b = e / (p.channels * p.plane);
    uint c = (e / p.plane) % p.channels;
    uint q = e % p.plane;
    float m = mask[b * p.maskStride + q];
    float k = known[b * p.knownStride + c * p.plane + q];
    precise float r = x0[e] * (1.0 - m) + k * m;
    y[e] = r;
}
