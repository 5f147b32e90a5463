// avg_pool — 2×2 average pooling, stride 2, of [planes, h, w] into [planes, h/2, w/2] (an odd last row or column
// is dropped): y = (x[2i, 2j] + x[2i, 2j+1] + x[2i+1, 2j] + x[2i+1, 2j+1])·0.25, summed left to right.
// Bindings: 0 x (float, read), 1 y (float, written).
// Push: count (planes·oh·ow); h; w; oh; ow.
// Dispatched with dispatch1D. Exactly the CPU's arithmetic (precise: no contraction or reassociation).
#version 450

layout(local_size_x = 256) in;

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Y { float y[]; };

layout(push_constant) uniform Push {
    uint count;
    uint h;
    uint w;
    uint oh;
    uint ow;
} p;

void main() {
    uint e = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 256u;
    if (e >= p.count) return;
    uint plane = e / (p.oh * p.ow);
    uint r = e % (p.oh * p.ow);
    uint i = r / p.ow;
    uint j = r % p.ow;
    uint top = plane * p.h * p.w + 2u * i * p.w + 2u * j;
    precise float sum = ((x[top] + x[top + 1u]) + x[top + p.w]) + x[top + p.w + 1u];
    precise float r2 = sum * 0.25;
    y[e] = r2;
}
