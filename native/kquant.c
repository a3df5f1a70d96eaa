/* gguf_tools._kquant: the fast path of gguf_tools.quantize.
 *
 *   quantize(src, dst, n_per_row, qtype, weights, mode, threads)
 *     src: float32 buffer of rows * n_per_row values; dst: writable buffer of rows * row_bytes;
 *     weights: float32 buffer of n_per_row values or None; mode 0 = our search (weights are the
 *     importance, None = 1), mode 1 = ggml's own quantizer (weights are the raw imatrix),
 *     mode 2 = our search with the wider candidate grids (slower; search.SETTINGS_BEST).
 *   simd() -> the simd.h level the search runs with: scalar (the portable build) or avx2.
 *     GGUF_TOOLS_SIMD=scalar forces the portable build.
 *
 * Work is split across pool.h's threads by rows (ggml mode) or by groups of blocks (our
 * search), with the GIL released. Results never depend on the thread count or the instruction
 * set: the arithmetic is plain float32 in a fixed order, and nothing may be contracted into
 * fused multiply-adds (C11 mode already forbids it in GCC; the pragmas make it explicit).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#pragma GCC diagnostic ignored "-Wpsabi" /* vf is only passed between functions of one target */
#endif

#include "pool.h"
#include "simd.h"
#include "kquant_common.h"
#include "kquant_ggml.h"

#define KQ_SFX _generic
#include "kquant_search.h"
#undef KQ_SFX

#if defined(SIMD_ON_X86)
#pragma GCC push_options
#pragma GCC target("avx2")
#define KQ_SFX _avx2
#define KQ_IQ4_SHUFFLE /* variable shuffles are single instructions here */
#include "kquant_search.h"
#undef KQ_IQ4_SHUFFLE
#undef KQ_SFX
#pragma GCC pop_options
#endif

typedef void (*kq_group_fn)(int, const vf *, const vf *, kq_params *);

/* The search build for the level GGUF_TOOLS_SIMD asks for (scalar: the portable build, which
 * tests compare with the AVX2 one), else for the best level; *level says which it is. */
static kq_group_fn kq_pick_group_fn(int *level) {
#if defined(SIMD_ON_X86)
    const int l = simd_env_level();
    if (l == SIMD_AVX2 || l == SIMD_AVX512) {
        *level = SIMD_AVX2;
        return search_group_avx2;
    }
#endif
    *level = SIMD_SCALAR;
    return search_group_generic;
}

/* stored form of lane k's parameters -> bytes */
static void kq_emit(int type, const kq_params *p, int k, int blk, uint8_t *dst) {
    uint8_t sc[16], mn[16], L[256];
    const uint16_t dh = fp32_to_fp16(p->d[k]), mh = fp32_to_fp16(p->dmin[k]);
    for (int j = 0; j < 16; ++j) {
        const int s = (int)p->sc[j][k], m = (int)p->mn[j][k];
        sc[j] = type == GGML_TYPE_Q3_K ? (uint8_t)(s + 32) : (uint8_t)(int8_t)s;
        mn[j] = (uint8_t)m;
    }
    const int off = type == GGML_TYPE_Q3_K   ? 4
                    : type == GGML_TYPE_Q6_K ? 32
                    : type == GGML_TYPE_Q4_0 ? 8
                    : type == GGML_TYPE_Q5_0 ? 16
                                             : 0;
    for (int i = 0; i < blk; ++i) L[i] = (uint8_t)(int8_t)((int)p->L[i][k] + off);
    kq_pack(type, dst, dh, mh, sc, mn, L);
}

typedef struct {
    int type, mode;
    const float *src, *weights;
    uint8_t *dst;
    int64_t rows, n, units, grab; /* units: rows (ggml mode) or groups of NL blocks (search) */
    kq_group_fn group;
    atomic_llong next; /* first unit nobody has taken yet */
    atomic_int failed;
} kq_job;

/* scratch of one worker: block data and parameters, 64-byte aligned for the vector code */
typedef struct {
    vf X[256], W[256];
    kq_params p;
} kq_scratch;

/* Units [begin, end): rows in ggml mode, else groups of NL blocks searched side by side. */
static void kq_run_units(const kq_job *j, kq_scratch *sc, int64_t begin, int64_t end) {
    const ggml_type_info *ti = kq_info(j->type);
    const int64_t bpr = j->n / ti->blck, row_bytes = bpr * ti->bytes;
    if (j->mode == 1) {
        for (int64_t r = begin; r < end; ++r)
            g_row(j->type, j->src + r * j->n, j->weights, j->dst + r * row_bytes, j->n);
        return;
    }
    const int blk = ti->blck;
    const int64_t nblocks = j->rows * bpr;
    for (int64_t g = begin; g < end; ++g) {
        const int64_t b0 = g * NL;
        int valid = 0;
        for (int k = 0; k < NL; ++k) {
            const int64_t b = b0 + k;
            if (b < nblocks) {
                const int64_t row = b / bpr, col = (b % bpr) * blk;
                const float *x = j->src + row * j->n + col;
                for (int i = 0; i < blk; ++i) {
                    sc->X[i][k] = x[i];
                    sc->W[i][k] = j->weights ? j->weights[col + i] : 1.0f;
                }
                valid = k + 1;
            } else {
                for (int i = 0; i < blk; ++i) {
                    sc->X[i][k] = 0.0f;
                    sc->W[i][k] = 1.0f;
                }
            }
        }
        j->group(j->type, sc->X, sc->W, &sc->p);
        for (int k = 0; k < valid; ++k) kq_emit(j->type, &sc->p, k, blk, j->dst + (b0 + k) * ti->bytes);
    }
}

/* One pool thread: units in small grabs from the shared counter (each unit's bytes depend on
 * that unit alone, so the split never changes the output). */
static void kq_run(void *ctx, int tid, int nth) {
    (void)tid;
    (void)nth;
    kq_job *j = ctx;
    void *raw = NULL;
    kq_scratch *sc = NULL;
    if (j->mode != 1) {
        raw = malloc(sizeof(kq_scratch) + 64);
        if (!raw) {
            atomic_store(&j->failed, 1);
            return;
        }
        sc = (kq_scratch *)(((uintptr_t)raw + 63) & ~(uintptr_t)63);
        memset(&sc->p, 0, sizeof sc->p);
        sc->p.wide = j->mode == 2;
    }
    for (;;) {
        const int64_t a = atomic_fetch_add_explicit(&j->next, j->grab, memory_order_relaxed);
        if (a >= j->units) break;
        kq_run_units(j, sc, a, a + j->grab < j->units ? a + j->grab : j->units);
    }
    free(raw);
}

static PyObject *py_quantize(PyObject *self, PyObject *args) {
    Py_buffer src, dst, wb;
    Py_ssize_t n_per_row;
    int type, mode, threads;
    PyObject *weights;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*w*niOii", &src, &dst, &n_per_row, &type, &weights, &mode, &threads)) return NULL;
    int have_w = 0;
    PyObject *ret = NULL;
    const ggml_type_info *ti = kq_info(type);
    if (!ti) {
        PyErr_Format(PyExc_ValueError, "unsupported quantization type %d", type);
        goto done;
    }
    if (mode < 0 || mode > 2) {
        PyErr_SetString(PyExc_ValueError, "mode must be 0 (search), 1 (ggml) or 2 (wide search)");
        goto done;
    }
    if (n_per_row <= 0 || n_per_row % ti->blck || n_per_row > ((Py_ssize_t)1 << 40)) {
        PyErr_Format(PyExc_ValueError, "row length %zd is not a positive multiple of %d", n_per_row, ti->blck);
        goto done;
    }
    const Py_ssize_t row_in = n_per_row * (Py_ssize_t)sizeof(float);
    if (src.len % row_in) {
        PyErr_SetString(PyExc_ValueError, "source size is not a whole number of rows");
        goto done;
    }
    const int64_t rows = src.len / row_in;
    const int64_t row_bytes = (int64_t)(n_per_row / ti->blck) * ti->bytes;
    if (dst.len != rows * row_bytes) {
        PyErr_SetString(PyExc_ValueError, "destination size does not match rows * row_bytes");
        goto done;
    }
    if (weights != Py_None) {
        if (PyObject_GetBuffer(weights, &wb, PyBUF_SIMPLE) < 0) goto done;
        have_w = 1;
        if (wb.len != row_in) {
            PyErr_SetString(PyExc_ValueError, "weights must hold one float32 per column");
            goto done;
        }
    }
    if (((uintptr_t)src.buf % sizeof(float)) || (have_w && ((uintptr_t)wb.buf % sizeof(float)))) {
        PyErr_SetString(PyExc_ValueError, "float32 buffers must be aligned");
        goto done;
    }
    {
        const int64_t units = mode == 1 ? rows : (rows * (n_per_row / ti->blck) + NL - 1) / NL;
        int nt = threads < 1 ? 1 : threads;
        if (nt > POOL_MAX_THREADS) nt = POOL_MAX_THREADS;
        if (nt > units) nt = units > 0 ? (int)units : 1;
        int level;
        kq_job job = {type, mode, (const float *)src.buf, have_w ? (const float *)wb.buf : NULL, (uint8_t *)dst.buf,
                      rows, n_per_row, units, units / (4 * (int64_t)nt), kq_pick_group_fn(&level), 0, 0};
        if (job.grab < 1) job.grab = 1;
        Py_BEGIN_ALLOW_THREADS
        pool_run(kq_run, &job, nt);
        Py_END_ALLOW_THREADS
        if (atomic_load(&job.failed)) {
            PyErr_NoMemory();
            goto done;
        }
    }
    Py_INCREF(Py_None);
    ret = Py_None;
done:
    if (have_w) PyBuffer_Release(&wb);
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    return ret;
}

static PyObject *py_simd(PyObject *self, PyObject *args) {
    int level;
    (void)self;
    (void)args;
    kq_pick_group_fn(&level);
    return PyUnicode_FromString(SIMD_LEVEL_NAMES[level]);
}

static PyMethodDef methods[] = {
    {"quantize", py_quantize, METH_VARARGS, "quantize(src, dst, n_per_row, qtype, weights, mode, threads)"},
    {"simd", py_simd, METH_NOARGS, "SIMD level the search runs with (simd.h's names: scalar or avx2)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kquant", "Fast block quantizers (see gguf_tools.quantize).",
                                    -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__kquant(void) {
    simd_init();
    pool_init();
    return PyModule_Create(&module);
}
