/* ggml's quantizers, reproduced bit for bit ("ggml" mode): the C twin of
 * gguf_tools/quantize/ggml_port.py.
 *
 * The searches are ggml's (ggml-quants.c: quantize_row_*_ref without an importance matrix,
 * quantize_row_*_impl with one). Exactness needs ggml's float32 operation order, sequential
 * sums, its magic-number rounding and C's integer narrowing; this file is compiled without
 * contraction into fused multiply-adds (see kquant.c).
 */
#ifndef KQUANT_GGML_H
#define KQUANT_GGML_H

#include <math.h>
#include "kquant_common.h"

#define G_EPS 1e-15f

static inline int g_nint(float f) {
    float v = f + 12582912.f;
    int32_t i;
    memcpy(&i, &v, 4);
    return (i & 0x007fffff) - 0x00400000;
}

static inline int g_clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }
static inline uint16_t g_h(float f) { return fp32_to_fp16(f); }
static inline float g_f(uint16_t h) { return fp16_to_fp32(h); }

/* symmetric levels in [-nmax, nmax-1], stored + nmax; 19-point scale search (rmse_type 1) */
static float g_make_qx(int n, int nmax, const float *x, int8_t *L, const float *qw) {
    float amax = 0, max = 0;
    for (int i = 0; i < n; ++i) {
        const float ax = fabsf(x[i]);
        if (ax > amax) { amax = ax; max = x[i]; }
    }
    if (amax < G_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = -nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        const int l = g_clampi(g_nint(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)(l + nmax);
        const float w = qw ? qw[i] : x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; ++i) {
            const int l = g_clampi(g_nint(iscale * x[i]), -nmax, nmax - 1);
            const float w = qw ? qw[i] : x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; ++i) L[i] = (int8_t)(nmax + g_clampi(g_nint(iscale * x[i]), -nmax, nmax - 1));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* Q3_K without imatrix: x^2-weighted levels, then coordinate descent on single levels */
static float g_make_q3(int n, int nmax, const float *x, int8_t *L) {
    float amax = 0, max = 0;
    for (int i = 0; i < n; ++i) {
        const float ax = fabsf(x[i]);
        if (ax > amax) { amax = ax; max = x[i]; }
    }
    if (amax < G_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    const float iscale = -nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        const int l = g_clampi(g_nint(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)l;
        const float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    for (int itry = 0; itry < 5; ++itry) {
        int changed = 0;
        for (int i = 0; i < n; ++i) {
            const float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * L[i];
            if (slx > 0) {
                float sl2 = suml2 - w * L[i] * L[i];
                const int nl = g_clampi(g_nint(x[i] * sl2 / slx), -nmax, nmax - 1);
                if (nl != L[i]) {
                    slx += w * x[i] * nl;
                    sl2 += w * nl * nl;
                    if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (int8_t)nl;
                        sumlx = slx;
                        suml2 = sl2;
                        ++changed;
                    }
                }
            }
        }
        if (!changed) break;
    }
    for (int i = 0; i < n; ++i) L[i] = (int8_t)(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* affine levels in [0, nmax] with min <= 0 (make_qkx2/3 with weights given) */
static float g_make_qkx(int n, int nmax, const float *x, const float *weights, uint8_t *L, float *the_min,
                        uint8_t *Laux, float rmin, float rdelta, int nstep, int use_mad) {
    float min = x[0], max = x[0];
    float sum_w = weights[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; ++i) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        const float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0) min = 0;
    if (max <= min) {
        memset(L, 0, (size_t)n);
        *the_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best = 0;
    for (int i = 0; i < n; ++i) {
        const int l = g_nint(iscale * (x[i] - min));
        L[i] = (uint8_t)g_clampi(l, 0, nmax);
        float diff = scale * L[i] + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        best += weights[i] * diff;
    }
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; ++i) {
            const int l = g_clampi(g_nint(iscale * (x[i] - min)), 0, nmax);
            Laux[i] = (uint8_t)l;
            const float w = weights[i];
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        const float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur = 0;
            for (int i = 0; i < n; ++i) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                diff = use_mad ? fabsf(diff) : diff * diff;
                cur += weights[i] * diff;
            }
            if (cur < best) {
                memcpy(L, Laux, (size_t)n);
                best = cur;
                scale = this_scale;
                min = this_min; /* later grid points are taken from the new min */
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* unsigned codes in [0, nmax] for non-negative scales, weighted */
static float g_make_qp(int n, int nmax, const float *x, uint8_t *L, const float *qw) {
    float max = 0;
    for (int i = 0; i < n; ++i) max = x[i] > max ? x[i] : max;
    if (max < G_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = nmax / max;
    for (int i = 0; i < n; ++i) L[i] = (uint8_t)g_nint(iscale * x[i]);
    const float scale = 1 / iscale;
    float best = 0;
    for (int i = 0; i < n; ++i) {
        const float diff = x[i] - scale * L[i];
        best += qw[i] * diff * diff;
    }
    for (int is = -4; is <= 4; ++is) {
        if (is == 0) continue;
        const float isc = (0.1f * is + nmax) / max;
        const float sc = 1 / isc;
        float mse = 0;
        for (int i = 0; i < n; ++i) {
            int l = g_nint(isc * x[i]);
            l = l < nmax ? l : nmax;
            const float diff = x[i] - sc * l;
            mse += qw[i] * diff * diff;
        }
        if (mse < best) {
            best = mse;
            iscale = isc;
        }
    }
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = g_nint(iscale * x[i]);
        l = l < nmax ? l : nmax;
        L[i] = (uint8_t)l;
        const float w = qw[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    for (int itry = 0; itry < 5; ++itry) {
        int changed = 0;
        for (int i = 0; i < n; ++i) {
            const float w = qw[i];
            float slx = sumlx - w * x[i] * L[i];
            float sl2 = suml2 - w * L[i] * L[i];
            if (slx > 0 && sl2 > 0) {
                int nl = g_nint(x[i] * sl2 / slx);
                nl = nl < nmax ? nl : nmax;
                if (nl != L[i]) {
                    slx += w * x[i] * nl;
                    sl2 += w * nl * nl;
                    if (slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (uint8_t)nl;
                        sumlx = slx;
                        suml2 = sl2;
                        ++changed;
                    }
                }
            }
        }
        if (!changed) break;
    }
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

static int g_best_iq4(float x) {
    if (x <= KQ_IQ4NL[0]) return 0;
    if (x >= KQ_IQ4NL[15]) return 15;
    int ml = 0, mu = 15;
    while (mu - ml > 1) {
        const int mav = (ml + mu) / 2;
        if (x < KQ_IQ4NL[mav]) mu = mav;
        else ml = mav;
    }
    return x - KQ_IQ4NL[mu - 1] < KQ_IQ4NL[mu] - x ? mu - 1 : mu;
}

/* ---- per-type rows: x is one row of n values, qw its importance (or NULL) ---- */

static void g_row_q2_k(const float *x, const float *qw, uint8_t *out, int64_t n) {
    uint8_t L[256], Laux[16], sc[16], mn[16], Ls[16], Lm[16];
    float w16[16], scales[16], mins[16], sw[16];
    for (int64_t ib = 0; ib < n / 256; ++ib, x += 256, out += 84) {
        uint16_t dh, mh;
        if (!qw) {
            float max_scale = 0, max_min = 0;
            for (int j = 0; j < 16; ++j) {
                for (int l = 0; l < 16; ++l) w16[l] = fabsf(x[16 * j + l]);
                scales[j] = g_make_qkx(16, 3, x + 16 * j, w16, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15, 1);
                if (scales[j] > max_scale) max_scale = scales[j];
                if (mins[j] > max_min) max_min = mins[j];
            }
            uint8_t byte[16];
            if (max_scale > 0) {
                const float is = 15.f / max_scale;
                for (int j = 0; j < 16; ++j) byte[j] = (uint8_t)g_nint(is * scales[j]);
                dh = g_h(max_scale / 15.f);
            } else {
                memset(byte, 0, 16);
                dh = g_h(0.f);
            }
            if (max_min > 0) {
                const float is = 15.f / max_min;
                for (int j = 0; j < 16; ++j) byte[j] = (uint8_t)(byte[j] | (g_nint(is * mins[j]) << 4));
                mh = g_h(max_min / 15.f);
            } else {
                mh = g_h(0.f);
            }
            for (int j = 0; j < 16; ++j) { sc[j] = byte[j] & 0xF; mn[j] = byte[j] >> 4; }
        } else {
            const float *q = qw + 256 * ib;
            float sumx2 = 0;
            for (int j = 0; j < 256; ++j) sumx2 += x[j] * x[j];
            const float sigma2 = sumx2 / 256;
            for (int j = 0; j < 16; ++j) {
                sw[j] = 0;
                for (int l = 0; l < 16; ++l) w16[l] = q[16 * j + l] * sqrtf(sigma2 + x[16 * j + l] * x[16 * j + l]);
                for (int l = 0; l < 16; ++l) sw[j] += w16[l];
                scales[j] = g_make_qkx(16, 3, x + 16 * j, w16, L + 16 * j, &mins[j], Laux, -0.9f, 0.05f, 36, 0);
            }
            dh = g_h(g_make_qp(16, 15, scales, Ls, sw));
            mh = g_h(g_make_qp(16, 15, mins, Lm, sw));
            for (int j = 0; j < 16; ++j) {
                const uint8_t byte = (uint8_t)(Ls[j] | (Lm[j] << 4));
                sc[j] = byte & 0xF;
                mn[j] = byte >> 4;
            }
        }
        const float d = g_f(dh), dmin = g_f(mh);
        for (int j = 0; j < 16; ++j) {
            const float dl = d * sc[j];
            if (!dl) continue;
            const float ml = dmin * mn[j];
            for (int i = 0; i < 16; ++i) L[16 * j + i] = (uint8_t)g_clampi(g_nint((x[16 * j + i] + ml) / dl), 0, 3);
        }
        kq_pack(GGML_TYPE_Q2_K, out, dh, mh, sc, mn, L);
    }
}

static void g_row_q3_k(const float *x, const float *qw, uint8_t *out, int64_t n) {
    int8_t L[256], Ls[16];
    uint8_t Lu[256], codes[16];
    float scales[16], w16[16], sw[16];
    for (int64_t ib = 0; ib < n / 256; ++ib, x += 256, out += 110) {
        uint16_t dh;
        if (!qw) {
            float amax = 0, max_scale = 0;
            for (int j = 0; j < 16; ++j) {
                scales[j] = g_make_q3(16, 4, x + 16 * j, L + 16 * j);
                const float a = fabsf(scales[j]);
                if (a > amax) { amax = a; max_scale = scales[j]; }
            }
            if (max_scale) {
                const float iscale = -32.f / max_scale;
                for (int j = 0; j < 16; ++j) {
                    int8_t l = (int8_t)g_nint(iscale * scales[j]);
                    codes[j] = (uint8_t)(g_clampi(l, -32, 31) + 32);
                }
                dh = g_h(1 / iscale);
            } else {
                memset(codes, 0, 16);
                dh = g_h(0.f);
            }
        } else {
            const float *q = qw + 256 * ib;
            float sumx2 = 0;
            for (int j = 0; j < 256; ++j) sumx2 += x[j] * x[j];
            const float sigma2 = 2 * sumx2 / 256;
            for (int j = 0; j < 16; ++j) {
                for (int l = 0; l < 16; ++l) w16[l] = q[16 * j + l] * sqrtf(sigma2 + x[16 * j + l] * x[16 * j + l]);
                float s = 0;
                for (int l = 0; l < 16; ++l) s += w16[l];
                sw[j] = s;
                scales[j] = g_make_qx(16, 4, x + 16 * j, L + 16 * j, w16);
            }
            dh = g_h(g_make_qx(16, 32, scales, Ls, sw));
            for (int j = 0; j < 16; ++j) codes[j] = (uint8_t)Ls[j];
        }
        const float d = g_f(dh);
        for (int j = 0; j < 16; ++j) {
            const float dl = d * (codes[j] - 32);
            if (!dl) continue;
            for (int i = 0; i < 16; ++i) L[16 * j + i] = (int8_t)(g_clampi(g_nint(x[16 * j + i] / dl), -4, 3) + 4);
        }
        for (int j = 0; j < 256; ++j) Lu[j] = (uint8_t)L[j];
        kq_pack(GGML_TYPE_Q3_K, out, dh, 0, codes, NULL, Lu);
    }
}

static void g_k4_scale_bytes(uint8_t *s, const uint8_t *ls, const uint8_t *lm) {
    for (int j = 0; j < 8; ++j) {
        if (j < 4) {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (uint8_t)((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
            s[j - 4] |= (uint8_t)((ls[j] >> 4) << 6);
            s[j] |= (uint8_t)((lm[j] >> 4) << 6);
        }
    }
}

static void g_row_q45_k(int type, const float *x, const float *qw, uint8_t *out, int64_t n) {
    const int nmax = type == GGML_TYPE_Q4_K ? 15 : 31, bytes = type == GGML_TYPE_Q4_K ? 144 : 176;
    uint8_t L[256], Laux[32], ls[8], lm[8], raw[12], sc[8], mn[8];
    float w32[32], scales[8], mins[8], sw[8];
    for (int64_t ib = 0; ib < n / 256; ++ib, x += 256, out += bytes) {
        uint16_t dh, mh;
        if (!qw) {
            float max_scale = 0, max_min = 0;
            for (int j = 0; j < 8; ++j) {
                float sum_x2 = 0;
                for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
                const float av_x = sqrtf(sum_x2 / 32);
                for (int l = 0; l < 32; ++l) w32[l] = av_x + fabsf(x[32 * j + l]);
                scales[j] = nmax == 15
                    ? g_make_qkx(32, 15, x + 32 * j, w32, L + 32 * j, &mins[j], Laux, -1.f, 0.1f, 20, 0)
                    : g_make_qkx(32, 31, x + 32 * j, w32, L + 32 * j, &mins[j], Laux, -0.5f, 0.1f, 15, 0);
                if (scales[j] > max_scale) max_scale = scales[j];
                if (mins[j] > max_min) max_min = mins[j];
            }
            const float inv_s = max_scale > 0 ? 63.f / max_scale : 0.f;
            const float inv_m = max_min > 0 ? 63.f / max_min : 0.f;
            for (int j = 0; j < 8; ++j) {
                const uint8_t a = (uint8_t)g_nint(inv_s * scales[j]), b = (uint8_t)g_nint(inv_m * mins[j]);
                ls[j] = a < 63 ? a : 63;
                lm[j] = b < 63 ? b : 63;
            }
            dh = g_h(max_scale / 63.f);
            mh = g_h(max_min / 63.f);
        } else {
            const float *q = qw + 256 * ib;
            float sum_x2 = 0;
            for (int l = 0; l < 256; ++l) sum_x2 += x[l] * x[l];
            const float sigma2 = 2 * sum_x2 / 256;
            for (int j = 0; j < 8; ++j) {
                for (int l = 0; l < 32; ++l) w32[l] = q[32 * j + l] * sqrtf(sigma2 + x[32 * j + l] * x[32 * j + l]);
                float s = 0;
                for (int l = 0; l < 32; ++l) s += w32[l];
                sw[j] = s;
                scales[j] = g_make_qkx(32, nmax, x + 32 * j, w32, L + 32 * j, &mins[j], Laux, -0.9f, 0.05f, 36, 0);
            }
            dh = g_h(g_make_qp(8, 63, scales, ls, sw));
            mh = g_h(g_make_qp(8, 63, mins, lm, sw));
            if (type == GGML_TYPE_Q5_K)
                for (int j = 0; j < 8; ++j) {
                    ls[j] = ls[j] < 63 ? ls[j] : 63;
                    lm[j] = lm[j] < 63 ? lm[j] : 63;
                }
        }
        memset(raw, 0, 12);
        g_k4_scale_bytes(raw, ls, lm);
        for (int j = 0; j < 8; ++j) {
            if (j < 4) {
                sc[j] = raw[j] & 63;
                mn[j] = raw[j + 4] & 63;
            } else {
                sc[j] = (uint8_t)((raw[j + 4] & 0xF) | ((raw[j - 4] >> 6) << 4));
                mn[j] = (uint8_t)((raw[j + 4] >> 4) | ((raw[j] >> 6) << 4));
            }
        }
        const float d = g_f(dh), dmin = g_f(mh);
        for (int j = 0; j < 8; ++j) {
            const float dl = d * sc[j];
            if (!dl) continue;
            const float ml = dmin * mn[j];
            for (int i = 0; i < 32; ++i) L[32 * j + i] = (uint8_t)g_clampi(g_nint((x[32 * j + i] + ml) / dl), 0, nmax);
        }
        kq_pack(type, out, dh, mh, sc, mn, L);
        memcpy(out + 4, raw, 12);
    }
}

static void g_row_q6_k(const float *x, const float *qw, uint8_t *out, int64_t n) {
    int8_t L[256];
    uint8_t Lu[256], sc[16];
    float scales[16];
    for (int64_t ib = 0; ib < n / 256; ++ib, x += 256, out += 210) {
        float amax = 0, max_scale = 0;
        for (int j = 0; j < 16; ++j) {
            scales[j] = g_make_qx(16, 32, x + 16 * j, L + 16 * j, qw ? qw + 256 * ib + 16 * j : NULL);
            const float a = fabsf(scales[j]);
            if (a > amax) { amax = a; max_scale = scales[j]; }
        }
        if (amax < G_EPS) {
            memset(out, 0, 210);
            continue;
        }
        const float iscale = -128.f / max_scale;
        const uint16_t dh = g_h(1 / iscale);
        const float d = g_f(dh);
        for (int j = 0; j < 16; ++j) {
            const int v = g_nint(iscale * scales[j]);
            sc[j] = (uint8_t)(int8_t)(v < 127 ? v : 127);
        }
        for (int j = 0; j < 16; ++j) {
            const float dl = d * (int8_t)sc[j];
            if (!dl) continue;
            for (int i = 0; i < 16; ++i) L[16 * j + i] = (int8_t)(g_clampi(g_nint(x[16 * j + i] / dl), -32, 31) + 32);
        }
        for (int j = 0; j < 256; ++j) Lu[j] = (uint8_t)L[j];
        kq_pack(GGML_TYPE_Q6_K, out, dh, 0, sc, NULL, Lu);
    }
}

static void g_row_legacy(int type, const float *x, const float *qw, uint8_t *out, int64_t n) {
    const ggml_type_info *ti = kq_info(type);
    uint8_t L[32], Laux[32];
    int8_t Li[32];
    float w32[32];
    float sigma2 = 0;
    if (qw && type != GGML_TYPE_Q8_0) {
        float s = 0;
        for (int64_t j = 0; j < n; ++j) s += x[j] * x[j];
        sigma2 = s / n;
    }
    for (int64_t ib = 0; ib < n / 32; ++ib, x += 32, out += ti->bytes) {
        if (type == GGML_TYPE_Q8_0) {
            float amax = 0;
            for (int j = 0; j < 32; ++j) amax = fabsf(x[j]) > amax ? fabsf(x[j]) : amax;
            const float d = amax / 127, id = d ? 1.0f / d : 0.0f;
            for (int j = 0; j < 32; ++j) L[j] = (uint8_t)(int8_t)roundf(x[j] * id);
            kq_pack(type, out, g_h(d), 0, NULL, NULL, L);
        } else if (!qw && (type == GGML_TYPE_Q4_0 || type == GGML_TYPE_Q5_0)) {
            const int half = type == GGML_TYPE_Q4_0 ? 8 : 16;
            float amax = 0, max = 0;
            for (int j = 0; j < 32; ++j)
                if (amax < fabsf(x[j])) { amax = fabsf(x[j]); max = x[j]; }
            const float d = max / -half, id = d ? 1.0f / d : 0.0f;
            for (int j = 0; j < 32; ++j) {
                const int v = (int8_t)(x[j] * id + (half + 0.5f));
                L[j] = (uint8_t)(v < 2 * half - 1 ? v : 2 * half - 1);
            }
            kq_pack(type, out, g_h(d), 0, NULL, NULL, L);
        } else if (!qw) {
            const int nmax = type == GGML_TYPE_Q4_1 ? 15 : 31;
            float min = x[0], max = x[0];
            for (int j = 1; j < 32; ++j) {
                if (x[j] < min) min = x[j];
                if (x[j] > max) max = x[j];
            }
            const float d = (max - min) / nmax, id = d ? 1.0f / d : 0.0f;
            for (int j = 0; j < 32; ++j) {
                const uint8_t v = (uint8_t)(int8_t)((x[j] - min) * id + 0.5f);
                L[j] = (type == GGML_TYPE_Q4_1 && v > 15) ? 15 : v;
            }
            kq_pack(type, out, g_h(d), g_h(min), NULL, NULL, L);
        } else {
            const float *q = qw + 32 * ib;
            for (int j = 0; j < 32; ++j) w32[j] = q[j] * sqrtf(sigma2 + x[j] * x[j]);
            if (type == GGML_TYPE_Q4_0 || type == GGML_TYPE_Q5_0) {
                const float d = g_make_qx(32, type == GGML_TYPE_Q4_0 ? 8 : 16, x, Li, w32);
                for (int j = 0; j < 32; ++j) L[j] = (uint8_t)Li[j];
                kq_pack(type, out, g_h(d), 0, NULL, NULL, L);
            } else {
                float min;
                const int nmax = type == GGML_TYPE_Q4_1 ? 15 : 31;
                const float d = g_make_qkx(32, nmax, x, w32, L, &min, Laux, -0.9f, 0.05f, 36, 0);
                kq_pack(type, out, g_h(d), g_h(-min), NULL, NULL, L);
            }
        }
    }
}

static void g_row_iq4_nl(const float *x, const float *qw, uint8_t *out, int64_t n) {
    uint8_t L[32];
    float w[32];
    for (int64_t ib = 0; ib < n / 32; ++ib, x += 32, out += 18) {
        float sigma2 = 0;
        for (int j = 0; j < 32; ++j) sigma2 += x[j] * x[j];
        sigma2 *= 2.f / 32;
        if (qw) {
            const float *q = qw + 32 * ib;
            for (int j = 0; j < 32; ++j) w[j] = q[j] * sqrtf(sigma2 + x[j] * x[j]);
        } else {
            for (int j = 0; j < 32; ++j) w[j] = x[j] * x[j];
        }
        float amax = 0, max = 0;
        for (int j = 0; j < 32; ++j) {
            const float ax = fabsf(x[j]);
            if (ax > amax) { amax = ax; max = x[j]; }
        }
        float d = 0;
        if (amax >= G_EPS) {
            d = -max / KQ_IQ4NL[0];
            float id = 1 / d, sumqx = 0, sumq2 = 0;
            for (int j = 0; j < 32; ++j) {
                const float q = KQ_IQ4NL[g_best_iq4(id * x[j])];
                sumqx += w[j] * q * x[j];
                sumq2 += w[j] * q * q;
            }
            d = sumq2 > 0 ? sumqx / sumq2 : 0.f;
            float best = d * sumqx;
            for (int itry = -7; itry <= 7; ++itry) {
                id = (itry + KQ_IQ4NL[0]) / max;
                sumqx = sumq2 = 0;
                for (int j = 0; j < 32; ++j) {
                    const float q = KQ_IQ4NL[g_best_iq4(id * x[j])];
                    sumqx += w[j] * q * x[j];
                    sumq2 += w[j] * q * q;
                }
                if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
                    d = sumqx / sumq2;
                    best = d * sumqx;
                }
            }
        }
        const float id = d ? 1 / d : 0;
        for (int j = 0; j < 32; ++j) L[j] = (uint8_t)g_best_iq4(id * x[j]);
        kq_pack(GGML_TYPE_IQ4_NL, out, g_h(d), 0, NULL, NULL, L);
    }
}

/* one row of n values in ggml mode */
static void g_row(int type, const float *x, const float *qw, uint8_t *out, int64_t n) {
    switch (type) {
    case GGML_TYPE_Q2_K: g_row_q2_k(x, qw, out, n); break;
    case GGML_TYPE_Q3_K: g_row_q3_k(x, qw, out, n); break;
    case GGML_TYPE_Q4_K:
    case GGML_TYPE_Q5_K: g_row_q45_k(type, x, qw, out, n); break;
    case GGML_TYPE_Q6_K: g_row_q6_k(x, qw, out, n); break;
    case GGML_TYPE_IQ4_NL: g_row_iq4_nl(x, qw, out, n); break;
    default: g_row_legacy(type, x, qw, out, n); break;
    }
}

#endif
