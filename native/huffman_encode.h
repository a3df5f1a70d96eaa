/* Encoding one chunk of a packed file, and the histograms the Python planner builds its code
 * tables from. Included by huffman.c only.
 */
#ifndef GGUF_HUFFMAN_ENCODE_H
#define GGUF_HUFFMAN_ENCODE_H

#include <stdlib.h>

#include "huffman_common.h"
#include "huffman_crc32c.h"

/* ------------------------------------------------------------------ encoding */

typedef struct { uint8_t *p; uint64_t buf; unsigned cnt; } bitw_t;

static inline void put_bits(bitw_t *w, uint32_t code, unsigned len) {
    w->buf |= (uint64_t)code << w->cnt;
    w->cnt += len;
    if (w->cnt >= 32) {
        store32le(w->p, (uint32_t)w->buf);
        w->p += 4; w->buf >>= 32; w->cnt -= 32;
    }
}

static void flush_bits(bitw_t *w) {
    while (w->cnt > 0) {
        *w->p++ = (uint8_t)w->buf; w->buf >>= 8; w->cnt = w->cnt > 8 ? w->cnt - 8 : 0;
    }
}

static void gather(const uint8_t *src, size_t nblocks, int bs, const field_t *F, uint8_t *to) {
    for (size_t b = 0; b < nblocks; b++) {
        const uint8_t *s = src + b * (size_t)bs;
        for (int r = 0; r < F->nruns; r++) {
            memcpy(to, s + F->runs[r].off, F->runs[r].len);
            to += F->runs[r].len;
        }
    }
}

typedef struct {
    uint8_t *out;                 /* payload start: the header is filled in group order */
    size_t pos, hdr_at;
    const uint8_t *lengths;       /* tables, 256 lengths each */
    const uint16_t *codes;        /* bit-reversed canonical codes, 256 per table */
    int missing;
} enc_t;

/* Four streams of one group, split evenly by symbol count; lengths go to the header. */
static void encode_group(enc_t *e, int32_t table, const uint8_t *sym, size_t n) {
    const uint8_t *len = e->lengths + 256 * (size_t)table;
    const uint16_t *code = e->codes + 256 * (size_t)table;
    for (int k = 0; k < N_STREAMS; k++) {
        size_t a = n * (size_t)k / N_STREAMS, b = n * (size_t)(k + 1) / N_STREAMS;
        bitw_t w = {e->out + e->pos, 0, 0};
        for (size_t i = a; i < b; i++) {
            e->missing |= len[sym[i]] == 0;
            put_bits(&w, code[sym[i]], len[sym[i]]);
        }
        flush_bits(&w);
        size_t nbytes = (size_t)(w.p - (e->out + e->pos));
        store32le(e->out + e->hdr_at + 4 * k, (uint32_t)nbytes);
        e->pos += nbytes;
    }
    e->hdr_at += 16;
}

/* Palette split of one field: per block the distinct values (xor bias) in ascending order,
 * coded as size-1, first value, gaps-1; then each byte as its index in that list. */
static size_t palette_split(const uint8_t *syms, size_t nblocks, size_t w, uint8_t bias, uint8_t *P, uint8_t *V,
                            uint8_t *D, uint8_t *I) {
    size_t nd = 0;
    for (size_t b = 0; b < nblocks; b++) {
        const uint8_t *s = syms + b * w;
        uint8_t present[256], rank[256];
        memset(present, 0, sizeof present);
        for (size_t i = 0; i < w; i++) present[s[i] ^ bias] = 1;
        int size = 0, prev = -1;
        for (int v = 0; v < 256; v++) {
            if (!present[v]) continue;
            if (size == 0) V[b] = (uint8_t)v; else D[nd++] = (uint8_t)(v - prev - 1);
            rank[v] = (uint8_t)size++;
            prev = v;
        }
        P[b] = (uint8_t)(size - 1);
        for (size_t i = 0; i < w; i++) I[b * w + i] = rank[s[i] ^ bias];
    }
    return nd;
}

/* encode_chunk(src, offset, size, layouts, layout_offset, tables) -> (payload, crc32c) */
static PyObject *py_encode_chunk(PyObject *self, PyObject *args) {
    PyObject *o_src, *o_lay, *o_tab;
    Py_ssize_t off, size, lo;
    if (!PyArg_ParseTuple(args, "OnnOnO", &o_src, &off, &size, &o_lay, &lo, &o_tab)) return NULL;
    Py_buffer bs, bl, bt;
    if (get_buffer(o_src, &bs, 0, "src")) return NULL;
    if (get_buffer(o_lay, &bl, 0, "layouts")) { PyBuffer_Release(&bs); return NULL; }
    if (get_buffer(o_tab, &bt, 0, "tables")) { PyBuffer_Release(&bs); PyBuffer_Release(&bl); return NULL; }
    PyObject *payload = NULL, *result = NULL;
    layout_t *L = malloc(sizeof(layout_t));
    uint8_t *scratch = NULL;
    uint16_t *codes = NULL;
    const char *err = NULL;
    if (!L) { PyErr_NoMemory(); goto done; }
    if (bl.len % 4 || ((uintptr_t)bl.buf & 3) || bt.len % 256) { err = "malformed encode plan"; goto fail; }
    if (off < 0 || size < 0 || off > bs.len || size > bs.len - off) { err = "range outside the source"; goto fail; }
    if ((size_t)size > MAX_CHUNK) { err = "chunk too large"; goto fail; }
    const Py_ssize_t ntab = bt.len / 256;
    err = parse_layout(bl.buf, (size_t)bl.len / 4, lo, ntab, L);
    if (err) goto fail;
    if (size % L->block_size) { err = "size is not a whole number of blocks"; goto fail; }
    const size_t nblocks = (size_t)size / (size_t)L->block_size;
    codes = malloc(((size_t)ntab + 1) * 256 * sizeof(uint16_t));
    if (!codes) { PyErr_NoMemory(); goto done; }
    for (Py_ssize_t k = 0; k < ntab; k++) {
        const uint8_t *len = (const uint8_t *)bt.buf + 256 * (size_t)k;
        int used;
        err = canonical_codes(len, codes + 256 * k, &used);
        if (err) goto fail;
        for (int s = 0; s < 256; s++) codes[256 * k + s] = (uint16_t)bitrev(codes[256 * k + s], len[s]);
    }
    /* Upper bound: raw fields as is; coded symbols at MAX_BITS each plus stream slack. */
    size_t bound = (size_t)L->ngroups * (16 + N_STREAMS * 8) + 64;
    for (int f = 0; f < L->nfields; f++) {
        const field_t *F = &L->fields[f];
        size_t n = nblocks * (size_t)F->width;
        bound += F->mode == MODE_RAW ? n : F->mode == MODE_PALETTE ? 3 * n * 2 : n * 2;
    }
    payload = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)bound);
    scratch = malloc(4 * (size_t)size + 64);
    if (!payload || !scratch) { if (!PyErr_Occurred()) PyErr_NoMemory(); goto done; }
    const uint8_t *src = (const uint8_t *)bs.buf + off;
    enc_t e = {(uint8_t *)PyBytes_AS_STRING(payload), (size_t)L->ngroups * 16, 0, bt.buf, codes, 0};
    uint32_t crc;
    Py_BEGIN_ALLOW_THREADS
    const size_t bsz = (size_t)L->block_size;
    for (int f = 0; f < L->nfields; f++) {
        const field_t *F = &L->fields[f];
        const size_t w = (size_t)F->width, nsym = nblocks * w;
        uint8_t *A = scratch, *B = scratch + nsym;
        if (F->mode == MODE_RAW) {
            gather(src, nblocks, L->block_size, F, e.out + e.pos);
            e.pos += nsym;
            continue;
        }
        gather(src, nblocks, L->block_size, F, A);
        if (F->mode == MODE_HUFF) {
            encode_group(&e, F->tab[0], A, nsym);
        } else if (F->mode == MODE_CTX) {
            const uint8_t *ctx = src + L->fields[F->param].runs[0].off;
            size_t start[MAX_FIELD_TABLES], at[MAX_FIELD_TABLES];
            memset(start, 0, sizeof start);
            for (size_t b = 0; b < nblocks; b++) start[F->map[ctx[b * bsz]]] += w;
            size_t acc = 0;
            for (int s = 0; s < F->ntab; s++) { size_t n = start[s]; start[s] = at[s] = acc; acc += n; }
            for (size_t b = 0; b < nblocks; b++) {
                const int s = F->map[ctx[b * bsz]];
                memcpy(B + at[s], A + b * w, w);
                at[s] += w;
            }
            for (int s = 0; s < F->ntab; s++) encode_group(&e, F->tab[s], B + start[s], at[s] - start[s]);
        } else {
            uint8_t *P = B, *V = P + nblocks, *I = V + nblocks, *D = I + nsym;
            size_t nd = palette_split(A, nblocks, w, (uint8_t)F->param, P, V, D, I);
            encode_group(&e, F->tab[0], P, nblocks);
            encode_group(&e, F->tab[1], V, nblocks);
            encode_group(&e, F->tab[2], D, nd);
            encode_group(&e, F->tab[3], I, nsym);
        }
    }
    crc = crc32c(0, src, (size_t)size);
    Py_END_ALLOW_THREADS
    /* A symbol absent from its table (length 0) would be written as nothing: the caller must
     * build tables from a histogram of the same data. */
    if (e.missing) { err = "symbol missing from its code table"; goto fail; }
    if (_PyBytes_Resize(&payload, (Py_ssize_t)e.pos) < 0) { payload = NULL; goto done; }
    result = Py_BuildValue("(OI)", payload, (unsigned)crc);
    goto done;
fail:
    PyErr_SetString(PyExc_ValueError, err);
done:
    Py_XDECREF(payload);
    free(scratch);
    free(codes);
    free(L);
    PyBuffer_Release(&bs); PyBuffer_Release(&bl); PyBuffer_Release(&bt);
    return result;
}

/* ------------------------------------------------------------------ statistics for the encoder */

typedef struct { Py_buffer src, lay; layout_t *L; const uint8_t *base; size_t nblocks; } stat_args;

static int stat_open(PyObject *args, stat_args *a, int *x, int *y) {
    PyObject *o_src, *o_lay;
    Py_ssize_t off, size, lo;
    *x = *y = 0;
    if (!PyArg_ParseTuple(args, "OnnOn|ii", &o_src, &off, &size, &o_lay, &lo, x, y)) return -1;
    if (get_buffer(o_src, &a->src, 0, "src")) return -1;
    if (get_buffer(o_lay, &a->lay, 0, "layouts")) { PyBuffer_Release(&a->src); return -1; }
    const char *err = NULL;
    a->L = malloc(sizeof(layout_t));
    if (!a->L) { PyErr_NoMemory(); goto fail; }
    if (a->lay.len % 4 || ((uintptr_t)a->lay.buf & 3)) err = "malformed plan";
    else if (off < 0 || size < 0 || off > a->src.len || size > a->src.len - off) err = "range outside the source";
    else err = parse_layout(a->lay.buf, (size_t)a->lay.len / 4, lo, 0x7fffffff, a->L);
    if (!err && size % a->L->block_size) err = "size is not a whole number of blocks";
    if (err) { PyErr_SetString(PyExc_ValueError, err); goto fail; }
    a->base = (const uint8_t *)a->src.buf + off;
    a->nblocks = (size_t)size / (size_t)a->L->block_size;
    return 0;
fail:
    free(a->L);
    PyBuffer_Release(&a->src); PyBuffer_Release(&a->lay);
    return -1;
}

static void stat_close(stat_args *a) {
    free(a->L);
    PyBuffer_Release(&a->src); PyBuffer_Release(&a->lay);
}

/* histogram(src, offset, size, layouts, layout_offset) -> uint64[n_fields][256] as bytes */
static PyObject *py_histogram(PyObject *self, PyObject *args) {
    stat_args a;
    int x, y;
    if (stat_open(args, &a, &x, &y)) return NULL;
    const layout_t *L = a.L;
    PyObject *result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)L->nfields * 256 * 8);
    if (result) {
        uint64_t *hist = (uint64_t *)PyBytes_AS_STRING(result);
        memset(hist, 0, (size_t)L->nfields * 256 * 8);
        Py_BEGIN_ALLOW_THREADS
        for (size_t b = 0; b < a.nblocks; b++) {
            const uint8_t *s = a.base + b * (size_t)L->block_size;
            for (int f = 0; f < L->nfields; f++) {
                uint64_t *hf = hist + 256 * f;
                const field_t *F = &L->fields[f];
                for (int r = 0; r < F->nruns; r++)
                    for (int k = 0; k < F->runs[r].len; k++) hf[s[F->runs[r].off + k]]++;
            }
        }
        Py_END_ALLOW_THREADS
    }
    stat_close(&a);
    return result;
}

/* joint_histogram(src, offset, size, layouts, layout_offset, field, ctx_field)
 *   -> uint64[256 context values][256 symbols] as bytes */
static PyObject *py_joint_histogram(PyObject *self, PyObject *args) {
    stat_args a;
    int f, cf;
    if (stat_open(args, &a, &f, &cf)) return NULL;
    const layout_t *L = a.L;
    if (f < 0 || f >= L->nfields || cf < 0 || cf >= L->nfields || L->fields[cf].width != 1) {
        stat_close(&a);
        PyErr_SetString(PyExc_ValueError, "bad field or context field");
        return NULL;
    }
    PyObject *result = PyBytes_FromStringAndSize(NULL, 256 * 256 * 8);
    if (result) {
        uint64_t *hist = (uint64_t *)PyBytes_AS_STRING(result);
        memset(hist, 0, 256 * 256 * 8);
        const field_t *F = &L->fields[f];
        const size_t coff = L->fields[cf].runs[0].off;
        Py_BEGIN_ALLOW_THREADS
        for (size_t b = 0; b < a.nblocks; b++) {
            const uint8_t *s = a.base + b * (size_t)L->block_size;
            uint64_t *h = hist + 256 * (size_t)s[coff];
            for (int r = 0; r < F->nruns; r++)
                for (int k = 0; k < F->runs[r].len; k++) h[s[F->runs[r].off + k]]++;
        }
        Py_END_ALLOW_THREADS
    }
    stat_close(&a);
    return result;
}

/* palette_histogram(src, offset, size, layouts, layout_offset, field, bias)
 *   -> uint64[4][256] (sizes-1, first values, gaps-1, indices) as bytes */
static PyObject *py_palette_histogram(PyObject *self, PyObject *args) {
    stat_args a;
    int f, bias;
    if (stat_open(args, &a, &f, &bias)) return NULL;
    const layout_t *L = a.L;
    if (f < 0 || f >= L->nfields || (bias != 0 && bias != 128)) {
        stat_close(&a);
        PyErr_SetString(PyExc_ValueError, "bad field or bias");
        return NULL;
    }
    const field_t *F = &L->fields[f];
    const size_t w = (size_t)F->width;
    PyObject *result = PyBytes_FromStringAndSize(NULL, 4 * 256 * 8);
    uint8_t *tmp = malloc(4 * w + 64);
    if (result && tmp) {
        uint64_t *hist = (uint64_t *)PyBytes_AS_STRING(result);
        memset(hist, 0, 4 * 256 * 8);
        Py_BEGIN_ALLOW_THREADS
        uint8_t *A = tmp, *I = tmp + w, *D = I + w;
        for (size_t b = 0; b < a.nblocks; b++) {
            gather(a.base + b * (size_t)L->block_size, 1, L->block_size, F, A);
            uint8_t P = 0, V = 0;
            size_t nd = palette_split(A, 1, w, (uint8_t)bias, &P, &V, D, I);
            hist[P]++;
            hist[256 + V]++;
            for (size_t i = 0; i < nd; i++) hist[512 + D[i]]++;
            for (size_t i = 0; i < w; i++) hist[768 + I[i]]++;
        }
        Py_END_ALLOW_THREADS
    } else if (result) {
        Py_CLEAR(result);
        PyErr_NoMemory();
    }
    free(tmp);
    stat_close(&a);
    return result;
}

#endif
