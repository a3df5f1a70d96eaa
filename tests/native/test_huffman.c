/* The packed-file Huffman decoder against an independent encoder, without Python: random complete
 * code tables (one symbol up to 256, lengths up to the 12-bit limit), random symbol counts split
 * into the four streams as the format does, decoded by every decode_field build this CPU runs;
 * truncated and padded streams must be refused; over-subscribed and incomplete tables too. Also
 * CRC-32C: the hardware path (SSE4.2 / ARMv8 CRC) against the table one and the check value.
 * usage: test_huffman     exit 0: all passed, 1: a failure
 */
/* what Python.h turns on for the extensions: POSIX (clock_gettime, pwrite) and the BSD extras on macOS */
#define _GNU_SOURCE 1
#define _DARWIN_C_SOURCE 1
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "simd.h"
#include "huffman_common.h"
#include "huffman_crc32c.h"
#include "huffman_decode.h"

#define RNG_SEED 0x2545F491u
#include "driver.h"

/* A complete prefix code on nsym random symbols: split random leaves until there are nsym. */
static void random_lengths(int nsym, uint8_t lengths[256]) {
    uint8_t depth[256];
    int n = 1;
    depth[0] = 0;
    memset(lengths, 0, 256);
    if (nsym == 1) {
        lengths[rnd() % 256] = 1;
        return;
    }
    while (n < nsym) {
        const int i = (int)(rnd() % (uint32_t)n);
        if (depth[i] >= MAX_BITS) continue;
        depth[i]++;
        depth[n++] = depth[i];
    }
    uint8_t perm[256];
    for (int s = 0; s < 256; s++) perm[s] = (uint8_t)s;
    for (int s = 255; s > 0; s--) {
        const int j = (int)(rnd() % (uint32_t)(s + 1));
        const uint8_t t = perm[s];
        perm[s] = perm[j];
        perm[j] = t;
    }
    for (int i = 0; i < n; i++) lengths[perm[i]] = depth[i];
}

typedef struct {
    uint8_t *buf;
    size_t nbits;
} bitbuf;

/* LSB-first bit stream; each code goes out most significant bit first (canonical order). */
static void put_code(bitbuf *b, unsigned code, unsigned len) {
    for (unsigned i = 0; i < len; i++) {
        const unsigned bit = (code >> (len - 1 - i)) & 1u;
        if (bit) b->buf[b->nbits >> 3] |= (uint8_t)(1u << (b->nbits & 7));
        b->nbits++;
    }
}

typedef const char *(*field_fn)(const uint8_t *, size_t, const size_t *, const size_t *, uint8_t *, size_t,
                                 const uint32_t *);

static void roundtrip(int trial, field_fn fn, const char *name) {
    uint8_t lengths[256];
    uint16_t codes[256];
    int used;
    const int nsym = trial % 7 == 0 ? 1 : 2 + (int)(rnd() % (trial % 3 == 0 ? 255u : 20u));
    random_lengths(nsym, lengths);
    const char *err = canonical_codes(lengths, codes, &used);
    if (err) {
        FAIL("trial %d: canonical_codes: %s", trial, err);
        return;
    }
    uint8_t alphabet[256];
    int na = 0;
    for (int s = 0; s < 256; s++)
        if (lengths[s]) alphabet[na++] = (uint8_t)s;
    const size_t n = trial % 11 == 0 ? rnd() % 8 : rnd() % 4000;
    uint8_t *sym = malloc(n + 1), *out = malloc(n + 8);
    for (size_t i = 0; i < n; i++) sym[i] = alphabet[rnd() % (uint32_t)na];
    /* streams: the decoder's split of the symbols, laid out one after the other */
    uint8_t *payload = calloc(n * 2 + 64, 1);
    size_t starts[N_STREAMS], lens[N_STREAMS], at = 0;
    for (int k = 0; k < N_STREAMS; k++) {
        const size_t a = n * (size_t)k / N_STREAMS, e = n * (size_t)(k + 1) / N_STREAMS;
        bitbuf b = {payload + at, 0};
        for (size_t i = a; i < e; i++) put_code(&b, codes[sym[i]], lengths[sym[i]]);
        starts[k] = at;
        lens[k] = (b.nbits + 7) / 8;
        at += lens[k];
    }
    uint32_t *table = malloc(TABLE_SIZE * sizeof(uint32_t));
    if ((err = build_decode_table(lengths, table)) != NULL) FAIL("trial %d: build_decode_table: %s", trial, err);
    memset(out, 0xAA, n + 8);
    err = fn(payload, at, starts, lens, out, n, table);
    if (err) FAIL("%s trial %d (%d symbols, n %zu): %s", name, trial, nsym, n, err);
    else if (memcmp(out, sym, n) != 0) FAIL("%s trial %d (%d symbols, n %zu): wrong symbols", name, trial, nsym, n);
    for (size_t i = n; i < n + 8; i++)
        if (out[i] != 0xAA) {
            FAIL("%s trial %d: wrote past the output", name, trial);
            break;
        }
    /* a stream one byte short (its last byte holds code bits), and one with a spare byte */
    for (int k = 0; k < N_STREAMS; k++) {
        if (lens[k] == 0) continue;
        size_t l2[N_STREAMS];
        memcpy(l2, lens, sizeof l2);
        l2[k] = lens[k] - 1;
        if (fn(payload, at, starts, l2, out, n, table) == NULL) FAIL("%s trial %d: short stream %d accepted", name, trial, k);
        l2[k] = lens[k] + 1;
        if (k == N_STREAMS - 1 && fn(payload, at + 1, starts, l2, out, n, table) == NULL)
            FAIL("%s trial %d: padded stream accepted", name, trial);
        break;
    }
    free(sym);
    free(out);
    free(payload);
    free(table);
}

static void bad_tables(void) {
    uint8_t lengths[256] = {0};
    uint32_t *table = malloc(TABLE_SIZE * sizeof(uint32_t));
    lengths[1] = lengths[2] = lengths[3] = 1; /* three one-bit codes */
    if (!build_decode_table(lengths, table)) FAIL("over-subscribed table accepted");
    memset(lengths, 0, 256);
    lengths[1] = 1;
    lengths[2] = 2; /* half the code space is unused */
    if (!build_decode_table(lengths, table)) FAIL("incomplete table accepted");
    memset(lengths, 0, 256);
    lengths[7] = 13;
    lengths[8] = 1;
    if (!build_decode_table(lengths, table)) FAIL("length past the limit accepted");
    memset(lengths, 0, 256);
    if (!build_decode_table(lengths, table)) FAIL("empty table accepted");
    free(table);
}

static void crc_tests(void) {
    const uint8_t check[] = "123456789";
    if (crc32c(0, check, 9) != 0xE3069283u) FAIL("crc32c check value: %08x", crc32c(0, check, 9));
    if (crc32c_sw(0, check, 9) != 0xE3069283u) FAIL("crc32c_sw check value");
    uint8_t *buf = malloc(70000);
    for (size_t i = 0; i < 70000; i++) buf[i] = (uint8_t)rnd();
    for (int t = 0; t < 200; t++) {
        const size_t off = rnd() % 64, len = t < 100 ? rnd() % 300 : rnd() % 60000;
        const uint32_t seed = rnd();
        if (crc32c(seed, buf + off, len) != crc32c_sw(seed, buf + off, len))
            FAIL("crc32c differs from the table version at off %zu len %zu", off, len);
    }
    free(buf);
}

int main(void) {
    simd_init();
    crc_init();
    rev_init();
    dispatch_init();
    printf("hardware crc32c: %s\n", have_hw_crc ? "yes" : "no");
    crc_tests();
    bad_tables();
    for (int trial = 0; trial < 400; trial++) {
        const uint32_t saved = rng_state;
        roundtrip(trial, decode_field_plain, "plain");
        if (decode_field != decode_field_plain) {
            rng_state = saved;
            roundtrip(trial, decode_field, "dispatched");
        }
    }
    if (failures) {
        fprintf(stderr, "%d failures\n", failures);
        return 1;
    }
    printf("huffman: all passed\n");
    return 0;
}
