/* The packed-file decoder's inner loop alone: ns per symbol of decode_field on a synthetic code, best of 15.
 *
 * Symbols follow a discretised Gaussian over the 256 byte values (like int8 weights) of the given width;
 * code lengths are about -log2 of their probabilities, fixed up into a complete code of at most 12 bits,
 * and the symbols are drawn from the code's own distribution (so every table index is equally likely, as
 * in real streams). Four streams, as the format splits a group. Checks the output against the symbols.
 *
 *   cc -O3 -std=c11 -Inative bench/native/huffman_kernel.c -o /tmp/huffman_kernel -lm -lpthread
 *   /tmp/huffman_kernel [sigma]      (sigma 100: about 7.2 bits a symbol, like Q8_0 weights; 20: about 6.1)
 */
#define _GNU_SOURCE 1
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "simd.h"
#include "huffman_common.h"
#include "huffman_crc32c.h"
#include "huffman_decode.h"

static uint32_t rng_state = 12345;
static uint32_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void put_code(uint8_t *buf, size_t *nbits, unsigned code, unsigned len) {
    for (unsigned i = 0; i < len; i++) {
        if ((code >> (len - 1 - i)) & 1u) buf[*nbits >> 3] |= (uint8_t)(1u << (*nbits & 7));
        (*nbits)++;
    }
}

/* Lengths near -log2(p), then lengthen the rarest or shorten the likeliest until the code is complete. */
static void gaussian_lengths(double sigma, uint8_t lengths[256]) {
    double p[256], tot = 0;
    for (int s = 0; s < 256; s++) {
        const double x = (s < 128 ? s : s - 256) / sigma;
        p[s] = exp(-x * x / 2) + 1e-4;
        tot += p[s];
    }
    for (int s = 0; s < 256; s++) {
        int l = 1;
        while ((double)(1u << l) * p[s] / tot < 1.0 && l < MAX_BITS) l++;
        lengths[s] = (uint8_t)l;
    }
    for (;;) {
        unsigned k = 0;
        for (int s = 0; s < 256; s++) k += TABLE_SIZE >> lengths[s];
        if (k == TABLE_SIZE) return;
        int best = -1;
        for (int s = 0; s < 256; s++) {
            if (k > TABLE_SIZE ? lengths[s] < MAX_BITS && (best < 0 || p[s] < p[best])
                               : lengths[s] > 1 && (TABLE_SIZE >> lengths[s]) <= TABLE_SIZE - k &&
                                     (best < 0 || p[s] > p[best]))
                best = s;
        }
        if (best < 0) return;
        lengths[best] = (uint8_t)(lengths[best] + (k > TABLE_SIZE ? 1 : -1));
    }
}

int main(int argc, char **argv) {
    const double sigma = argc > 1 ? atof(argv[1]) : 100;
    uint8_t lengths[256];
    uint16_t codes[256];
    int used;
    gaussian_lengths(sigma, lengths);
    if (canonical_codes(lengths, codes, &used)) { puts("could not make a complete code"); return 1; }
    const size_t n = 4u << 20;
    uint8_t *sym = malloc(n), *out = malloc(n + 64), *payload = calloc(2 * n + 64, 1);
    double cum[257];
    cum[0] = 0;
    for (int s = 0; s < 256; s++) cum[s + 1] = cum[s] + (double)(TABLE_SIZE >> lengths[s]) / TABLE_SIZE;
    double bits = 0;
    for (size_t i = 0; i < n; i++) {
        const double u = rnd() / 4294967296.0;
        int s = 0;
        while (s < 255 && cum[s + 1] <= u) s++;
        sym[i] = (uint8_t)s;
        bits += lengths[s];
    }
    size_t starts[N_STREAMS], lens[N_STREAMS], at = 0;
    for (int k = 0; k < N_STREAMS; k++) {
        size_t nb = 0;
        for (size_t i = n * k / N_STREAMS; i < n * (k + 1) / N_STREAMS; i++)
            put_code(payload + at, &nb, codes[sym[i]], lengths[sym[i]]);
        starts[k] = at;
        lens[k] = (nb + 7) / 8;
        at += lens[k];
    }
    rev_init();
    dispatch_init();
    uint32_t *table = malloc(TABLE_SIZE * sizeof(uint32_t));
    build_decode_table(lengths, table);
    double best = 1e9;
    for (int r = 0; r < 15; r++) {
        double t = cpu_now();
        const char *err = decode_field(payload, at, starts, lens, out, n, table);
        t = cpu_now() - t;
        if (err || memcmp(out, sym, n)) { printf("wrong output%s%s\n", err ? ": " : "", err ? err : ""); return 1; }
        if (t < best) best = t;
    }
    printf("sigma %.0f: %.2f bits a symbol, %.3f ns a symbol, %.2f GB/s\n", sigma, bits / n, best * 1e9 / n,
           n / best / 1e9);
    return 0;
}
