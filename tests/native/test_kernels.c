/* Every dot kernel of every level this CPU has, without Python:
 *   1. on random blocks with edge cases mixed in (zero, largest, subnormal and non-finite fp16 scales,
 *      all-zero and all-ones codes, zero and non-finite activation blocks) and row lengths of 1 to 9
 *      blocks, against the scalar kernels: the NEON levels bit for bit, except the kernels that sum in
 *      float vectors across blocks (reordered()) and the multi-row ones, held to the bound of 2. (the x86
 *      levels sum in another order too; pytest's tests/test_kernels.py bounds them);
 *   2. on golden_kernels.bin (tests/native/make_golden.py: gguf.quants dequantization and a float64
 *      matmul) with activations on the int8 grid, within 1e-5 * (|W| @ |x|), batch-1 records through
 *      the multi-row kernels where a level has them.
 * usage: test_kernels GOLDEN [--expect-best LEVEL] [--force LEVEL]    exit 0: all passed, 1: a failure
 *   --expect-best: fail unless the CPU probe picks LEVEL;  --force: run LEVEL even if the probe says
 *   the CPU lacks it (on a core without SDOT the dotprod kernels must then die with SIGILL).
 */
/* what Python.h turns on for the extensions: POSIX (clock_gettime, pwrite) and the BSD extras on macOS */
#define _GNU_SOURCE 1
#define _DARWIN_C_SOURCE 1
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels_table.h"

#define RNG_SEED 0x9E3779B9u
#include "driver.h"

static float rnd_normal(void) { /* sum of uniforms: bell-shaped enough for test data */
    float s = 0;
    for (int i = 0; i < 4; i++) s += (float)(rnd() >> 8) / 16777216.0f;
    return (s - 2.0f) * 1.7f;
}

static const int SCALE_OFF[][2] = {
    /* byte offsets of the fp16 scales in one block (-1: none), per TYPES order after the floats */
    {0, -1}, {0, 2}, {0, -1}, {0, 2}, {0, -1}, {80, 82}, {108, -1}, {0, 2}, {0, 2}, {208, -1},
};
static const uint16_t EDGE_SCALES[] = {0x0000, 0x8000, 0x0001, 0x03FF, 0x0400, 0x7BFF, 0xFBFF, 0x7C00, 0x7E00};

static int same_float(float a, float b) {
    uint32_t x, y;
    memcpy(&x, &a, 4);
    memcpy(&y, &b, 4);
    return x == y || (a != a && b != b);
}

typedef struct {
    int8_t *q;
    float *d;
    uint8_t *extra;
} act_buf;

/* Quantize nx rows of x (n values each) for `level` into act rows. */
static void make_acts(const tinfo *t, int level, const float *x, size_t n, int nx, act_buf *bufs, act_row *rows) {
    for (int k = 0; k < nx; k++) {
        memset(&rows[k], 0, sizeof rows[k]);
        if (t->act == ACT_F32) {
            rows[k].xf = x + (size_t)k * n;
            continue;
        }
        act_quant_row(t->act, level, x + (size_t)k * n, n, bufs[k].q, bufs[k].d, bufs[k].extra);
        rows[k].q = bufs[k].q;
        rows[k].d = bufs[k].d;
        rows[k].s = (const float *)bufs[k].extra;
        rows[k].bs = (const int16_t *)bufs[k].extra;
    }
}

static void alloc_acts(act_buf *bufs, size_t n) {
    for (int k = 0; k < NX_MAX; k++) {
        bufs[k].q = aligned_alloc(64, n + 64);
        bufs[k].d = aligned_alloc(64, (n / 32 + 1) * 4 + 64);
        bufs[k].extra = aligned_alloc(64, (n / 16 + 1) * 4 + 64);
    }
}

static void free_acts(act_buf *bufs) {
    for (int k = 0; k < NX_MAX; k++) {
        free(bufs[k].q);
        free(bufs[k].d);
        free(bufs[k].extra);
    }
}

static int is_neon(int level) { return level == SIMD_NEON || level == SIMD_NEON_DOTPROD; }

/* NEON kernels that sum the blocks of a row in float vectors and reduce once at its end, as the x86 ones do:
 * not the scalar order, so not bit-identical to it. */
static int reordered(int id) {
    return id == GGML_TYPE_Q4_0 || id == GGML_TYPE_Q4_1 || id == GGML_TYPE_Q5_0 || id == GGML_TYPE_Q5_1 ||
           id == GGML_TYPE_Q8_0 || id == GGML_TYPE_Q4_K || id == GGML_TYPE_Q5_K;
}

/* sum_j |W_j * x_j| over one row: W the scalar dequantization, x the activations as quantized (the int8 values
 * times their block scale), what both kernels multiply. */
static double row_magnitude(const tinfo *t, const uint8_t *w, size_t nb, const act_row *a) {
    const size_t n = nb * (size_t)t->blck, ablk = t->act == ACT_Q32 ? 32 : QK_K;
    float *wf = malloc(n * sizeof(float));
    t->deq[SIMD_SCALAR](w, wf, nb);
    double mag = 0;
    for (size_t j = 0; j < n; j++) mag += fabs((double)wf[j] * (double)a->q[j] * (double)a->d[j / ablk]);
    free(wf);
    return mag;
}

/* got from a reordered kernel against want from the scalar one, on the same int8 activations: the integer sums
 * agree exactly and only the float32 order of the scale products differs, so the bound tests/test_kernels.py
 * holds every level to against a float64 reference with x on the int8 grid, 1e-5 * (|W| @ |x|), holds here
 * (a wrong code, scale or offset is O(1) of it). A non-finite scalar result (non-finite scales or
 * activations) must stay non-finite: +-inf terms can meet in another order and give NaN. */
static int close_enough(float got, float want, double mag) {
    if (!isfinite(want)) return !isfinite(got);
    return fabs((double)got - (double)want) <= 1e-5 * mag + 1e-30;
}

/* 1. random blocks: every level against scalar */
static void random_tests(void) {
    const size_t ntypes = sizeof(TYPES) / sizeof(TYPES[0]);
    for (size_t ti = 0; ti < ntypes; ti++) {
        const tinfo *t = &TYPES[ti];
        const int quant = t->act != ACT_F32;
        for (int nb = 1; nb <= 9; nb++) {
            const size_t n = (size_t)nb * (size_t)t->blck * (quant ? 1 : 8) + (quant ? 0 : 3);
            const size_t row_bytes = quant ? (size_t)nb * (size_t)t->bytes : n * (size_t)t->bytes;
            for (int rep = 0; rep < 6; rep++) {
                uint8_t *w = malloc(row_bytes);
                float *x = malloc(NX_MAX * n * sizeof(float));
                for (size_t i = 0; i < row_bytes; i++) w[i] = (uint8_t)rnd();
                if (!quant) {
                    for (size_t i = 0; i < n; i++) {
                        const float v = rnd_normal();
                        if (t->id == GGML_TYPE_F32) memcpy(w + 4 * i, &v, 4);
                        else if (t->id == GGML_TYPE_F16) {
                            const uint16_t h = fp32_to_fp16(v);
                            memcpy(w + 2 * i, &h, 2);
                        } else {
                            const uint16_t h = (uint16_t)(f32_bits(v) >> 16);
                            memcpy(w + 2 * i, &h, 2);
                        }
                    }
                } else {
                    const int *off = SCALE_OFF[ti - 3];
                    for (int b = 0; b < nb; b++) {
                        uint8_t *blk = w + (size_t)b * (size_t)t->bytes;
                        if (rep == 1 && b == 0) memset(blk, 0xFF, (size_t)t->bytes); /* every code at its top */
                        if (rep == 2 && b == 0) memset(blk, 0x00, (size_t)t->bytes);
                        for (int s = 0; s < 2; s++) {
                            if (off[s] < 0) continue;
                            uint16_t h = fp32_to_fp16(rnd_normal() * 0.01f);
                            if (rnd() % 4 == 0)
                                h = EDGE_SCALES[rnd() % (rep >= 4 ? 9 : 7)]; /* non-finite ones in reps 4, 5 */
                            memcpy(blk + off[s], &h, 2);
                        }
                    }
                }
                for (size_t i = 0; i < NX_MAX * n; i++) x[i] = rnd_normal();
                if (rep == 3) memset(x, 0, n * sizeof(float)); /* an all-zero activation row */
                if (rep == 5) x[n / 2] = NAN;
                act_buf bufs[NX_MAX];
                alloc_acts(bufs, n);
                for (int nx = 1; nx <= NX_MAX; nx++) {
                    act_row rows[NX_MAX];
                    float want[NX_MAX], got[NX_MAX];
                    make_acts(t, SIMD_SCALAR, x, n, nx, bufs, rows);
                    t->dot[SIMD_SCALAR](quant ? (size_t)nb : n, w, rows, nx, want, 1);
                    for (int l = 1; l < SIMD_N_LEVELS; l++) {
                        if (!is_neon(l) || !simd_supported(l) || !t->dot[l]) continue;
                        make_acts(t, l, x, n, nx, bufs, rows);
                        t->dot[l](quant ? (size_t)nb : n, w, rows, nx, got, 1);
                        for (int k = 0; k < nx; k++) {
                            /* float weights: NEON sums in 8 lanes, scalar in one */
                            const int ok =
                                same_float(got[k], want[k]) ||
                                (!quant && fabsf(got[k] - want[k]) <= 1e-5f * (fabsf(want[k]) + 1.0f)) ||
                                (quant && reordered(t->id) &&
                                 close_enough(got[k], want[k], row_magnitude(t, w, (size_t)nb, &rows[k])));
                            if (!ok)
                                FAIL("type %d level %s nb %d rep %d nx %d row %d: %.9g, scalar %.9g", t->id,
                                     SIMD_LEVEL_NAMES[l], nb, rep, nx, k, (double)got[k], (double)want[k]);
                        }
                    }
                }
                free_acts(bufs);
                free(w);
                free(x);
            }
        }
    }
}

/* 1b. the multi-row (batch-1) kernels: 1 to 5 rows of random blocks against the scalar dot row by row */
static void gemv_tests(void) {
    const size_t ntypes = sizeof(TYPES) / sizeof(TYPES[0]);
    for (size_t ti = 3; ti < ntypes; ti++) {
        const tinfo *t = &TYPES[ti];
        for (int l = 1; l < SIMD_N_LEVELS; l++) {
            if (!t->gemv[l] || !simd_supported(l)) continue;
            for (int nb = 1; nb <= 9; nb++)
                for (size_t nr = 1; nr <= 5; nr++) {
                    const size_t n = (size_t)nb * (size_t)t->blck, rb = (size_t)nb * (size_t)t->bytes;
                    uint8_t *w = malloc(nr * rb);
                    float *x = malloc(n * sizeof(float));
                    for (size_t i = 0; i < nr * rb; i++) w[i] = (uint8_t)rnd();
                    const int *off = SCALE_OFF[ti - 3];
                    for (size_t b = 0; b < nr * (size_t)nb; b++)
                        for (int s = 0; s < 2; s++) {
                            if (off[s] < 0) continue;
                            const uint16_t h = rnd() % 8 ? fp32_to_fp16(rnd_normal() * 0.01f) : EDGE_SCALES[rnd() % 7];
                            memcpy(w + b * (size_t)t->bytes + off[s], &h, 2);
                        }
                    for (size_t i = 0; i < n; i++) x[i] = rnd_normal();
                    act_buf bufs[NX_MAX];
                    alloc_acts(bufs, n);
                    act_row a;
                    make_acts(t, l, x, n, 1, bufs, &a);
                    float got[5], want;
                    gemv_rows(t, l, (size_t)nb, w, rb, nr, &a, got);
                    for (size_t r = 0; r < nr; r++) {
                        t->dot[SIMD_SCALAR]((size_t)nb, w + r * rb, &a, 1, &want, 1);
                        if (!close_enough(got[r], want, row_magnitude(t, w + r * rb, (size_t)nb, &a)))
                            FAIL("gemv type %d level %s nb %d rows %zu row %zu: %.9g, scalar %.9g", t->id,
                                 SIMD_LEVEL_NAMES[l], nb, nr, r, (double)got[r], (double)want);
                    }
                    free_acts(bufs);
                    free(w);
                    free(x);
                }
        }
    }
}

/* 2. golden outputs */

static void golden_tests(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(1);
    }
    if (rd_u32(f) != 0x474B4747u) { /* "GGKG" */
        fprintf(stderr, "%s: not a golden file\n", path);
        exit(1);
    }
    const uint32_t count = rd_u32(f);
    int checked = 0;
    for (uint32_t r = 0; r < count; r++) {
        const int id = (int)rd_u32(f);
        const size_t rows = rd_u32(f), cols = rd_u32(f), batch = rd_u32(f);
        const tinfo *t = NULL;
        for (size_t i = 0; i < sizeof(TYPES) / sizeof(TYPES[0]); i++)
            if (TYPES[i].id == id) t = &TYPES[i];
        if (!t || cols % (size_t)t->blck || rows > 64 || cols > 4096 || batch > NX_MAX) {
            fprintf(stderr, "golden record %u: bad header\n", r);
            exit(1);
        }
        const size_t row_bytes = cols / (size_t)t->blck * (size_t)t->bytes;
        uint8_t *w = malloc(rows * row_bytes);
        int8_t *xq = malloc(batch * cols);
        float *x = malloc(batch * cols * 4), *y = malloc(batch * rows * 4), *wf = malloc(cols * 4);
        float xscale;
        if (fread(w, 1, rows * row_bytes, f) != rows * row_bytes || fread(&xscale, 4, 1, f) != 1 ||
            fread(xq, 1, batch * cols, f) != batch * cols || fread(y, 4, batch * rows, f) != batch * rows) {
            fprintf(stderr, "golden file truncated\n");
            exit(1);
        }
        for (size_t i = 0; i < batch * cols; i++) x[i] = (float)xq[i] * xscale;
        act_buf bufs[NX_MAX];
        alloc_acts(bufs, cols);
        for (int l = 0; l < SIMD_N_LEVELS; l++) {
            if (!simd_supported(l)) continue;
            act_row acts[NX_MAX];
            make_acts(t, l, x, cols, (int)batch, bufs, acts);
            const dot_fn dot = t->dot[l] ? t->dot[l] : t->dot[SIMD_SCALAR];
            const size_t nb = t->act == ACT_F32 ? cols : cols / (size_t)t->blck;
            float *gemv_y = malloc(rows * sizeof(float));
            if (batch == 1) gemv_rows(t, l, nb, w, row_bytes, rows, acts, gemv_y); /* as kernels.c at batch 1 */
            for (size_t o = 0; o < rows; o++) {
                float got[NX_MAX];
                if (batch == 1) got[0] = gemv_y[o];
                else dot(nb, w + o * row_bytes, acts, (int)batch, got, 1);
                t->deq[SIMD_SCALAR](w + o * row_bytes, wf, t->act == ACT_F32 ? cols : cols / (size_t)t->blck);
                for (size_t k = 0; k < batch; k++) {
                    double mag = 0;
                    for (size_t j = 0; j < cols; j++) mag += fabs((double)wf[j] * (double)x[k * cols + j]);
                    const double want = y[k * rows + o];
                    if (!(fabs((double)got[k] - want) <= 1e-5 * mag + 1e-30))
                        FAIL("golden type %d level %s row %zu batch %zu: %.9g, want %.9g (|W||x| %.3g)", id,
                             SIMD_LEVEL_NAMES[l], o, k, (double)got[k], want, mag);
                    checked++;
                }
            }
            free(gemv_y);
        }
        free_acts(bufs);
        free(w);
        free(xq);
        free(x);
        free(y);
        free(wf);
    }
    fclose(f);
    printf("golden: %u records, %d outputs checked\n", count, checked);
}

static int level_named(const char *name) {
    for (int l = 0; l < SIMD_N_LEVELS; l++)
        if (strcmp(name, SIMD_LEVEL_NAMES[l]) == 0) return l;
    fprintf(stderr, "unknown level %s\n", name);
    exit(2);
}

int main(int argc, char **argv) {
    const char *expect = NULL;
    int force = -1;
    for (int a = 2; a < argc; a++) {
        if (a + 1 < argc && strcmp(argv[a], "--expect-best") == 0) expect = argv[++a];
        else if (a + 1 < argc && strcmp(argv[a], "--force") == 0) force = level_named(argv[++a]);
        else argc = 0;
    }
    if (argc < 2) {
        fprintf(stderr, "usage: %s GOLDEN [--expect-best LEVEL] [--force LEVEL]\n", argv[0]);
        return 2;
    }
    simd_init();
    printf("levels:");
    for (int l = 0; l < SIMD_N_LEVELS; l++)
        if (simd_supported(l)) printf(" %s", SIMD_LEVEL_NAMES[l]);
    printf("; best %s\n", SIMD_LEVEL_NAMES[simd_best()]);
    if (expect && strcmp(SIMD_LEVEL_NAMES[simd_best()], expect) != 0)
        FAIL("dispatch picked %s, expected %s", SIMD_LEVEL_NAMES[simd_best()], expect);
    if (force >= 0) simd_cpu.level_ok[force] = 1;
    fflush(stdout);
    random_tests();
    gemv_tests();
    golden_tests(argv[1]);
    if (failures) {
        fprintf(stderr, "%d failures\n", failures);
        return 1;
    }
    printf("kernels: all passed\n");
    return 0;
}
