/* The quantized NEON dot kernels, included twice by kernels_neon.h (no include guard):
 *   NSFX(name)        the instantiation's name: name##_neon or name##_neon_dotprod
 *   NTARGET           its function attribute (empty, or the dotprod target)
 *   NDOT(acc, a, b)   acc (int32x4) + products of the int8x16 vectors a and b, in some lanes
 *   NPAIRS            1: the batch-1 kernels (gemv_*) take weight rows two at a time, sharing each
 *                     activation load; 0: one at a time (the plain products need the registers)
 * Q4_0..Q8_0, Q4_K and Q5_K sum a row's blocks in float vectors and reduce them once at its end, as the
 * x86 kernels do (tests/native/test_kernels.c bounds them against the scalar kernels as
 * tests/test_kernels.py bounds every level). Q2_K, Q3_K and Q6_K do what their scalar twins do, in the
 * same order: integer sums are exact whatever the grouping, and every float operation is the scalar one,
 * so results are bit-identical. Unpacked weights (small unsigned integers) go through the signed dot as
 * int8: they are < 64.
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

/* The 32-value block types, kind: 0 Q4_0, 1 Q4_1, 2 Q5_0, 3 Q5_1 (dot_legacy_scalar's arithmetic), 4 Q8_0.
 * Bytes per block: 18, 20, 22, 24, 34; the codes after the fp16 scale d (and the min m of Q4_1 and Q5_1, and
 * the fifth bits qh of Q5_0 and Q5_1). */
NINL int NSFX(b32_size)(int kind) { return kind == 4 ? 34 : 18 + 2 * kind; }

/* One block's 32 codes at b against 32 activations x0, x1, added to the lanes of p. */
NINL int32x4_t NSFX(b32_dot)(int kind, int32x4_t p, const uint8_t *b, int8x16_t x0, int8x16_t x1) {
    static const uint8_t idx_lo[16] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1};
    static const uint8_t idx_hi[16] = {2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3};
    static const uint8_t bits[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    if (kind == 4) return NDOT(NDOT(p, vld1q_s8((const int8_t *)b + 2), x0), vld1q_s8((const int8_t *)b + 18), x1);
    const uint8x16_t qs = vld1q_u8(b + 2 + 2 * kind);
    uint8x16_t lo = vandq_u8(qs, vdupq_n_u8(0x0F)), hi = vshrq_n_u8(qs, 4);
    if (kind >= 2) { /* bit l of qh is the fifth bit of code l */
        const uint8x16_t h = vreinterpretq_u8_u32(vdupq_n_u32(rd32(b + (kind == 2 ? 2 : 4))));
        const uint8x16_t bit = vld1q_u8(bits), v16 = vdupq_n_u8(0x10);
        lo = vorrq_u8(lo, vandq_u8(vtstq_u8(vqtbl1q_u8(h, vld1q_u8(idx_lo)), bit), v16));
        hi = vorrq_u8(hi, vandq_u8(vtstq_u8(vqtbl1q_u8(h, vld1q_u8(idx_hi)), bit), v16));
    }
    return NDOT(NDOT(p, vreinterpretq_s8_u8(lo), x0), vreinterpretq_s8_u8(hi), x1);
}

/* One row's running state: four int32 accumulators that run on from block to block (never zeroed), their
 * folded lane sums after the last step, and the float sums: acc of the scaled dot products, extra of the
 * offset (Q4_0, Q5_0: d * s) or min (Q4_1, Q5_1: m * s) terms, s the activation block sums. */
typedef struct {
    int32x4_t p[4], last;
    float32x4_t acc, extra;
} NSFX(row32);

/* Four blocks at b against the activations x01, x23 (scales dx, sums xs): the accumulators fold into
 * [s0..s3] by pairwise adds, and the difference from the previous fold (exact modulo 2^32) is this step's
 * four block sums, which enter the float sums with their scales in one multiply-add each. */
NINL void NSFX(b32_step)(int kind, NSFX(row32) *r, const uint8_t *b, int8x16x4_t x01, int8x16x4_t x23,
                         float32x4_t dx, float32x4_t xs) {
    const int bsz = NSFX(b32_size)(kind);
    r->p[0] = NSFX(b32_dot)(kind, r->p[0], b, x01.val[0], x01.val[1]);
    r->p[1] = NSFX(b32_dot)(kind, r->p[1], b + bsz, x01.val[2], x01.val[3]);
    r->p[2] = NSFX(b32_dot)(kind, r->p[2], b + 2 * bsz, x23.val[0], x23.val[1]);
    r->p[3] = NSFX(b32_dot)(kind, r->p[3], b + 3 * bsz, x23.val[2], x23.val[3]);
    const int32x4_t s = vpaddq_s32(vpaddq_s32(r->p[0], r->p[1]), vpaddq_s32(r->p[2], r->p[3]));
    const int32x4_t sums = vsubq_s32(s, r->last);
    r->last = s;
    /* d and the fp16 field after it of the four blocks, each from an 8-byte load, gathered by zips */
    const uint16x4_t h01 = vzip1_u16(vld1_u16((const uint16_t *)b), vld1_u16((const uint16_t *)(b + bsz)));
    const uint16x4_t h23 =
        vzip1_u16(vld1_u16((const uint16_t *)(b + 2 * bsz)), vld1_u16((const uint16_t *)(b + 3 * bsz)));
    const uint32x2_t h0 = vreinterpret_u32_u16(h01), h1 = vreinterpret_u32_u16(h23); /* [d0 d1 m0 m1] [d2 d3 m2 m3] */
    const float32x4_t d = vcvt_f32_f16(vreinterpret_f16_u32(vzip1_u32(h0, h1)));
    r->acc = vfmaq_f32(r->acc, vmulq_f32(d, dx), vcvtq_f32_s32(sums));
    if (kind == 0 || kind == 2) r->extra = vfmaq_f32(r->extra, d, xs);
    if (kind == 1 || kind == 3) {
        const float32x4_t m = vcvt_f32_f16(vreinterpret_f16_u32(vzip2_u32(h0, h1)));
        r->extra = vfmaq_f32(r->extra, m, xs);
    }
}

/* Four blocks of rows b[0] and b[1] (two = 1) or of b[0] alone, with their activations x, scales dx, sums xs. */
NINL void NSFX(b32_group)(int kind, int two, NSFX(row32) r[2], const uint8_t *const b[2], const int8_t *x,
                          const float *dx, const float *xs) {
    const int8x16x4_t x01 = vld1q_s8_x4(x), x23 = vld1q_s8_x4(x + 64);
    const float32x4_t d = vld1q_f32(dx), s = kind < 4 ? vld1q_f32(xs) : d;
    for (int k = 0; k <= two; k++) NSFX(b32_step)(kind, &r[k], b[k], x01, x23, d, s);
}

/* A row's result from its state r: the float sums reduced, the blocks after the last group of four (of the
 * nb at w) added one at a time. */
NINL float NSFX(b32_end)(int kind, const NSFX(row32) *r, size_t nb, const uint8_t *w, const act_row *a) {
    static const float offs[5] = {8, 0, 16, 0, 0};
    const size_t bsz = (size_t)NSFX(b32_size)(kind);
    float acc = vaddvq_f32(r->acc), extra = vaddvq_f32(r->extra);
    for (size_t i = nb / 4 * 4; i < nb; i++) {
        const uint8_t *b = w + bsz * i;
        const int8x16x2_t xv = vld1q_s8_x2(a->q + 32 * i);
        const int32x4_t p = NSFX(b32_dot)(kind, vdupq_n_s32(0), b, xv.val[0], xv.val[1]);
        const float d = f16_hw(b);
        acc += d * a->d[i] * (float)vaddvq_s32(p);
        if (kind < 4) extra += (kind == 1 || kind == 3 ? f16_hw(b + 2) : d) * a->s[i];
    }
    return kind == 4 ? acc : offs[kind] ? acc - offs[kind] * extra : acc + extra;
}

/* Rows w and w + rb (two = 1) or w alone against one activation row a, each summed in float vectors and
 * reduced once at its end; two rows share the activation loads. Eight blocks per loop step, so that the folded
 * sums of one half are the previous ones of the other (no register copies). */
NINL void NSFX(b32_rows)(int kind, int two, size_t nb, const uint8_t *w, size_t rb, const act_row *a, float *y) {
    const size_t bsz = (size_t)NSFX(b32_size)(kind);
    const int32x4_t zero = vdupq_n_s32(0);
    const float32x4_t fz = vdupq_n_f32(0.0f);
    NSFX(row32) r[2] = {{{zero, zero, zero, zero}, zero, fz, fz}, {{zero, zero, zero, zero}, zero, fz, fz}};
    const uint8_t *b[2] = {w, w + rb};
    const int8_t *x = a->q;
    const float *dx = a->d, *xs = a->s;
    for (size_t g = nb / 8; g > 0; g--, b[0] += 8 * bsz, b[1] += 8 * bsz, x += 256, dx += 8, xs += 8) {
        NSFX(b32_group)(kind, two, r, b, x, dx, xs);
        const uint8_t *const b4[2] = {b[0] + 4 * bsz, b[1] + 4 * bsz};
        NSFX(b32_group)(kind, two, r, b4, x + 128, dx + 4, xs + 4);
    }
    if (nb & 4) NSFX(b32_group)(kind, two, r, b, x, dx, xs);
    y[0] = NSFX(b32_end)(kind, &r[0], nb, w, a);
    if (two) y[1] = NSFX(b32_end)(kind, &r[1], nb, w + rb, a);
}

NINL void NSFX(dot_b32)(int kind, size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    for (int k = 0; k < nx; k++) NSFX(b32_rows)(kind, 0, nb, w, 0, ax + k, y + k * ys);
}

NINL void NSFX(gemv_b32)(int kind, size_t nb, const uint8_t *w, size_t rb, size_t nr, const act_row *a, float *y) {
    const act_row ac = *a; /* a copy the stores to y cannot alias */
    size_t r = 0;
    for (; NPAIRS && r + 2 <= nr; r += 2) NSFX(b32_rows)(kind, 1, nb, w + r * rb, rb, &ac, y + r);
    for (; r < nr; r++) NSFX(b32_rows)(kind, 0, nb, w + r * rb, rb, &ac, y + r);
}

NFN void NSFX(dot_q4_0)(size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    NSFX(dot_b32)(0, nb, w, ax, nx, y, ys);
}
NFN void NSFX(gemv_q4_0)(size_t nb, const uint8_t *w, size_t rb, size_t nr, const act_row *a, float *y) {
    NSFX(gemv_b32)(0, nb, w, rb, nr, a, y);
}
NFN void NSFX(dot_q4_1)(size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    NSFX(dot_b32)(1, nb, w, ax, nx, y, ys);
}
NFN void NSFX(gemv_q4_1)(size_t nb, const uint8_t *w, size_t rb, size_t nr, const act_row *a, float *y) {
    NSFX(gemv_b32)(1, nb, w, rb, nr, a, y);
}
NFN void NSFX(dot_q5_0)(size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    NSFX(dot_b32)(2, nb, w, ax, nx, y, ys);
}
NFN void NSFX(gemv_q5_0)(size_t nb, const uint8_t *w, size_t rb, size_t nr, const act_row *a, float *y) {
    NSFX(gemv_b32)(2, nb, w, rb, nr, a, y);
}
NFN void NSFX(dot_q5_1)(size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    NSFX(dot_b32)(3, nb, w, ax, nx, y, ys);
}
NFN void NSFX(gemv_q5_1)(size_t nb, const uint8_t *w, size_t rb, size_t nr, const act_row *a, float *y) {
    NSFX(gemv_b32)(3, nb, w, rb, nr, a, y);
}
NFN void NSFX(dot_q8_0)(size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    NSFX(dot_b32)(4, nb, w, ax, nx, y, ys);
}
NFN void NSFX(gemv_q8_0)(size_t nb, const uint8_t *w, size_t rb, size_t nr, const act_row *a, float *y) {
    NSFX(gemv_b32)(4, nb, w, rb, nr, a, y);
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

/* unpack_k4_scales of two blocks at once (p[0], p[1]; they may be the same): the 12 scale bytes of each as
 * 32-bit lanes A0, A1, C give [sc0..3, mn0..3] = A & 63 and [sc4..7, mn4..7] = [C & 15, C >> 4 & 15] |
 * (A >> 6) << 4, both blocks in the two halves of each vector; s[k] = [sc0..sc7, mn0..mn7] of block k. */
NINL void NSFX(k4_scales2)(const uint8_t *const p[2], uint8x16_t s[2]) {
    /* the 12 bytes and 4 of the codes after them, unused */
    const uint64x2_t v0 = vreinterpretq_u64_u8(vld1q_u8(p[0])), v1 = vreinterpretq_u64_u8(vld1q_u8(p[1]));
    const uint32x4_t a = vreinterpretq_u32_u64(vzip1q_u64(v0, v1)); /* [A0, A1] [A0, A1] */
    const uint32x4_t c = vreinterpretq_u32_u64(vzip2q_u64(v0, v1)); /* [C, -] [C, -] */
    const uint32x4_t cc = vtrn1q_u32(c, vshrq_n_u32(c, 4));         /* [C, C >> 4] [C, C >> 4] */
    const uint32x4_t lo = vandq_u32(a, vdupq_n_u32(0x3f3f3f3fu));
    const uint32x4_t hi =
        vorrq_u32(vandq_u32(cc, vdupq_n_u32(0x0f0f0f0fu)), vandq_u32(vshrq_n_u32(a, 2), vdupq_n_u32(0x30303030u)));
    s[0] = vreinterpretq_u8_u32(vzip1q_u32(lo, hi));
    s[1] = vreinterpretq_u8_u32(vzip2q_u32(lo, hi));
}

/* Sixteen Q4_K / Q5_K codes of chunk j (0..3) at c, their low nibbles (sub-block 2j) in *l and high nibbles
 * (sub-block 2j + 1) in *h, with the fifth bits of Q5_K from qh (five) shifted out as they are used. */
NINL void NSFX(k4_unpack)(int five, uint8x16_t c, uint8x16_t *qh, uint8x16_t *l, uint8x16_t *h) {
    *l = vandq_u8(c, vdupq_n_u8(0x0F));
    *h = vshrq_n_u8(c, 4);
    if (five) {
        *l = vorrq_u8(*l, vshlq_n_u8(vandq_u8(*qh, vdupq_n_u8(1)), 4));
        *h = vorrq_u8(*h, vshlq_n_u8(vandq_u8(*qh, vdupq_n_u8(2)), 3));
        *qh = vshrq_n_u8(*qh, 2);
    }
}

/* Lane k of v in every lane (k a constant: the multiply-adds below take it as an element operand). */
NINL int32x4_t NSFX(splat)(int32x4_t v, int k) {
    switch (k) {
    case 0: return vdupq_laneq_s32(v, 0);
    case 1: return vdupq_laneq_s32(v, 1);
    case 2: return vdupq_laneq_s32(v, 2);
    default: return vdupq_laneq_s32(v, 3);
    }
}

/* The integer state of one Q4_K / Q5_K row inside a super-block: two running sums over its sub-blocks (lo: the
 * low nibbles, sub-blocks 0, 2, 4, 6; hi: the high ones, 1, 3, 5, 7), the scaled sum, the sum coefficients e
 * (below), the fifth bits of Q5_K. */
typedef struct {
    int32x4_t lo, hi, isum, e[2];
    uint8x16_t qh[2];
} NSFX(k4_row);

/* Chunk j (sub-blocks 2j, 2j + 1) of rows r[0] and r[1] (two = 1) or r[0] alone, codes at b[.] + off, against
 * the activations x. With the sub-block sums T_s, the running sums L_j = T_0 + T_2 + .. + T_2j and H_j = T_1 +
 * .. + T_2j+1, and e_s = sc_s - sc_s+2 (sc_8 = sc_9 = 0): sum_s sc_s T_s = sum_j e_2j L_j + e_2j+1 H_j
 * (summation by parts), one multiply-add per chunk and running sum, and no accumulator zeroed per sub-block. */
NINL void NSFX(k4_chunk)(int five, int two, int j, NSFX(k4_row) r[2], const uint8_t *const b[2], size_t off,
                         const int8_t *x) {
    const int8x16x4_t xv = vld1q_s8_x4(x + 64 * j);
    for (int k = 0; k <= two; k++) {
        const uint8_t *q = b[k] + off + 32 * j;
        uint8x16_t l0, l1, h0, h1;
        NSFX(k4_unpack)(five, vld1q_u8(q), &r[k].qh[0], &l0, &h0);
        NSFX(k4_unpack)(five, vld1q_u8(q + 16), &r[k].qh[1], &l1, &h1);
        r[k].lo = NDOT(NDOT(r[k].lo, vreinterpretq_s8_u8(l0), xv.val[0]), vreinterpretq_s8_u8(l1), xv.val[1]);
        r[k].hi = NDOT(NDOT(r[k].hi, vreinterpretq_s8_u8(h0), xv.val[2]), vreinterpretq_s8_u8(h1), xv.val[3]);
        r[k].isum = vmlaq_s32(r[k].isum, r[k].lo, NSFX(splat)(r[k].e[j >> 1], (2 * j) & 3));
        r[k].isum = vmlaq_s32(r[k].isum, r[k].hi, NSFX(splat)(r[k].e[j >> 1], (2 * j + 1) & 3));
    }
}

/* One Q4_K / Q5_K super-block of rows b[0] and b[1] (two = 1) or b[0] alone against the activations x (sums
 * bsp per 32, scale dx): the scaled sums and the min corrections enter the row's float accumulator acc[k] with
 * d * dx and -dmin * dx. */
NINL void NSFX(k4_block)(int five, int two, const uint8_t *const b[2], const int8_t *x, int16x8_t bsp, float dx,
                         float32x4_t acc[2]) {
    const int32x4_t zero = vdupq_n_s32(0);
    NSFX(k4_row) r[2];
    int16x8_t mn[2];
    uint8x16_t sm[2];
    const uint8_t *const ps[2] = {b[0] + 4, b[two] + 4};
    NSFX(k4_scales2)(ps, sm);
    for (int k = 0; k <= two; k++) {
        /* e_s = sc_s - sc_{s+2}: the scales less themselves shifted down two lanes (|e| < 64) */
        const uint8x8_t sc8 = vget_low_u8(sm[k]);
        const uint8x8_t next = vreinterpret_u8_u64(vshr_n_u64(vreinterpret_u64_u8(sc8), 16));
        const int16x8_t e = vmovl_s8(vreinterpret_s8_u8(vsub_u8(sc8, next)));
        r[k].e[0] = vmovl_s16(vget_low_s16(e));
        r[k].e[1] = vmovl_high_s16(e);
        mn[k] = vreinterpretq_s16_u16(vmovl_high_u8(sm[k]));
        r[k].lo = r[k].hi = r[k].isum = zero;
        r[k].qh[0] = five ? vld1q_u8(b[k] + 16) : vdupq_n_u8(0);
        r[k].qh[1] = five ? vld1q_u8(b[k] + 32) : vdupq_n_u8(0);
    }
    const size_t off = five ? 48 : 16;
    NSFX(k4_chunk)(five, two, 0, r, b, off, x);
    NSFX(k4_chunk)(five, two, 1, r, b, off, x);
    NSFX(k4_chunk)(five, two, 2, r, b, off, x);
    NSFX(k4_chunk)(five, two, 3, r, b, off, x);
    for (int k = 0; k <= two; k++) {
        const int32x4_t msum = vmlal_high_s16(vmull_s16(vget_low_s16(mn[k]), vget_low_s16(bsp)), mn[k], bsp);
        /* [d, dmin, ...] as floats, times dx */
        const float16x4_t h = vreinterpret_f16_u16(vld1_u16((const uint16_t *)b[k]));
        const float32x4_t dd = vmulq_n_f32(vcvt_f32_f16(h), dx);
        acc[k] = vfmaq_laneq_f32(acc[k], vcvtq_f32_s32(r[k].isum), dd, 0);
        acc[k] = vfmsq_laneq_f32(acc[k], vcvtq_f32_s32(msum), dd, 1);
    }
}

/* Q4_K / Q5_K rows w and w + rb (two = 1) or w alone against one activation row, each summed in a float vector
 * and reduced once at its end; two rows share the activation loads and the scale unpacking. */
NINL void NSFX(k4_rows)(int five, int two, size_t nb, const uint8_t *w, size_t rb, const act_row *a, float *y) {
    const size_t bsz = five ? 176 : 144;
    float32x4_t acc[2] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
    const uint8_t *b[2] = {w, w + rb};
    const int8_t *x = a->q;
    const int16_t *bs = a->bs;
    const float *dx = a->d;
    for (size_t i = 0; i < nb; i++, b[0] += bsz, b[1] += bsz, x += QK_K, bs += 16, dx++) {
        const int16x8x2_t bs2 = vld1q_s16_x2(bs);
        NSFX(k4_block)(five, two, b, x, vpaddq_s16(bs2.val[0], bs2.val[1]), *dx, acc);
    }
    for (int r = 0; r <= two; r++) y[r] = vaddvq_f32(acc[r]);
}

NFN void NSFX(dot_q4_k)(size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    for (int k = 0; k < nx; k++) NSFX(k4_rows)(0, 0, nb, w, 0, ax + k, y + k * ys);
}
NFN void NSFX(dot_q5_k)(size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    for (int k = 0; k < nx; k++) NSFX(k4_rows)(1, 0, nb, w, 0, ax + k, y + k * ys);
}

NINL void NSFX(gemv_k4)(int five, size_t nb, const uint8_t *w, size_t rb, size_t nr, const act_row *a, float *y) {
    size_t r = 0;
    for (; NPAIRS && r + 2 <= nr; r += 2) NSFX(k4_rows)(five, 1, nb, w + r * rb, rb, a, y + r);
    for (; r < nr; r++) NSFX(k4_rows)(five, 0, nb, w + r * rb, rb, a, y + r);
}
NFN void NSFX(gemv_q4_k)(size_t nb, const uint8_t *w, size_t rb, size_t nr, const act_row *a, float *y) {
    NSFX(gemv_k4)(0, nb, w, rb, nr, a, y);
}
NFN void NSFX(gemv_q5_k)(size_t nb, const uint8_t *w, size_t rb, size_t nr, const act_row *a, float *y) {
    NSFX(gemv_k4)(1, nb, w, rb, nr, a, y);
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
