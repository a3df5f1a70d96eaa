/* What the C test drivers share: counting failures, a seeded xorshift32, little-endian reads of golden files.
 * A driver defines RNG_SEED before including this to fix its own random stream. */
#ifndef GGUF_TEST_DRIVER_H
#define GGUF_TEST_DRIVER_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static int failures;

#define FAIL(...)                        \
    do {                                 \
        fprintf(stderr, "FAIL: ");       \
        fprintf(stderr, __VA_ARGS__);    \
        fprintf(stderr, "\n");           \
        if (++failures > 20) exit(1);    \
    } while (0)

#ifndef RNG_SEED
#define RNG_SEED 0x9E3779B9u
#endif
static uint32_t rng_state = RNG_SEED;

static inline uint32_t rnd(void) { /* xorshift32 */
    uint32_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return rng_state = x;
}

static inline uint32_t rd_u32(FILE *f) {
    uint8_t b[4];
    if (fread(b, 1, 4, f) != 4) {
        fprintf(stderr, "golden file truncated\n");
        exit(1);
    }
    return (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
}

#endif
