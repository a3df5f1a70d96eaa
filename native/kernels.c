/* gguf_tools._kernels: block dequantization and dequant-matmul straight from ggml blocks.
 *
 * Python-facing functions (gguf_tools/engine/kernels.py validates and shapes; this file
 * re-checks every size, because it is the one that reads memory):
 *   dequantize(type_id, data, n_rows, n_cols, out, level, threads)
 *   matmul(type_id, weights, n_out, n_in, x, batch, out, level, threads)
 *   read_sum(data, level, threads) -> int   (a plain read loop: the bandwidth yardstick)
 *   best_level() -> str, supported_levels() -> tuple[str, ...], level_names() -> tuple[str, ...]
 *
 * Threads: pool.h's persistent pool splits output rows; the GIL is released while they run and
 * Ctrl-C is checked between chunks of rows. Levels and the CPU probe are simd.h's.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "pool.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf_tools._kernels reads little-endian GGUF blocks in place: little-endian hosts only"
#endif

#include "kernels_table.h"
#include "gemm.h"

/* ------------------------------------------ helpers ------------------------------------------ */

#define ALIGN64(n) (((n) + 63) & ~(size_t)63)
#define MAX_ELEMS ((size_t)1 << 40) /* no real tensor comes near; keeps every product in range */

static int mul_ok(size_t a, size_t b, size_t *r) { return !__builtin_mul_overflow(a, b, r); }

static int overlaps(const void *a, size_t na, const void *b, size_t nb) {
    const char *pa = a, *pb = b;
    return na && nb && pa < pb + nb && pb < pa + na;
}

static int check_level(int level) {
    if (level < 0 || level >= SIMD_N_LEVELS || !simd_supported(level)) {
        PyErr_Format(PyExc_ValueError, "SIMD level %d is not available on this CPU", level);
        return 0;
    }
    return 1;
}

static int check_threads(int threads) {
    if (threads < 1 || threads > POOL_MAX_THREADS) {
        PyErr_Format(PyExc_ValueError, "threads must be in [1, %d], got %d", POOL_MAX_THREADS, threads);
        return 0;
    }
    return 1;
}

/* Ctrl-C lands between chunks of about this many multiply-adds (tens of milliseconds). */
#define CHUNK_WORK ((size_t)1 << 28)
/* Below this many multiply-adds per thread, waking another thread costs more than it saves. */
#define MIN_WORK_PER_THREAD ((size_t)1 << 15)

/* ---------------------------------------- dequantize ---------------------------------------- */

typedef struct {
    deq_fn fn;
    const uint8_t *src;
    float *dst;
    size_t row_bytes, n_cols, blocks_per_row, r0, r1, grab;
    atomic_size_t next; /* first row nobody has taken yet */
} deq_task;

/* Threads take rows in small grabs from a shared counter, so a core that another process is using
 * slows its own grabs only, not a fixed share of the work. */
static void deq_run(void *ctx, int tid, int nth) {
    (void)tid;
    (void)nth;
    deq_task *t = ctx;
    for (;;) {
        const size_t a = atomic_fetch_add_explicit(&t->next, t->grab, memory_order_relaxed);
        if (a >= t->r1) break;
        const size_t e = a + t->grab < t->r1 ? a + t->grab : t->r1;
        for (size_t r = a; r < e; r++) t->fn(t->src + r * t->row_bytes, t->dst + r * t->n_cols, t->blocks_per_row);
    }
}

/* Rows per grab: about `target` units of work each, yet at least 4 grabs per thread. */
static size_t grab_rows(size_t rows, size_t work_per_row, size_t target, int nth) {
    size_t g = work_per_row ? target / work_per_row : rows;
    const size_t fair = rows / (4 * (size_t)nth);
    if (g > fair) g = fair;
    return g ? g : 1;
}

static PyObject *py_dequantize(PyObject *self, PyObject *args) {
    (void)self;
    int type_id, level, threads;
    Py_ssize_t n_rows, n_cols;
    Py_buffer src = {0}, dst = {0};
    if (!PyArg_ParseTuple(args, "iy*nnw*ii", &type_id, &src, &n_rows, &n_cols, &dst, &level, &threads))
        return NULL;
    PyObject *result = NULL;
    const tinfo *t = find_type(type_id);
    size_t row_bytes, total_in, total_out;
    if (!t) {
        PyErr_Format(PyExc_ValueError, "unsupported ggml type id %d", type_id);
        goto done;
    }
    if (!check_level(level) || !check_threads(threads)) goto done;
    if (n_rows < 0 || n_cols < 0 || (size_t)n_cols > MAX_ELEMS || (size_t)n_rows > MAX_ELEMS) {
        PyErr_SetString(PyExc_ValueError, "dimensions out of range");
        goto done;
    }
    if (n_cols % t->blck != 0) {
        PyErr_Format(PyExc_ValueError, "row length %zd is not a multiple of the block size %d", n_cols, t->blck);
        goto done;
    }
    row_bytes = (size_t)n_cols / (size_t)t->blck * (size_t)t->bytes;
    if (!mul_ok(row_bytes, (size_t)n_rows, &total_in) || !mul_ok((size_t)n_cols, (size_t)n_rows, &total_out) ||
        total_out > MAX_ELEMS || !mul_ok(total_out, 4, &total_out)) {
        PyErr_SetString(PyExc_ValueError, "tensor too large");
        goto done;
    }
    if ((size_t)src.len != total_in) {
        PyErr_Format(PyExc_ValueError, "data has %zd bytes, shape needs %zu", src.len, total_in);
        goto done;
    }
    if ((size_t)dst.len != total_out || ((uintptr_t)dst.buf & 3u)) {
        PyErr_SetString(PyExc_ValueError, "output buffer has the wrong size or alignment");
        goto done;
    }
    if (overlaps(src.buf, (size_t)src.len, dst.buf, (size_t)dst.len)) {
        PyErr_SetString(PyExc_ValueError, "output overlaps input");
        goto done;
    }
    {
        deq_task task = {pick_deq(t, level), src.buf, dst.buf, row_bytes, (size_t)n_cols,
                         (size_t)n_cols / (size_t)t->blck, 0, 0, 1, 0};
        const size_t rows_per_chunk = (size_t)n_cols ? (CHUNK_WORK / 4 + (size_t)n_cols - 1) / (size_t)n_cols : 1;
        for (size_t r = 0; r < (size_t)n_rows;) {
            const size_t e = r + rows_per_chunk < (size_t)n_rows ? r + rows_per_chunk : (size_t)n_rows;
            size_t work = (e - r) * (size_t)n_cols;
            int nth = threads;
            if ((size_t)nth > e - r) nth = (int)(e - r);
            if ((size_t)nth > work / (MIN_WORK_PER_THREAD * 4) + 1) nth = (int)(work / (MIN_WORK_PER_THREAD * 4) + 1);
            task.r0 = r;
            task.r1 = e;
            task.grab = grab_rows(e - r, (size_t)n_cols, (size_t)1 << 16, nth);
            atomic_store_explicit(&task.next, r, memory_order_relaxed);
            Py_BEGIN_ALLOW_THREADS
            pool_run(deq_run, &task, nth);
            Py_END_ALLOW_THREADS
            if (PyErr_CheckSignals() != 0) goto done;
            r = e;
        }
    }
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    return result;
}

/* ------------------------------------------ matmul ------------------------------------------ */

typedef struct {
    int act, level;
    const float *x;
    size_t n_in, nb_act;
    uint8_t *abuf;
    size_t astride, d_off, e_off;
    size_t batch;
} aq_task;

static void aq_run(void *ctx, int tid, int nth) {
    const aq_task *t = ctx;
    const size_t a = t->batch * (size_t)tid / (size_t)nth, e = t->batch * (size_t)(tid + 1) / (size_t)nth;
    for (size_t b = a; b < e; b++) {
        uint8_t *row = t->abuf + b * t->astride;
        act_quant_row(t->act, t->level, t->x + b * t->n_in, t->n_in, (int8_t *)row, (float *)(row + t->d_off),
                      row + t->e_off);
    }
}

typedef struct {
    const tinfo *type;
    int level;
    dot_fn dot;
    const uint8_t *w;
    size_t row_bytes, nb;
    const act_row *acts;
    size_t batch;
    float *y;
    size_t n_out, r0, r1, tile_rows, grab;
    atomic_size_t next;
} mm_task;

static void mm_run(void *ctx, int tid, int nth) {
    (void)tid;
    (void)nth;
    mm_task *t = ctx;
    for (;;) {
        const size_t a = atomic_fetch_add_explicit(&t->next, t->grab, memory_order_relaxed);
        if (a >= t->r1) break;
        const size_t e = a + t->grab < t->r1 ? a + t->grab : t->r1;
        /* a tile of weight rows stays in cache while every group of activation rows passes over it */
        for (size_t t0 = a; t0 < e; t0 += t->tile_rows) {
            const size_t te = t0 + t->tile_rows < e ? t0 + t->tile_rows : e;
            for (size_t b0 = 0; b0 < t->batch; b0 += NX_MAX) {
                const int nx = t->batch - b0 < NX_MAX ? (int)(t->batch - b0) : NX_MAX;
                if (nx == 1) {
                    gemv_rows(t->type, t->level, t->nb, t->w + t0 * t->row_bytes, t->row_bytes, te - t0,
                              t->acts + b0, t->y + b0 * t->n_out + t0);
                    continue;
                }
                for (size_t r = t0; r < te; r++)
                    t->dot(t->nb, t->w + r * t->row_bytes, t->acts + b0, nx, t->y + b0 * t->n_out + r, t->n_out);
            }
        }
    }
}

static PyObject *py_matmul(PyObject *self, PyObject *args) {
    (void)self;
    int type_id, level, threads;
    Py_ssize_t n_out, n_in, batch;
    Py_buffer wb = {0}, xb = {0}, yb = {0};
    if (!PyArg_ParseTuple(args, "iy*nny*nw*ii", &type_id, &wb, &n_out, &n_in, &xb, &batch, &yb, &level, &threads))
        return NULL;
    PyObject *result = NULL;
    uint8_t *abuf = NULL;
    act_row *acts = NULL;
    int failed_alloc = 0;
    const tinfo *t = find_type(type_id);
    size_t row_bytes, w_total, x_total, y_total;
    if (!t) {
        PyErr_Format(PyExc_ValueError, "unsupported ggml type id %d", type_id);
        goto done;
    }
    if (!check_level(level) || !check_threads(threads)) goto done;
    if (n_out < 0 || n_in < 1 || batch < 0 || (size_t)n_out > MAX_ELEMS || (size_t)n_in > MAX_ELEMS ||
        (size_t)batch > MAX_ELEMS) {
        PyErr_SetString(PyExc_ValueError, "dimensions out of range");
        goto done;
    }
    if (n_in % t->blck != 0) {
        PyErr_Format(PyExc_ValueError, "row length %zd is not a multiple of the block size %d", n_in, t->blck);
        goto done;
    }
    row_bytes = (size_t)n_in / (size_t)t->blck * (size_t)t->bytes;
    if (!mul_ok(row_bytes, (size_t)n_out, &w_total) || !mul_ok((size_t)n_in, (size_t)batch, &x_total) ||
        !mul_ok(x_total, 4, &x_total) || !mul_ok((size_t)n_out, (size_t)batch, &y_total) ||
        !mul_ok(y_total, 4, &y_total)) {
        PyErr_SetString(PyExc_ValueError, "matrix too large");
        goto done;
    }
    if ((size_t)wb.len != w_total) {
        PyErr_Format(PyExc_ValueError, "weights have %zd bytes, shape needs %zu", wb.len, w_total);
        goto done;
    }
    if ((size_t)xb.len != x_total || ((uintptr_t)xb.buf & 3u)) {
        PyErr_SetString(PyExc_ValueError, "activations have the wrong size or alignment");
        goto done;
    }
    if ((size_t)yb.len != y_total || ((uintptr_t)yb.buf & 3u)) {
        PyErr_SetString(PyExc_ValueError, "output buffer has the wrong size or alignment");
        goto done;
    }
    if (overlaps(yb.buf, y_total, wb.buf, w_total) || overlaps(yb.buf, y_total, xb.buf, x_total)) {
        PyErr_SetString(PyExc_ValueError, "output overlaps an input");
        goto done;
    }
    if (n_out == 0 || batch == 0) {
        result = Py_NewRef(Py_None);
        goto done;
    }
#if defined(SIMD_ON_X86)
    if (t->act == ACT_F32 && batch >= GEMM_MIN_BATCH && (level == SIMD_AVX2 || level == SIMD_AVX512)) {
        const int kind = type_id == GGML_TYPE_F32 ? 0 : type_id == GGML_TYPE_F16 ? 1 : 2;
        const size_t per_tok = (size_t)n_in * (size_t)n_out, B = (size_t)batch;
        size_t chunk = CHUNK_WORK / per_tok + 1; /* tokens between Ctrl-C checks */
        if (chunk < GEMM_TB) chunk = GEMM_TB;
        for (size_t b = 0; b < B; b += chunk) {
            const size_t nb = B - b < chunk ? B - b : chunk;
            int rc;
            Py_BEGIN_ALLOW_THREADS
            rc = gemm_float_avx2(kind, wb.buf, row_bytes, (size_t)n_out, (size_t)n_in,
                                 (const float *)xb.buf + b * (size_t)n_in, nb, (float *)yb.buf + b * (size_t)n_out,
                                 threads);
            Py_END_ALLOW_THREADS
            if (rc != 0) {
                failed_alloc = 1;
                goto done;
            }
            if (PyErr_CheckSignals() != 0) goto done;
        }
        result = Py_NewRef(Py_None);
        goto done;
    }
#endif
    {
        const size_t B = (size_t)batch, N = (size_t)n_in, M = (size_t)n_out;
        const size_t nb_act = t->act == ACT_Q256 ? N / QK_K : N / 32;
        const size_t d_off = ALIGN64(N), e_off = d_off + ALIGN64(nb_act * 4);
        const size_t astride = e_off + ALIGN64(t->act == ACT_Q256 ? nb_act * 32 : nb_act * 4);
        size_t abytes = 0;
        acts = PyMem_RawCalloc(B, sizeof(act_row));
        if (t->act != ACT_F32) {
            if (!mul_ok(astride, B, &abytes) || abytes > ((size_t)1 << 46)) {
                PyErr_SetString(PyExc_ValueError, "batch too large");
                goto done;
            }
            abuf = aligned_alloc(64, abytes);
        }
        if (!acts || (t->act != ACT_F32 && !abuf)) {
            failed_alloc = 1;
            goto done;
        }
        for (size_t b = 0; b < B; b++) {
            if (t->act == ACT_F32) {
                acts[b].xf = (const float *)xb.buf + b * N;
            } else {
                uint8_t *row = abuf + b * astride;
                acts[b].q = (const int8_t *)row;
                acts[b].d = (const float *)(row + d_off);
                acts[b].s = (const float *)(row + e_off);
                acts[b].bs = (const int16_t *)(row + e_off);
            }
        }
        if (t->act != ACT_F32) {
            aq_task aq = {t->act, level, xb.buf, N, nb_act, abuf, astride, d_off, e_off, B};
            int nth = threads;
            if ((size_t)nth > B) nth = (int)B;
            if ((size_t)nth > x_total / (MIN_WORK_PER_THREAD * 16) + 1)
                nth = (int)(x_total / (MIN_WORK_PER_THREAD * 16) + 1);
            Py_BEGIN_ALLOW_THREADS
            pool_run(aq_run, &aq, nth);
            Py_END_ALLOW_THREADS
            if (PyErr_CheckSignals() != 0) goto done;
        }
        mm_task task = {t, level, pick_dot(t, level), wb.buf, row_bytes, N / (size_t)t->blck, acts, B, yb.buf,
                        M, 0, 0, 1, 1, 0};
        task.tile_rows = row_bytes < 16384 ? 16384 / row_bytes : 1;
        const size_t per_row = N * B;
        size_t rows_per_chunk = CHUNK_WORK / per_row + 1;
        if (rows_per_chunk < 4 * (size_t)threads) rows_per_chunk = 4 * (size_t)threads;
        for (size_t r = 0; r < M;) {
            const size_t e = r + rows_per_chunk < M ? r + rows_per_chunk : M;
            const size_t work = (e - r) * per_row;
            int nth = threads;
            if ((size_t)nth > e - r) nth = (int)(e - r);
            if ((size_t)nth > work / MIN_WORK_PER_THREAD + 1) nth = (int)(work / MIN_WORK_PER_THREAD + 1);
            task.r0 = r;
            task.r1 = e;
            task.grab = grab_rows(e - r, per_row, (size_t)1 << 18, nth);
            /* whole cache tiles, unless that would leave a thread idle */
            if (task.grab < task.tile_rows && (e - r) / task.tile_rows >= (size_t)nth) task.grab = task.tile_rows;
            atomic_store_explicit(&task.next, r, memory_order_relaxed);
            Py_BEGIN_ALLOW_THREADS
            pool_run(mm_run, &task, nth);
            Py_END_ALLOW_THREADS
            if (PyErr_CheckSignals() != 0) goto done;
            r = e;
        }
    }
    result = Py_NewRef(Py_None);
done:
    if (failed_alloc) PyErr_NoMemory();
    free(abuf);
    PyMem_RawFree(acts);
    PyBuffer_Release(&wb);
    PyBuffer_Release(&xb);
    PyBuffer_Release(&yb);
    return result;
}

/* ---------------------------------------- read_sum ---------------------------------------- */

typedef struct {
    const uint8_t *p;
    size_t n;
    int level;
    atomic_size_t next;
    uint64_t part[POOL_MAX_THREADS];
} rs_task;

#define RS_GRAB ((size_t)1 << 18) /* bytes per grab: many pages, a small share of the buffer */

static uint64_t read_sum_scalar(const uint8_t *p, size_t n) {
    uint64_t acc[4] = {0, 0, 0, 0}, r = 0;
    size_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (int k = 0; k < 4; k++) {
            uint64_t v;
            memcpy(&v, p + i + 8 * k, 8);
            acc[k] += v;
        }
    for (; i < n; i++) r += p[i];
    return r + acc[0] + acc[1] + acc[2] + acc[3];
}

/* The same grab-from-a-counter scheme as the kernels, so the yardstick is treated alike. */
static void rs_run(void *ctx, int tid, int nth) {
    (void)nth;
    rs_task *t = ctx;
    uint64_t r = 0;
    for (;;) {
        const size_t a = atomic_fetch_add_explicit(&t->next, RS_GRAB, memory_order_relaxed);
        if (a >= t->n) break;
        const size_t len = t->n - a < RS_GRAB ? t->n - a : RS_GRAB;
#if defined(SIMD_ON_X86)
        if (t->level == SIMD_AVX2 || t->level == SIMD_AVX512) {
            r += read_sum_avx2(t->p + a, len);
            continue;
        }
#endif
        r += read_sum_scalar(t->p + a, len);
    }
    t->part[tid] = r;
}

static PyObject *py_read_sum(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer buf = {0};
    int threads, level;
    if (!PyArg_ParseTuple(args, "y*ii", &buf, &level, &threads)) return NULL;
    if (!check_level(level) || !check_threads(threads)) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    rs_task *t = PyMem_RawCalloc(1, sizeof(rs_task));
    if (!t) {
        PyBuffer_Release(&buf);
        return PyErr_NoMemory();
    }
    t->p = buf.buf;
    t->n = (size_t)buf.len;
    t->level = level;
    Py_BEGIN_ALLOW_THREADS
    pool_run(rs_run, t, threads);
    Py_END_ALLOW_THREADS
    uint64_t r = 0;
    for (int i = 0; i < threads; i++) r += t->part[i];
    PyMem_RawFree(t);
    PyBuffer_Release(&buf);
    return PyLong_FromUnsignedLongLong(r);
}

/* ----------------------------------------- module ----------------------------------------- */

static PyObject *py_best_level(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    return PyUnicode_FromString(SIMD_LEVEL_NAMES[simd_best()]);
}

static PyObject *py_supported_levels(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    for (int l = 0; l < SIMD_N_LEVELS; l++) {
        if (!simd_supported(l)) continue;
        PyObject *s = PyUnicode_FromString(SIMD_LEVEL_NAMES[l]);
        if (!s || PyList_Append(out, s) < 0) {
            Py_XDECREF(s);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(s);
    }
    PyObject *tup = PyList_AsTuple(out);
    Py_DECREF(out);
    return tup;
}

static PyObject *py_level_names(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    return Py_BuildValue("(sssss)", SIMD_LEVEL_NAMES[0], SIMD_LEVEL_NAMES[1], SIMD_LEVEL_NAMES[2], SIMD_LEVEL_NAMES[3],
                         SIMD_LEVEL_NAMES[4]);
}

static PyMethodDef methods[] = {
    {"dequantize", py_dequantize, METH_VARARGS,
     "dequantize(type_id, data, n_rows, n_cols, out, level, threads): blocks -> float32 into out."},
    {"matmul", py_matmul, METH_VARARGS,
     "matmul(type_id, weights, n_out, n_in, x, batch, out, level, threads): out = x @ W.T."},
    {"read_sum", py_read_sum, METH_VARARGS, "read_sum(data, level, threads) -> int: read every byte once."},
    {"best_level", py_best_level, METH_NOARGS, "The fastest SIMD path this CPU supports."},
    {"supported_levels", py_supported_levels, METH_NOARGS, "SIMD paths this CPU supports, slowest first."},
    {"level_names", py_level_names, METH_NOARGS, "Level names in id order."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels",
                                    "Block dequantization and dequant-matmul kernels.", -1, methods};

PyMODINIT_FUNC PyInit__kernels(void) {
    simd_init();
    pool_init();
    return PyModule_Create(&module);
}
