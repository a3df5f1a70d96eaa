/* gguf_tools._huffman: canonical Huffman coding of GGUF tensor data (docs/packed-format.md).
 *
 * Module glue only; the parts are headers, as in kernels.c:
 *   huffman_common.h  limits, byte helpers, block layouts, canonical codes
 *   huffman_crc32c.h  CRC-32C, software and hardware
 *   huffman_decode.h  decode tables, stream and chunk decoding on threads (pool.h)
 *   huffman_index.h   plan(): the index checked and turned into a decode plan in C
 *   huffman_encode.h  encode_chunk() and the encoder's histograms
 *   gguf_strings.h    skip_strings(), a GGUF header helper exported here for gguf_file/reader.py
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "simd.h"
#include "pool.h"
#include "huffman_common.h"

/* ------------------------------------------------------------------ Python glue */

static int get_buffer(PyObject *o, Py_buffer *b, int writable, const char *what) {
    if (PyObject_GetBuffer(o, b, writable ? PyBUF_WRITABLE : PyBUF_SIMPLE) < 0) {
        PyErr_Format(PyExc_TypeError, "%s must be a %sbuffer", what, writable ? "writable " : "");
        return -1;
    }
    return 0;
}

#include "huffman_crc32c.h"
#include "huffman_decode.h"
#include "huffman_index.h"
#include "huffman_encode.h"
#include "gguf_strings.h"

/* ------------------------------------------------------------------ decoding */

static PyObject *run_decode(Py_buffer *bs, uint8_t *dst, size_t dst_len, int64_t base, int fd, PyObject *o_jobs,
                            PyObject *o_lay, PyObject *o_tab, int threads, int verify, int keep) {
    Py_buffer bj, bl, bt;
    if (get_buffer(o_jobs, &bj, 0, "jobs")) return NULL;
    if (get_buffer(o_lay, &bl, 0, "layouts")) { PyBuffer_Release(&bj); return NULL; }
    if (get_buffer(o_tab, &bt, 0, "tables")) { PyBuffer_Release(&bj); PyBuffer_Release(&bl); return NULL; }
    PyObject *result = NULL;
    if (bj.len % (6 * 8) || bl.len % 4 || bt.len % 256 || ((uintptr_t)bj.buf & 7) || ((uintptr_t)bl.buf & 3)) {
        PyErr_SetString(PyExc_ValueError, "malformed decode plan");
        goto done;
    }
    dec_ctx c;
    memset(&c, 0, sizeof c);
    c.src = bs->buf; c.src_len = (size_t)bs->len;
    c.dst = dst; c.dst_len = dst_len; c.dst_base = base; c.fd = fd;
    c.jobs = bj.buf; c.njobs = bj.len / 48;
    c.layouts = bl.buf; c.nwords = (size_t)bl.len / 4;
    c.tables = bt.buf; c.ntables = bt.len / 256;
    c.verify_crc = verify;
    c.keep = keep;
    c.err_chunk = -1;
    size_t biggest = 64;
    for (Py_ssize_t j = 0; j < c.njobs; j++) {
        int64_t dl = c.jobs[6 * j + 3];
        if (dl > 0 && (uint64_t)dl <= MAX_CHUNK && (size_t)dl > biggest) biggest = (size_t)dl;
    }
    c.chunk_max = biggest;
    atomic_init(&c.next, 0);
    atomic_init(&c.failed, 0);
    pthread_mutex_init(&c.lock, NULL);
    Py_BEGIN_ALLOW_THREADS
    decode_chunks(&c, threads);
    Py_END_ALLOW_THREADS
    pthread_mutex_destroy(&c.lock);
    if (c.err == OOM) {
        PyErr_SetString(PyExc_MemoryError, "out of memory while decoding");
    } else if (c.err == WRITE_FAILED) {
        errno = c.write_errno;
        PyErr_SetFromErrno(PyExc_OSError);
    } else if (c.err) {
        PyErr_Format(PyExc_ValueError, "chunk %zd: %s", (Py_ssize_t)c.err_chunk, c.err);
    } else {
        result = Py_None;
        Py_INCREF(result);
    }
done:
    PyBuffer_Release(&bj); PyBuffer_Release(&bl); PyBuffer_Release(&bt);
    return result;
}

static PyObject *py_decode(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"src", "dst", "jobs", "layouts", "tables", "threads", "verify_crc", "base", "keep_state",
                             NULL};
    PyObject *o_src, *o_dst, *o_jobs, *o_lay, *o_tab;
    int threads = 1, verify = 1, keep = 0;
    long long base = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOO|ipLp", kwlist, &o_src, &o_dst, &o_jobs, &o_lay, &o_tab,
                                     &threads, &verify, &base, &keep))
        return NULL;
    if (base < 0) { PyErr_SetString(PyExc_ValueError, "negative base offset"); return NULL; }
    Py_buffer bs, bd;
    if (get_buffer(o_src, &bs, 0, "src")) return NULL;
    if (get_buffer(o_dst, &bd, 1, "dst")) { PyBuffer_Release(&bs); return NULL; }
    PyObject *r = run_decode(&bs, bd.buf, (size_t)bd.len, (int64_t)base, -1, o_jobs, o_lay, o_tab, threads, verify,
                             keep);
    PyBuffer_Release(&bs); PyBuffer_Release(&bd);
    return r;
}

static PyObject *py_decode_to_fd(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"src", "fd", "size", "jobs", "layouts", "tables", "threads", "verify_crc", NULL};
    PyObject *o_src, *o_jobs, *o_lay, *o_tab;
    int fd, threads = 1, verify = 1;
    Py_ssize_t size;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OinOOO|ip", kwlist, &o_src, &fd, &size, &o_jobs, &o_lay, &o_tab,
                                     &threads, &verify))
        return NULL;
    if (fd < 0 || size < 0) { PyErr_SetString(PyExc_ValueError, "bad file descriptor or size"); return NULL; }
    Py_buffer bs;
    if (get_buffer(o_src, &bs, 0, "src")) return NULL;
    PyObject *r = run_decode(&bs, NULL, (size_t)size, 0, fd, o_jobs, o_lay, o_tab, threads, verify, 0);
    PyBuffer_Release(&bs);
    return r;
}

/* ------------------------------------------------------------------ the rest */

/* skip_strings(buffer, offset, count) -> offset after `count` GGUF strings (u64 length + bytes),
 * or ValueError when they run past the end: skims a tokenizer's vocabulary without Python objects. */
static PyObject *py_skip_strings(PyObject *self, PyObject *args) {
    PyObject *o;
    Py_ssize_t off, count;
    if (!PyArg_ParseTuple(args, "Onn", &o, &off, &count)) return NULL;
    Py_buffer b;
    if (get_buffer(o, &b, 0, "buffer")) return NULL;
    const int64_t end =
        off < 0 || count < 0 ? -1 : gguf_skip_strings(b.buf, (uint64_t)b.len, (uint64_t)off, (uint64_t)count);
    PyBuffer_Release(&b);
    if (end < 0) { PyErr_SetString(PyExc_ValueError, "strings run past the end"); return NULL; }
    return PyLong_FromUnsignedLongLong((unsigned long long)end);
}

static PyObject *py_crc32c(PyObject *self, PyObject *args) {
    PyObject *o;
    unsigned int seed = 0;
    if (!PyArg_ParseTuple(args, "O|I", &o, &seed)) return NULL;
    Py_buffer b;
    if (get_buffer(o, &b, 0, "data")) return NULL;
    uint32_t c;
    Py_BEGIN_ALLOW_THREADS
    c = crc32c(seed, b.buf, (size_t)b.len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLong(c);
}

static PyObject *py_hw_crc(PyObject *self, PyObject *noargs) { return PyBool_FromLong(have_hw_crc); }

static PyObject *py_release_state(PyObject *self, PyObject *noargs) {
    Py_BEGIN_ALLOW_THREADS
    kept_release();
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_decoder_kind(PyObject *self, PyObject *noargs) {
    return PyUnicode_FromString(decode_field == decode_field_plain ? "plain" : "bmi2");
}

static PyMethodDef methods[] = {
    {"decode", (PyCFunction)(void (*)(void))py_decode, METH_VARARGS | METH_KEYWORDS,
     "decode(src, dst, jobs, layouts, tables, threads=1, verify_crc=True, base=0, keep_state=False): decode "
     "chunks into dst, which holds the output from offset base on (a window: jobs may be a slice of the plan). "
     "keep_state: the threads' buffers and built tables stay for the next call (release_state frees them)."},
    {"release_state", py_release_state, METH_NOARGS, "release_state(): free what decode(keep_state=True) kept."},
    {"decode_to_fd", (PyCFunction)(void (*)(void))py_decode_to_fd, METH_VARARGS | METH_KEYWORDS,
     "decode_to_fd(src, fd, size, jobs, layouts, tables, threads=1, verify_crc=True): decode chunks and "
     "pwrite each at its offset (checked before it is written)."},
    {"skip_strings", py_skip_strings, METH_VARARGS, "skip_strings(buffer, offset, count) -> end offset"},
    {"plan", py_plan, METH_VARARGS,
     "plan(index, original_size, prefix_size, index_offset, max_sections, tensors) -> (jobs, words, tables) bytes"},
    {"encode_chunk", py_encode_chunk, METH_VARARGS,
     "encode_chunk(src, offset, size, layouts, layout_offset, tables) -> (payload, crc32c)"},
    {"histogram", py_histogram, METH_VARARGS,
     "histogram(src, offset, size, layouts, layout_offset) -> uint64[n_fields][256] as bytes"},
    {"joint_histogram", py_joint_histogram, METH_VARARGS,
     "joint_histogram(src, offset, size, layouts, layout_offset, field, ctx_field) -> uint64[256][256]"},
    {"palette_histogram", py_palette_histogram, METH_VARARGS,
     "palette_histogram(src, offset, size, layouts, layout_offset, field, bias) -> uint64[4][256]"},
    {"crc32c", py_crc32c, METH_VARARGS, "crc32c(data, seed=0) -> int (CRC-32C, Castagnoli)"},
    {"hardware_crc", py_hw_crc, METH_NOARGS, "True when CRC-32C runs on the CPU's instruction"},
    {"decoder_kind", py_decoder_kind, METH_NOARGS, "Which compiled decoder this CPU runs"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_huffman",
                                    "Canonical Huffman coding for packed GGUF files.", -1, methods};

PyMODINIT_FUNC PyInit__huffman(void) {
    simd_init();
    crc_init();
    rev_init();
    dispatch_init();
    pthread_atfork(NULL, NULL, kept_after_fork);
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    PyModule_AddIntConstant(m, "MAX_BITS", MAX_BITS);
    PyModule_AddIntConstant(m, "MAX_BLOCK", MAX_BLOCK);
    PyModule_AddIntConstant(m, "MAX_FIELDS", MAX_FIELDS);
    PyModule_AddIntConstant(m, "MAX_RUNS", MAX_RUNS);
    PyModule_AddIntConstant(m, "MAX_FIELD_TABLES", MAX_FIELD_TABLES);
    PyModule_AddIntConstant(m, "MAX_CHUNK", MAX_CHUNK);
    PyModule_AddIntConstant(m, "N_STREAMS", N_STREAMS);
    PyModule_AddIntConstant(m, "HEADER_SIZE", PACK_HEADER_SIZE);
    PyModule_AddIntConstant(m, "MAX_TABLES", MAX_TABLES);
    PyModule_AddIntConstant(m, "MAX_SECTIONS", MAX_SECTIONS);
    PyModule_AddIntConstant(m, "MAX_RATIO", MAX_RATIO);
    PyModule_AddIntConstant(m, "RATIO_SLACK", RATIO_SLACK);
    return m;
}
