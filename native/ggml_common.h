/* Facts from ggml every extension shares: type ids, block geometry, fp16 and bf16 conversion.
 *
 * One home for them, so the kernels (which read blocks) and the quantizers (which write them)
 * cannot disagree. The ids are the values of ggml's enum ggml_type (gguf.GGMLQuantizationType).
 *
 * Exactness: fp16 and bf16 conversions here are bit exact against NumPy and ggml for every input,
 * NaN payloads included, so they go through integers, never through hardware converters.
 */
#ifndef GGUF_GGML_COMMON_H
#define GGUF_GGML_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__clang__)
#pragma clang fp contract(off)
#endif

#define QK_K 256 /* values per K-quant super-block */

/* X(name, ggml id, values per block, bytes per block) */
#define GGML_TYPE_LIST(X)     \
    X(F32, 0, 1, 4)           \
    X(F16, 1, 1, 2)           \
    X(Q4_0, 2, 32, 18)        \
    X(Q4_1, 3, 32, 20)        \
    X(Q5_0, 6, 32, 22)        \
    X(Q5_1, 7, 32, 24)        \
    X(Q8_0, 8, 32, 34)        \
    X(Q2_K, 10, QK_K, 84)     \
    X(Q3_K, 11, QK_K, 110)    \
    X(Q4_K, 12, QK_K, 144)    \
    X(Q5_K, 13, QK_K, 176)    \
    X(Q6_K, 14, QK_K, 210)    \
    X(IQ4_NL, 20, 32, 18)     \
    X(BF16, 30, 1, 2)

#define GGML_X_ID(name, id, blck, bytes) GGML_TYPE_##name = id,
#define GGML_X_BLCK(name, id, blck, bytes) GGML_BLCK_##name = blck,
#define GGML_X_BYTES(name, id, blck, bytes) GGML_BYTES_##name = bytes,
#define GGML_X_INFO(name, id, blck, bytes) {id, blck, bytes},
enum { GGML_TYPE_LIST(GGML_X_ID) };
enum { GGML_TYPE_LIST(GGML_X_BLCK) };
enum { GGML_TYPE_LIST(GGML_X_BYTES) };

typedef struct {
    int id;
    int blck;  /* values per block */
    int bytes; /* bytes per block */
} ggml_type_info;

static const ggml_type_info GGML_TYPES[] = {GGML_TYPE_LIST(GGML_X_INFO)};

#undef GGML_X_ID
#undef GGML_X_BLCK
#undef GGML_X_BYTES
#undef GGML_X_INFO

/* The block geometry of a type id, or NULL for one this project does not know. */
static inline const ggml_type_info *ggml_type_of(int id) {
    for (size_t i = 0; i < sizeof(GGML_TYPES) / sizeof(GGML_TYPES[0]); i++)
        if (GGML_TYPES[i].id == id) return &GGML_TYPES[i];
    return NULL;
}

/* ---- float bits ---- */

static inline float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* IEEE half to float, exact for every input including NaN payloads (numpy keeps signalling NaNs
 * signalling, hardware converters quiet them; bit equality with numpy needs the integer route). */
static inline __attribute__((always_inline)) float fp16_to_fp32(uint16_t h) {
    uint32_t sign = ((uint32_t)h & 0x8000u) << 16;
    uint32_t o = ((uint32_t)h & 0x7fffu) << 13;
    uint32_t e = o & 0x0f800000u;
    uint32_t r;
    if (e == 0x0f800000u) {
        r = o + 0x70000000u; /* inf / NaN: exponent 31 -> 255 */
    } else if (e == 0) {
        /* zero / subnormal: (1.m * 2^-14) - 2^-14 == m * 2^-24, exactly */
        r = f32_bits(bits_f32(o + 0x38800000u) - 6.103515625e-05f);
    } else {
        r = o + 0x38000000u; /* rebias 15 -> 127 */
    }
    return bits_f32(r | sign);
}

/* Float to IEEE half, round to nearest even (what ggml and NumPy do); NaN becomes 0x7E00. */
static inline uint16_t fp32_to_fp16(float f) {
    const uint32_t x = f32_bits(f);
    const uint32_t sign = (x >> 16) & 0x8000u;
    const uint32_t ax = x & 0x7FFFFFFFu;
    if (ax >= 0x7F800000u) return (uint16_t)(sign | (ax > 0x7F800000u ? 0x7E00u : 0x7C00u));
    if (ax >= 0x477FF000u) return (uint16_t)(sign | 0x7C00u); /* >= 65520 rounds to infinity */
    if (ax < 0x38800000u) {                                   /* fp16 subnormal or zero */
        float t = bits_f32(ax) * 16777216.0f; /* exact: a power-of-two scaling, result < 1024 */
        t = (t + 12582912.0f) - 12582912.0f;
        return (uint16_t)(sign | (uint32_t)t);
    }
    uint32_t h = ((((ax >> 23) - 112u) << 10)) | ((ax & 0x7FFFFFu) >> 13);
    const uint32_t rem = ax & 0x1FFFu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++; /* a carry moves into the exponent */
    return (uint16_t)(sign | h);
}

static inline __attribute__((always_inline)) float bf16_to_fp32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

#endif
