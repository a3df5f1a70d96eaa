/* AVX-512 (F + BW + VNNI) kernels. Same arithmetic as the AVX2 ones, 64 weights per instruction;
 * VNNI fuses the integer multiply-adds (vpdpbusd: u8 x s8 into int32 without saturation, vpdpwssd:
 * scaled int16 pairs into int32). CPUs with AVX-512 but no VNNI (Skylake-SP) use the AVX2 path.
 *
 * K-quant weight bytes are broadcast to both 256-bit halves and shifted per half (vpsrlvw), so one
 * zmm holds two consecutive 32-value chunks in activation order: no shuffling of activations.
 * Legacy 32-blocks are taken two per zmm, sixteen per group of gathered scales.
 */
#ifndef GGUF_KERNELS_AVX512_H
#define GGUF_KERNELS_AVX512_H

#include "kernels_avx2.h"

#if defined(SIMD_ON_X86)

#define TGT5 "avx512f,avx512bw,avx512vnni,avx2,fma,f16c"
#define T5 __attribute__((target(TGT5)))
#define K5 static inline __attribute__((always_inline, target(TGT5)))

/* int16 lanes 0..15 get a, lanes 16..31 get b (a per-half shift or index). */
K5 __m512i halves16_512(int a, int b) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi16((short)a)), _mm256_set1_epi16((short)b), 1);
}

/* int16 lane L gets base + L / 8: the scale index of 16-value sub-blocks, two chunks per zmm. */
K5 __m512i sub16_index_512(int base) {
    return _mm512_add_epi16(_mm512_set1_epi16((short)base),
                            _mm512_srli_epi16(_mm512_setr_epi32(0x00010000, 0x00030002, 0x00050004, 0x00070006,
                                                                0x00090008, 0x000b000a, 0x000d000c, 0x000f000e,
                                                                0x00110010, 0x00130012, 0x00150014, 0x00170016,
                                                                0x00190018, 0x001b001a, 0x001d001c, 0x001f001e),
                                              3));
}

K5 float hsum16_512(__m512 v) {
    __m256 a = _mm256_add_ps(_mm512_castps512_ps256(v),
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    return hsum8_avx2(a);
}

DEQ_WRAP(f32, avx512, TGT5)
DEQ_WRAP(bf16, avx512, TGT5)
DEQ_WRAP(q4_0, avx512, TGT5)
DEQ_WRAP(q4_1, avx512, TGT5)
DEQ_WRAP(q5_0, avx512, TGT5)
DEQ_WRAP(q5_1, avx512, TGT5)
DEQ_WRAP(q8_0, avx512, TGT5)
DEQ_WRAP(q2_k, avx512, TGT5)
DEQ_WRAP(q3_k, avx512, TGT5)
DEQ_WRAP(q4_k, avx512, TGT5)
DEQ_WRAP(q5_k, avx512, TGT5)
DEQ_WRAP(q6_k, avx512, TGT5)
T5 static void deq_f16_avx512(const uint8_t *src, float *dst, size_t n) { deq_f16_avx2(src, dst, n); }

/* ------------------------------------------ float ------------------------------------------ */

K5 __m512 load16w_512(int kind, const uint8_t *w, size_t i) {
    if (kind == 0) return _mm512_loadu_ps((const float *)(w + 4 * i));
    const __m256i h = _mm256_loadu_si256((const __m256i *)(w + 2 * i));
    if (kind == 1) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

K5 void dot_float_512_impl(int kind, size_t n, const uint8_t *w, const act_row *ax, float *y, size_t ys,
                           const int nx) {
    __m512 a0[NX_MAX], a1[NX_MAX];
    for (int k = 0; k < nx; k++) a0[k] = a1[k] = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        const __m512 w0 = load16w_512(kind, w, i), w1 = load16w_512(kind, w, i + 16);
        for (int k = 0; k < nx; k++) {
            a0[k] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(ax[k].xf + i), a0[k]);
            a1[k] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(ax[k].xf + i + 16), a1[k]);
        }
    }
    for (int k = 0; k < nx; k++) {
        float t = hsum16_512(_mm512_add_ps(a0[k], a1[k]));
        for (size_t j = i; j < n; j++) t += w1_float(kind, w, j) * ax[k].xf[j];
        y[k * ys] = t;
    }
}

T5 static void dot_f32_avx512(size_t n, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    DOT_NX_SWITCH(dot_float_512_impl, 0, n, w, ax, y, ys)
}
T5 static void dot_f16_avx512(size_t n, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    DOT_NX_SWITCH(dot_float_512_impl, 1, n, w, ax, y, ys)
}
T5 static void dot_bf16_avx512(size_t n, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    DOT_NX_SWITCH(dot_float_512_impl, 2, n, w, ax, y, ys)
}

/* ------------------------------------ legacy 32-blocks ------------------------------------ */

/* Groups of 16 blocks, two per zmm; scales gathered and multiplied as vectors (see the AVX2
 * version). Blocks after the last whole group go through the AVX2 kernel. */
K5 void dot_legacy16_512_impl(int kind, size_t ng, const uint8_t *w, const act_row *ax, float *y, size_t ys,
                              const int nx) {
    const int bsz = LEG_BSZ(kind), qoff = LEG_QOFF(kind);
    const __m512i gidx = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(bsz));
    const __m512i m4 = _mm512_set1_epi8(0x0F), zero = _mm512_setzero_si512();
    const __m512i hb = _mm512_set1_epi8(0x10), flip = _mm512_set1_epi8((char)0x80);
    const __m512i half = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    /* 64-bit lanes [0,1,0,1,2,3,2,3]: each block's 16 code bytes twice (low, then high nibbles) */
    const __m512i dup = _mm512_setr_epi64(0, 1, 0, 1, 2, 3, 2, 3);
    const __m512i nib = _mm512_setr_epi64(0, 0, 0x0004000400040004LL, 0x0004000400040004LL, 0, 0,
                                          0x0004000400040004LL, 0x0004000400040004LL);
    /* several accumulators per row: one FMA chain per pair would wait on FMA latency */
    const int nacc = nx == 1 ? 4 : 2;
    __m512 acc[NX_MAX][4];
    for (int k = 0; k < nx; k++)
        for (int j = 0; j < nacc; j++) acc[k][j] = _mm512_setzero_ps();
    for (size_t g = 0; g < ng; g++) {
        const uint8_t *base = w + (size_t)bsz * 16 * g;
        const __m512i raw = _mm512_i32gather_epi32(gidx, (const void *)base, 1);
        const __m512 dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(raw));
        __m512 ew = dw;
        if (kind == 0) ew = _mm512_mul_ps(dw, _mm512_set1_ps(-8.0f));
        if (kind == 2) ew = _mm512_mul_ps(dw, _mm512_set1_ps(-16.0f));
        if (kind == 4) ew = _mm512_mul_ps(dw, _mm512_set1_ps(-128.0f));
        if (kind == 1 || kind == 3) ew = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(raw, 16)));
        __m512 sv[NX_MAX];
        for (int k = 0; k < nx; k++) {
            sv[k] = _mm512_mul_ps(dw, _mm512_loadu_ps(ax[k].d + 16 * g));
            acc[k][0] = _mm512_fmadd_ps(ew, _mm512_loadu_ps(ax[k].s + 16 * g), acc[k][0]);
        }
        for (int p = 0; p < 8; p++) {
            const uint8_t *b0 = base + (size_t)bsz * 2 * p, *b1 = b0 + bsz;
            __m512i u;
            if (kind == 4) { /* int8 codes + 128 as unsigned; the -128 * sum(x) is in ew */
                const __m512i wv = _mm512_inserti64x4(
                    _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(b0 + 2))),
                    _mm256_loadu_si256((const __m256i *)(b1 + 2)), 1);
                u = _mm512_xor_si512(wv, flip);
            } else {
                const __m256i v = _mm256_set_m128i(_mm_loadu_si128((const __m128i *)(b1 + qoff)),
                                                   _mm_loadu_si128((const __m128i *)(b0 + qoff)));
                u = _mm512_and_si512(
                    _mm512_srlv_epi16(_mm512_permutexvar_epi64(dup, _mm512_castsi256_si512(v)), nib), m4);
                if (kind == 2 || kind == 3) {
                    const int ho = kind == 2 ? 2 : 4;
                    const __mmask64 hm = (__mmask64)rd32(b0 + ho) | ((__mmask64)rd32(b1 + ho) << 32);
                    u = _mm512_or_si512(u, _mm512_maskz_mov_epi8(hm, hb));
                }
            }
            const __m512i sel = _mm512_add_epi32(half, _mm512_set1_epi32(2 * p));
            for (int k = 0; k < nx; k++) {
                const __m512i xv = _mm512_loadu_si512((const void *)(ax[k].q + 512 * g + 64 * p));
                const __m512i s = _mm512_dpbusd_epi32(zero, u, xv);
                acc[k][p % nacc] =
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_permutexvar_ps(sel, sv[k]), acc[k][p % nacc]);
            }
        }
    }
    for (int k = 0; k < nx; k++) {
        __m512 t = acc[k][0];
        for (int j = 1; j < nacc; j++) t = _mm512_add_ps(t, acc[k][j]);
        y[k * ys] = hsum16_512(t);
    }
}

#define LEGACY512(name, kind) \
    T5 static void dot_##name##_avx512(size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) { \
        DOT_NX_SWITCH(dot_legacy16_512_impl, kind, nb / 16, w, ax, y, ys) \
        if (nb % 16) add_blocks(dot_##name##_avx2, nb - nb % 16, nb % 16, LEG_BSZ(kind), w, ax, y, ys, nx); \
    }
LEGACY512(q4_0, 0)
LEGACY512(q4_1, 1)
LEGACY512(q5_0, 2)
LEGACY512(q5_1, 3)
LEGACY512(q8_0, 4)

/* ----------------------------------------- K-quants ----------------------------------------- */

K5 __m512i bcast32_512(const uint8_t *p) { return _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)p)); }

/* Q4_K / Q5_K */
K5 void dot_k4_512_impl(int five, size_t nb, const uint8_t *w, const act_row *ax, float *y, size_t ys, const int nx) {
    const size_t bsz = five ? 176 : 144;
    const __m512i m4 = _mm512_set1_epi8(0x0F), one = _mm512_set1_epi8(1);
    const __m512i nib = halves16_512(0, 4);
    __m512 acc[NX_MAX];
    for (int k = 0; k < nx; k++) acc[k] = _mm512_setzero_ps();
    for (size_t i = 0; i < nb; i++) {
        const uint8_t *b = w + bsz * i;
        const uint8_t *qs = b + (five ? 48 : 16);
        const float d = h2f_avx2(b), dmin = h2f_avx2(b + 2);
        uint64_t sc8, mn8;
        unpack_k4_scales(b + 4, &sc8, &mn8);
        const __m512i scz = _mm512_castsi128_si512(_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)sc8)));
        const __m128i mn = _mm_cvtsi64_si128((long long)mn8);
        const __m256i mdup = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mn, mn));
        const __m512i qh = five ? bcast32_512(b + 16) : _mm512_setzero_si512();
        __m512i isum[NX_MAX];
        for (int k = 0; k < nx; k++) isum[k] = _mm512_setzero_si512();
        for (int j = 0; j < 4; j++) {
            __m512i u = _mm512_and_si512(_mm512_srlv_epi16(bcast32_512(qs + 32 * j), nib), m4);
            if (five)
                u = _mm512_or_si512(
                    u, _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, halves16_512(2 * j, 2 * j + 1)), one), 4));
            const __m512i s = _mm512_permutexvar_epi16(halves16_512(2 * j, 2 * j + 1), scz);
            for (int k = 0; k < nx; k++) {
                const __m512i xv = _mm512_loadu_si512((const void *)(ax[k].q + QK_K * i + 64 * j));
                isum[k] = _mm512_dpwssd_epi32(isum[k], _mm512_maddubs_epi16(u, xv), s);
            }
        }
        for (int k = 0; k < nx; k++) {
            const float dx = ax[k].d[i];
            const __m256i mt = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(ax[k].bs + 16 * i)), mdup);
            acc[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[k]), _mm512_set1_ps(d * dx), acc[k]);
            acc[k] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(_mm512_zextsi256_si512(mt)), _mm512_set1_ps(dmin * dx), acc[k]);
        }
    }
    for (int k = 0; k < nx; k++) y[k * ys] = hsum16_512(acc[k]);
}

T5 static void dot_q4_k_avx512(size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    DOT_NX_SWITCH(dot_k4_512_impl, 0, nb, w, ax, y, ys)
}
T5 static void dot_q5_k_avx512(size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    DOT_NX_SWITCH(dot_k4_512_impl, 1, nb, w, ax, y, ys)
}

K5 void dot_q6_k_512_impl(size_t nb, const uint8_t *w, const act_row *ax, float *y, size_t ys, const int nx) {
    const __m512i m4 = _mm512_set1_epi8(0x0F), m3 = _mm512_set1_epi8(0x03);
    const __m512i sh01 = halves16_512(0, 2), sh23 = halves16_512(4, 6);
    __m512 acc[NX_MAX];
    for (int k = 0; k < nx; k++) acc[k] = _mm512_setzero_ps();
    for (size_t i = 0; i < nb; i++) {
        const uint8_t *b = w + 210 * i;
        const float d = h2f_avx2(b + 208);
        const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(b + 192)));
        const __m512i scz = _mm512_castsi256_si512(sc16);
        __m512i isum[NX_MAX];
        for (int k = 0; k < nx; k++) isum[k] = _mm512_setzero_si512();
        for (int h = 0; h < 2; h++) {
            const __m512i ql = _mm512_loadu_si512((const void *)(b + 64 * h));
            const __m512i qh = bcast32_512(b + 128 + 32 * h);
            const __m512i u01 = _mm512_or_si512(
                _mm512_and_si512(ql, m4), _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, sh01), m3), 4));
            const __m512i u23 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                                                _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, sh23), m3), 4));
            const __m512i s01 = _mm512_permutexvar_epi16(sub16_index_512(8 * h), scz);
            const __m512i s23 = _mm512_permutexvar_epi16(sub16_index_512(8 * h + 4), scz);
            for (int k = 0; k < nx; k++) {
                const int8_t *xq = ax[k].q + QK_K * i + 128 * h;
                const __m512i x0 = _mm512_loadu_si512((const void *)xq);
                const __m512i x1 = _mm512_loadu_si512((const void *)(xq + 64));
                isum[k] = _mm512_dpwssd_epi32(isum[k], _mm512_maddubs_epi16(u01, x0), s01);
                isum[k] = _mm512_dpwssd_epi32(isum[k], _mm512_maddubs_epi16(u23, x1), s23);
            }
        }
        for (int k = 0; k < nx; k++) {
            const __m256i off = _mm256_slli_epi32(
                _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(ax[k].bs + 16 * i)), sc16), 5);
            const __m512i t = _mm512_sub_epi32(isum[k], _mm512_zextsi256_si512(off));
            acc[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(t), _mm512_set1_ps(d * ax[k].d[i]), acc[k]);
        }
    }
    for (int k = 0; k < nx; k++) y[k * ys] = hsum16_512(acc[k]);
}

T5 static void dot_q6_k_avx512(size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    DOT_NX_SWITCH(dot_q6_k_512_impl, nb, w, ax, y, ys)
}

/* Q2_K (three = 0) / Q3_K (three = 1) */
K5 void dot_k23_512_impl(int three, size_t nb, const uint8_t *w, const act_row *ax, float *y, size_t ys,
                         const int nx) {
    const size_t bsz = three ? 110 : 84;
    const __m512i m3 = _mm512_set1_epi8(0x03), one = _mm512_set1_epi8(1);
    const __m128i m4 = _mm_set1_epi8(0x0F);
    __m512 acc[NX_MAX];
    for (int k = 0; k < nx; k++) acc[k] = _mm512_setzero_ps();
    for (size_t i = 0; i < nb; i++) {
        const uint8_t *b = w + bsz * i;
        const uint8_t *qs = b + (three ? 32 : 16);
        __m256i sc16, mn16 = _mm256_setzero_si256();
        float d, dmin = 0.0f;
        if (three) {
            int8_t sc[16];
            unpack_k3_scales(b + 96, sc);
            sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)sc));
            d = h2f_avx2(b + 108);
        } else {
            const __m128i raw = _mm_loadu_si128((const __m128i *)b);
            sc16 = _mm256_cvtepu8_epi16(_mm_and_si128(raw, m4));
            mn16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(raw, 4), m4));
            d = h2f_avx2(b + 80);
            dmin = h2f_avx2(b + 82);
        }
        const __m512i scz = _mm512_castsi256_si512(sc16);
        const __m512i hm = three ? bcast32_512(b) : _mm512_setzero_si512();
        __m512i isum[NX_MAX];
        for (int k = 0; k < nx; k++) isum[k] = _mm512_setzero_si512();
        for (int h = 0; h < 2; h++) {
            const __m512i qz = bcast32_512(qs + 32 * h);
            for (int p = 0; p < 2; p++) { /* chunks c = 4h + 2p and 4h + 2p + 1 */
                const int c = 4 * h + 2 * p;
                __m512i u = _mm512_and_si512(_mm512_srlv_epi16(qz, halves16_512(4 * p, 4 * p + 2)), m3);
                if (three)
                    u = _mm512_or_si512(
                        u, _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(hm, halves16_512(c, c + 1)), one), 2));
                const __m512i s = _mm512_permutexvar_epi16(sub16_index_512(2 * c), scz);
                for (int k = 0; k < nx; k++) {
                    const __m512i xv = _mm512_loadu_si512((const void *)(ax[k].q + QK_K * i + 32 * c));
                    isum[k] = _mm512_dpwssd_epi32(isum[k], _mm512_maddubs_epi16(u, xv), s);
                }
            }
        }
        for (int k = 0; k < nx; k++) {
            const float dx = ax[k].d[i];
            const __m256i bs = _mm256_loadu_si256((const __m256i *)(ax[k].bs + 16 * i));
            if (three) {
                const __m256i off = _mm256_slli_epi32(_mm256_madd_epi16(bs, sc16), 2);
                const __m512i t = _mm512_sub_epi32(isum[k], _mm512_zextsi256_si512(off));
                acc[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(t), _mm512_set1_ps(d * dx), acc[k]);
            } else {
                acc[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[k]), _mm512_set1_ps(d * dx), acc[k]);
                acc[k] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(_mm512_zextsi256_si512(_mm256_madd_epi16(bs, mn16))),
                                          _mm512_set1_ps(dmin * dx), acc[k]);
            }
        }
    }
    for (int k = 0; k < nx; k++) y[k * ys] = hsum16_512(acc[k]);
}

T5 static void dot_q2_k_avx512(size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    DOT_NX_SWITCH(dot_k23_512_impl, 0, nb, w, ax, y, ys)
}
T5 static void dot_q3_k_avx512(size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    DOT_NX_SWITCH(dot_k23_512_impl, 1, nb, w, ax, y, ys)
}

#endif /* x86 */
#endif
