// guidance — classifier-free guidance on the UNet's output [2B, 2C, h, w] (conditional rows, then unconditional),
// for up to 16 images per dispatch (images imageBase …), per = C·h·w:
//   eps[i, j] = u + g[i]·(c − u), c = out[i, j], u = out[B + i, j]      (channels 0..<C; bit for bit the CPU's)
//   v[i, j]   = out[i, C·h·w + j]                                        (the conditional rows' channels C..<2C)
// Bindings: 0 out (float, read), 1 eps (float [B, C, h, w], written), 2 v (float [B, C, h, w], written).
// Push: per; images (≤ 16); imageBase; batch (B); g[16].
// Dispatched with dispatch1D over images·per.
#version 450

layout(local_size_x = 256) in;

layout(std430, set = 0, binding = 0) readonly buffer O { float o[]; };
layout(std430, set = 0, binding = 1) writeonly buffer E { float eps[]; };
layout(std430, set = 0, binding = 2) writeonly buffer V { float v[]; };

layout(push_constant) uniform Push {
    uint per;
    uint images;
    uint imageBase;
    uint batch;
    float g[16];
} p;

void main() {
    uint e = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 256u;
    if (e >= p.images * p.per) return;
    uint local = e / p.per;
    uint image = p.imageBase + local;
    uint j = e % p.per;
    float cond = o[image * 2u * p.per + j];
    float uncond = o[(p.batch + image) * 2u * p.per + j];
    precise float guided = uncond + p.g[local] * (cond - uncond);
    eps[image * p.per + j] = guided;
    v[image * p.per + j] = o[image * 2u * p.per + p.per + j];
}
