// unary — one element-wise function of one tensor: y[i] = f(x[i]) for i < count.
// Bindings: 0 x (float, read), 1 y (float, written).
// Push: count; op (0 GELU erf form, 1 GELU tanh form, 2 SiLU, 3 scale y = x·a, 4 clamp y = min(max(x, a), b)); a; b.
// Dispatched with dispatch1D (element = x + y·numGroups.x·256). The arithmetic is the CPU's (VectorMath.gelu,
// geluTanh, Kernels.silu); only exp differs (the device's exp against the CPU's Cephes polynomial).
#version 450

layout(local_size_x = 256) in;

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Y { float y[]; };

layout(push_constant) uniform Push {
    uint count;
    uint op;
    float a;
    float b;
} p;

// 0.5·x·(1 + erf(x/√2)), erf by Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e−7), 1 + erf(z) taken as erfc(−z) below
// zero so the negative tail is not a difference of nearly equal numbers.
float geluErf(float v) {
    float z = v * 0.70710678;
    float a = abs(z);
    float t = 1.0 / (1.0 + 0.3275911 * a);
    float q = 1.061405429;
    q = -1.453152027 + q * t;
    q = 1.421413741 + q * t;
    q = -0.284496736 + q * t;
    q = 0.254829592 + q * t;
    float complement = q * t * exp(-(a * a));
    float onePlusErf = z < 0.0 ? complement : 2.0 - complement;
    return 0.5 * v * onePlusErf;
}

// 0.5·x·(1 + tanh(u)), u = √(2/π)·(x + 0.044715·x³), as x / (1 + e^(−2u)).
float geluTanh(float v) {
    float u = 0.79788456 * (v + (0.044715 * v) * (v * v));
    return v / (1.0 + exp(-2.0 * u));
}

void main() {
    uint i = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 256u;
    if (i >= p.count) return;
    float v = x[i];
    float r;
    switch (p.op) {
    case 0u: r = geluErf(v); break;
    case 1u: r = geluTanh(v); break;
    case 2u: r = v / (1.0 + exp(-v)); break;
    case 3u: r = v * p.a; break;
    default: r = min(max(v, p.a), p.b); break;
    }
    y[i] = r;
}
