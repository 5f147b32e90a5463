// group_norm — group normalization (PyTorch GroupNorm), then GLIDE's scale-shift modulation, then SiLU, in one
// kernel; one workgroup of 256 per (image, group), the workgroups folded into x and y.
//   mean, var = statistics of the group's perGroup·spatial elements (biased variance; two passes, each thread's
//               partial sums compensated (Kahan), then a tree reduction in shared memory — no subgroup operations)
//   scale = w[c]/√(var + eps), shift = b[c] − mean·scale                      (w = 1, b = 0 when absent)
//   with modulation m [B, 2C]: s = 1 + m[n, c], t = m[n, C + c]; scale ·= s; shift = shift·s + t
//   y = x·scale + shift, then y·σ(y) when SiLU                                 (the CPU's folding, Kernels.groupNorm)
// Bindings: 0 x (float [B, C, spatial], read), 1 y (float, written; may be x itself: each invocation writes only
// the elements it reads, after the statistics), 2 weight [C] and 3 bias [C] (float, or
// float16_t in the f16 variant; any buffer when absent), 4 modulation (float [B, 2C]; any buffer when absent).
// Push: items (B·groups); groups; channels (C); spatial (elements per channel); flags (1 weight, 2 bias,
// 4 modulation, 8 SiLU); eps.
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

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Y { float y[]; };
layout(std430, set = 0, binding = 2) readonly buffer W { WEIGHT_T weight[]; };
layout(std430, set = 0, binding = 3) readonly buffer Bias { WEIGHT_T bias[]; };
layout(std430, set = 0, binding = 4) readonly buffer M { float modulation[]; };

layout(push_constant) uniform Push {
    uint items;
    uint groups;
    uint channels;
    uint spatial;
    uint flags;
    float eps;
} p;

shared float partial[256];

// The sum of every invocation's v, returned to all of them.
float workgroupSum(float v) {
    uint l = gl_LocalInvocationID.x;
    partial[l] = v;
    barrier();
    for (uint s = 128u; s > 0u; s >>= 1u) {
        if (l < s) partial[l] += partial[l + s];
        barrier();
    }
    float total = partial[0];
    barrier();
    return total;
}

void main() {
    uint item = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
    if (item >= p.items) return;  // uniform across the workgroup
    uint l = gl_LocalInvocationID.x;
    uint perGroup = p.channels / p.groups;
    uint n = perGroup * p.spatial;
    uint base = item * n;

    // Pass 1: the mean.
    precise float sum = 0.0;
    precise float carry = 0.0;
    for (uint i = l; i < n; i += 256u) {
        precise float v = x[base + i] - carry;
        precise float t = sum + v;
        carry = (t - sum) - v;
        sum = t;
    }
    float mean = workgroupSum(sum) / float(n);

    // Pass 2: the variance about it.
    sum = 0.0;
    carry = 0.0;
    for (uint i = l; i < n; i += 256u) {
        float d = x[base + i] - mean;
        precise float v = d * d - carry;
        precise float t = sum + v;
        carry = (t - sum) - v;
        sum = t;
    }
    float variance = workgroupSum(sum) / float(n);
    float invStd = 1.0 / sqrt(variance + p.eps);

    uint image = item / p.groups;
    uint firstChannel = (item % p.groups) * perGroup;
    for (uint i = l; i < n; i += 256u) {
        uint c = firstChannel + i / p.spatial;
        float scale = invStd * ((p.flags & 1u) != 0u ? float(weight[c]) : 1.0);
        float shift = ((p.flags & 2u) != 0u ? float(bias[c]) : 0.0) - mean * scale;
        if ((p.flags & 4u) != 0u) {
            float s = 1.0 + modulation[image * 2u * p.channels + c];
            float t = modulation[image * 2u * p.channels + p.channels + c];
            scale *= s;
            shift = shift * s + t;
        }
        float v = x[base + i] * scale + shift;
        if ((p.flags & 8u) != 0u) v = v / (1.0 + exp(-v));
        y[base + i] = v;
    }
}
