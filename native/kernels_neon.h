/* arm64 NEON path. NEON is part of the arm64 baseline, so no target attributes are needed.
 *
 * Kept deliberately simple (it cannot be exercised on the x86 build machines): float weights get
 * explicit NEON FMA loops; the quantized types use the portable integer kernels, which compilers
 * vectorize with NEON widening multiply-accumulates at -O3.
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

#define dot_q4_0_neon dot_q4_0_scalar
#define dot_q4_1_neon dot_q4_1_scalar
#define dot_q5_0_neon dot_q5_0_scalar
#define dot_q5_1_neon dot_q5_1_scalar
#define dot_q8_0_neon dot_q8_0_scalar
#define dot_q2_k_neon dot_q2_k_scalar
#define dot_q3_k_neon dot_q3_k_scalar
#define dot_q4_k_neon dot_q4_k_scalar
#define dot_q5_k_neon dot_q5_k_scalar
#define dot_q6_k_neon dot_q6_k_scalar

#endif /* aarch64 */
#endif
