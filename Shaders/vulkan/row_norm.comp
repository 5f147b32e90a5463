// row_norm — normalization over the last dimension, one workgroup of 256 per row (folded into x and y):
//   layer norm (PyTorch LayerNorm): y = (x − mean)/√(var + eps)·w + b    (two passes: mean, then variance about it)
//   RMS norm (T5LayerNorm, flag 4):  y = x/√(mean(x²) + eps)·w           (no mean subtracted, no bias)
// Partial sums per invocation are compensated (Kahan), then reduced by a tree in shared memory (no subgroup
// operations).
// Bindings: 0 x (float [rows, width], read), 1 y (float, written), 2 weight [width] and 3 bias [width] (float, or
// float16_t in the f16 variant; any buffer when absent).
// Push: rows; width; flags (1 weight, 2 bias, 4 RMS); eps.
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

layout(push_constant) uniform Push {
    uint rows;
    uint width;
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
    uint row = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
    if (row >= p.rows) return;  // uniform across the workgroup
    uint l = gl_LocalInvocationID.x;
    uint base = row * p.width;
    bool rms = (p.flags & 4u) != 0u;

    float mean = 0.0;
    if (!rms) {
        precise float sum = 0.0;
        precise float carry = 0.0;
        for (uint i = l; i < p.width; i += 256u) {
            precise float v = x[base + i] - carry;
            precise float t = sum + v;
            carry = (t - sum) - v;
            sum = t;
        }
        mean = workgroupSum(sum) / float(p.width);
    }
    precise float sum = 0.0;
    precise float carry = 0.0;
    for (uint i = l; i < p.width; i += 256u) {
        float d = x[base + i] - mean;
        precise float v = d * d - carry;
        precise float t = sum + v;
        carry = (t - sum) - v;
        sum = t;
    }
    float invStd = 1.0 / sqrt(workgroupSum(sum) / float(p.width) + p.eps);

    for (uint i = l; i < p.width; i += 256u) {
        float w = (p.flags & 1u) != 0u ? float(weight[i]) : 1.0;
        float v = rms ? x[base + i] * invStd * w : (x[base + i] - mean) * invStd * w;
        if ((p.flags & 2u) != 0u) v += float(bias[i]);
        y[base + i] = v;
    }
}
