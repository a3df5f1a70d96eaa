/* What the encoder and the decoder of packed GGUF files share: limits, byte helpers, block
 * layouts and canonical codes (docs/packed-format.md). Free of Python, like the decoder, so the C
 * test driver (tests/native/test_huffman.c) builds them alone.
 */
#ifndef GGUF_HUFFMAN_COMMON_H
#define GGUF_HUFFMAN_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define MAX_BITS 12                 /* longest code; also the lookup width */
#define TABLE_SIZE (1u << MAX_BITS)
#define MAX_BLOCK 1024              /* largest block (bytes) a layout may describe */
#define MAX_FIELDS 32
#define MAX_RUNS 32
#define MAX_FIELD_TABLES 64         /* context groups per field */
#define MAX_CHUNK (64u << 20)       /* largest decoded chunk accepted */
#define N_STREAMS 4
#define MODE_RAW 0                  /* bytes as they are */
#define MODE_HUFF 1                 /* one code table */
#define MODE_CTX 2                  /* blocks grouped by an earlier one-byte field, a table per group */
#define MODE_PALETTE 3              /* per block: sorted distinct values + indices into them */
#define PACK_HEADER_SIZE 96         /* the packed file's fixed header */
#define MAX_TABLES (1u << 24)
#define MAX_SECTIONS (1u << 21)
#define MAX_RATIO 8                 /* original bytes per packed byte, at most (plus the slack) */
#define RATIO_SLACK 64
#define CACHE_SLOTS 64
#define SCRATCH_FACTOR 3            /* scratch bytes per decoded byte (palettes need three) */

/* ------------------------------------------------------------------ small helpers */

static inline uint64_t load64le(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static inline uint32_t load32le(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static inline void store32le(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}

static inline unsigned bitrev(unsigned code, unsigned len) {
    unsigned r = 0;
    for (unsigned i = 0; i < len; i++) { r = (r << 1) | (code & 1u); code >>= 1; }
    return r;
}

/* ------------------------------------------------------------------ layouts */

typedef struct { uint16_t off, len; } run_t;
typedef struct {
    int mode, param, ntab, nruns, width;
    int32_t tab[MAX_FIELD_TABLES];
    uint8_t map[256];
    run_t runs[MAX_RUNS];
} field_t;
typedef struct { int block_size, nfields, ngroups; field_t fields[MAX_FIELDS]; } layout_t;

static int groups_of(const field_t *F) {
    return F->mode == MODE_HUFF ? 1 : F->mode == MODE_CTX ? F->ntab : F->mode == MODE_PALETTE ? 4 : 0;
}

/* Parse and check one layout: every byte of the block belongs to exactly one run, table ids
 * exist, a context field is an earlier one-byte field, a palette bias is 0 or 128. */
static const char *parse_layout(const int32_t *w, size_t nwords, int64_t at, ptrdiff_t n_tables,
                                layout_t *L) {
    if (at < 0 || (uint64_t)at + 2 > nwords) return "layout offset out of range";
    size_t i = (size_t)at;
    int bs = w[i++], nf = w[i++];
    if (bs < 1 || bs > MAX_BLOCK) return "block size out of range";
    if (nf < 1 || nf > MAX_FIELDS) return "field count out of range";
    uint8_t seen[MAX_BLOCK];
    memset(seen, 0, (size_t)bs);
    int covered = 0;
    L->block_size = bs; L->nfields = nf; L->ngroups = 0;
    for (int f = 0; f < nf; f++) {
        if (i + 3 > nwords) return "layout truncated";
        field_t *F = &L->fields[f];
        F->mode = w[i++]; F->param = w[i++]; F->ntab = w[i++];
        switch (F->mode) {
        case MODE_RAW: if (F->ntab != 0 || F->param != 0) return "bad raw field"; break;
        case MODE_HUFF: if (F->ntab != 1 || F->param != 0) return "bad coded field"; break;
        case MODE_CTX:
            if (F->ntab < 1 || F->ntab > MAX_FIELD_TABLES) return "context table count out of range";
            if (F->param < 0 || F->param >= f || L->fields[F->param].width != 1)
                return "context field must be an earlier one-byte field";
            break;
        case MODE_PALETTE:
            if (F->ntab != 4 || (F->param != 0 && F->param != 128)) return "bad palette field";
            break;
        default: return "unknown field mode";
        }
        if (i + (size_t)F->ntab > nwords) return "layout truncated";
        for (int k = 0; k < F->ntab; k++) {
            F->tab[k] = w[i++];
            if (F->tab[k] < 0 || F->tab[k] >= n_tables) return "code table id out of range";
        }
        if (F->mode == MODE_CTX) {
            if (i + 256 > nwords) return "layout truncated";
            for (int k = 0; k < 256; k++) {
                int32_t v = w[i++];
                if (v < 0 || v >= F->ntab) return "context map entry out of range";
                F->map[k] = (uint8_t)v;
            }
        }
        if (i + 1 > nwords) return "layout truncated";
        F->nruns = w[i++];
        if (F->nruns < 1 || F->nruns > MAX_RUNS) return "run count out of range";
        if (i + 2 * (size_t)F->nruns > nwords) return "layout truncated";
        F->width = 0;
        for (int r = 0; r < F->nruns; r++) {
            int off = w[i++], len = w[i++];
            if (off < 0 || len < 1 || off >= bs || len > bs - off) return "field run outside the block";
            for (int k = off; k < off + len; k++) {
                if (seen[k]) return "field runs overlap";
                seen[k] = 1;
            }
            F->runs[r].off = (uint16_t)off; F->runs[r].len = (uint16_t)len;
            F->width += len;
            covered += len;
        }
        L->ngroups += groups_of(F);
    }
    if (covered != bs) return "field runs do not cover the block";
    return NULL;
}

/* ------------------------------------------------------------------ code tables */

/* Canonical codes from lengths (deflate order: shorter first, then by symbol value).
 * Rejects lengths past MAX_BITS, over-subscribed and incomplete sets; a lone symbol gets the
 * one-bit code 0 (the only incomplete set allowed). Returns the number of symbols used. */
static const char *canonical_codes(const uint8_t *lengths, uint16_t *codes, int *nused) {
    unsigned count[MAX_BITS + 1] = {0};
    int used = 0;
    for (int s = 0; s < 256; s++) {
        unsigned l = lengths[s];
        if (l > MAX_BITS) return "code length past the limit";
        if (l) { count[l]++; used++; }
    }
    if (used == 0) return "empty code table";
    if (used == 1) {
        for (int s = 0; s < 256; s++)
            if (lengths[s] && lengths[s] != 1) return "single-symbol code must have length 1";
    } else {
        uint32_t kraft = 0;
        for (unsigned l = 1; l <= MAX_BITS; l++) kraft += count[l] << (MAX_BITS - l);
        if (kraft > TABLE_SIZE) return "over-subscribed code table";
        if (kraft < TABLE_SIZE) return "incomplete code table";
    }
    unsigned next[MAX_BITS + 2];
    unsigned code = 0;
    count[0] = 0;
    for (unsigned l = 1; l <= MAX_BITS; l++) {
        code = (code + count[l - 1]) << 1;
        next[l] = code;
    }
    for (int s = 0; s < 256; s++) {
        unsigned l = lengths[s];
        codes[s] = l ? (uint16_t)next[l]++ : 0;
    }
    *nused = used;
    return NULL;
}

#endif
