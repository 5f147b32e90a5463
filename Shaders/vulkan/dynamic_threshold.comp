// dynamic_threshold — dynamic thresholding per image, one workgroup of 256 per image (up to 8 images per dispatch,
// images imageBase …):
//   s = |x0|₍k₎ + (|x0|₍k'₎ − |x0|₍k₎)·fraction   (numpy's linear percentile: the k-th and k' = min(k + 1, per − 1)-th
//                                                  smallest |x0|, 0-based; k and fraction computed on the host)
//   s = max(s, 1);  y = min(max(x0, −s), s)/s;   k = 0xFFFFFFFF: y = x0 (no percentile for that image)
// The order statistics are found exactly: the bit patterns of |x0| (sign cleared) order as the values do, so a
// radix select of four 8-bit digits (a 256-bin histogram in shared memory per digit, counted with shared atomics,
// scanned by one invocation) finds the k-th smallest pattern; the k'-th is the same value when fewer than k' + 1
// values lie below or at it, else the smallest pattern above it (a shared atomicMin). No subgroup operations.
// Bindings: 0 x0 (float [B, per], read), 1 y (float [B, per], written).
// Push: per; imageBase; k[8]; fraction[8].
#version 450

layout(local_size_x = 256) in;

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Y { float y[]; };

layout(push_constant) uniform Push {
    uint per;
    uint imageBase;
    uint k[8];
    float fraction[8];
} p;

shared uint histogram[256];
shared uint chosen;      // the digit chosen by a pass
shared uint remaining;   // the rank still to find among the values matching the chosen digits
shared uint atOrBelow;   // the number of values ≤ the k-th smallest
shared uint above;       // the smallest pattern above the k-th smallest

uint magnitudeBits(uint i) { return floatBitsToUint(x[i]) & 0x7FFFFFFFu; }

void main() {
    uint local = gl_WorkGroupID.x;
    uint base = (p.imageBase + local) * p.per;
    uint l = gl_LocalInvocationID.x;
    uint k = p.k[local];
    if (k == 0xFFFFFFFFu) {
        for (uint i = l; i < p.per; i += 256u) y[base + i] = x[base + i];
        return;
    }

    if (l == 0u) remaining = k;
    uint prefix = 0u;
    uint prefixMask = 0u;
    for (int shift = 24; shift >= 0; shift -= 8) {
        histogram[l] = 0u;
        barrier();
        for (uint i = l; i < p.per; i += 256u) {
            uint key = magnitudeBits(base + i);
            if ((key & prefixMask) == prefix) atomicAdd(histogram[(key >> uint(shift)) & 0xFFu], 1u);
        }
        barrier();
        if (l == 0u) {
            uint below = 0u;
            uint digit = 0u;
            while (below + histogram[digit] <= remaining) {
                below += histogram[digit];
                digit += 1u;
            }
            chosen = digit;
            remaining -= below;
            // After the last digit every value counted in this bin equals the k-th smallest.
            if (shift == 0) atOrBelow = k - remaining + histogram[digit];
        }
        barrier();
        prefix |= chosen << uint(shift);
        prefixMask |= 0xFFu << uint(shift);
        barrier();  // chosen is read by all before the next pass's invocation 0 writes it
    }
    uint lowKey = prefix;
    uint upperRank = min(k + 1u, p.per - 1u);
    uint highKey = lowKey;
    if (upperRank >= atOrBelow) {  // uniform: every invocation reads the same shared value
        if (l == 0u) above = 0xFFFFFFFFu;
        barrier();
        for (uint i = l; i < p.per; i += 256u) {
            uint key = magnitudeBits(base + i);
            if (key > lowKey) atomicMin(above, key);
        }
        barrier();
        highKey = above;
    }

    float lower = uintBitsToFloat(lowKey);
    float upper = uintBitsToFloat(highKey);
    precise float value = lower + (upper - lower) * p.fraction[local];
    float s = max(value, 1.0);
    for (uint i = l; i < p.per; i += 256u) y[base + i] = min(max(x[base + i], -s), s) / s;
}
