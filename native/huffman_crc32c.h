/* CRC-32C (Castagnoli), the packed file's checksum: slicing-by-8 in software, the CPU's CRC
 * instruction where simd.h / the compiler say it exists. Included by huffman.c only.
 */
#ifndef GGUF_HUFFMAN_CRC32C_H
#define GGUF_HUFFMAN_CRC32C_H

#include "huffman_common.h"
#include "simd.h"

#if defined(SIMD_ON_X86)
#include <immintrin.h>
#endif
#if defined(__aarch64__) && defined(__ARM_FEATURE_CRC32)
#include <arm_acle.h>
#define HUF_ARM_CRC 1
#endif

/* ------------------------------------------------------------------ CRC-32C (Castagnoli) */

static uint32_t crc_table[8][256];
static int have_hw_crc; /* CRC-32C instruction: SSE4.2 on x86-64, ARMv8 CRC on arm64 */

#define CRC_LANE 4096   /* bytes per lane when three lanes run side by side */
static uint32_t crc_shift1[4][256], crc_shift2[4][256]; /* raw register after CRC_LANE / 2*CRC_LANE zeros */

static uint32_t gf2_times(const uint32_t *mat, uint32_t vec) {
    uint32_t sum = 0;
    for (int i = 0; vec; i++, vec >>= 1)
        if (vec & 1) sum ^= mat[i];
    return sum;
}

static void gf2_square(uint32_t *sq, const uint32_t *mat) {
    for (int i = 0; i < 32; i++) sq[i] = gf2_times(mat, mat[i]);
}

/* Tables that run a raw (uninverted) CRC register through n zero bytes, n a power of two. */
static void crc_shift_tables(uint32_t tab[4][256], unsigned log2_bytes) {
    uint32_t a[32], b[32];
    a[0] = 0x82F63B78u; /* one zero bit: shift right, fold the polynomial in when bit 0 was set */
    for (int i = 1; i < 32; i++) a[i] = 1u << (i - 1);
    for (unsigned k = 0; k < log2_bytes + 3; k++) {
        gf2_square(b, a);
        memcpy(a, b, sizeof a);
    }
    for (int k = 0; k < 4; k++)
        for (uint32_t v = 0; v < 256; v++) tab[k][v] = gf2_times(a, v << (8 * k));
}

static inline uint32_t crc_shift(const uint32_t tab[4][256], uint32_t c) {
    return tab[0][c & 0xff] ^ tab[1][(c >> 8) & 0xff] ^ tab[2][(c >> 16) & 0xff] ^ tab[3][c >> 24];
}

/* Tables; call after simd_init. */
static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
    crc_shift_tables(crc_shift1, 12);
    crc_shift_tables(crc_shift2, 13);
#if defined(SIMD_ON_X86)
    have_hw_crc = simd_has(CPU_SSE42);
#elif defined(HUF_ARM_CRC)
    have_hw_crc = 1;
#endif
}

static uint32_t crc32c_sw(uint32_t crc, const uint8_t *p, size_t n) {
    crc = ~crc;
    while (n >= 8) {
        uint32_t lo = crc ^ load32le(p), hi = load32le(p + 4);
        crc = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^ crc_table[5][(lo >> 16) & 0xff] ^
              crc_table[4][lo >> 24] ^ crc_table[3][hi & 0xff] ^ crc_table[2][(hi >> 8) & 0xff] ^
              crc_table[1][(hi >> 16) & 0xff] ^ crc_table[0][hi >> 24];
        p += 8; n -= 8;
    }
    while (n--) crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xff];
    return ~crc;
}

#if defined(SIMD_ON_X86)
__attribute__((target("sse4.2")))
static uint32_t crc32c_hw(uint32_t crc, const uint8_t *p, size_t n) {
    uint64_t c = ~crc & 0xffffffffu;
    /* Three independent lanes hide the instruction's latency; the earlier lanes' registers are
     * then run through the later lanes' length of zeros and folded in. */
    while (n >= 3 * CRC_LANE) {
        uint64_t c1 = 0, c2 = 0;
        for (size_t i = 0; i < CRC_LANE; i += 8) {
            c = _mm_crc32_u64(c, load64le(p + i));
            c1 = _mm_crc32_u64(c1, load64le(p + CRC_LANE + i));
            c2 = _mm_crc32_u64(c2, load64le(p + 2 * CRC_LANE + i));
        }
        c = crc_shift(crc_shift2, (uint32_t)c) ^ crc_shift(crc_shift1, (uint32_t)c1) ^ (uint32_t)c2;
        p += 3 * CRC_LANE;
        n -= 3 * CRC_LANE;
    }
    while (n >= 8) { c = _mm_crc32_u64(c, load64le(p)); p += 8; n -= 8; }
    while (n--) c = _mm_crc32_u8((uint32_t)c, *p++);
    return ~(uint32_t)c;
}
#elif defined(HUF_ARM_CRC)
static uint32_t crc32c_hw(uint32_t crc, const uint8_t *p, size_t n) {
    uint32_t c = ~crc;
    while (n >= 8) { c = __crc32cd(c, load64le(p)); p += 8; n -= 8; }
    while (n--) c = __crc32cb(c, *p++);
    return ~c;
}
#endif

static uint32_t crc32c(uint32_t crc, const uint8_t *p, size_t n) {
#if defined(SIMD_ON_X86) || defined(HUF_ARM_CRC)
    if (have_hw_crc) return crc32c_hw(crc, p, n);
#endif
    return crc32c_sw(crc, p, n);
}

#endif
