/* Portable kernels: exact dequantizers (bodies reused by the SIMD levels through auto-vectorizing
 * instantiations) and the scalar dot products that every other level must agree with.
 *
 * Block layouts (ggml-common.h), byte offsets inside one block:
 *   Q4_0 18: d@0 qs[16]@2            Q4_1 20: d@0 m@2 qs[16]@4
 *   Q5_0 22: d@0 qh[4]@2 qs[16]@6    Q5_1 24: d@0 m@2 qh[4]@4 qs[16]@8      Q8_0 34: d@0 qs[32]@2
 *   Q2_K 84: scales[16]@0 qs[64]@16 d@80 dmin@82
 *   Q3_K 110: hmask[32]@0 qs[64]@32 scales[12]@96 d@108
 *   Q4_K 144: d@0 dmin@2 scales[12]@4 qs[128]@16
 *   Q5_K 176: d@0 dmin@2 scales[12]@4 qh[32]@16 qs[128]@48
 *   Q6_K 210: ql[128]@0 qh[64]@128 scales[16]@192 d@208
 */
#ifndef GGUF_KERNELS_SCALAR_H
#define GGUF_KERNELS_SCALAR_H

#include "kernels_common.h"

/* ===================== dequantization bodies (bit-exact with gguf.quants) ===================== */

KALWAYS void deq_f32_body(const uint8_t *src, float *dst, size_t n) { memcpy(dst, src, n * 4); }

KALWAYS void deq_f16_body(const uint8_t *src, float *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = fp16_to_fp32(rd16(src + 2 * i));
}

KALWAYS void deq_bf16_body(const uint8_t *src, float *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = bf16_to_fp32(rd16(src + 2 * i));
}

KALWAYS void deq_q4_0_body(const uint8_t *src, float *dst, size_t nb) {
    for (size_t i = 0; i < nb; i++) {
        const uint8_t *b = src + 18 * i;
        float *y = dst + 32 * i;
        const float d = fp16_to_fp32(rd16(b));
        for (int l = 0; l < 16; l++) {
            y[l] = d * (float)((int)(b[2 + l] & 0x0F) - 8);
            y[l + 16] = d * (float)((int)(b[2 + l] >> 4) - 8);
        }
    }
}

KALWAYS void deq_q4_1_body(const uint8_t *src, float *dst, size_t nb) {
    for (size_t i = 0; i < nb; i++) {
        const uint8_t *b = src + 20 * i;
        float *y = dst + 32 * i;
        const float d = fp16_to_fp32(rd16(b)), m = fp16_to_fp32(rd16(b + 2));
        for (int l = 0; l < 16; l++) {
            float t0 = d * (float)(b[4 + l] & 0x0F);
            float t1 = d * (float)(b[4 + l] >> 4);
            y[l] = t0 + m;
            y[l + 16] = t1 + m;
        }
    }
}

KALWAYS void deq_q5_0_body(const uint8_t *src, float *dst, size_t nb) {
    for (size_t i = 0; i < nb; i++) {
        const uint8_t *b = src + 22 * i;
        float *y = dst + 32 * i;
        const float d = fp16_to_fp32(rd16(b));
        const uint32_t qh = rd32(b + 2);
        for (int l = 0; l < 16; l++) {
            int q0 = (b[6 + l] & 0x0F) | (int)(((qh >> l) & 1u) << 4);
            int q1 = (b[6 + l] >> 4) | (int)(((qh >> (l + 16)) & 1u) << 4);
            y[l] = d * (float)(q0 - 16);
            y[l + 16] = d * (float)(q1 - 16);
        }
    }
}

KALWAYS void deq_q5_1_body(const uint8_t *src, float *dst, size_t nb) {
    for (size_t i = 0; i < nb; i++) {
        const uint8_t *b = src + 24 * i;
        float *y = dst + 32 * i;
        const float d = fp16_to_fp32(rd16(b)), m = fp16_to_fp32(rd16(b + 2));
        const uint32_t qh = rd32(b + 4);
        for (int l = 0; l < 16; l++) {
            int q0 = (b[8 + l] & 0x0F) | (int)(((qh >> l) & 1u) << 4);
            int q1 = (b[8 + l] >> 4) | (int)(((qh >> (l + 16)) & 1u) << 4);
            float t0 = d * (float)q0;
            float t1 = d * (float)q1;
            y[l] = t0 + m;
            y[l + 16] = t1 + m;
        }
    }
}

KALWAYS void deq_q8_0_body(const uint8_t *src, float *dst, size_t nb) {
    for (size_t i = 0; i < nb; i++) {
        const uint8_t *b = src + 34 * i;
        float *y = dst + 32 * i;
        const float d = fp16_to_fp32(rd16(b));
        for (int l = 0; l < 32; l++) y[l] = (float)(int8_t)b[2 + l] * d;
    }
}

KALWAYS void deq_q2_k_body(const uint8_t *src, float *dst, size_t nb) {
    for (size_t i = 0; i < nb; i++) {
        const uint8_t *b = src + 84 * i;
        float *y = dst + QK_K * i;
        const float d = fp16_to_fp32(rd16(b + 80)), dmin = fp16_to_fp32(rd16(b + 82));
        for (int h = 0; h < 2; h++)
            for (int s = 0; s < 4; s++)
                for (int g = 0; g < 2; g++) {
                    const uint8_t sc = b[8 * h + 2 * s + g];
                    const float dl = d * (float)(sc & 0x0F), ml = dmin * (float)(sc >> 4);
                    const uint8_t *q = b + 16 + 32 * h + 16 * g;
                    float *yy = y + 128 * h + 32 * s + 16 * g;
                    for (int l = 0; l < 16; l++) {
                        float t = dl * (float)((q[l] >> (2 * s)) & 3);
                        yy[l] = t - ml;
                    }
                }
    }
}

KALWAYS void deq_q3_k_body(const uint8_t *src, float *dst, size_t nb) {
    for (size_t i = 0; i < nb; i++) {
        const uint8_t *b = src + 110 * i;
        float *y = dst + QK_K * i;
        const float d = fp16_to_fp32(rd16(b + 108));
        int8_t sc[16];
        unpack_k3_scales(b + 96, sc);
        for (int h = 0; h < 2; h++)
            for (int s = 0; s < 4; s++) {
                const int bit = 4 * h + s;
                for (int g = 0; g < 2; g++) {
                    const float dl = d * (float)sc[8 * h + 2 * s + g];
                    const uint8_t *q = b + 32 + 32 * h + 16 * g;
                    const uint8_t *hm = b + 16 * g;
                    float *yy = y + 128 * h + 32 * s + 16 * g;
                    for (int l = 0; l < 16; l++) {
                        int v = (int)((q[l] >> (2 * s)) & 3) - (((hm[l] >> bit) & 1) ? 0 : 4);
                        yy[l] = dl * (float)v;
                    }
                }
            }
    }
}

KALWAYS void deq_q4_k_body(const uint8_t *src, float *dst, size_t nb) {
    for (size_t i = 0; i < nb; i++) {
        const uint8_t *b = src + 144 * i;
        float *y = dst + QK_K * i;
        const float d = fp16_to_fp32(rd16(b)), dmin = fp16_to_fp32(rd16(b + 2));
        uint64_t sc8, mn8;
        unpack_k4_scales(b + 4, &sc8, &mn8);
        for (int j = 0; j < 4; j++) {
            const float d0 = d * (float)((sc8 >> (16 * j)) & 0xFF);
            const float d1 = d * (float)((sc8 >> (16 * j + 8)) & 0xFF);
            const float m0 = dmin * (float)((mn8 >> (16 * j)) & 0xFF);
            const float m1 = dmin * (float)((mn8 >> (16 * j + 8)) & 0xFF);
            const uint8_t *q = b + 16 + 32 * j;
            for (int l = 0; l < 32; l++) {
                float t0 = d0 * (float)(q[l] & 0x0F);
                float t1 = d1 * (float)(q[l] >> 4);
                y[64 * j + l] = t0 - m0;
                y[64 * j + 32 + l] = t1 - m1;
            }
        }
    }
}

KALWAYS void deq_q5_k_body(const uint8_t *src, float *dst, size_t nb) {
    for (size_t i = 0; i < nb; i++) {
        const uint8_t *b = src + 176 * i;
        float *y = dst + QK_K * i;
        const float d = fp16_to_fp32(rd16(b)), dmin = fp16_to_fp32(rd16(b + 2));
        uint64_t sc8, mn8;
        unpack_k4_scales(b + 4, &sc8, &mn8);
        const uint8_t *qh = b + 16;
        for (int j = 0; j < 4; j++) {
            const float d0 = d * (float)((sc8 >> (16 * j)) & 0xFF);
            const float d1 = d * (float)((sc8 >> (16 * j + 8)) & 0xFF);
            const float m0 = dmin * (float)((mn8 >> (16 * j)) & 0xFF);
            const float m1 = dmin * (float)((mn8 >> (16 * j + 8)) & 0xFF);
            const uint8_t *q = b + 48 + 32 * j;
            for (int l = 0; l < 32; l++) {
                int v0 = (q[l] & 0x0F) | (((qh[l] >> (2 * j)) & 1) << 4);
                int v1 = (q[l] >> 4) | (((qh[l] >> (2 * j + 1)) & 1) << 4);
                float t0 = d0 * (float)v0;
                float t1 = d1 * (float)v1;
                y[64 * j + l] = t0 - m0;
                y[64 * j + 32 + l] = t1 - m1;
            }
        }
    }
}

KALWAYS void deq_q6_k_body(const uint8_t *src, float *dst, size_t nb) {
    for (size_t i = 0; i < nb; i++) {
        const uint8_t *b = src + 210 * i;
        float *y = dst + QK_K * i;
        const float d = fp16_to_fp32(rd16(b + 208));
        const int8_t *sc = (const int8_t *)(b + 192);
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = b + 64 * h, *qh = b + 128 + 32 * h;
            for (int k = 0; k < 4; k++) {
                const uint8_t *qq = ql + 32 * (k & 1);
                const int shift = 4 * (k >> 1);
                for (int g = 0; g < 2; g++) {
                    const float dl = d * (float)sc[8 * h + 2 * k + g];
                    float *yy = y + 128 * h + 32 * k + 16 * g;
                    for (int l = 0; l < 16; l++) {
                        const int ll = 16 * g + l;
                        int v = ((qq[ll] >> shift) & 0x0F) | (((qh[ll] >> (2 * k)) & 3) << 4);
                        yy[l] = dl * (float)(v - 32);
                    }
                }
            }
        }
    }
}

/* ============================= scalar dot products ============================= */
/* Each unpacks a block to small unsigned integers u (w = scale * (u - offset) or scale * u - min)
 * and takes integer dot products with the int8 activations, one float multiply per (sub-)block. */

KALWAYS int dot_u8_s8(const uint8_t *u, const int8_t *x, int n) {
    int s = 0;
    for (int l = 0; l < n; l++) s += (int)u[l] * (int)x[l];
    return s;
}

static void dot_f32_scalar(size_t n, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    for (int k = 0; k < nx; k++) {
        const float *x = ax[k].xf;
        float acc[8] = {0};
        size_t i = 0;
        for (; i + 8 <= n; i += 8)
            for (int l = 0; l < 8; l++) {
                float wv;
                memcpy(&wv, w + 4 * (i + l), 4);
                acc[l] += wv * x[i + l];
            }
        float t = 0;
        for (; i < n; i++) {
            float wv;
            memcpy(&wv, w + 4 * i, 4);
            t += wv * x[i];
        }
        for (int l = 0; l < 8; l++) t += acc[l];
        y[k * ys] = t;
    }
}

static void dot_f16_scalar(size_t n, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    for (int k = 0; k < nx; k++) {
        const float *x = ax[k].xf;
        float t = 0;
        for (size_t i = 0; i < n; i++) t += fp16_to_fp32(rd16(w + 2 * i)) * x[i];
        y[k * ys] = t;
    }
}

static void dot_bf16_scalar(size_t n, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    for (int k = 0; k < nx; k++) {
        const float *x = ax[k].xf;
        float t = 0;
        for (size_t i = 0; i < n; i++) t += bf16_to_fp32(rd16(w + 2 * i)) * x[i];
        y[k * ys] = t;
    }
}

/* Legacy 32-blocks: unpack nibbles (+ high bit) to u[32], offsets/mins via the activation sums. */
KALWAYS void unpack_q4_32(const uint8_t *qs, uint32_t qh, int has_h, uint8_t u[32]) {
    for (int l = 0; l < 16; l++) {
        u[l] = (uint8_t)((qs[l] & 0x0F) | (has_h ? ((qh >> l) & 1u) << 4 : 0));
        u[l + 16] = (uint8_t)((qs[l] >> 4) | (has_h ? ((qh >> (l + 16)) & 1u) << 4 : 0));
    }
}

/* kind: 0 Q4_0, 1 Q4_1, 2 Q5_0, 3 Q5_1 */
KALWAYS void dot_legacy_scalar(int kind, size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y,
                               size_t ys) {
    static const int bsz[4] = {18, 20, 22, 24}, qoff[4] = {2, 4, 6, 8}, offs[4] = {8, 0, 16, 0};
    for (int k = 0; k < nx; k++) {
        float acc = 0, extra = 0;
        for (size_t i = 0; i < nb; i++) {
            const uint8_t *b = w + bsz[kind] * i;
            uint8_t u[32];
            uint32_t qh = kind == 2 ? rd32(b + 2) : (kind == 3 ? rd32(b + 4) : 0);
            unpack_q4_32(b + qoff[kind], qh, kind >= 2, u);
            const float d = fp16_to_fp32(rd16(b));
            acc += d * ax[k].d[i] * (float)dot_u8_s8(u, ax[k].q + 32 * i, 32);
            /* offset types subtract offset * d * sum(x); min types add m * sum(x) */
            extra += (offs[kind] ? d : fp16_to_fp32(rd16(b + 2))) * ax[k].s[i];
        }
        y[k * ys] = offs[kind] ? acc - (float)offs[kind] * extra : acc + extra;
    }
}

static void dot_q4_0_scalar(size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    dot_legacy_scalar(0, nb, w, ax, nx, y, ys);
}
static void dot_q4_1_scalar(size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    dot_legacy_scalar(1, nb, w, ax, nx, y, ys);
}
static void dot_q5_0_scalar(size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    dot_legacy_scalar(2, nb, w, ax, nx, y, ys);
}
static void dot_q5_1_scalar(size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    dot_legacy_scalar(3, nb, w, ax, nx, y, ys);
}

static void dot_q8_0_scalar(size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    for (int k = 0; k < nx; k++) {
        float acc = 0;
        for (size_t i = 0; i < nb; i++) {
            const uint8_t *b = w + 34 * i;
            const int8_t *q = (const int8_t *)(b + 2), *x = ax[k].q + 32 * i;
            int s = 0;
            for (int l = 0; l < 32; l++) s += (int)q[l] * (int)x[l];
            acc += fp16_to_fp32(rd16(b)) * ax[k].d[i] * (float)s;
        }
        y[k * ys] = acc;
    }
}

/* K-quants: unpack a super-block to u[256] and integer (sub-)scales, then one float step each. */

static void dot_q2_k_scalar(size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    for (int k = 0; k < nx; k++) {
        float acc = 0;
        for (size_t i = 0; i < nb; i++) {
            const uint8_t *b = w + 84 * i;
            const int8_t *x = ax[k].q + QK_K * i;
            const int16_t *bs = ax[k].bs + 16 * i;
            int isum = 0, msum = 0;
            for (int h = 0; h < 2; h++)
                for (int s = 0; s < 4; s++) {
                    uint8_t u[32];
                    for (int l = 0; l < 32; l++) u[l] = (b[16 + 32 * h + l] >> (2 * s)) & 3;
                    const int c = 4 * h + s;
                    isum += (b[2 * c] & 0x0F) * dot_u8_s8(u, x + 32 * c, 16);
                    isum += (b[2 * c + 1] & 0x0F) * dot_u8_s8(u + 16, x + 32 * c + 16, 16);
                }
            for (int g = 0; g < 16; g++) msum += (b[g] >> 4) * bs[g];
            const float dx = ax[k].d[i];
            acc += fp16_to_fp32(rd16(b + 80)) * dx * (float)isum - fp16_to_fp32(rd16(b + 82)) * dx * (float)msum;
        }
        y[k * ys] = acc;
    }
}

static void dot_q3_k_scalar(size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    for (int k = 0; k < nx; k++) {
        float acc = 0;
        for (size_t i = 0; i < nb; i++) {
            const uint8_t *b = w + 110 * i;
            const int8_t *x = ax[k].q + QK_K * i;
            const int16_t *bs = ax[k].bs + 16 * i;
            int8_t sc[16];
            unpack_k3_scales(b + 96, sc);
            int isum = 0, osum = 0;
            for (int h = 0; h < 2; h++)
                for (int s = 0; s < 4; s++) {
                    const int c = 4 * h + s;
                    uint8_t u[32];
                    for (int l = 0; l < 32; l++)
                        u[l] = (uint8_t)(((b[32 + 32 * h + l] >> (2 * s)) & 3) | (((b[l] >> c) & 1) << 2));
                    isum += sc[2 * c] * dot_u8_s8(u, x + 32 * c, 16);
                    isum += sc[2 * c + 1] * dot_u8_s8(u + 16, x + 32 * c + 16, 16);
                }
            for (int g = 0; g < 16; g++) osum += sc[g] * bs[g];
            acc += fp16_to_fp32(rd16(b + 108)) * ax[k].d[i] * (float)(isum - 4 * osum);
        }
        y[k * ys] = acc;
    }
}

KALWAYS void dot_k4_scalar(int five, size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    const size_t bsz = five ? 176 : 144;
    for (int k = 0; k < nx; k++) {
        float acc = 0;
        for (size_t i = 0; i < nb; i++) {
            const uint8_t *b = w + bsz * i;
            const uint8_t *qs = b + (five ? 48 : 16), *qh = b + 16;
            const int8_t *x = ax[k].q + QK_K * i;
            const int16_t *bs = ax[k].bs + 16 * i;
            uint64_t sc8, mn8;
            unpack_k4_scales(b + 4, &sc8, &mn8);
            int isum = 0, msum = 0;
            for (int j = 0; j < 4; j++) {
                uint8_t u0[32], u1[32];
                for (int l = 0; l < 32; l++) {
                    u0[l] = (uint8_t)((qs[32 * j + l] & 0x0F) | (five ? ((qh[l] >> (2 * j)) & 1) << 4 : 0));
                    u1[l] = (uint8_t)((qs[32 * j + l] >> 4) | (five ? ((qh[l] >> (2 * j + 1)) & 1) << 4 : 0));
                }
                isum += (int)((sc8 >> (16 * j)) & 0xFF) * dot_u8_s8(u0, x + 64 * j, 32);
                isum += (int)((sc8 >> (16 * j + 8)) & 0xFF) * dot_u8_s8(u1, x + 64 * j + 32, 32);
            }
            for (int s = 0; s < 8; s++) msum += (int)((mn8 >> (8 * s)) & 0xFF) * (bs[2 * s] + bs[2 * s + 1]);
            const float dx = ax[k].d[i];
            acc += fp16_to_fp32(rd16(b)) * dx * (float)isum - fp16_to_fp32(rd16(b + 2)) * dx * (float)msum;
        }
        y[k * ys] = acc;
    }
}

static void dot_q4_k_scalar(size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    dot_k4_scalar(0, nb, w, ax, nx, y, ys);
}
static void dot_q5_k_scalar(size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    dot_k4_scalar(1, nb, w, ax, nx, y, ys);
}

static void dot_q6_k_scalar(size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    for (int k = 0; k < nx; k++) {
        float acc = 0;
        for (size_t i = 0; i < nb; i++) {
            const uint8_t *b = w + 210 * i;
            const int8_t *sc = (const int8_t *)(b + 192);
            const int8_t *x = ax[k].q + QK_K * i;
            const int16_t *bs = ax[k].bs + 16 * i;
            int isum = 0, osum = 0;
            for (int h = 0; h < 2; h++) {
                const uint8_t *ql = b + 64 * h, *qh = b + 128 + 32 * h;
                for (int c = 0; c < 4; c++) {
                    uint8_t u[32];
                    const uint8_t *qq = ql + 32 * (c & 1);
                    for (int l = 0; l < 32; l++)
                        u[l] = (uint8_t)(((qq[l] >> (4 * (c >> 1))) & 0x0F) | (((qh[l] >> (2 * c)) & 3) << 4));
                    const int8_t *xx = x + 128 * h + 32 * c;
                    isum += sc[8 * h + 2 * c] * dot_u8_s8(u, xx, 16);
                    isum += sc[8 * h + 2 * c + 1] * dot_u8_s8(u + 16, xx + 16, 16);
                }
            }
            for (int g = 0; g < 16; g++) osum += sc[g] * bs[g];
            acc += fp16_to_fp32(rd16(b + 208)) * ax[k].d[i] * (float)(isum - 32 * osum);
        }
        y[k * ys] = acc;
    }
}

#endif
