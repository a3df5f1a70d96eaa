/* The index of a packed file, checked and turned into a decode plan in one pass: the C twin of
 * gguf_tools/packed/format.py's parse_index + validate (the reference, in Python; decode_plan
 * there builds the same arrays). No Python objects are built per entry, so a loader can start
 * decoding sooner. Included by huffman.c only.
 */
#ifndef GGUF_HUFFMAN_INDEX_H
#define GGUF_HUFFMAN_INDEX_H

#include <stdlib.h>

#include "huffman_common.h"

typedef struct { const uint8_t *p; size_t n, pos; } rd_t;

static int rd_need(rd_t *r, size_t k) { return k <= r->n - r->pos; }

typedef struct { int32_t *v; size_t n, cap; } words_t;

static int words_put(words_t *w, int32_t x) {
    if (w->n == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 4096;
        int32_t *v = realloc(w->v, cap * sizeof *v);
        if (!v) return -1;
        w->v = v; w->cap = cap;
    }
    w->v[w->n++] = x;
    return 0;
}

typedef struct { uint64_t orig_size; uint32_t block_size, first_chunk, n_chunks; int32_t words_at; } plan_sec_t;

#define PLAN_FAIL(...) do { PyErr_Format(PyExc_ValueError, __VA_ARGS__); goto fail; } while (0)
#define PLAN_NEED(k) do { if (!rd_need(&r, (k))) PLAN_FAIL("index truncated at byte %zu", r.pos); } while (0)

/* plan(index, original_size, prefix_size, index_offset, max_sections, tensors)
 *   -> (jobs: int64 [n_chunks, 6] bytes, words: int32 bytes, tables: uint8 [n_tables, 256] bytes)
 * tensors: int64 pairs (offset in the original file, size; -1 for a type without a known size). */
static PyObject *py_plan(PyObject *self, PyObject *args) {
    Py_buffer bi, bt;
    unsigned long long original_size, prefix_size, index_offset, max_sections;
    if (!PyArg_ParseTuple(args, "y*KKKKy*", &bi, &original_size, &prefix_size, &index_offset, &max_sections, &bt))
        return NULL;
    PyObject *result = NULL, *o_jobs = NULL, *o_tables = NULL;
    plan_sec_t *secs = NULL;
    uint8_t *tensor_used = NULL;
    words_t words = {NULL, 0, 0};
    const int64_t *tens = bt.buf;
    const size_t n_tensors = (size_t)bt.len / 16;
    const uint64_t data_start = PACK_HEADER_SIZE + (uint64_t)prefix_size;
    rd_t r = {bi.buf, (size_t)bi.len, 0};
    if (bt.len % 16 || ((uintptr_t)bt.buf & 7)) PLAN_FAIL("malformed tensor table");

    PLAN_NEED(16);
    const uint32_t n_tables = load32le(r.p), n_sections = load32le(r.p + 4), n_chunks = load32le(r.p + 8);
    r.pos = 16;
    if (n_tables > MAX_TABLES || (uint64_t)n_tables * 128 > r.n - r.pos)
        PLAN_FAIL("index declares %u code tables, more than it holds", n_tables);
    if (n_sections > MAX_SECTIONS || n_sections > max_sections || (uint64_t)n_sections * 40 > r.n - r.pos)
        PLAN_FAIL("index declares %u sections, more than it holds", n_sections);
    if ((uint64_t)n_chunks * 24 > r.n - r.pos) PLAN_FAIL("index declares %u chunks, more than it holds", n_chunks);

    o_tables = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n_tables * 256);
    o_jobs = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n_chunks * 48);
    secs = malloc(((size_t)n_sections + 1) * sizeof *secs);
    tensor_used = calloc(n_tensors + 1, 1);
    if (!o_tables || !o_jobs || !secs || !tensor_used) { PyErr_NoMemory(); goto fail; }
    uint8_t *tables = (uint8_t *)PyBytes_AS_STRING(o_tables);
    for (uint32_t t = 0; t < n_tables; t++) {
        const uint8_t *src = r.p + r.pos + 128 * (size_t)t;
        uint8_t *len = tables + 256 * (size_t)t;
        unsigned used = 0, longest = 0;
        uint64_t kraft = 0;
        for (int k = 0; k < 256; k++) {
            const unsigned l = k & 1 ? src[k >> 1] >> 4 : src[k >> 1] & 15u;
            len[k] = (uint8_t)l;
            if (!l) continue;
            used++;
            if (l > longest) longest = l;
            if (l <= MAX_BITS) kraft += TABLE_SIZE >> l;
        }
        if (longest > MAX_BITS) PLAN_FAIL("code table %u has a code length past the %d-bit limit", t, MAX_BITS);
        if (used == 0) PLAN_FAIL("code table %u is empty", t);
        if (used == 1 && kraft != TABLE_SIZE / 2)
            PLAN_FAIL("code table %u has a lone symbol whose code length is not 1", t);
        if (used > 1 && kraft > TABLE_SIZE) PLAN_FAIL("code table %u is over-subscribed", t);
        if (used > 1 && kraft < TABLE_SIZE) PLAN_FAIL("code table %u is incomplete", t);
    }
    r.pos += 128 * (size_t)n_tables;

    uint64_t at = prefix_size;       /* where the next section must start in the original file */
    uint32_t next_chunk = 0;
    for (uint32_t si = 0; si < n_sections; si++) {
        PLAN_NEED(40);
        const uint8_t *h = r.p + r.pos;
        const uint64_t off = load64le(h), size = load64le(h + 8), tensor = load64le(h + 16);
        const uint32_t bs = load32le(h + 24), nf = load32le(h + 28), fc = load32le(h + 32), nc = load32le(h + 36);
        r.pos += 40;
        if (bs < 1 || bs > MAX_BLOCK) PLAN_FAIL("section %u has block size %u (1..%d)", si, bs, MAX_BLOCK);
        if (nf < 1 || nf > MAX_FIELDS) PLAN_FAIL("section %u has %u fields (1..%d)", si, nf, MAX_FIELDS);
        if (off != at) PLAN_FAIL("section %u starts at %llu, expected %llu", si, (unsigned long long)off,
                                 (unsigned long long)at);
        if (size == 0 || size > original_size - at)
            PLAN_FAIL("section %u size %llu runs past the original file", si, (unsigned long long)size);
        if (size % bs) PLAN_FAIL("section %u size %llu is not whole %u-byte blocks", si, (unsigned long long)size, bs);
        if ((int64_t)tensor != -1) {
            if ((int64_t)tensor < 0 || tensor >= n_tensors || tensor_used[tensor])
                PLAN_FAIL("section %u refers to tensor %lld, which is not in the GGUF header", si, (long long)tensor);
            if (tens[2 * tensor + 1] < 0 || (uint64_t)tens[2 * tensor] != off || (uint64_t)tens[2 * tensor + 1] != size)
                PLAN_FAIL("section %u (%llu bytes at %llu) disagrees with tensor %lld in the GGUF header", si,
                          (unsigned long long)size, (unsigned long long)off, (long long)tensor);
            tensor_used[tensor] = 1;
        }
        if (fc != next_chunk || nc < 1 || nc > n_chunks - next_chunk)
            PLAN_FAIL("section %u chunk range %u+%u is out of order or range", si, fc, nc);
        secs[si] = (plan_sec_t){size, bs, fc, nc, (int32_t)words.n};
        if (words.n > INT32_MAX - 70000 || words_put(&words, (int32_t)bs) || words_put(&words, (int32_t)nf)) {
            PyErr_NoMemory(); goto fail;
        }
        uint8_t seen[MAX_BLOCK], width[MAX_FIELDS];
        memset(seen, 0, bs);
        for (uint32_t fi = 0; fi < nf; fi++) {
            PLAN_NEED(4);
            const unsigned mode = r.p[r.pos], n_runs = r.p[r.pos + 1], param = r.p[r.pos + 2], n_tab = r.p[r.pos + 3];
            r.pos += 4;
            int shape_ok;
            switch (mode) {
            case MODE_RAW: shape_ok = n_tab == 0 && param == 0; break;
            case MODE_HUFF: shape_ok = n_tab == 1 && param == 0; break;
            case MODE_CTX: shape_ok = n_tab >= 1 && n_tab <= MAX_FIELD_TABLES; break;
            case MODE_PALETTE: shape_ok = n_tab == 4 && (param == 0 || param == 128); break;
            default: PLAN_FAIL("section %u field %u has unknown mode %u", si, fi, mode);
            }
            if (!shape_ok) PLAN_FAIL("section %u field %u: %u code tables and parameter %u do not suit its mode", si,
                                     fi, n_tab, param);
            int ok = !words_put(&words, (int32_t)mode) && !words_put(&words, (int32_t)param) &&
                     !words_put(&words, (int32_t)n_tab);
            PLAN_NEED(4 * (size_t)n_tab);
            for (unsigned k = 0; k < n_tab; k++) {
                const uint32_t id = load32le(r.p + r.pos + 4 * k);
                if (id >= n_tables)
                    PLAN_FAIL("section %u field %u refers to a code table past the %u present", si, fi, n_tables);
                ok = ok && !words_put(&words, (int32_t)id);
            }
            r.pos += 4 * (size_t)n_tab;
            if (mode == MODE_CTX) {
                if (param >= fi || width[param] != 1)
                    PLAN_FAIL("section %u field %u: its context must be an earlier one-byte field", si, fi);
                PLAN_NEED(256);
                for (int k = 0; k < 256; k++) {
                    if (r.p[r.pos + k] >= n_tab)
                        PLAN_FAIL("section %u field %u: context map points past its %u groups", si, fi, n_tab);
                    ok = ok && !words_put(&words, r.p[r.pos + k]);
                }
                r.pos += 256;
            }
            if (n_runs < 1 || n_runs > MAX_RUNS) PLAN_FAIL("section %u field %u has %u runs (1..%d)", si, fi, n_runs,
                                                           MAX_RUNS);
            ok = ok && !words_put(&words, (int32_t)n_runs);
            PLAN_NEED(4 * (size_t)n_runs);
            unsigned w = 0;
            for (unsigned k = 0; k < n_runs; k++) {
                const unsigned a = r.p[r.pos] | (unsigned)r.p[r.pos + 1] << 8, n = r.p[r.pos + 2] | (unsigned)r.p[r.pos + 3] << 8;
                r.pos += 4;
                if (n < 1 || a + n > bs) PLAN_FAIL("section %u field %u has runs outside the block or overlapping", si, fi);
                for (unsigned x = a; x < a + n; x++) {
                    if (seen[x]) PLAN_FAIL("section %u field %u has runs outside the block or overlapping", si, fi);
                    seen[x] = 1;
                }
                w += n;
                ok = ok && !words_put(&words, (int32_t)a) && !words_put(&words, (int32_t)n);
            }
            width[fi] = (uint8_t)(w > 255 ? 0 : w);
            if (!ok) { PyErr_NoMemory(); goto fail; }
        }
        for (uint32_t x = 0; x < bs; x++)
            if (!seen[x]) PLAN_FAIL("section %u fields do not cover its %u-byte block", si, bs);
        next_chunk += nc;
        at += size;
    }
    PLAN_NEED(24 * (size_t)n_chunks);
    const uint8_t *ct = r.p + r.pos;
    r.pos += 24 * (size_t)n_chunks;
    if (r.pos != r.n) PLAN_FAIL("index has %zu trailing bytes", r.n - r.pos);
    if (at != original_size) PLAN_FAIL("sections end at %llu, the original file at %llu", (unsigned long long)at,
                                       (unsigned long long)original_size);
    if (next_chunk != n_chunks) PLAN_FAIL("%u chunks belong to no section", n_chunks - next_chunk);
    int64_t *jobs = (int64_t *)PyBytes_AS_STRING(o_jobs);
    uint64_t dst = prefix_size, src = data_start;
    for (uint32_t si = 0; si < n_sections; si++) {
        const plan_sec_t *s = &secs[si];
        uint64_t total = 0;
        for (uint32_t j = s->first_chunk; j < s->first_chunk + s->n_chunks; j++) {
            const uint8_t *c = ct + 24 * (size_t)j;
            const uint64_t poff = load64le(c);
            const uint32_t psize = load32le(c + 8), osize = load32le(c + 12), crc = load32le(c + 16), sec = load32le(c + 20);
            if (sec != si) PLAN_FAIL("section %u owns chunks that name another section", si);
            if (osize == 0 || osize > MAX_CHUNK || osize % s->block_size)
                PLAN_FAIL("section %u has a chunk of bad size (not whole blocks, empty, or over %u)", si, MAX_CHUNK);
            if (poff != src) PLAN_FAIL("chunk offsets are out of range, overlapping or leave gaps");
            if ((uint64_t)osize > (uint64_t)psize * MAX_RATIO + RATIO_SLACK)
                PLAN_FAIL("a chunk claims an implausible compression ratio (over %d:1)", MAX_RATIO);
            int64_t *job = jobs + 6 * (size_t)j;
            job[0] = (int64_t)poff; job[1] = psize; job[2] = (int64_t)dst; job[3] = osize; job[4] = crc;
            job[5] = s->words_at;
            src += psize; dst += osize; total += osize;
        }
        if (total != s->orig_size)
            PLAN_FAIL("chunks of section %u hold %llu bytes, the section %llu", si, (unsigned long long)total,
                      (unsigned long long)s->orig_size);
    }
    if (n_chunks ? src != index_offset : index_offset != data_start) {
        if (n_chunks) PLAN_FAIL("chunk offsets are out of range, overlapping or leave gaps");
        PLAN_FAIL("packed data present but no chunks");
    }
    PyObject *o_words = PyBytes_FromStringAndSize((const char *)words.v, (Py_ssize_t)(words.n * sizeof(int32_t)));
    if (o_words) {
        result = PyTuple_Pack(3, o_jobs, o_words, o_tables);
        Py_DECREF(o_words);
    }
fail:
    Py_XDECREF(o_jobs);
    Py_XDECREF(o_tables);
    free(secs);
    free(tensor_used);
    free(words.v);
    PyBuffer_Release(&bi);
    PyBuffer_Release(&bt);
    return result;
}

#endif
