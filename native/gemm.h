/* Batched float matmul (prefill): Y = X W^T for F32 / F16 / BF16 weights, register-tiled for AVX2.
 *
 * A prompt of T tokens multiplies the same weights T times. The dot kernels (one weight row against
 * up to NX_MAX activation rows, summed horizontally) reload every activation for every weight row;
 * here the activations are packed once per call as X^T panels of 16 tokens ([K][16] floats), each
 * thread converts a block of GEMM_WB weight rows to float once, and a 6 x 16 micro-kernel keeps
 * 12 accumulators in registers: per k, two loads of X^T, six broadcasts of W, twelve FMAs.
 *
 * Every output is one FMA chain over k = 0..K-1 in order, whatever the tiling and thread count,
 * so results do not depend on `threads` (the property kernels.py documents).
 *
 * Threads (pool.h) take units = (block of weight rows, block of GEMM_TB tokens) from a counter.
 */
#ifndef GGUF_GEMM_H
#define GGUF_GEMM_H

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "pool.h"
#include "simd.h"
#include "kernels_common.h"

#define GEMM_MIN_BATCH 16 /* below this the dot kernels win: nothing to amortise the packing */
#define GEMM_MR 6         /* weight rows per micro-kernel */
#define GEMM_NR 16        /* tokens per micro-kernel (two AVX2 vectors) */
#define GEMM_TB 128       /* tokens per unit */

#if defined(SIMD_ON_X86)
#include <immintrin.h>

#define GT2 __attribute__((target("avx2,fma,f16c")))
#define GK2 static inline __attribute__((always_inline, target("avx2,fma,f16c")))

/* n weights of row `w` (kind 0 F32, 1 F16, 2 BF16) -> floats */
GK2 void gemm_row_to_f32(int kind, const uint8_t *w, float *dst, size_t n) {
    size_t i = 0;
    if (kind == 0) {
        memcpy(dst, w, n * 4);
        return;
    }
    for (; i + 8 <= n; i += 8) {
        const __m128i h = _mm_loadu_si128((const __m128i *)(w + 2 * i));
        const __m256 f = kind == 1 ? _mm256_cvtph_ps(h)
                                   : _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
        _mm256_storeu_ps(dst + i, f);
    }
    for (; i < n; i++) dst[i] = kind == 1 ? _cvtsh_ss(rd16(w + 2 * i)) : bf16_to_fp32(rd16(w + 2 * i));
}

/* acc[r] (16 tokens) = sum_k wf[r][k] * xt[k][0..15] for r < 6; wf rows are K apart. */
GK2 void gemm_micro_6x16(size_t K, const float *wf, const float *xt, float *out /* [6][16] */) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    const float *w0 = wf, *w1 = wf + K, *w2 = wf + 2 * K, *w3 = wf + 3 * K, *w4 = wf + 4 * K, *w5 = wf + 5 * K;
    for (size_t k = 0; k < K; k++) {
        const __m256 x0 = _mm256_load_ps(xt + 16 * k), x1 = _mm256_load_ps(xt + 16 * k + 8);
        __m256 b = _mm256_broadcast_ss(w0 + k);
        c00 = _mm256_fmadd_ps(b, x0, c00);
        c01 = _mm256_fmadd_ps(b, x1, c01);
        b = _mm256_broadcast_ss(w1 + k);
        c10 = _mm256_fmadd_ps(b, x0, c10);
        c11 = _mm256_fmadd_ps(b, x1, c11);
        b = _mm256_broadcast_ss(w2 + k);
        c20 = _mm256_fmadd_ps(b, x0, c20);
        c21 = _mm256_fmadd_ps(b, x1, c21);
        b = _mm256_broadcast_ss(w3 + k);
        c30 = _mm256_fmadd_ps(b, x0, c30);
        c31 = _mm256_fmadd_ps(b, x1, c31);
        b = _mm256_broadcast_ss(w4 + k);
        c40 = _mm256_fmadd_ps(b, x0, c40);
        c41 = _mm256_fmadd_ps(b, x1, c41);
        b = _mm256_broadcast_ss(w5 + k);
        c50 = _mm256_fmadd_ps(b, x0, c50);
        c51 = _mm256_fmadd_ps(b, x1, c51);
    }
    _mm256_storeu_ps(out + 0, c00);
    _mm256_storeu_ps(out + 8, c01);
    _mm256_storeu_ps(out + 16, c10);
    _mm256_storeu_ps(out + 24, c11);
    _mm256_storeu_ps(out + 32, c20);
    _mm256_storeu_ps(out + 40, c21);
    _mm256_storeu_ps(out + 48, c30);
    _mm256_storeu_ps(out + 56, c31);
    _mm256_storeu_ps(out + 64, c40);
    _mm256_storeu_ps(out + 72, c41);
    _mm256_storeu_ps(out + 80, c50);
    _mm256_storeu_ps(out + 88, c51);
}

typedef struct {
    int kind;
    const uint8_t *w;
    size_t row_bytes;
    const float *x;
    float *xt; /* packed X^T: ceil(T/16) panels of [K][16] floats, 64-byte aligned */
    float *y;
    size_t T, K, M, wb, n_wb, n_tb;
    float *wbuf[POOL_MAX_THREADS]; /* per thread: wb rows of K floats */
    atomic_size_t next;
} gemm_task;

/* Pack X (T x K, rows of K floats) into panels of 16 tokens; tokens past T are zeros. */
GT2 static void gemm_pack_run(void *ctx, int tid, int nth) {
    gemm_task *g = ctx;
    const size_t np = (g->T + GEMM_NR - 1) / GEMM_NR;
    const size_t a = np * (size_t)tid / (size_t)nth, e = np * (size_t)(tid + 1) / (size_t)nth;
    for (size_t p = a; p < e; p++) {
        float *dst = g->xt + p * g->K * GEMM_NR;
        for (int j = 0; j < GEMM_NR; j++) {
            const size_t t = p * GEMM_NR + (size_t)j;
            if (t < g->T) {
                const float *src = g->x + t * g->K;
                for (size_t k = 0; k < g->K; k++) dst[k * GEMM_NR + (size_t)j] = src[k];
            } else {
                for (size_t k = 0; k < g->K; k++) dst[k * GEMM_NR + (size_t)j] = 0.0f;
            }
        }
    }
}

GT2 static void gemm_run(void *ctx, int tid, int nth) {
    (void)nth;
    gemm_task *g = ctx;
    float *wf = g->wbuf[tid];
    float tile[GEMM_MR * GEMM_NR];
    for (;;) {
        const size_t u = atomic_fetch_add_explicit(&g->next, 1, memory_order_relaxed);
        if (u >= g->n_wb * g->n_tb) break;
        const size_t r0 = (u / g->n_tb) * g->wb, r1 = r0 + g->wb < g->M ? r0 + g->wb : g->M;
        const size_t t0 = (u % g->n_tb) * GEMM_TB, t1 = t0 + GEMM_TB < g->T ? t0 + GEMM_TB : g->T;
        const size_t rows = r1 - r0, rows_pad = (rows + GEMM_MR - 1) / GEMM_MR * GEMM_MR;
        for (size_t r = 0; r < rows; r++) gemm_row_to_f32(g->kind, g->w + (r0 + r) * g->row_bytes, wf + r * g->K, g->K);
        if (rows_pad > rows) memset(wf + rows * g->K, 0, (rows_pad - rows) * g->K * sizeof(float));
        for (size_t tp = t0; tp < t1; tp += GEMM_NR) {
            const float *xt = g->xt + (tp / GEMM_NR) * g->K * GEMM_NR;
            const size_t nt = t1 - tp < GEMM_NR ? t1 - tp : GEMM_NR;
            for (size_t r = 0; r < rows; r += GEMM_MR) {
                gemm_micro_6x16(g->K, wf + r * g->K, xt, tile);
                const size_t nr = rows - r < GEMM_MR ? rows - r : GEMM_MR;
                for (size_t i = 0; i < nr; i++)
                    for (size_t j = 0; j < nt; j++) g->y[(tp + j) * g->M + r0 + r + i] = tile[i * GEMM_NR + j];
            }
        }
    }
}

/* Y (T x M) = X (T x K) W^T, W rows of `kind` (0 F32, 1 F16, 2 BF16). Call with the GIL released.
 * Returns 0, or -1 when the buffers cannot be allocated (nothing written then). */
static int gemm_float_avx2(int kind, const uint8_t *w, size_t row_bytes, size_t M, size_t K, const float *x,
                           size_t T, float *y, int threads) {
    gemm_task *g = calloc(1, sizeof(gemm_task));
    if (!g) return -1;
    const size_t np = (T + GEMM_NR - 1) / GEMM_NR;
    int rc = -1;
    g->kind = kind;
    g->w = w;
    g->row_bytes = row_bytes;
    g->x = x;
    g->y = y;
    g->T = T;
    g->K = K;
    g->M = M;
    g->n_tb = (T + GEMM_TB - 1) / GEMM_TB;
    /* weight blocks of 48 rows (a block of a small matrix is smaller, so every thread has work) */
    size_t wb = 48;
    while (wb > GEMM_MR && ((M + wb - 1) / wb) * g->n_tb < 2 * (size_t)threads) wb -= GEMM_MR;
    g->wb = wb;
    g->n_wb = (M + wb - 1) / wb;
    int nth = threads;
    if ((size_t)nth > g->n_wb * g->n_tb) nth = (int)(g->n_wb * g->n_tb);
    g->xt = aligned_alloc(64, (np * K * GEMM_NR * sizeof(float) + 63) & ~(size_t)63);
    for (int i = 0; i < nth; i++)
        if (!(g->wbuf[i] = malloc(wb * K * sizeof(float)))) goto out;
    if (!g->xt) goto out;
    pool_run(gemm_pack_run, g, (size_t)nth < np ? nth : (int)np);
    atomic_store_explicit(&g->next, 0, memory_order_relaxed);
    pool_run(gemm_run, g, nth);
    rc = 0;
out:
    for (int i = 0; i < nth; i++) free(g->wbuf[i]);
    free(g->xt);
    free(g);
    return rc;
}

#endif /* SIMD_ON_X86 */
#endif
