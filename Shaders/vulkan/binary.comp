// binary — one element-wise function of two tensors, b broadcast by an index map:
//   y[i] = a[i] ∘ b[j],  j = (i / bOuter)·bOuterStride + i % bPeriod,  for i < count,
// so that a plain operation has bPeriod = bOuter = count, a row vector ([W] over rows) bPeriod = W and
// bOuter = count, and a mask [B, 1, h, w] over [B, C, h, w] bPeriod = h·w, bOuter = C·h·w, bOuterStride = h·w.
// Bindings: 0 a (float, read), 1 b (float, read), 2 y (float, written; may be b itself: each invocation reads its
// own b[j] = b[i] before writing y[i]).
// Push: count; op (0 add a + b, 1 multiply a·b); bPeriod; bOuter; bOuterStride.
// Dispatched with dispatch1D. Exactly the CPU's arithmetic (one correctly rounded add or multiply).
#version 450

layout(local_size_x = 256) in;

layout(std430, set = 0, binding = 0) readonly buffer A { float a[]; };
layout(std430, set = 0, binding = 1) readonly buffer B { float b[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Y { float y[]; };

layout(push_constant) uniform Push {
    uint count;
    uint op;
    uint bPeriod;
    uint bOuter;
    uint bOuterStride;
} p;

void main() {
    uint i = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 256u;
    if (i >= p.count) return;
    uint j = (i / p.bOuter) * p.bOuterStride + i % p.bPeriod;
    precise float r = p.op == 0u ? a[i] + b[j] : a[i] * b[j];
    y[i] = r;
}
