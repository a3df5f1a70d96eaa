/* The quantized NEON dot kernels, included twice by kernels_neon.h (no include guard):
 *   NSFX(name)        the instantiation's name: name##_neon or name##_neon_dotprod
 *   NTARGET           its function attribute (empty, or the dotprod target)
 *   NDOT(acc, a, b)   acc (int32x4) + products of the int8x16 vectors a and b, in some lanes
 * Each kernel does what its scalar twin does, in the same order: integer sums are exact whatever
 * the grouping, and every float operation is the scalar one, so results are bit-identical.
 * Unpacked weights (small unsigned integers) go through the signed dot as int8: they are < 64.
 */
#define NINL NTARGET static inline __attribute__((always_inline))
#define NFN NTARGET static

/* Sum over 16 groups G of scale[G] * (the four lanes of p[G]). */
NINL int NSFX(scaled16)(const int32x4_t p[16], int8x16_t sc) {
    const int32x4_t s0 = vpaddq_s32(vpaddq_s32(p[0], p[1]), vpaddq_s32(p[2], p[3]));
    const int32x4_t s1 = vpaddq_s32(vpaddq_s32(p[4], p[5]), vpaddq_s32(p[6], p[7]));
    const int32x4_t s2 = vpaddq_s32(vpaddq_s32(p[8], p[9]), vpaddq_s32(p[10], p[11]));
    const int32x4_t s3 = vpaddq_s32(vpaddq_s32(p[12], p[13]), vpaddq_s32(p[14], p[15]));
    const int16x8_t lo = vmovl_s8(vget_low_s8(sc)), hi = vmovl_high_s8(sc);
    int32x4_t r = vmulq_s32(s0, vmovl_s16(vget_low_s16(lo)));
    r = vmlaq_s32(r, s1, vmovl_high_s16(lo));
    r = vmlaq_s32(r, s2, vmovl_s16(vget_low_s16(hi)));
    r = vmlaq_s32(r, s3, vmovl_high_s16(hi));
    return vaddvq_s32(r);
}

/* Sum over 16 groups of sc[G] * bs[G] (the activation sums per 16 values). */
NINL int NSFX(dot16_s16)(int16x8_t sl, int16x8_t sh, const int16_t *bs) {
    const int16x8x2_t b = vld1q_s16_x2(bs);
    int32x4_t m = vmull_s16(vget_low_s16(sl), vget_low_s16(b.val[0]));
    m = vmlal_high_s16(m, sl, b.val[0]);
    m = vmlal_s16(m, vget_low_s16(sh), vget_low_s16(b.val[1]));
    m = vmlal_high_s16(m, sh, b.val[1]);
    return vaddvq_s32(m);
}

/* kind: 0 Q4_0, 1 Q4_1, 2 Q5_0, 3 Q5_1 (dot_legacy_scalar's arithmetic) */
NINL void NSFX(dot_legacy)(int kind, size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    static const int bsz[4] = {18, 20, 22, 24}, qoff[4] = {2, 4, 6, 8}, offs[4] = {8, 0, 16, 0};
    static const uint8_t idx_lo[16] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1};
    static const uint8_t idx_hi[16] = {2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3};
    static const uint8_t bits[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t m4 = vdupq_n_u8(0x0F), v16 = vdupq_n_u8(0x10), bit = vld1q_u8(bits);
    const uint8x16_t ilo = vld1q_u8(idx_lo), ihi = vld1q_u8(idx_hi);
    const int32x4_t zero = vdupq_n_s32(0);
    for (int k = 0; k < nx; k++) {
        float acc = 0, extra = 0;
        for (size_t i = 0; i < nb; i++) {
            const uint8_t *b = w + bsz[kind] * i;
            const uint8x16_t qs = vld1q_u8(b + qoff[kind]);
            uint8x16_t lo = vandq_u8(qs, m4), hi = vshrq_n_u8(qs, 4);
            if (kind >= 2) {
                const uint8x16_t h = vreinterpretq_u8_u32(vdupq_n_u32(rd32(b + (kind == 2 ? 2 : 4))));
                lo = vorrq_u8(lo, vandq_u8(vtstq_u8(vqtbl1q_u8(h, ilo), bit), v16));
                hi = vorrq_u8(hi, vandq_u8(vtstq_u8(vqtbl1q_u8(h, ihi), bit), v16));
            }
            const int8x16x2_t xv = vld1q_s8_x2(ax[k].q + 32 * i);
            const int32x4_t p = NDOT(NDOT(zero, vreinterpretq_s8_u8(lo), xv.val[0]), vreinterpretq_s8_u8(hi), xv.val[1]);
            const float d = f16_hw(b);
            acc += d * ax[k].d[i] * (float)vaddvq_s32(p);
            extra += (offs[kind] ? d : f16_hw(b + 2)) * ax[k].s[i];
        }
        y[k * ys] = offs[kind] ? acc - (float)offs[kind] * extra : acc + extra;
    }
}

NFN void NSFX(dot_q4_0)(size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    NSFX(dot_legacy)(0, nb, w, ax, nx, y, ys);
}
NFN void NSFX(dot_q4_1)(size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    NSFX(dot_legacy)(1, nb, w, ax, nx, y, ys);
}
NFN void NSFX(dot_q5_0)(size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    NSFX(dot_legacy)(2, nb, w, ax, nx, y, ys);
}
NFN void NSFX(dot_q5_1)(size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    NSFX(dot_legacy)(3, nb, w, ax, nx, y, ys);
}

/* Four blocks per step: their lane sums fold into [s0..s3] with three pairwise adds, the four scale
 * products are one vector multiply, and the four float additions stay in block order. */
NFN void NSFX(dot_q8_0)(size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    const int32x4_t zero = vdupq_n_s32(0);
    for (int k = 0; k < nx; k++) {
        const int8_t *x = ax[k].q;
        const float *dx = ax[k].d;
        float acc = 0;
        size_t i = 0;
        for (; i + 4 <= nb; i += 4) {
            const uint8_t *b = w + 34 * i;
            const int8_t *q = (const int8_t *)b + 2;
            const int8x16x4_t x01 = vld1q_s8_x4(x + 32 * i), x23 = vld1q_s8_x4(x + 32 * i + 64);
            int32x4_t p0 = NDOT(zero, vld1q_s8(q), x01.val[0]);
            int32x4_t p1 = NDOT(zero, vld1q_s8(q + 34), x01.val[2]);
            int32x4_t p2 = NDOT(zero, vld1q_s8(q + 68), x23.val[0]);
            int32x4_t p3 = NDOT(zero, vld1q_s8(q + 102), x23.val[2]);
            p0 = NDOT(p0, vld1q_s8(q + 16), x01.val[1]);
            p1 = NDOT(p1, vld1q_s8(q + 50), x01.val[3]);
            p2 = NDOT(p2, vld1q_s8(q + 84), x23.val[1]);
            p3 = NDOT(p3, vld1q_s8(q + 118), x23.val[3]);
            const int32x4_t s = vpaddq_s32(vpaddq_s32(p0, p1), vpaddq_s32(p2, p3));
            uint16x4_t h = vld1_dup_u16((const uint16_t *)b);
            h = vld1_lane_u16((const uint16_t *)(b + 34), h, 1);
            h = vld1_lane_u16((const uint16_t *)(b + 68), h, 2);
            h = vld1_lane_u16((const uint16_t *)(b + 102), h, 3);
            const float32x4_t dw = vcvt_f32_f16(vreinterpret_f16_u16(h));
            const float32x4_t t = vmulq_f32(vmulq_f32(dw, vld1q_f32(dx + i)), vcvtq_f32_s32(s));
            acc += vgetq_lane_f32(t, 0);
            acc += vgetq_lane_f32(t, 1);
            acc += vgetq_lane_f32(t, 2);
            acc += vgetq_lane_f32(t, 3);
        }
        for (; i < nb; i++) {
            const uint8_t *b = w + 34 * i;
            const int8x16x2_t xv = vld1q_s8_x2(x + 32 * i);
            const int32x4_t p = NDOT(NDOT(zero, vld1q_s8((const int8_t *)b + 2), xv.val[0]),
                                     vld1q_s8((const int8_t *)b + 18), xv.val[1]);
            acc += f16_hw(b) * dx[i] * (float)vaddvq_s32(p);
        }
        y[k * ys] = acc;
    }
}

NFN void NSFX(dot_q2_k)(size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    const uint8x16_t m3 = vdupq_n_u8(3), m4 = vdupq_n_u8(0x0F);
    const int32x4_t zero = vdupq_n_s32(0);
    for (int k = 0; k < nx; k++) {
        float acc = 0;
        for (size_t i = 0; i < nb; i++) {
            const uint8_t *b = w + 84 * i;
            const int8_t *x = ax[k].q + QK_K * i;
            const uint8x16x4_t q = vld1q_u8_x4(b + 16);
            int32x4_t p[16];
            for (int h = 0; h < 2; h++) {
                uint8x16_t a0 = q.val[2 * h], a1 = q.val[2 * h + 1];
                for (int s = 0; s < 4; s++) {
                    const int G = 8 * h + 2 * s;
                    const int8x16x2_t xv = vld1q_s8_x2(x + 16 * G);
                    p[G] = NDOT(zero, vreinterpretq_s8_u8(vandq_u8(a0, m3)), xv.val[0]);
                    p[G + 1] = NDOT(zero, vreinterpretq_s8_u8(vandq_u8(a1, m3)), xv.val[1]);
                    a0 = vshrq_n_u8(a0, 2);
                    a1 = vshrq_n_u8(a1, 2);
                }
            }
            const uint8x16_t sc = vld1q_u8(b);
            const int isum = NSFX(scaled16)(p, vreinterpretq_s8_u8(vandq_u8(sc, m4)));
            const uint8x16_t mn = vshrq_n_u8(sc, 4);
            const int msum = NSFX(dot16_s16)(vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(mn))),
                                             vreinterpretq_s16_u16(vmovl_high_u8(mn)), ax[k].bs + 16 * i);
            const float dx = ax[k].d[i];
            acc += f16_hw(b + 80) * dx * (float)isum - f16_hw(b + 82) * dx * (float)msum;
        }
        y[k * ys] = acc;
    }
}

NFN void NSFX(dot_q3_k)(size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    const uint8x16_t m3 = vdupq_n_u8(3), one = vdupq_n_u8(1);
    const int32x4_t zero = vdupq_n_s32(0);
    for (int k = 0; k < nx; k++) {
        float acc = 0;
        for (size_t i = 0; i < nb; i++) {
            const uint8_t *b = w + 110 * i;
            const int8_t *x = ax[k].q + QK_K * i;
            const uint8x16x2_t hm = vld1q_u8_x2(b);
            const uint8x16x4_t q = vld1q_u8_x4(b + 32);
            uint8x16_t h0 = hm.val[0], h1 = hm.val[1];
            int32x4_t p[16];
            for (int h = 0; h < 2; h++) {
                uint8x16_t a0 = q.val[2 * h], a1 = q.val[2 * h + 1];
                for (int s = 0; s < 4; s++) {
                    const int G = 8 * h + 2 * s;
                    const int8x16x2_t xv = vld1q_s8_x2(x + 16 * G);
                    const uint8x16_t u0 = vorrq_u8(vandq_u8(a0, m3), vshlq_n_u8(vandq_u8(h0, one), 2));
                    const uint8x16_t u1 = vorrq_u8(vandq_u8(a1, m3), vshlq_n_u8(vandq_u8(h1, one), 2));
                    p[G] = NDOT(zero, vreinterpretq_s8_u8(u0), xv.val[0]);
                    p[G + 1] = NDOT(zero, vreinterpretq_s8_u8(u1), xv.val[1]);
                    a0 = vshrq_n_u8(a0, 2);
                    a1 = vshrq_n_u8(a1, 2);
                    h0 = vshrq_n_u8(h0, 1);
                    h1 = vshrq_n_u8(h1, 1);
                }
            }
            int8_t scb[16];
            unpack_k3_scales(b + 96, scb);
            const int8x16_t sc = vld1q_s8(scb);
            const int isum = NSFX(scaled16)(p, sc);
            const int osum = NSFX(dot16_s16)(vmovl_s8(vget_low_s8(sc)), vmovl_high_s8(sc), ax[k].bs + 16 * i);
            acc += f16_hw(b + 108) * ax[k].d[i] * (float)(isum - 4 * osum);
        }
        y[k * ys] = acc;
    }
}

/* unpack_k4_scales in vector registers: lanes [a, b] give the low scales and mins, [c, c >> 4] their high
 * bits, both halves at once. */
NINL void NSFX(k4_scales)(const uint8_t *p, uint8x8_t *sc, uint8x8_t *mn) {
    static const int32_t shifts[2] = {0, -4};
    const uint32x2_t ab = vreinterpret_u32_u8(vld1_u8(p));
    const uint32x2_t cc = vshl_u32(vld1_dup_u32((const uint32_t *)(p + 8)), vld1_s32(shifts));
    const uint32x2_t lo = vand_u32(ab, vdup_n_u32(0x3f3f3f3fu));
    const uint32x2_t hi = vorr_u32(vand_u32(cc, vdup_n_u32(0x0f0f0f0fu)),
                                   vand_u32(vshr_n_u32(ab, 2), vdup_n_u32(0x30303030u)));
    *sc = vreinterpret_u8_u32(vzip1_u32(lo, hi));
    *mn = vreinterpret_u8_u32(vzip2_u32(lo, hi));
}

/* Q4_K / Q5_K: eight sub-blocks of 32, each summed in its own int32 lanes, folded to [S0..S3],
 * [S4..S7] by pairwise adds and scaled in one multiply-accumulate; one horizontal add per block. */
NINL void NSFX(dot_k4)(int five, size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    const size_t bsz = five ? 176 : 144;
    const uint8x16_t m4 = vdupq_n_u8(0x0F), one = vdupq_n_u8(1), two = vdupq_n_u8(2);
    const int32x4_t zero = vdupq_n_s32(0);
    for (int k = 0; k < nx; k++) {
        float acc = 0;
        for (size_t i = 0; i < nb; i++) {
            const uint8_t *b = w + bsz * i;
            const uint8_t *qs = b + (five ? 48 : 16);
            const int8_t *x = ax[k].q + QK_K * i;
            const uint8x16x4_t qa = vld1q_u8_x4(qs), qb = vld1q_u8_x4(qs + 64);
            uint8x16x2_t qh = {{vdupq_n_u8(0), vdupq_n_u8(0)}};
            if (five) qh = vld1q_u8_x2(b + 16);
            int32x4_t p[8];
            for (int j = 0; j < 4; j++) {
                const uint8x16_t c0 = j < 2 ? qa.val[2 * j] : qb.val[2 * j - 4];
                const uint8x16_t c1 = j < 2 ? qa.val[2 * j + 1] : qb.val[2 * j - 3];
                uint8x16_t l0 = vandq_u8(c0, m4), l1 = vandq_u8(c1, m4);
                uint8x16_t h0 = vshrq_n_u8(c0, 4), h1 = vshrq_n_u8(c1, 4);
                if (five) {
                    l0 = vorrq_u8(l0, vshlq_n_u8(vandq_u8(qh.val[0], one), 4));
                    l1 = vorrq_u8(l1, vshlq_n_u8(vandq_u8(qh.val[1], one), 4));
                    h0 = vorrq_u8(h0, vshlq_n_u8(vandq_u8(qh.val[0], two), 3));
                    h1 = vorrq_u8(h1, vshlq_n_u8(vandq_u8(qh.val[1], two), 3));
                    qh.val[0] = vshrq_n_u8(qh.val[0], 2);
                    qh.val[1] = vshrq_n_u8(qh.val[1], 2);
                }
                const int8x16x4_t xv = vld1q_s8_x4(x + 64 * j);
                p[2 * j] = NDOT(NDOT(zero, vreinterpretq_s8_u8(l0), xv.val[0]), vreinterpretq_s8_u8(l1), xv.val[1]);
                p[2 * j + 1] = NDOT(NDOT(zero, vreinterpretq_s8_u8(h0), xv.val[2]), vreinterpretq_s8_u8(h1), xv.val[3]);
            }
            uint8x8_t sc8, mn8;
            NSFX(k4_scales)(b + 4, &sc8, &mn8);
            const int32x4_t s0 = vpaddq_s32(vpaddq_s32(p[0], p[1]), vpaddq_s32(p[2], p[3]));
            const int32x4_t s1 = vpaddq_s32(vpaddq_s32(p[4], p[5]), vpaddq_s32(p[6], p[7]));
            const uint16x8_t sc = vmovl_u8(sc8);
            int32x4_t r = vmulq_s32(s0, vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(sc))));
            r = vmlaq_s32(r, s1, vreinterpretq_s32_u32(vmovl_high_u16(sc)));
            const int isum = vaddvq_s32(r);
            const int16x8x2_t bs = vld1q_s16_x2(ax[k].bs + 16 * i);
            const int16x8_t bp = vpaddq_s16(bs.val[0], bs.val[1]);
            const int16x8_t mn = vreinterpretq_s16_u16(vmovl_u8(mn8));
            const int msum = vaddvq_s32(vmlal_high_s16(vmull_s16(vget_low_s16(mn), vget_low_s16(bp)), mn, bp));
            const float dx = ax[k].d[i];
            acc += f16_hw(b) * dx * (float)isum - f16_hw(b + 2) * dx * (float)msum;
        }
        y[k * ys] = acc;
    }
}

NFN void NSFX(dot_q4_k)(size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    NSFX(dot_k4)(0, nb, w, ax, nx, y, ys);
}
NFN void NSFX(dot_q5_k)(size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    NSFX(dot_k4)(1, nb, w, ax, nx, y, ys);
}

NFN void NSFX(dot_q6_k)(size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    const uint8x16_t m4 = vdupq_n_u8(0x0F), m3 = vdupq_n_u8(3);
    const int32x4_t zero = vdupq_n_s32(0);
    for (int k = 0; k < nx; k++) {
        float acc = 0;
        for (size_t i = 0; i < nb; i++) {
            const uint8_t *b = w + 210 * i;
            const int8_t *x = ax[k].q + QK_K * i;
            int32x4_t p[16];
            for (int h = 0; h < 2; h++) {
                const uint8x16x4_t ql = vld1q_u8_x4(b + 64 * h);
                const uint8x16x2_t qh = vld1q_u8_x2(b + 128 + 32 * h);
                uint8x16_t a0 = qh.val[0], a1 = qh.val[1];
                for (int c = 0; c < 4; c++) {
                    const uint8x16_t c0 = ql.val[2 * (c & 1)], c1 = ql.val[2 * (c & 1) + 1];
                    const uint8x16_t l0 = c < 2 ? vandq_u8(c0, m4) : vshrq_n_u8(c0, 4);
                    const uint8x16_t l1 = c < 2 ? vandq_u8(c1, m4) : vshrq_n_u8(c1, 4);
                    const uint8x16_t u0 = vorrq_u8(l0, vshlq_n_u8(vandq_u8(a0, m3), 4));
                    const uint8x16_t u1 = vorrq_u8(l1, vshlq_n_u8(vandq_u8(a1, m3), 4));
                    a0 = vshrq_n_u8(a0, 2);
                    a1 = vshrq_n_u8(a1, 2);
                    const int G = 8 * h + 2 * c;
                    const int8x16x2_t xv = vld1q_s8_x2(x + 16 * G);
                    p[G] = NDOT(zero, vreinterpretq_s8_u8(u0), xv.val[0]);
                    p[G + 1] = NDOT(zero, vreinterpretq_s8_u8(u1), xv.val[1]);
                }
            }
            const int8x16_t sc = vld1q_s8((const int8_t *)(b + 192));
            const int isum = NSFX(scaled16)(p, sc);
            const int osum = NSFX(dot16_s16)(vmovl_s8(vget_low_s8(sc)), vmovl_high_s8(sc), ax[k].bs + 16 * i);
            acc += f16_hw(b + 208) * ax[k].d[i] * (float)(isum - 32 * osum);
        }
        y[k * ys] = acc;
    }
}

#undef NINL
#undef NFN
