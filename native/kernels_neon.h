/* arm64 NEON paths. NEON is part of the arm64 baseline, so the plain level needs no target
 * attributes; the neon_dotprod level compiles the same kernels (kernels_neon_impl.h) with SDOT,
 * under a per-function target attribute, and runs only where simd.h's probe found it.
 *
 * Float weights get NEON FMA loops (shared by both levels). The quantized types multiply int8
 * activations (quantized per block as on x86) with the unpacked weights: 16 products at a time,
 * either by one SDOT (vdotq_s32) or by a widening multiply and multiply-accumulate (vmull_s8,
 * vmlal_high_s8: two products of at most 128 * 127 fit int16) then a pairwise add into int32
 * (vpadalq_s16). tests/native/test_kernels.c runs both under QEMU against the scalar kernels.
 */
#ifndef GGUF_KERNELS_NEON_H
#define GGUF_KERNELS_NEON_H

#include "simd.h"
#include "kernels_scalar.h"

#if defined(SIMD_ON_NEON)
#include <arm_neon.h>

/* kind: 0 F32, 1 F16, 2 BF16 */
KALWAYS float32x4_t load4w_neon(int kind, const uint8_t *w, size_t i) {
    if (kind == 0) return vld1q_f32((const float *)(w + 4 * i));
    const uint16x4_t h = vld1_u16((const uint16_t *)(w + 2 * i));
    if (kind == 1) return vcvt_f32_f16(vreinterpret_f16_u16(h));
    return vreinterpretq_f32_u32(vshll_n_u16(h, 16));
}

KALWAYS void dot_float_neon_impl(int kind, size_t n, const uint8_t *w, const act_row *ax, int nx, float *y,
                                 size_t ys) {
    for (int k = 0; k < nx; k++) {
        const float *x = ax[k].xf;
        float32x4_t a0 = vdupq_n_f32(0.0f), a1 = vdupq_n_f32(0.0f);
        size_t i = 0;
        for (; i + 8 <= n; i += 8) {
            a0 = vfmaq_f32(a0, load4w_neon(kind, w, i), vld1q_f32(x + i));
            a1 = vfmaq_f32(a1, load4w_neon(kind, w, i + 4), vld1q_f32(x + i + 4));
        }
        float t = vaddvq_f32(vaddq_f32(a0, a1));
        for (; i < n; i++) {
            float wv;
            if (kind == 0) memcpy(&wv, w + 4 * i, 4);
            else wv = kind == 1 ? fp16_to_fp32(rd16(w + 2 * i)) : bf16_to_fp32(rd16(w + 2 * i));
            t += wv * x[i];
        }
        y[k * ys] = t;
    }
}

static void dot_f32_neon(size_t n, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    dot_float_neon_impl(0, n, w, ax, nx, y, ys);
}
static void dot_f16_neon(size_t n, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    dot_float_neon_impl(1, n, w, ax, nx, y, ys);
}
static void dot_bf16_neon(size_t n, const uint8_t *w, const act_row *ax, int nx, float *y, size_t ys) {
    dot_float_neon_impl(2, n, w, ax, nx, y, ys);
}

#define dot_f32_neon_dotprod dot_f32_neon
#define dot_f16_neon_dotprod dot_f16_neon
#define dot_bf16_neon_dotprod dot_bf16_neon

/* An fp16 field as float by the FCVT instruction: the same value as fp16_to_fp32 (the conversion is exact,
 * subnormals included), in two instructions instead of a dozen; a NaN stays a NaN. */
KALWAYS float f16_hw(const uint8_t *p) {
    __fp16 h;
    memcpy(&h, p, 2);
    return (float)h;
}

KALWAYS int32x4_t dot16_plain(int32x4_t acc, int8x16_t a, int8x16_t b) {
    int16x8_t p = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    p = vmlal_high_s8(p, a, b);
    return vpadalq_s16(acc, p);
}

#define NSFX(name) name##_neon
#define NTARGET
#define NDOT dot16_plain
#define NPAIRS 0
#include "kernels_neon_impl.h"
#undef NSFX
#undef NTARGET
#undef NDOT
#undef NPAIRS

#if defined(__clang__)
#define NEON_DOTPROD_TARGET __attribute__((target("dotprod")))
#else
#define NEON_DOTPROD_TARGET __attribute__((target("arch=armv8.2-a+dotprod"))) /* what arm_neon.h declares SDOT with */
#endif

NEON_DOTPROD_TARGET static inline __attribute__((always_inline)) int32x4_t dot16_sdot(int32x4_t acc, int8x16_t a,
                                                                                      int8x16_t b) {
    return vdotq_s32(acc, a, b);
}

#define NSFX(name) name##_neon_dotprod
#define NTARGET NEON_DOTPROD_TARGET
#define NDOT dot16_sdot
#define NPAIRS 1
#include "kernels_neon_impl.h"
#undef NSFX
#undef NTARGET
#undef NDOT
#undef NPAIRS

#endif /* aarch64 */
#endif
