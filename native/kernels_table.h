/* The kernel table: per ggml type, its block geometry, activation layout and the dequantize and
 * dot kernels of every simd.h level, plus the activation quantizer per level. Free of Python, so
 * kernels.c and the C test drivers (tests/native/) dispatch through the same table.
 */
#ifndef GGUF_KERNELS_TABLE_H
#define GGUF_KERNELS_TABLE_H

#include "simd.h"
#include "kernels_common.h"
#include "kernels_scalar.h"
#include "kernels_avx2.h"
#include "kernels_avx512.h"
#include "kernels_neon.h"

typedef void (*actq32_fn)(const float *, size_t, int8_t *, float *, float *);
typedef void (*actq256_fn)(const float *, size_t, int8_t *, float *, int16_t *);

typedef struct {
    int id;
    int blck;  /* values per block */
    int bytes; /* bytes per block */
    int act;   /* ACT_* */
    deq_fn deq[SIMD_N_LEVELS]; /* per simd.h level; NULL: use the scalar one */
    dot_fn dot[SIMD_N_LEVELS];
    gemv_fn gemv[SIMD_N_LEVELS]; /* NULL: the level's dot, row by row */
} tinfo;

#define DEQ_SCALAR(name) \
    static void deq_##name##_scalar(const uint8_t *s, float *d, size_t n) { deq_##name##_body(s, d, n); }
DEQ_SCALAR(f32)
DEQ_SCALAR(f16)
DEQ_SCALAR(bf16)
DEQ_SCALAR(q4_0)
DEQ_SCALAR(q4_1)
DEQ_SCALAR(q5_0)
DEQ_SCALAR(q5_1)
DEQ_SCALAR(q8_0)
DEQ_SCALAR(q2_k)
DEQ_SCALAR(q3_k)
DEQ_SCALAR(q4_k)
DEQ_SCALAR(q5_k)
DEQ_SCALAR(q6_k)

static void act_q32_scalar(const float *x, size_t n, int8_t *q, float *d, float *s) {
    act_quant_q32_body(x, n, q, d, s);
}
static void act_q256_scalar(const float *x, size_t n, int8_t *q, float *d, int16_t *bs) {
    act_quant_q256_body(x, n, q, d, bs);
}

#if defined(SIMD_ON_X86)
#define X86_DEQ(name) deq_##name##_avx2, deq_##name##_avx512
#define X86_DOT(name) dot_##name##_avx2, dot_##name##_avx512
#else
#define X86_DEQ(name) NULL, NULL
#define X86_DOT(name) NULL, NULL
#endif
#if defined(SIMD_ON_NEON)
#define ARM_DEQ(name) deq_##name##_scalar, deq_##name##_scalar
#define ARM_DOT(name) dot_##name##_neon, dot_##name##_neon_dotprod
#else
#define ARM_DEQ(name) NULL, NULL
#define ARM_DOT(name) NULL, NULL
#endif

#if defined(SIMD_ON_NEON)
#define ARM_GEMV(name) gemv_##name##_neon, gemv_##name##_neon_dotprod
#else
#define ARM_GEMV(name) NULL, NULL
#endif

#define TYPE(T, name, act) \
    {GGML_TYPE_##T, GGML_BLCK_##T, GGML_BYTES_##T, act, {deq_##name##_scalar, X86_DEQ(name), ARM_DEQ(name)}, \
     {dot_##name##_scalar, X86_DOT(name), ARM_DOT(name)}, {NULL}}
/* a type whose NEON kernels also take several weight rows at once */
#define TYPE_ARM_GEMV(T, name, act) \
    {GGML_TYPE_##T, GGML_BLCK_##T, GGML_BYTES_##T, act, {deq_##name##_scalar, X86_DEQ(name), ARM_DEQ(name)}, \
     {dot_##name##_scalar, X86_DOT(name), ARM_DOT(name)}, {NULL, NULL, NULL, ARM_GEMV(name)}}

static const tinfo TYPES[] = {
    TYPE(F32, f32, ACT_F32),    TYPE(F16, f16, ACT_F32),    TYPE(BF16, bf16, ACT_F32),
    TYPE_ARM_GEMV(Q4_0, q4_0, ACT_Q32),  TYPE_ARM_GEMV(Q4_1, q4_1, ACT_Q32),  TYPE_ARM_GEMV(Q5_0, q5_0, ACT_Q32),
    TYPE_ARM_GEMV(Q5_1, q5_1, ACT_Q32),  TYPE_ARM_GEMV(Q8_0, q8_0, ACT_Q32),  TYPE(Q2_K, q2_k, ACT_Q256),
    TYPE(Q3_K, q3_k, ACT_Q256), TYPE_ARM_GEMV(Q4_K, q4_k, ACT_Q256), TYPE_ARM_GEMV(Q5_K, q5_k, ACT_Q256),
    TYPE(Q6_K, q6_k, ACT_Q256),
};

static const tinfo *find_type(int id) {
    for (size_t i = 0; i < sizeof(TYPES) / sizeof(TYPES[0]); i++)
        if (TYPES[i].id == id) return &TYPES[i];
    return NULL;
}

static deq_fn pick_deq(const tinfo *t, int l) { return t->deq[l] ? t->deq[l] : t->deq[SIMD_SCALAR]; }
static dot_fn pick_dot(const tinfo *t, int l) { return t->dot[l] ? t->dot[l] : t->dot[SIMD_SCALAR]; }

/* y[r] = dot(weight row r, a) for r < nr, rows rb bytes apart: the level's multi-row kernel if it has one. */
static void gemv_rows(const tinfo *t, int l, size_t nb, const uint8_t *w, size_t rb, size_t nr, const act_row *a,
                      float *y) {
    if (t->gemv[l]) {
        t->gemv[l](nb, w, rb, nr, a, y);
        return;
    }
    const dot_fn dot = pick_dot(t, l);
    for (size_t r = 0; r < nr; r++) dot(nb, w + r * rb, a, 1, y + r, 1);
}

static void act_quant_row(int act, int level, const float *x, size_t n, int8_t *q, float *d, void *extra) {
#if defined(SIMD_ON_X86)
    if (level == SIMD_AVX2 || level == SIMD_AVX512) {
        if (act == ACT_Q32) act_q32_avx2(x, n, q, d, (float *)extra);
        else act_q256_avx2(x, n, q, d, (int16_t *)extra);
        return;
    }
#endif
    (void)level;
    if (act == ACT_Q32) act_q32_scalar(x, n, q, d, (float *)extra);
    else act_q256_scalar(x, n, q, d, (int16_t *)extra);
}

#endif
