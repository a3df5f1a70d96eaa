/* Shared definitions for the block kernels: activation rows, bit helpers, scale unpacking.
 *
 * Included once, by kernels.c. Everything here is plain C11 (no SIMD); the SIMD headers build on it.
 *
 * Exactness note: dequantization must match gguf.quants bit for bit, so products and sums are kept
 * as separate float operations and never fused. GCC does not contract across statements under
 * -std=c11 (its default is -ffp-contract=off in ISO mode); clang is told so with a pragma.
 */
#ifndef GGUF_KERNELS_COMMON_H
#define GGUF_KERNELS_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ggml_common.h"

#if defined(__clang__)
#pragma clang fp contract(off)
#endif

#define KALWAYS static inline __attribute__((always_inline))

/* How activations are presented to a dot kernel. */
enum {
    ACT_F32 = 0, /* plain float rows (float weight types) */
    ACT_Q32 = 1, /* int8 per 32: scale d and d*sum(q) per block (legacy block types) */
    ACT_Q256 = 2 /* int8 per 256: scale d per super-block, int16 sums per 16 (K-quants) */
};

/* One activation row as the dot kernels see it. */
typedef struct {
    const int8_t *q;   /* quantized values, n_in of them */
    const float *d;    /* one scale per block (32 or 256) */
    const float *s;    /* ACT_Q32: d * sum(q) per 32-block */
    const int16_t *bs; /* ACT_Q256: sum(q) per 16 values, 16 per super-block */
    const float *xf;   /* ACT_F32: the float row itself */
} act_row;

/* y[k * ys] = dot(weight row w, activation row ax[k]) for k < nx; nb blocks per row. */
typedef void (*dot_fn)(size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys);
/* y[r] = dot(weight row w + r * rb, activation row a) for r < nr: the batch-1 product (GEMV), for kernels that
 * take several weight rows per activation load. */
typedef void (*gemv_fn)(size_t nb, const uint8_t *w, size_t rb, size_t nr, const act_row *a, float *y);
/* Dequantize nb consecutive blocks into floats. */
typedef void (*deq_fn)(const uint8_t *src, float *dst, size_t nb);

#define NX_MAX 4 /* activation rows a dot kernel takes at once (weights unpacked once for all) */

/* ---- scalar bit helpers ---- */

KALWAYS uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
KALWAYS uint32_t rd32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v; /* little-endian hosts only: see the static check in kernels.c */
}

/* Round to nearest, ties to even, for |v| < 2^22 (the quantizers only feed |v| <= 127.5). */
KALWAYS int round_small(float v) {
    float t = v + 12582912.0f; /* 1.5 * 2^23 */
    return (int)(t - 12582912.0f);
}

/* ---- 6-bit scale unpacking ---- */

/* Q4_K / Q5_K: 12 bytes -> 8 scales and 8 mins (6 bits each), as packed bytes in two u64. */
KALWAYS void unpack_k4_scales(const uint8_t *p, uint64_t *sc, uint64_t *mn) {
    uint32_t a = rd32(p), b = rd32(p + 4), c = rd32(p + 8);
    uint32_t s_lo = a & 0x3f3f3f3fu;
    uint32_t m_lo = b & 0x3f3f3f3fu;
    uint32_t s_hi = (c & 0x0f0f0f0fu) | ((a >> 2) & 0x30303030u);
    uint32_t m_hi = ((c >> 4) & 0x0f0f0f0fu) | ((b >> 2) & 0x30303030u);
    *sc = (uint64_t)s_lo | ((uint64_t)s_hi << 32);
    *mn = (uint64_t)m_lo | ((uint64_t)m_hi << 32);
}

/* Q3_K: 12 bytes -> 16 signed scales in [-32, 31]. */
KALWAYS void unpack_k3_scales(const uint8_t *p, int8_t out[16]) {
    uint32_t a = rd32(p), b = rd32(p + 4), c = rd32(p + 8);
    uint32_t w[4];
    w[0] = (a & 0x0f0f0f0fu) | ((c & 0x03030303u) << 4);
    w[1] = (b & 0x0f0f0f0fu) | (((c >> 2) & 0x03030303u) << 4);
    w[2] = ((a >> 4) & 0x0f0f0f0fu) | (((c >> 4) & 0x03030303u) << 4);
    w[3] = ((b >> 4) & 0x0f0f0f0fu) | (((c >> 6) & 0x03030303u) << 4);
    uint8_t u[16];
    memcpy(u, w, 16);
    for (int i = 0; i < 16; i++) out[i] = (int8_t)(u[i] - 32);
}

/* ---- activation quantization ---- */

/* Blocks whose largest |x| is below this count as zero: 127 / amax would overflow float. */
#define ACT_TINY 1e-36f

/* Per 32 values: d = amax/127, q = round(x/d), s = d * sum(q). A non-finite block gives d = NaN
 * and q = 0, so the outputs it feeds become NaN instead of reading garbage. */
KALWAYS void act_quant_q32_body(const float *x, size_t n, int8_t *q, float *d, float *s) {
    for (size_t b = 0; b < n / 32; b++) {
        const float *xb = x + 32 * b;
        float amax = 0.0f;
        for (int l = 0; l < 32; l++) {
            float a = xb[l] < 0 ? -xb[l] : xb[l];
            amax = a > amax ? a : amax;
        }
        int finite = 1;
        for (int l = 0; l < 32; l++) finite &= (xb[l] == xb[l]) & (xb[l] - xb[l] == 0.0f);
        if (!finite) {
            memset(q + 32 * b, 0, 32);
            d[b] = bits_f32(0x7fc00000u);
            s[b] = 0.0f;
            continue;
        }
        if (amax < ACT_TINY) amax = 0.0f;
        float dd = amax / 127.0f;
        float id = amax > 0.0f ? 127.0f / amax : 0.0f;
        int sum = 0;
        for (int l = 0; l < 32; l++) {
            int v = round_small(xb[l] * id);
            v = v > 127 ? 127 : (v < -127 ? -127 : v);
            q[32 * b + l] = (int8_t)v;
            sum += v;
        }
        d[b] = dd;
        s[b] = dd * (float)sum;
    }
}

/* Per 256 values: d = amax/127, q = round(x/d), and sums of q per 16. */
KALWAYS void act_quant_q256_body(const float *x, size_t n, int8_t *q, float *d, int16_t *bs) {
    for (size_t b = 0; b < n / QK_K; b++) {
        const float *xb = x + QK_K * b;
        float amax = 0.0f;
        int finite = 1;
        for (int l = 0; l < QK_K; l++) {
            float a = xb[l] < 0 ? -xb[l] : xb[l];
            amax = a > amax ? a : amax;
            finite &= (xb[l] == xb[l]) & (xb[l] - xb[l] == 0.0f);
        }
        if (!finite) {
            memset(q + QK_K * b, 0, QK_K);
            memset(bs + 16 * b, 0, 32);
            d[b] = bits_f32(0x7fc00000u);
            continue;
        }
        if (amax < ACT_TINY) amax = 0.0f;
        float id = amax > 0.0f ? 127.0f / amax : 0.0f;
        for (int l = 0; l < QK_K; l++) {
            int v = round_small(xb[l] * id);
            v = v > 127 ? 127 : (v < -127 ? -127 : v);
            q[QK_K * b + l] = (int8_t)v;
        }
        for (int g = 0; g < 16; g++) {
            int sum = 0;
            for (int l = 0; l < 16; l++) sum += q[QK_K * b + 16 * g + l];
            bs[16 * b + g] = (int16_t)sum;
        }
        d[b] = amax / 127.0f;
    }
}

#endif
