/* Shared pieces of the quantizers: the types they write and block packing.
 *
 * Block layouts are ggml's (ggml-common.h); packing takes plain per-block numbers (fp16 bits,
 * integer codes, unsigned levels) so the ggml port and our search write bytes the same way.
 */
#ifndef KQUANT_COMMON_H
#define KQUANT_COMMON_H

#include <stdint.h>
#include <string.h>

#include "ggml_common.h"

/* The types the quantizers write; block geometry comes from ggml_common.h. */
static const int KQ_SUPPORTED[] = {
    GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q5_0, GGML_TYPE_Q5_1, GGML_TYPE_Q8_0,   GGML_TYPE_Q2_K,
    GGML_TYPE_Q3_K, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K, GGML_TYPE_IQ4_NL,
};

static const ggml_type_info *kq_info(int type) {
    for (size_t i = 0; i < sizeof(KQ_SUPPORTED) / sizeof(KQ_SUPPORTED[0]); ++i)
        if (KQ_SUPPORTED[i] == type) return ggml_type_of(type);
    return NULL;
}

static const int8_t KQ_IQ4NL[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

/* ---- packing: one block from its numbers ---- */

static inline void kq_put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v & 0xFF); p[1] = (uint8_t)(v >> 8); }

static void kq_nibbles32(uint8_t *qs, const uint8_t *L) {
    for (int j = 0; j < 16; ++j) qs[j] = (uint8_t)((L[j] & 0x0F) | ((L[j + 16] & 0x0F) << 4));
}

static void kq_qh32(uint8_t *qh, const uint8_t *L) {
    uint32_t h = 0;
    for (int j = 0; j < 32; ++j) h |= (uint32_t)((L[j] >> 4) & 1u) << j;
    for (int b = 0; b < 4; ++b) qh[b] = (uint8_t)(h >> (8 * b));
}

static void kq_pack2bit(uint8_t *qs, const uint8_t *L) {
    for (int h = 0; h < 2; ++h)
        for (int l = 0; l < 32; ++l) {
            const uint8_t *p = L + 128 * h + l;
            qs[32 * h + l] = (uint8_t)((p[0] & 3) | ((p[32] & 3) << 2) | ((p[64] & 3) << 4) | ((p[96] & 3) << 6));
        }
}

static void kq_pack_k4_scales(uint8_t *s, const uint8_t *sc, const uint8_t *mn) {
    for (int j = 0; j < 4; ++j) {
        s[j] = (uint8_t)((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
        s[j + 4] = (uint8_t)((mn[j] & 63) | ((mn[j + 4] >> 4) << 6));
        s[j + 8] = (uint8_t)((sc[j + 4] & 0x0F) | ((mn[j + 4] & 0x0F) << 4));
    }
}

/* d, dm: fp16 bits of the (super-)scale and of the min / min scale. sc, mn: codes as stored
 * (Q3_K: 0..63 = scale + 32; Q6_K: int8 bit patterns). L: stored unsigned levels (Q8_0: int8
 * bit patterns). */
static void kq_pack(int type, uint8_t *dst, uint16_t d, uint16_t dm, const uint8_t *sc, const uint8_t *mn,
                    const uint8_t *L) {
    switch (type) {
    case GGML_TYPE_Q8_0:
        kq_put16(dst, d);
        memcpy(dst + 2, L, 32);
        break;
    case GGML_TYPE_Q4_0:
    case GGML_TYPE_IQ4_NL:
        kq_put16(dst, d);
        kq_nibbles32(dst + 2, L);
        break;
    case GGML_TYPE_Q4_1:
        kq_put16(dst, d);
        kq_put16(dst + 2, dm);
        kq_nibbles32(dst + 4, L);
        break;
    case GGML_TYPE_Q5_0:
        kq_put16(dst, d);
        kq_qh32(dst + 2, L);
        kq_nibbles32(dst + 6, L);
        break;
    case GGML_TYPE_Q5_1:
        kq_put16(dst, d);
        kq_put16(dst + 2, dm);
        kq_qh32(dst + 4, L);
        kq_nibbles32(dst + 8, L);
        break;
    case GGML_TYPE_Q2_K:
        for (int j = 0; j < 16; ++j) dst[j] = (uint8_t)(sc[j] | (mn[j] << 4));
        kq_pack2bit(dst + 16, L);
        kq_put16(dst + 80, d);
        kq_put16(dst + 82, dm);
        break;
    case GGML_TYPE_Q3_K: {
        for (int m = 0; m < 32; ++m) { /* bit b of hmask[m]: the high bit of level 32*b + m */
            unsigned h = 0;
            for (int b = 0; b < 8; ++b) h |= ((L[32 * b + m] >> 2) & 1u) << b;
            dst[m] = (uint8_t)h;
        }
        kq_pack2bit(dst + 32, L); /* takes the low two bits */
        uint8_t *s = dst + 96;
        memset(s, 0, 12);
        for (int j = 0; j < 16; ++j) {
            const uint8_t c = sc[j];
            if (j < 8) s[j] = c & 0x0F;
            else s[j - 8] |= (uint8_t)((c & 0x0F) << 4);
            s[8 + j % 4] |= (uint8_t)((c >> 4) << (2 * (j / 4)));
        }
        kq_put16(dst + 108, d);
        break;
    }
    case GGML_TYPE_Q4_K:
    case GGML_TYPE_Q5_K: {
        kq_put16(dst, d);
        kq_put16(dst + 2, dm);
        kq_pack_k4_scales(dst + 4, sc, mn);
        uint8_t *qs = dst + (type == GGML_TYPE_Q4_K ? 16 : 48);
        for (int c = 0; c < 4; ++c)
            for (int l = 0; l < 32; ++l)
                qs[32 * c + l] = (uint8_t)((L[64 * c + l] & 0x0F) | ((L[64 * c + 32 + l] & 0x0F) << 4));
        if (type == GGML_TYPE_Q5_K) {
            uint8_t *qh = dst + 16;
            for (int m = 0; m < 32; ++m) {
                unsigned h = 0;
                for (int b = 0; b < 8; ++b) h |= ((L[32 * b + m] >> 4) & 1u) << b;
                qh[m] = (uint8_t)h;
            }
        }
        break;
    }
    case GGML_TYPE_Q6_K: {
        uint8_t *ql = dst, *qh = dst + 128;
        for (int h = 0; h < 2; ++h) {
            const uint8_t *p = L + 128 * h;
            for (int l = 0; l < 32; ++l) {
                ql[64 * h + l] = (uint8_t)((p[l] & 0x0F) | ((p[l + 64] & 0x0F) << 4));
                ql[64 * h + 32 + l] = (uint8_t)((p[l + 32] & 0x0F) | ((p[l + 96] & 0x0F) << 4));
                qh[32 * h + l] = (uint8_t)((p[l] >> 4) | ((p[l + 32] >> 4) << 2) | ((p[l + 64] >> 4) << 4) |
                                           ((p[l + 96] >> 4) << 6));
            }
        }
        memcpy(dst + 192, sc, 16);
        kq_put16(dst + 208, d);
        break;
    }
    default:
        break;
    }
}

#endif
