/* AVX2 + FMA + F16C kernels (x86-64), compiled per function with target attributes.
 *
 * Dot products multiply unsigned weight codes (0..63) by int8 activations with vpmaddubsw (pair
 * sums stay below 2*63*127 = 16002, no saturation), apply the integer sub-block scales with
 * vpmaddwd, and touch floats once per block. Each kernel takes up to NX_MAX activation rows so a
 * prompt batch unpacks every weight block once for several rows.
 */
#ifndef GGUF_KERNELS_AVX2_H
#define GGUF_KERNELS_AVX2_H

#include "simd.h"
#include "kernels_scalar.h"

#if defined(SIMD_ON_X86)
#include <immintrin.h>

#define T2 __attribute__((target("avx2,fma,f16c")))
#define K2 static inline __attribute__((always_inline, target("avx2,fma,f16c")))

K2 float hsum8_avx2(__m256 v) {
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}

K2 float h2f_avx2(const uint8_t *p) { return _cvtsh_ss(rd16(p)); }

/* 16 int16 scale selectors: lane 0 (bytes 0..15) takes int16 #a, lane 1 takes int16 #b. */
K2 __m256i sel16_avx2(int a, int b) {
    return _mm256_set_m128i(_mm_set1_epi16((short)((2 * b + 1) << 8 | 2 * b)),
                            _mm_set1_epi16((short)((2 * a + 1) << 8 | 2 * a)));
}

/* ---------------------------------------- dequantize ---------------------------------------- */

/* Exact half->float in integer SIMD (keeps NaN payloads like numpy; F16C would quiet them). */
K2 __m256 half8_exact_avx2(__m128i h) {
    const __m256i v = _mm256_cvtepu16_epi32(h);
    const __m256i sign = _mm256_slli_epi32(_mm256_and_si256(v, _mm256_set1_epi32(0x8000)), 16);
    const __m256i o = _mm256_slli_epi32(_mm256_and_si256(v, _mm256_set1_epi32(0x7fff)), 13);
    const __m256i e = _mm256_and_si256(o, _mm256_set1_epi32(0x0f800000));
    const __m256i normal = _mm256_add_epi32(o, _mm256_set1_epi32(0x38000000));
    const __m256i infnan = _mm256_add_epi32(o, _mm256_set1_epi32(0x70000000));
    const __m256 sub = _mm256_sub_ps(_mm256_castsi256_ps(_mm256_add_epi32(o, _mm256_set1_epi32(0x38800000))),
                                     _mm256_set1_ps(6.103515625e-05f));
    __m256i r = _mm256_blendv_epi8(normal, infnan, _mm256_cmpeq_epi32(e, _mm256_set1_epi32(0x0f800000)));
    r = _mm256_blendv_epi8(r, _mm256_castps_si256(sub), _mm256_cmpeq_epi32(e, _mm256_setzero_si256()));
    return _mm256_castsi256_ps(_mm256_or_si256(r, sign));
}

T2 static void deq_f16_avx2(const uint8_t *src, float *dst, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, half8_exact_avx2(_mm_loadu_si128((const __m128i *)(src + 2 * i))));
    for (; i < n; i++) dst[i] = fp16_to_fp32(rd16(src + 2 * i));
}

/* The other types reuse the exact scalar bodies; the compiler vectorizes them for AVX2. */
#define DEQ_WRAP(name, lvl, tgt) \
    __attribute__((target(tgt))) static void deq_##name##_##lvl(const uint8_t *s, float *d, size_t n) { \
        deq_##name##_body(s, d, n); \
    }
DEQ_WRAP(f32, avx2, "avx2,fma,f16c")
DEQ_WRAP(bf16, avx2, "avx2,fma,f16c")
DEQ_WRAP(q4_0, avx2, "avx2,fma,f16c")
DEQ_WRAP(q4_1, avx2, "avx2,fma,f16c")
DEQ_WRAP(q5_0, avx2, "avx2,fma,f16c")
DEQ_WRAP(q5_1, avx2, "avx2,fma,f16c")
DEQ_WRAP(q8_0, avx2, "avx2,fma,f16c")
DEQ_WRAP(q2_k, avx2, "avx2,fma,f16c")
DEQ_WRAP(q3_k, avx2, "avx2,fma,f16c")
DEQ_WRAP(q4_k, avx2, "avx2,fma,f16c")
DEQ_WRAP(q5_k, avx2, "avx2,fma,f16c")
DEQ_WRAP(q6_k, avx2, "avx2,fma,f16c")

/* ------------------------------------------ float ------------------------------------------ */

/* kind: 0 F32, 1 F16, 2 BF16. Two accumulators per row hide the FMA latency at batch 1. */
K2 __m256 load8w_avx2(int kind, const uint8_t *w, size_t i) {
    if (kind == 0) return _mm256_loadu_ps((const float *)(w + 4 * i));
    const __m128i h = _mm_loadu_si128((const __m128i *)(w + 2 * i));
    if (kind == 1) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

K2 float w1_float(int kind, const uint8_t *w, size_t i) {
    if (kind == 0) {
        float f;
        memcpy(&f, w + 4 * i, 4);
        return f;
    }
    return kind == 1 ? fp16_to_fp32(rd16(w + 2 * i)) : bf16_to_fp32(rd16(w + 2 * i));
}

K2 void dot_float_avx2_impl(int kind, size_t n, const uint8_t *w, const act_row *ax, float *y, size_t ys,
                            const int nx) {
    __m256 a0[NX_MAX], a1[NX_MAX];
    for (int k = 0; k < nx; k++) a0[k] = a1[k] = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256 w0 = load8w_avx2(kind, w, i), w1 = load8w_avx2(kind, w, i + 8);
        for (int k = 0; k < nx; k++) {
            a0[k] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(ax[k].xf + i), a0[k]);
            a1[k] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(ax[k].xf + i + 8), a1[k]);
        }
    }
    for (int k = 0; k < nx; k++) {
        float t = hsum8_avx2(_mm256_add_ps(a0[k], a1[k]));
        for (size_t j = i; j < n; j++) t += w1_float(kind, w, j) * ax[k].xf[j];
        y[k * ys] = t;
    }
}

#define DOT_NX_SWITCH(impl, ...) \
    switch (nx) { \
    case 1: impl(__VA_ARGS__, 1); break; \
    case 2: impl(__VA_ARGS__, 2); break; \
    case 3: impl(__VA_ARGS__, 3); break; \
    default: impl(__VA_ARGS__, 4); break; \
    }

T2 static void dot_f32_avx2(size_t n, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    DOT_NX_SWITCH(dot_float_avx2_impl, 0, n, w, ax, y, ys)
}
T2 static void dot_f16_avx2(size_t n, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    DOT_NX_SWITCH(dot_float_avx2_impl, 1, n, w, ax, y, ys)
}
T2 static void dot_bf16_avx2(size_t n, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    DOT_NX_SWITCH(dot_float_avx2_impl, 2, n, w, ax, y, ys)
}

/* ------------------------------------ legacy 32-blocks ------------------------------------ */

/* 32 bits -> 32 bytes of 0x10 (bit set) or 0 (ggml's Q5 high bits). */
K2 __m256i hbits32_avx2(uint32_t qh) {
    const __m256i shuf = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3,
                                          3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh), shuf);
    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

/* kind: 0 Q4_0, 1 Q4_1, 2 Q5_0, 3 Q5_1, 4 Q8_0 */
#define LEG_BSZ(kind) ((kind) == 0 ? 18 : (kind) == 1 ? 20 : (kind) == 2 ? 22 : (kind) == 3 ? 24 : 34)
#define LEG_QOFF(kind) ((kind) == 0 ? 2 : (kind) == 1 ? 4 : (kind) == 2 ? 6 : (kind) == 3 ? 8 : 2)

/* One block's codes as 32 unsigned bytes in value order (Q8_0: |w|, signs applied to x). */
K2 __m256i legacy_codes_avx2(int kind, const uint8_t *b) {
    if (kind == 4) return _mm256_abs_epi8(_mm256_loadu_si256((const __m256i *)(b + 2)));
    const __m128i m4 = _mm_set1_epi8(0x0F);
    const __m128i v = _mm_loadu_si128((const __m128i *)(b + LEG_QOFF(kind)));
    __m256i u = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m4), _mm_and_si128(v, m4));
    if (kind == 2) u = _mm256_or_si256(u, hbits32_avx2(rd32(b + 2)));
    if (kind == 3) u = _mm256_or_si256(u, hbits32_avx2(rd32(b + 4)));
    return u;
}

/* sum over the block of codes * x, as 8 int32 lanes */
K2 __m256i legacy_dot_avx2(int kind, __m256i u, const uint8_t *b, const int8_t *xq) {
    __m256i xv = _mm256_loadu_si256((const __m256i *)xq);
    if (kind == 4) xv = _mm256_sign_epi8(xv, _mm256_loadu_si256((const __m256i *)(b + 2)));
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, xv), _mm256_set1_epi16(1));
}

/* Groups of 8 blocks: the 8 f16 scales come in with one gather and are multiplied by the 8
 * activation scales as a vector, so the per-block float work is one permute and one FMA. The
 * offset (Q4_0 -8, Q5_0 -16) and min (Q4_1, Q5_1) terms use the activation sums d*sum(q). */
K2 void dot_legacy8_avx2_impl(int kind, size_t ng, const uint8_t *w, const act_row *ax, float *y, size_t ys,
                              const int nx) {
    const int bsz = LEG_BSZ(kind);
    const __m256i gidx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(bsz));
    const __m256i pick_lo = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1, 0, 1, 4, 5, 8,
                                             9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1);
    const __m256i pick_hi = _mm256_setr_epi8(2, 3, 6, 7, 10, 11, 14, 15, -1, -1, -1, -1, -1, -1, -1, -1, 2, 3, 6, 7,
                                             10, 11, 14, 15, -1, -1, -1, -1, -1, -1, -1, -1);
    /* several accumulators per row: one FMA chain per block would wait on FMA latency */
    const int nacc = nx == 1 ? 4 : 2;
    __m256 acc[NX_MAX][4];
    for (int k = 0; k < nx; k++)
        for (int j = 0; j < nacc; j++) acc[k][j] = _mm256_setzero_ps();
    for (size_t g = 0; g < ng; g++) {
        const uint8_t *base = w + (size_t)bsz * 8 * g;
        const __m256i raw = _mm256_i32gather_epi32((const int *)base, gidx, 1);
        const __m256 dw = _mm256_cvtph_ps(
            _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_shuffle_epi8(raw, pick_lo), 0x08)));
        __m256 ew = dw;
        if (kind == 0) ew = _mm256_mul_ps(dw, _mm256_set1_ps(-8.0f));
        if (kind == 2) ew = _mm256_mul_ps(dw, _mm256_set1_ps(-16.0f));
        if (kind == 1 || kind == 3)
            ew = _mm256_cvtph_ps(
                _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_shuffle_epi8(raw, pick_hi), 0x08)));
        __m256 sv[NX_MAX];
        for (int k = 0; k < nx; k++) {
            sv[k] = _mm256_mul_ps(dw, _mm256_loadu_ps(ax[k].d + 8 * g));
            if (kind != 4) acc[k][0] = _mm256_fmadd_ps(ew, _mm256_loadu_ps(ax[k].s + 8 * g), acc[k][0]);
        }
        for (int i = 0; i < 8; i++) {
            const uint8_t *b = base + (size_t)bsz * i;
            const __m256i u = legacy_codes_avx2(kind, b);
            const __m256i sel = _mm256_set1_epi32(i);
            for (int k = 0; k < nx; k++) {
                const __m256i p = legacy_dot_avx2(kind, u, b, ax[k].q + 256 * g + 32 * i);
                acc[k][i % nacc] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_permutevar8x32_ps(sv[k], sel), acc[k][i % nacc]);
            }
        }
    }
    for (int k = 0; k < nx; k++) {
        __m256 t = acc[k][0];
        for (int j = 1; j < nacc; j++) t = _mm256_add_ps(t, acc[k][j]);
        y[k * ys] = hsum8_avx2(t);
    }
}

/* Block by block, for the blocks after the last whole group. */
K2 void dot_legacy1_avx2_impl(int kind, size_t nb, const uint8_t *w, const act_row *ax, float *y, size_t ys,
                              const int nx) {
    const int bsz = LEG_BSZ(kind);
    __m256 acc[NX_MAX];
    float extra[NX_MAX];
    for (int k = 0; k < nx; k++) {
        acc[k] = _mm256_setzero_ps();
        extra[k] = 0.0f;
    }
    for (size_t i = 0; i < nb; i++) {
        const uint8_t *b = w + (size_t)bsz * i;
        const float d = h2f_avx2(b);
        const float e = (kind == 1 || kind == 3) ? h2f_avx2(b + 2) : kind == 0 ? -8.0f * d : -16.0f * d;
        const __m256i u = legacy_codes_avx2(kind, b);
        for (int k = 0; k < nx; k++) {
            const __m256i p = legacy_dot_avx2(kind, u, b, ax[k].q + 32 * i);
            acc[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(d * ax[k].d[i]), acc[k]);
            if (kind != 4) extra[k] += e * ax[k].s[i];
        }
    }
    for (int k = 0; k < nx; k++) y[k * ys] = hsum8_avx2(acc[k]) + extra[k];
}

/* y += dot over blocks [from, from + count): the activation rows shifted to block `from`. */
KALWAYS void add_blocks(dot_fn f, size_t from, size_t count, size_t bsz, const uint8_t *w, const act_row *ax,
                        float *y, size_t ys, int nx) {
    act_row sh[NX_MAX] = {{0}};
    float t[NX_MAX];
    for (int k = 0; k < nx; k++) {
        sh[k] = ax[k];
        sh[k].q += 32 * from;
        sh[k].d += from;
        sh[k].s += from;
    }
    f(count, w + bsz * from, sh, nx, t, 1);
    for (int k = 0; k < nx; k++) y[k * ys] += t[k];
}

#define LEGACY_AVX2(name, kind) \
    T2 static void dot_##name##_avx2_rest(size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, \
                                          size_t ys) { \
        DOT_NX_SWITCH(dot_legacy1_avx2_impl, kind, nb, w, ax, y, ys) \
    } \
    T2 static void dot_##name##_avx2(size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) { \
        DOT_NX_SWITCH(dot_legacy8_avx2_impl, kind, nb / 8, w, ax, y, ys) \
        if (nb % 8) add_blocks(dot_##name##_avx2_rest, nb - nb % 8, nb % 8, LEG_BSZ(kind), w, ax, y, ys, nx); \
    }
LEGACY_AVX2(q4_0, 0)
LEGACY_AVX2(q4_1, 1)
LEGACY_AVX2(q5_0, 2)
LEGACY_AVX2(q5_1, 3)
LEGACY_AVX2(q8_0, 4)

/* ----------------------------------------- K-quants ----------------------------------------- */

/* Q4_K and Q5_K: 8 sub-blocks of 32 with 6-bit scales and mins. */
K2 void dot_k4_avx2_impl(int five, size_t nb, const uint8_t *w, const act_row *ax, float *y, size_t ys,
                         const int nx) {
    const size_t bsz = five ? 176 : 144;
    const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    __m256 acc[NX_MAX];
    for (int k = 0; k < nx; k++) acc[k] = _mm256_setzero_ps();
    for (size_t i = 0; i < nb; i++) {
        const uint8_t *b = w + bsz * i;
        const uint8_t *qs = b + (five ? 48 : 16);
        const float d = h2f_avx2(b), dmin = h2f_avx2(b + 2);
        uint64_t sc8, mn8;
        unpack_k4_scales(b + 4, &sc8, &mn8);
        const __m256i scs = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)sc8)));
        const __m128i mn = _mm_cvtsi64_si128((long long)mn8);
        const __m256i mdup = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mn, mn));
        __m256i qh = five ? _mm256_loadu_si256((const __m256i *)(b + 16)) : _mm256_setzero_si256();
        __m256i isum[NX_MAX];
        for (int k = 0; k < nx; k++) isum[k] = _mm256_setzero_si256();
        for (int j = 0; j < 4; j++) {
            const __m256i qv = _mm256_loadu_si256((const __m256i *)(qs + 32 * j));
            __m256i lo = _mm256_and_si256(qv, m4), hi = _mm256_and_si256(_mm256_srli_epi16(qv, 4), m4);
            if (five) {
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(qh, one), 4));
                qh = _mm256_srli_epi16(qh, 1);
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(qh, one), 4));
                qh = _mm256_srli_epi16(qh, 1);
            }
            const __m256i s0 = _mm256_shuffle_epi8(scs, sel16_avx2(2 * j, 2 * j));
            const __m256i s1 = _mm256_shuffle_epi8(scs, sel16_avx2(2 * j + 1, 2 * j + 1));
            for (int k = 0; k < nx; k++) {
                const int8_t *xq = ax[k].q + QK_K * i + 64 * j;
                const __m256i p0 = _mm256_madd_epi16(
                    _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)xq)), s0);
                const __m256i p1 = _mm256_madd_epi16(
                    _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(xq + 32))), s1);
                isum[k] = _mm256_add_epi32(isum[k], _mm256_add_epi32(p0, p1));
            }
        }
        for (int k = 0; k < nx; k++) {
            const float dx = ax[k].d[i];
            const __m256i mt =
                _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(ax[k].bs + 16 * i)), mdup);
            acc[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[k]), _mm256_set1_ps(d * dx), acc[k]);
            acc[k] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(mt), _mm256_set1_ps(dmin * dx), acc[k]);
        }
    }
    for (int k = 0; k < nx; k++) y[k * ys] = hsum8_avx2(acc[k]);
}

T2 static void dot_q4_k_avx2(size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    DOT_NX_SWITCH(dot_k4_avx2_impl, 0, nb, w, ax, y, ys)
}
T2 static void dot_q5_k_avx2(size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    DOT_NX_SWITCH(dot_k4_avx2_impl, 1, nb, w, ax, y, ys)
}

K2 void dot_q6_k_avx2_impl(size_t nb, const uint8_t *w, const act_row *ax, float *y, size_t ys, const int nx) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const __m256i m03 = _mm256_set1_epi8(0x03), m0c = _mm256_set1_epi8(0x0C);
    const __m256i m30 = _mm256_set1_epi8(0x30), mc0 = _mm256_set1_epi8((char)0xC0);
    __m256 acc[NX_MAX];
    for (int k = 0; k < nx; k++) acc[k] = _mm256_setzero_ps();
    for (size_t i = 0; i < nb; i++) {
        const uint8_t *b = w + 210 * i;
        const float d = h2f_avx2(b + 208);
        const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(b + 192)));
        __m256i isum[NX_MAX];
        for (int k = 0; k < nx; k++) isum[k] = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const __m256i scs = h ? _mm256_permute2x128_si256(sc16, sc16, 0x11)
                                  : _mm256_permute2x128_si256(sc16, sc16, 0x00);
            const __m256i qa = _mm256_loadu_si256((const __m256i *)(b + 64 * h));
            const __m256i qb = _mm256_loadu_si256((const __m256i *)(b + 64 * h + 32));
            const __m256i qh = _mm256_loadu_si256((const __m256i *)(b + 128 + 32 * h));
            __m256i u[4];
            u[0] = _mm256_or_si256(_mm256_and_si256(qa, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m03), 4));
            u[1] = _mm256_or_si256(_mm256_and_si256(qb, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m0c), 2));
            u[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qa, 4), m4), _mm256_and_si256(qh, m30));
            u[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qb, 4), m4),
                                   _mm256_srli_epi16(_mm256_and_si256(qh, mc0), 2));
            for (int c = 0; c < 4; c++) {
                const __m256i s = _mm256_shuffle_epi8(scs, sel16_avx2(2 * c, 2 * c + 1));
                for (int k = 0; k < nx; k++) {
                    const int8_t *xq = ax[k].q + QK_K * i + 128 * h + 32 * c;
                    const __m256i p =
                        _mm256_madd_epi16(_mm256_maddubs_epi16(u[c], _mm256_loadu_si256((const __m256i *)xq)), s);
                    isum[k] = _mm256_add_epi32(isum[k], p);
                }
            }
        }
        /* codes are stored +32: subtract 32 * sum(scale * sum(x)) */
        for (int k = 0; k < nx; k++) {
            const __m256i off = _mm256_slli_epi32(
                _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(ax[k].bs + 16 * i)), sc16), 5);
            acc[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(isum[k], off)),
                                     _mm256_set1_ps(d * ax[k].d[i]), acc[k]);
        }
    }
    for (int k = 0; k < nx; k++) y[k * ys] = hsum8_avx2(acc[k]);
}

T2 static void dot_q6_k_avx2(size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    DOT_NX_SWITCH(dot_q6_k_avx2_impl, nb, w, ax, y, ys)
}

/* Q2_K (three = 0) and Q3_K (three = 1): 16 sub-blocks of 16 with 4-bit / 6-bit scales. */
K2 void dot_k23_avx2_impl(int three, size_t nb, const uint8_t *w, const act_row *ax, float *y, size_t ys,
                          const int nx) {
    const size_t bsz = three ? 110 : 84;
    const __m256i m3 = _mm256_set1_epi8(0x03), one = _mm256_set1_epi8(1);
    const __m128i m4 = _mm_set1_epi8(0x0F);
    __m256 acc[NX_MAX];
    for (int k = 0; k < nx; k++) acc[k] = _mm256_setzero_ps();
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
        __m256i hm = three ? _mm256_loadu_si256((const __m256i *)b) : _mm256_setzero_si256();
        __m256i isum[NX_MAX];
        for (int k = 0; k < nx; k++) isum[k] = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const __m256i scs = h ? _mm256_permute2x128_si256(sc16, sc16, 0x11)
                                  : _mm256_permute2x128_si256(sc16, sc16, 0x00);
            const __m256i qv = _mm256_loadu_si256((const __m256i *)(qs + 32 * h));
            for (int s = 0; s < 4; s++) {
                __m256i u = _mm256_and_si256(_mm256_srli_epi16(qv, 2 * s), m3);
                if (three) {
                    u = _mm256_or_si256(u, _mm256_slli_epi16(_mm256_and_si256(hm, one), 2));
                    hm = _mm256_srli_epi16(hm, 1);
                }
                const __m256i sv = _mm256_shuffle_epi8(scs, sel16_avx2(2 * s, 2 * s + 1));
                for (int k = 0; k < nx; k++) {
                    const int8_t *xq = ax[k].q + QK_K * i + 128 * h + 32 * s;
                    isum[k] = _mm256_add_epi32(
                        isum[k],
                        _mm256_madd_epi16(_mm256_maddubs_epi16(u, _mm256_loadu_si256((const __m256i *)xq)), sv));
                }
            }
        }
        for (int k = 0; k < nx; k++) {
            const float dx = ax[k].d[i];
            const __m256i bs = _mm256_loadu_si256((const __m256i *)(ax[k].bs + 16 * i));
            if (three) {
                const __m256i off = _mm256_slli_epi32(_mm256_madd_epi16(bs, sc16), 2);
                acc[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(isum[k], off)), _mm256_set1_ps(d * dx),
                                         acc[k]);
            } else {
                acc[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[k]), _mm256_set1_ps(d * dx), acc[k]);
                acc[k] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(bs, mn16)),
                                          _mm256_set1_ps(dmin * dx), acc[k]);
            }
        }
    }
    for (int k = 0; k < nx; k++) y[k * ys] = hsum8_avx2(acc[k]);
}

T2 static void dot_q2_k_avx2(size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    DOT_NX_SWITCH(dot_k23_avx2_impl, 0, nb, w, ax, y, ys)
}
T2 static void dot_q3_k_avx2(size_t nb, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    DOT_NX_SWITCH(dot_k23_avx2_impl, 1, nb, w, ax, y, ys)
}

/* ----------------------------------- activations, bandwidth ----------------------------------- */

T2 static void act_q32_avx2(const float *x, size_t n, int8_t *q, float *d, float *s) {
    act_quant_q32_body(x, n, q, d, s);
}
T2 static void act_q256_avx2(const float *x, size_t n, int8_t *q, float *d, int16_t *bs) {
    act_quant_q256_body(x, n, q, d, bs);
}

T2 static uint64_t read_sum_avx2(const uint8_t *p, size_t n) {
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
    size_t i = 0;
    for (; i + 128 <= n; i += 128) {
        s0 = _mm256_add_epi64(s0, _mm256_loadu_si256((const __m256i *)(p + i)));
        s1 = _mm256_add_epi64(s1, _mm256_loadu_si256((const __m256i *)(p + i + 32)));
        s2 = _mm256_add_epi64(s2, _mm256_loadu_si256((const __m256i *)(p + i + 64)));
        s3 = _mm256_add_epi64(s3, _mm256_loadu_si256((const __m256i *)(p + i + 96)));
    }
    s0 = _mm256_add_epi64(_mm256_add_epi64(s0, s1), _mm256_add_epi64(s2, s3));
    uint64_t r = (uint64_t)_mm256_extract_epi64(s0, 0) + (uint64_t)_mm256_extract_epi64(s0, 1) +
                 (uint64_t)_mm256_extract_epi64(s0, 2) + (uint64_t)_mm256_extract_epi64(s0, 3);
    for (; i < n; i++) r += p[i];
    return r;
}

#endif /* x86-64 */
#endif
