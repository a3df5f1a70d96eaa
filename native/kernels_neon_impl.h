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

/* One Q8_0 row's running state: four int32 accumulators that run on from block to block (never zeroed),
 * their folded lane sums after the last step, and the float sum. */
typedef struct {
    int32x4_t p0, p1, p2, p3, last;
    float32x4_t acc;
} NSFX(q8_row);

/* Four Q8_0 blocks at b against the activations x01, x23 (scales dx): the accumulators fold into [s0..s3] by
 * pairwise adds, and the difference from the previous fold (exact modulo 2^32) is this step's four block
 * sums, which enter the float sum with their scales in one multiply-add. */
NINL void NSFX(q8_0_step)(NSFX(q8_row) *r, const uint8_t *b, int8x16x4_t x01, int8x16x4_t x23, float32x4_t dx) {
    const int8_t *q = (const int8_t *)b + 2;
    r->p0 = NDOT(NDOT(r->p0, vld1q_s8(q), x01.val[0]), vld1q_s8(q + 16), x01.val[1]);
    r->p1 = NDOT(NDOT(r->p1, vld1q_s8(q + 34), x01.val[2]), vld1q_s8(q + 50), x01.val[3]);
    r->p2 = NDOT(NDOT(r->p2, vld1q_s8(q + 68), x23.val[0]), vld1q_s8(q + 84), x23.val[1]);
    r->p3 = NDOT(NDOT(r->p3, vld1q_s8(q + 102), x23.val[2]), vld1q_s8(q + 118), x23.val[3]);
    const int32x4_t s = vpaddq_s32(vpaddq_s32(r->p0, r->p1), vpaddq_s32(r->p2, r->p3));
    const int32x4_t sums = vsubq_s32(s, r->last);
    r->last = s;
    /* the four fp16 scales, each the first lane of an 8-byte load, gathered by zips */
    const uint16x4_t h01 = vzip1_u16(vld1_u16((const uint16_t *)b), vld1_u16((const uint16_t *)(b + 34)));
    const uint16x4_t h23 = vzip1_u16(vld1_u16((const uint16_t *)(b + 68)), vld1_u16((const uint16_t *)(b + 102)));
    const uint16x4_t h = vreinterpret_u16_u32(vzip1_u32(vreinterpret_u32_u16(h01), vreinterpret_u32_u16(h23)));
    r->acc = vfmaq_f32(r->acc, vmulq_f32(vcvt_f32_f16(vreinterpret_f16_u16(h)), dx), vcvtq_f32_s32(sums));
}

/* One block's term, for the blocks after the last group of four. */
NINL float NSFX(q8_0_one)(const uint8_t *b, const int8_t *x, float dx) {
    const int8x16x2_t xv = vld1q_s8_x2(x);
    const int32x4_t p = NDOT(NDOT(vdupq_n_s32(0), vld1q_s8((const int8_t *)b + 2), xv.val[0]),
                             vld1q_s8((const int8_t *)b + 18), xv.val[1]);
    return f16_hw(b) * dx * (float)vaddvq_s32(p);
}

/* Four Q8_0 blocks of rows b0 and b1 (two = 1) or of b0 alone, with their activations x and scales dx. */
NINL void NSFX(q8_0_group)(int two, NSFX(q8_row) *r0, NSFX(q8_row) *r1, const uint8_t *b0, const uint8_t *b1,
                           const int8_t *x, const float *dx) {
    const int8x16x4_t x01 = vld1q_s8_x4(x), x23 = vld1q_s8_x4(x + 64);
    const float32x4_t d = vld1q_f32(dx);
    NSFX(q8_0_step)(r0, b0, x01, x23, d);
    if (two) NSFX(q8_0_step)(r1, b1, x01, x23, d);
}

/* Q8_0 rows w and w + rb (two = 1) or w alone against one activation row. Each row is summed in a float vector
 * and reduced once at its end (as the x86 kernels do; tests/native/test_kernels.c bounds the difference from
 * the scalar order); two rows share the activation loads. Eight blocks per loop step, so that the folded sums
 * of one half are the previous ones of the other (no register copies). */
NINL void NSFX(q8_0_rows)(int two, size_t nb, const uint8_t *w, size_t rb, const act_row *a, float *y) {
    const int32x4_t zero = vdupq_n_s32(0);
    NSFX(q8_row) r0 = {zero, zero, zero, zero, zero, vdupq_n_f32(0.0f)}, r1 = r0;
    const uint8_t *b0 = w, *b1 = w + rb;
    const int8_t *x = a->q;
    const float *dx = a->d;
    for (size_t g = nb / 8; g > 0; g--, b0 += 8 * 34, b1 += 8 * 34, x += 256, dx += 8) {
        NSFX(q8_0_group)(two, &r0, &r1, b0, b1, x, dx);
        NSFX(q8_0_group)(two, &r0, &r1, b0 + 4 * 34, b1 + 4 * 34, x + 128, dx + 4);
    }
    if (nb & 4) NSFX(q8_0_group)(two, &r0, &r1, b0, b1, x, dx);
    float t0 = vaddvq_f32(r0.acc), t1 = vaddvq_f32(r1.acc);
    for (size_t i = nb / 4 * 4; i < nb; i++) {
        t0 += NSFX(q8_0_one)(w + 34 * i, a->q + 32 * i, a->d[i]);
        if (two) t1 += NSFX(q8_0_one)(w + rb + 34 * i, a->q + 32 * i, a->d[i]);
    }
    y[0] = t0;
    if (two) y[1] = t1;
}

NFN void NSFX(dot_q8_0)(size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    for (int k = 0; k < nx; k++) NSFX(q8_0_rows)(0, nb, w, 0, ax + k, y + k * ys);
}

NFN void NSFX(gemv_q8_0)(size_t nb, const uint8_t *w, size_t rb, size_t nr, const act_row *a, float *y) {
    size_t r = 0;
    for (; NPAIRS && r + 2 <= nr; r += 2) NSFX(q8_0_rows)(1, nb, w + r * rb, rb, a, y + r);
    for (; r < nr; r++) NSFX(q8_0_rows)(0, nb, w + r * rb, rb, a, y + r);
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
