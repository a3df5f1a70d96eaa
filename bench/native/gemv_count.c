/* One GEMV (batch 1) of a random matrix with one kernel level, for counting instructions under QEMU
 * (bench/bench_arm.py). The activation row is quantized once; the rows are then multiplied `reps` times, by
 * gemv_rows as kernels.c does at batch 1 (the level's multi-row kernel where the type has one).
 * usage: gemv_count TYPE_ID LEVEL ROWS COLS REPS
 */
#define _GNU_SOURCE 1
#define _DARWIN_C_SOURCE 1
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels_table.h"

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s TYPE_ID LEVEL ROWS COLS REPS\n", argv[0]);
        return 2;
    }
    simd_init();
    const int id = atoi(argv[1]), level = atoi(argv[2]);
    const size_t rows = (size_t)atol(argv[3]), cols = (size_t)atol(argv[4]);
    const int reps = atoi(argv[5]);
    const tinfo *t = NULL;
    for (size_t i = 0; i < sizeof(TYPES) / sizeof(TYPES[0]); i++)
        if (TYPES[i].id == id) t = &TYPES[i];
    if (!t || t->act == ACT_F32 || !simd_supported(level) || cols % QK_K) return 2;
    const size_t nb = cols / (size_t)t->blck, rb = nb * (size_t)t->bytes;
    uint8_t *w = malloc(rows * rb);
    uint32_t s = 12345;
    for (size_t i = 0; i < rows * rb; i++) w[i] = (uint8_t)((s = s * 1103515245u + 12345u) >> 24);
    const uint16_t h = fp32_to_fp16(0.01f); /* finite scales everywhere: the fp16 fields of every type */
    static const int offs[][2] = {{0, -1}, {0, 2}, {0, -1}, {0, 2}, {0, -1}, {80, 82}, {108, -1}, {0, 2}, {0, 2}, {208, -1}};
    const int *off = offs[t - TYPES - 3];
    for (size_t b = 0; b < rows * nb; b++)
        for (int k = 0; k < 2; k++)
            if (off[k] >= 0) memcpy(w + b * (size_t)t->bytes + off[k], &h, 2);
    float *x = malloc(cols * 4), *y = malloc(rows * 4);
    for (size_t i = 0; i < cols; i++) x[i] = (float)((int)((s = s * 1103515245u + 12345u) >> 25) - 64) / 16.0f;
    int8_t *q = aligned_alloc(64, cols + 64);
    float *d = aligned_alloc(64, cols / 8 + 64);
    uint8_t *extra = aligned_alloc(64, cols / 4 + 64);
    act_row a = {0};
    act_quant_row(t->act, level, x, cols, q, d, extra);
    a.q = q;
    a.d = d;
    a.s = (const float *)extra;
    a.bs = (const int16_t *)extra;
    for (int r = 0; r < reps; r++) gemv_rows(t, level, nb, w, rb, rows, &a, y);
    double sum = 0;
    for (size_t o = 0; o < rows; o++) sum += y[o];
    printf("%g\n", sum);
    return 0;
}
