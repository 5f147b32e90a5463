#version 450
// attention: fused softmax(scale·q·kᵀ + mask)·v, flash style (an online softmax over blocks of keys; no scores in
// device memory), every operand read in place through strides, the keys and values from up to two sources taken one
// after the other in a single softmax (GLIDE's text keys, then the image's).
//
// Bindings (set 0), all float: 0 q, 1 k0, 2 v0 (source 0: keys 0 ..< s0), 3 k1, 4 v1 (source 1: keys s0 ..< s0 + s1),
//   5 mask (any float buffer when maskGroups is 0), 6 out (written).
// Push constants (uint unless said):
//   lq (queries), s0, s1 (keys of each source), d (channels of q and k), dv (channels of v and out);
//   qSlice, qPos, qChan: q[n][t][c] = q[n·qSlice + t·qPos + c·qChan];
//   k0Off, k0Slice, k0Pos, k0Chan and likewise v0…, k1…, v1…: key j of source s, channel c, slice n at
//     kS[kSOff + n·kSSlice + j·kSPos + c·kSChan] (j counted within the source);
//   oSlice, oPos, oChan: out[n][t][c] = out[n·oSlice + t·oPos + c·oChan];
//   scale (float);
//   maskGroups: 0 for no mask, else slices per mask item (slice n adds mask item n / maskGroups);
//   maskRowStride: 0 for one mask row per item ([Bm, 1, Lk]), else Lk ([Bm, Lq, Lk]);
//     mask[(n / maskGroups)·(maskRowStride == 0 ? Lk : Lq·Lk) + t·maskRowStride + j], Lk = s0 + s1.
// out[n][t][c] = Σ_j softmax_j(scale·Σ_d q[n][t][d]·k[n][j][d] + mask)·v[n][j][c], in f32; a row whose scores are
// all −∞ (every key masked) takes the mean of v, the CPU backend's uniform row (PyTorch would give NaN).
// Dispatch: (⌈lq / 16⌉, slices, ⌈dv / 512⌉) workgroups of 256 invocations.
//
// A workgroup takes 16 queries of one slice and 512 of the value channels: 16 invocations per query, each holding
// 4 of every 64 channels of its query's output (32 floats with 512 channels: no invocation holds a whole row of d or
// dv). Per block of 64 keys: q·kᵀ in chunks of 64 channels staged in shared memory (q once when d ≤ 64), the block's
// maximum and sum per query through shared memory, then p·v in chunks of 64 value channels. 26 KiB of shared memory.
#extension GL_EXT_control_flow_attributes : require

#define BQ 16
#define LANES 16
#define THREADS (BQ * LANES)
#define BKV 64
#define DC 64
#define DVMAX 512
// Keys per invocation in a block, channels per invocation in a chunk, chunks of channels per workgroup.
#define KPL (BKV / LANES)
#define CPL (DC / LANES)
#define CHUNKS (DVMAX / DC)

layout(local_size_x = THREADS, local_size_y = 1, local_size_z = 1) in;

layout(std430, set = 0, binding = 0) readonly buffer QBuffer { float q[]; };
layout(std430, set = 0, binding = 1) readonly buffer K0Buffer { float k0[]; };
layout(std430, set = 0, binding = 2) readonly buffer V0Buffer { float v0[]; };
layout(std430, set = 0, binding = 3) readonly buffer K1Buffer { float k1[]; };
layout(std430, set = 0, binding = 4) readonly buffer V1Buffer { float v1[]; };
layout(std430, set = 0, binding = 5) readonly buffer MaskBuffer { float mask[]; };
layout(std430, set = 0, binding = 6) writeonly buffer OutBuffer { float o[]; };

layout(push_constant) uniform Push {
    uint lq, s0, s1, d, dv;
    uint qSlice, qPos, qChan;
    uint k0Off, k0Slice, k0Pos, k0Chan;
    uint v0Off, v0Slice, v0Pos, v0Chan;
    uint k1Off, k1Slice, k1Pos, k1Chan;
    uint v1Off, v1Slice, v1Pos, v1Chan;
    uint oSlice, oPos, oChan;
    float scale;
    uint maskGroups, maskRowStride;
} p;

// Padded rows: invocations that stage consecutive channels write a row length + 1 apart (bank conflicts).
shared float Qs[DC][BQ + 1];
shared float KV[BKV][DC + 1];
shared float Ps[BQ][BKV + 1];
shared float redMax[BQ][LANES];
shared float redSum[BQ][LANES];

#define NEG_INF uintBitsToFloat(0xff800000u)

float key(uint n, uint j, uint c) {
    if (j < p.s0) return k0[p.k0Off + n * p.k0Slice + j * p.k0Pos + c * p.k0Chan];
    return k1[p.k1Off + n * p.k1Slice + (j - p.s0) * p.k1Pos + c * p.k1Chan];
}

float value(uint n, uint j, uint c) {
    if (j < p.s0) return v0[p.v0Off + n * p.v0Slice + j * p.v0Pos + c * p.v0Chan];
    return v1[p.v1Off + n * p.v1Slice + (j - p.s0) * p.v1Pos + c * p.v1Chan];
}

// Qs[c][i] = q[n][q0 + i][c0 + c] (0 outside), consecutive invocations along whichever index is contiguous.
void stageQueries(uint n, uint q0, uint c0, uint t) {
    [[unroll]] for (uint i = 0; i < DC * BQ / THREADS; i++) {
        const uint e = t + THREADS * i;
        const uint c = p.qChan == 1 ? e % DC : e / BQ, r = p.qChan == 1 ? e / DC : e % BQ;
        float v = 0.0;
        if (q0 + r < p.lq && c0 + c < p.d) v = q[n * p.qSlice + (q0 + r) * p.qPos + (c0 + c) * p.qChan];
        Qs[c][r] = v;
    }
}

// KV[j][c] = k[n][j0 + j][c0 + c] (0 outside).
void stageKeys(uint n, uint j0, uint c0, uint t) {
    const uint lk = p.s0 + p.s1;
    const bool chanFast = (p.s0 > 0 ? p.k0Chan : p.k1Chan) == 1;
    [[unroll]] for (uint i = 0; i < BKV * DC / THREADS; i++) {
        const uint e = t + THREADS * i;
        const uint c = chanFast ? e % DC : e / BKV, j = chanFast ? e / DC : e % BKV;
        float v = 0.0;
        if (j0 + j < lk && c0 + c < p.d) v = key(n, j0 + j, c0 + c);
        KV[j][c] = v;
    }
}

// KV[j][c] = v[n][j0 + j][c0 + c] (0 outside).
void stageValues(uint n, uint j0, uint c0, uint t) {
    const uint lk = p.s0 + p.s1;
    const bool chanFast = (p.s0 > 0 ? p.v0Chan : p.v1Chan) == 1;
    [[unroll]] for (uint i = 0; i < BKV * DC / THREADS; i++) {
        const uint e = t + THREADS * i;
        const uint c = chanFast ? e % DC : e / BKV, j = chanFast ? e / DC : e % BKV;
        float v = 0.0;
        if (j0 + j < lk && c0 + c < p.dv) v = value(n, j0 + j, c0 + c);
        KV[j][c] = v;
    }
}

void main() {
    const uint t = gl_LocalInvocationID.x;
    const uint qi = t / LANES, lane = t % LANES;
    const uint q0 = gl_WorkGroupID.x * BQ, n = gl_WorkGroupID.y, z0 = gl_WorkGroupID.z * DVMAX;
    const uint lk = p.s0 + p.s1, row = q0 + qi;
    const uint channels = min(DVMAX, p.dv - z0);
    const bool qResident = p.d <= DC;
    const uint maskBase = p.maskGroups == 0
        ? 0 : (n / p.maskGroups) * (p.maskRowStride == 0 ? lk : p.lq * lk) + row * p.maskRowStride;

    // The running maximum and sum of this invocation's query, and its share of the output row (channels
    // z0 + 64·cc + lane + 16·u at acc[4·cc + u]), rescaled whenever the maximum grows.
    float m = NEG_INF, l = 0.0;
    float acc[CHUNKS * CPL];
    [[unroll]] for (uint a = 0; a < CHUNKS * CPL; a++) acc[a] = 0.0;

    if (qResident) stageQueries(n, q0, 0, t);
    for (uint j0 = 0; j0 < lk; j0 += BKV) {
        // Scores of keys j0 + lane + 16·r.
        float s[KPL];
        [[unroll]] for (uint r = 0; r < KPL; r++) s[r] = 0.0;
        for (uint c0 = 0; c0 < p.d; c0 += DC) {
            barrier();
            if (!qResident) stageQueries(n, q0, c0, t);
            stageKeys(n, j0, c0, t);
            barrier();
            const uint cn = min(DC, p.d - c0);
            for (uint c = 0; c < cn; c++) {
                const float qv = Qs[c][qi];
                [[unroll]] for (uint r = 0; r < KPL; r++) s[r] += qv * KV[lane + LANES * r][c];
            }
        }
        float blockMax = NEG_INF;
        [[unroll]] for (uint r = 0; r < KPL; r++) {
            const uint j = j0 + lane + LANES * r;
            float v = NEG_INF;
            if (j < lk) {
                v = s[r] * p.scale;
                if (p.maskGroups != 0 && row < p.lq) v += mask[maskBase + j];
            }
            s[r] = v;
            blockMax = max(blockMax, v);
        }
        redMax[qi][lane] = blockMax;
        barrier();
        [[unroll]] for (uint u = 0; u < LANES; u++) blockMax = max(blockMax, redMax[qi][u]);
        const float mNew = max(m, blockMax);
        // While every score so far is −∞ nothing accumulates (exp(−∞ − (−∞)) would be NaN).
        float corr = 1.0, partial = 0.0;
        if (mNew != NEG_INF) corr = m == NEG_INF ? 0.0 : exp(m - mNew);
        [[unroll]] for (uint r = 0; r < KPL; r++) {
            const float e = (mNew == NEG_INF || s[r] == NEG_INF) ? 0.0 : exp(s[r] - mNew);
            Ps[qi][lane + LANES * r] = e;
            partial += e;
        }
        redSum[qi][lane] = partial;
        m = mNew;
        // Every invocation has read its keys out of KV (before the barrier above): the first value chunk goes there.
        stageValues(n, j0, z0, t);
        barrier();
        float blockSum = 0.0;
        [[unroll]] for (uint u = 0; u < LANES; u++) blockSum += redSum[qi][u];
        l = l * corr + blockSum;
        [[unroll]] for (uint a = 0; a < CHUNKS * CPL; a++) acc[a] *= corr;
        [[unroll]] for (uint cc = 0; cc < CHUNKS; cc++) {
            if (cc * DC >= channels) break;
            if (cc > 0) {
                barrier();
                stageValues(n, j0, z0 + cc * DC, t);
                barrier();
            }
            for (uint j = 0; j < BKV; j++) {
                const float pj = Ps[qi][j];
                [[unroll]] for (uint u = 0; u < CPL; u++) acc[cc * CPL + u] += pj * KV[j][lane + LANES * u];
            }
        }
    }

    if (row >= p.lq) return;
    const uint oBase = n * p.oSlice + row * p.oPos;
    const float inverse = 1.0 / l;
    [[unroll]] for (uint cc = 0; cc < CHUNKS; cc++) {
        [[unroll]] for (uint u = 0; u < CPL; u++) {
            const uint c = z0 + cc * DC + lane + LANES * u;
            if (cc * DC + lane + LANES * u >= channels) continue;
            float v;
            if (m == NEG_INF) {
                // Every key masked: the mean of the values.
                v = 0.0;
                for (uint j = 0; j < lk; j++) v += value(n, j, c);
                v /= float(lk);
            } else {
                v = acc[cc * CPL + u] * inverse;
            }
            o[oBase + c * p.oChan] = v;
        }
    }
}
