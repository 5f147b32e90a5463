// masked_mean — the mean over the sequence of [N, L, D] of the positions whose mask is set:
//   y[n, j] = (Σ over l in order with flag[n, l] ≠ 0 of x[n, l, j]) / count[n]
// the sum from 0 left to right as the CPU's (bit for bit but the division).
// Bindings: 0 x (float, read), 1 table (uint: count[n] as float bits for n < N, then flag[n·L + l]), 2 y (float
// [N, D], written).
// Push: rows (N); sequence (L); width (D).
// Dispatched with dispatch1D over N·D.
#version 450

layout(local_size_x = 256) in;

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer Table { uint table[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Y { float y[]; };

layout(push_constant) uniform Push {
    uint rows;
    uint sequence;
    uint width;
} p;

void main() {
    uint e = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 256u;
    if (e >= p.rows * p.width) return;
    uint n = e / p.width;
    uint j = e % p.width;
    precise float sum = 0.0;
    for (uint l = 0u; l < p.sequence; ++l) {
        if (table[p.rows + n * p.sequence + l] != 0u) sum = sum + x[(n * p.sequence + l) * p.width + j];
    }
    y[e] = sum / uintBitsToFloat(table[n]);
}
