/* The C port of ggml's quantizers (kquant_ggml.h) against golden_kquant.bin, blocks the NumPy port wrote
 * (tests/native/make_golden_kquant.py): byte for byte, every type, with and without an importance matrix.
 * The arithmetic is plain float32 in a fixed order, so every architecture must give the same bytes.
 * usage: test_kquant GOLDEN     exit 0: all passed, 1: a failure
 */
#define _GNU_SOURCE 1
#define _DARWIN_C_SOURCE 1
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__clang__)
#pragma clang fp contract(off)
#endif

#include "kquant_common.h"
#include "kquant_ggml.h"

#include "driver.h"

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s GOLDEN\n", argv[0]);
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    if (!f) {
        perror(argv[1]);
        return 1;
    }
    if (rd_u32(f) != 0x514B4747u) { /* "GGKQ" */
        fprintf(stderr, "%s: not a golden file\n", argv[1]);
        return 1;
    }
    const size_t rows = rd_u32(f), cols = rd_u32(f);
    if (rows > 64 || cols > 65536 || cols % 256) {
        fprintf(stderr, "bad header\n");
        return 1;
    }
    float *x = malloc(rows * cols * 4), *im = malloc(cols * 4);
    if (fread(x, 4, rows * cols, f) != rows * cols || fread(im, 4, cols, f) != cols) {
        fprintf(stderr, "golden file truncated\n");
        return 1;
    }
    const uint32_t count = rd_u32(f);
    for (uint32_t r = 0; r < count; r++) {
        const int type = (int)rd_u32(f), has_im = (int)rd_u32(f);
        const size_t nbytes = rd_u32(f);
        const ggml_type_info *t = kq_info(type);
        if (!t || nbytes != rows * cols / (size_t)t->blck * (size_t)t->bytes) {
            fprintf(stderr, "record %u: bad header\n", r);
            return 1;
        }
        uint8_t *want = malloc(nbytes), *got = malloc(nbytes);
        if (fread(want, 1, nbytes, f) != nbytes) {
            fprintf(stderr, "golden file truncated\n");
            return 1;
        }
        const size_t rb = nbytes / rows;
        for (size_t i = 0; i < rows; i++) g_row(type, x + i * cols, has_im ? im : NULL, got + i * rb, (int64_t)cols);
        for (size_t i = 0; i < nbytes; i++)
            if (got[i] != want[i]) {
                fprintf(stderr, "FAIL: type %d imatrix %d: first difference at byte %zu (row %zu)\n", type, has_im, i,
                        i / rb);
                failures++;
                break;
            }
        free(want);
        free(got);
    }
    fclose(f);
    free(x);
    free(im);
    if (failures) return 1;
    printf("kquant: %u records byte-identical\n", count);
    return 0;
}
