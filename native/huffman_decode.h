/* Decoding chunks of a packed GGUF file: table-driven, up to two symbols per 12-bit lookup, four
 * interleaved bit streams per coded group so the lookups of one stream hide the latency of the
 * others, chunks spread over threads created per call (pool.h). Everything read is
 * bounds-checked here again, even though the index was validated: this code never trusts its
 * input.
 *
 * A decode plan (built by plan(), huffman_index.h) is three flat arrays:
 *   jobs    int64[n][6]: src_off, src_len, dst_off, dst_len, crc32c, layout word offset
 *   layouts int32 words: block_size, n_fields, then per field:
 *           mode, param, n_tables, table ids..., [256 context-map words if mode is CTX],
 *           n_runs, (offset, length) * n_runs
 *   tables  uint8[n_tables][256]: code length per byte symbol (0 = absent)
 */
#ifndef GGUF_HUFFMAN_DECODE_H
#define GGUF_HUFFMAN_DECODE_H

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "huffman_common.h"
#include "huffman_crc32c.h"
#include "pool.h"
#include "simd.h"

/* Entry: bits 0-5 bits used by the entry (where a 64-bit shift reads its count, so the shift that consumes
 * them needs no masking first, one step less in the chain of dependent operations per lookup), 8-15 first
 * symbol, 16-23 second symbol (the first again in a one-symbol entry), 24-27 length of the first symbol
 * alone, 28-31 number of symbols (1 or 2). */
static uint8_t rev8[256];

static void rev_init(void) {
    for (unsigned i = 0; i < 256; i++) rev8[i] = (uint8_t)bitrev(i, 8);
}

static inline unsigned rev_code(unsigned code, unsigned len) { /* len <= 12 */
    unsigned r16 = ((unsigned)rev8[code & 0xff] << 8) | rev8[(code >> 8) & 0xff];
    return r16 >> (16 - len);
}

static const char *build_decode_table(const uint8_t *lengths, uint32_t *table) {
    uint16_t codes[256];
    int used;
    const char *err = canonical_codes(lengths, codes, &used);
    if (err) return err;
    unsigned lmin = MAX_BITS;
    if (used == 1) { /* one symbol, one bit, and either bit value decodes to it */
        unsigned sym = 0;
        for (unsigned k = 0; k < 256; k++) if (lengths[k]) sym = k;
        const uint32_t e = 2u | (sym << 8) | (sym << 16) | (1u << 24) | (2u << 28);
        for (unsigned i = 0; i < TABLE_SIZE; i++) table[i] = e;
        return NULL;
    }
    /* one symbol per entry, then entries whose leftover bits hold a whole second code get it too
     * (an upgraded entry keeps its first symbol and length where later lookups read them) */
    for (unsigned k = 0; k < 256; k++) {
        const unsigned l = lengths[k];
        if (!l) continue;
        if (l < lmin) lmin = l;
        const uint32_t e = l | (k << 8) | (k << 16) | (l << 24) | (1u << 28);
        for (unsigned i = rev_code(codes[k], l); i < TABLE_SIZE; i += 1u << l) table[i] = e;
    }
    if (2 * lmin > MAX_BITS) return NULL;
    for (unsigned i = 0; i < TABLE_SIZE; i++) {
        const uint32_t e1 = table[i];
        const unsigned l1 = (e1 >> 24) & 0xfu;
        if (l1 + lmin > MAX_BITS) continue;
        const uint32_t e2 = table[i >> l1];
        const unsigned l2 = (e2 >> 24) & 0xfu;
        if (l1 + l2 <= MAX_BITS)
            table[i] = (l1 + l2) | (e1 & 0xff00u) | ((e2 & 0xff00u) << 8) | (l1 << 24) | (2u << 28);
    }
    return NULL;
}

/* ------------------------------------------------------------------ stream decoding */

typedef struct {
    size_t pos;      /* next byte to load, relative to the chunk payload */
    size_t start, end;
    uint64_t buf;
    unsigned cnt;
    uint8_t *out, *out_end;
} stream_t;

#define REFILL(s)                                                 \
    do {                                                          \
        (s).buf |= load64le(base + (s).pos) << (s).cnt;           \
        (s).pos += (63u - (s).cnt) >> 3;                          \
        (s).cnt |= 56u;                                           \
    } while (0)

#define DECODE1(s)                                                \
    do {                                                          \
        const uint32_t e_ = table[(s).buf & (TABLE_SIZE - 1)];    \
        const uint16_t s_ = (uint16_t)(e_ >> 8);                  \
        memcpy((s).out, &s_, 2);                                  \
        (s).out += e_ >> 28;                                      \
        (s).buf >>= e_ & 63u;                                     \
        (s).cnt -= e_ & 63u;                                      \
    } while (0)

/* One symbol at a time, zeros past the stream end; used near the ends of streams. */
#define ALWAYS_INLINE inline __attribute__((always_inline))

static ALWAYS_INLINE void decode_tail(const uint8_t *base, stream_t *s, const uint32_t *table) {
    while (s->out < s->out_end) {
        while (s->cnt <= 56) {
            uint64_t byte = s->pos < s->end ? base[s->pos] : 0;
            s->buf |= byte << s->cnt;
            s->pos++;
            s->cnt += 8;
        }
        uint32_t e = table[s->buf & (TABLE_SIZE - 1)];
        unsigned l1 = (e >> 24) & 0xfu;
        *s->out++ = (uint8_t)(e >> 8);
        s->buf >>= l1;
        s->cnt -= l1;
    }
}

/* The four streams' fast loop, while every stream has 8 readable bytes and room for a round's symbols:
 * a refill, then four lookups (at most 48 bits) per stream. The bit buffers, counts and outputs live in
 * locals so they stay in registers; the read positions (used once a round) and the round count are kept
 * in memory, which leaves x86-64's sixteen registers enough for the rest. A count keeps only its low 6
 * bits meaningful (entries are subtracted whole: their low 6 bits are the bits used), which is all a
 * refill reads. */
static ALWAYS_INLINE void fast_streams(const uint8_t *base, size_t base_len, stream_t *st, const uint32_t *table) {
    if (base_len < 8) return;
    const size_t lim = base_len - 8;
    uint64_t b0 = st[0].buf, b1 = st[1].buf, b2 = st[2].buf, b3 = st[3].buf;
    uint32_t c0 = st[0].cnt, c1 = st[1].cnt, c2 = st[2].cnt, c3 = st[3].cnt;
    const uint8_t *volatile pv[N_STREAMS] = {base + st[0].pos, base + st[1].pos, base + st[2].pos, base + st[3].pos};
    const uint8_t *const plim = base + lim;
    uint8_t *o0 = st[0].out, *o1 = st[1].out, *o2 = st[2].out, *o3 = st[3].out;
    for (;;) {
        /* each round reads at most 7 new bytes and writes at most 8 symbols per stream */
        size_t n = SIZE_MAX;
#define ROUNDS(k)                                                          \
        do {                                                               \
            const uint8_t *p_ = pv[k];                                     \
            size_t r_ = p_ > plim ? 0 : (size_t)(plim - p_) / 7 + 1;       \
            size_t w_ = (size_t)(st[k].out_end - o##k) / 8;                \
            if (r_ < n) n = r_;                                            \
            if (w_ < n) n = w_;                                            \
        } while (0)
        ROUNDS(0); ROUNDS(1); ROUNDS(2); ROUNDS(3);
#undef ROUNDS
        if (n == 0) break;
        volatile size_t left = n;
#define LREFILL(k)                                                         \
        do {                                                               \
            const uint8_t *p_ = pv[k];                                     \
            b##k |= load64le(p_) << (c##k & 63u);                          \
            pv[k] = p_ + ((~c##k & 63u) >> 3);                             \
            c##k |= 56u;                                                   \
        } while (0)
#define LPAIR(k)                                                           \
        do {                                                               \
            const uint32_t e_ = table[b##k & (TABLE_SIZE - 1)];            \
            const uint16_t s_ = (uint16_t)(e_ >> 8);                       \
            memcpy(o##k, &s_, 2);                                          \
            o##k += e_ >> 28;                                              \
            b##k >>= e_ & 63u;                                             \
            c##k -= e_;                                                    \
        } while (0)
        do {
            LREFILL(0); LREFILL(1); LREFILL(2); LREFILL(3);
            LPAIR(0); LPAIR(1); LPAIR(2); LPAIR(3);
            LPAIR(0); LPAIR(1); LPAIR(2); LPAIR(3);
            LPAIR(0); LPAIR(1); LPAIR(2); LPAIR(3);
            LPAIR(0); LPAIR(1); LPAIR(2); LPAIR(3);
        } while (--left);
#undef LREFILL
#undef LPAIR
    }
    st[0].buf = b0; st[1].buf = b1; st[2].buf = b2; st[3].buf = b3;
    st[0].cnt = c0 & 63u; st[1].cnt = c1 & 63u; st[2].cnt = c2 & 63u; st[3].cnt = c3 & 63u;
    for (int k = 0; k < N_STREAMS; k++) st[k].pos = (size_t)(pv[k] - base);
    st[0].out = o0; st[1].out = o1; st[2].out = o2; st[3].out = o3;
}

/* Decode four streams of one field into out[0..nsym). Returns NULL or an error. */
static ALWAYS_INLINE const char *decode_field_impl(const uint8_t *base, size_t base_len, const size_t *starts,
                                                  const size_t *lens, uint8_t *out, size_t nsym,
                                                  const uint32_t *table) {
    stream_t st[N_STREAMS];
    for (int k = 0; k < N_STREAMS; k++) {
        size_t a = nsym * (size_t)k / N_STREAMS, b = nsym * (size_t)(k + 1) / N_STREAMS;
        st[k].pos = st[k].start = starts[k];
        st[k].end = starts[k] + lens[k];
        st[k].buf = 0; st[k].cnt = 0;
        st[k].out = out + a; st[k].out_end = out + b;
        if (b - a > 8 * lens[k]) return "more symbols than the stream can hold";
    }
    fast_streams(base, base_len, st, table);
    for (int k = 0; k < N_STREAMS; k++) {
        stream_t *s = &st[k];
        /* One stream alone, still fast, while it has 8 readable bytes and room for 8 symbols. */
        while (base_len >= 8 && s->pos <= base_len - 8 && s->out_end - s->out >= 8) {
            REFILL(*s);
            DECODE1(*s); DECODE1(*s); DECODE1(*s); DECODE1(*s);
        }
        decode_tail(base, s, table);
        /* Bits consumed must end inside the stream's last byte: no overrun, no unused bytes. */
        uint64_t used_bits = (uint64_t)(s->pos - s->start) * 8 - s->cnt;
        uint64_t avail = (uint64_t)(s->end - s->start) * 8;
        if (s->pos < s->start || used_bits > avail) return "bit stream overrun";
        if (used_bits + 8 <= avail) return "bit stream has trailing bytes";
    }
    return NULL;
}

/* The same decoder compiled twice: BMI2's flag-free shifts (shrx/shlx) shorten the chain of
 * dependent operations per symbol; the plain build runs everywhere else. */
typedef const char *(*decode_field_fn)(const uint8_t *, size_t, const size_t *, const size_t *, uint8_t *,
                                        size_t, const uint32_t *);

static const char *decode_field_plain(const uint8_t *base, size_t base_len, const size_t *starts,
                                      const size_t *lens, uint8_t *out, size_t nsym, const uint32_t *table) {
    return decode_field_impl(base, base_len, starts, lens, out, nsym, table);
}

#if defined(SIMD_ON_X86)
__attribute__((target("bmi2")))
static const char *decode_field_bmi2(const uint8_t *base, size_t base_len, const size_t *starts,
                                     const size_t *lens, uint8_t *out, size_t nsym, const uint32_t *table) {
    return decode_field_impl(base, base_len, starts, lens, out, nsym, table);
}
#endif

static decode_field_fn decode_field = decode_field_plain;

static void dispatch_init(void) {
#if defined(SIMD_ON_X86)
    if (simd_has(CPU_BMI2)) decode_field = decode_field_bmi2;
#endif
}

/* ------------------------------------------------------------------ chunk decoding */

static const char OOM[] = "out of memory";
static const char WRITE_FAILED[] = "write failed";

static int err_rank(const char *e) { return e == OOM || e == WRITE_FAILED ? 0 : 1; }

typedef struct {
    const uint8_t *src; size_t src_len;
    uint8_t *dst; size_t dst_len;
    int64_t dst_base;             /* the output offset of dst[0]: a window of the file, or 0 */
    const int64_t *jobs; ptrdiff_t njobs;
    const int32_t *layouts; size_t nwords;
    const uint8_t *tables; ptrdiff_t ntables;
    int verify_crc;
    int fd;                       /* >= 0: write each chunk to this file with pwrite, dst unused */
    int keep;                     /* threads' buffers and built tables outlive the call (kept_take) */
    int write_errno;
    size_t chunk_max;
    atomic_llong next;
    atomic_int failed;
    pthread_mutex_t lock;
    ptrdiff_t err_chunk;
    const char *err;
} dec_ctx;

typedef struct {
    uint8_t *scratch;
    uint8_t *chunk;               /* the decoded chunk, when writing to a file */
    size_t scratch_cap, chunk_cap;
    uint32_t *tab[CACHE_SLOTS];
    int32_t tab_id[CACHE_SLOTS];
    layout_t layout;
    size_t counts[MAX_FIELD_TABLES];
    const uint8_t *gptr[MAX_FIELD_TABLES];
} dec_thread;

/* A per-thread cache of built decode tables, direct-mapped by table id. Each keeps the code lengths it was
 * built from after its entries, and a hit must match them: a kept thread state (kept_take) may come from a
 * call on another plan, where the same id means another table. */
static const char *get_table(const dec_ctx *c, dec_thread *t, int32_t id, const uint32_t **out) {
    const int slot = id % CACHE_SLOTS;
    const uint8_t *lengths = c->tables + 256 * (size_t)id;
    if (t->tab_id[slot] == id && memcmp(t->tab[slot] + TABLE_SIZE, lengths, 256) == 0) {
        *out = t->tab[slot];
        return NULL;
    }
    if (!t->tab[slot] && !(t->tab[slot] = malloc(TABLE_SIZE * sizeof(uint32_t) + 256))) return OOM;
    t->tab_id[slot] = -1;
    const char *err = build_decode_table(lengths, t->tab[slot]);
    if (err) return err;
    memcpy(t->tab[slot] + TABLE_SIZE, lengths, 256);
    t->tab_id[slot] = id;
    *out = t->tab[slot];
    return NULL;
}

typedef struct { const uint8_t *base; size_t blen, pos, hdr_at; } cursor_t;

/* One coded group: its four stream lengths come from the chunk header, in group order. */
static const char *decode_group(const dec_ctx *c, dec_thread *t, cursor_t *cur, int32_t id, uint8_t *out,
                                size_t nsym) {
    size_t starts[N_STREAMS], lens[N_STREAMS];
    for (int k = 0; k < N_STREAMS; k++) {
        lens[k] = load32le(cur->base + cur->hdr_at + 4 * k);
        if (lens[k] > cur->blen - cur->pos) return "stream lengths exceed the chunk";
        starts[k] = cur->pos;
        cur->pos += lens[k];
    }
    cur->hdr_at += 16;
    const uint32_t *table = NULL;
    if (nsym) {
        const char *err = get_table(c, t, id, &table);
        if (err) return err;
    }
    return decode_field(cur->base, cur->blen, starts, lens, out, nsym, table);
}

static void scatter(uint8_t *dst, size_t nblocks, int bs, const field_t *F, const uint8_t *from) {
    if (F->nruns == 1 && F->width == 1) {
        uint8_t *d = dst + F->runs[0].off;
        for (size_t b = 0; b < nblocks; b++) d[b * (size_t)bs] = from[b];
        return;
    }
    if (F->nruns == 1) {
        const size_t w = (size_t)F->width;
        uint8_t *d = dst + F->runs[0].off;
        switch (w) { /* constant sizes let the compiler emit straight vector moves */
        case 16: for (size_t b = 0; b < nblocks; b++) memcpy(d + b * bs, from + b * 16, 16); return;
        case 32: for (size_t b = 0; b < nblocks; b++) memcpy(d + b * bs, from + b * 32, 32); return;
        default: for (size_t b = 0; b < nblocks; b++) memcpy(d + b * bs, from + b * w, w); return;
        }
    }
    for (size_t b = 0; b < nblocks; b++) {
        uint8_t *d = dst + b * (size_t)bs;
        for (int r = 0; r < F->nruns; r++) {
            memcpy(d + F->runs[r].off, from, F->runs[r].len);
            from += F->runs[r].len;
        }
    }
}

static inline void put_block(uint8_t *blk, const field_t *F, const uint8_t *from) {
    for (int r = 0; r < F->nruns; r++) {
        memcpy(blk + F->runs[r].off, from, F->runs[r].len);
        from += F->runs[r].len;
    }
}

static const char *decode_ctx_field(const dec_ctx *c, dec_thread *t, cursor_t *cur, const layout_t *L,
                                    const field_t *F, uint8_t *dst, size_t nblocks) {
    const size_t bs = (size_t)L->block_size, w = (size_t)F->width;
    const uint8_t *ctx = dst + L->fields[F->param].runs[0].off;  /* already decoded */
    for (int s = 0; s < F->ntab; s++) t->counts[s] = 0;
    for (size_t b = 0; b < nblocks; b++) t->counts[F->map[ctx[b * bs]]]++;
    uint8_t *p = t->scratch;
    for (int s = 0; s < F->ntab; s++) {
        const size_t n = t->counts[s] * w;
        const char *err = decode_group(c, t, cur, F->tab[s], p, n);
        if (err) return err;
        t->gptr[s] = p;
        p += n;
    }
    if (F->nruns == 1) {
        uint8_t *d = dst + F->runs[0].off;
#define CTX_COPY(W)                                                        \
        for (size_t b = 0; b < nblocks; b++) {                             \
            const int s = F->map[ctx[b * bs]];                             \
            memcpy(d + b * bs, t->gptr[s], W);                             \
            t->gptr[s] += W;                                               \
        }
        switch (w) { /* constant sizes: straight vector moves instead of a call per block */
        case 16: CTX_COPY(16); break;
        case 32: CTX_COPY(32); break;
        default: CTX_COPY(w);
        }
#undef CTX_COPY
    } else {
        for (size_t b = 0; b < nblocks; b++) {
            const int s = F->map[ctx[b * bs]];
            put_block(dst + b * bs, F, t->gptr[s]);
            t->gptr[s] += w;
        }
    }
    return NULL;
}

#if defined(SIMD_ON_X86)
/* Map 16 indices at a time through a palette of at most 16 entries; nonzero when one is too big. */
__attribute__((target("ssse3")))
static int palette_map16(const uint8_t *pal, unsigned size, const uint8_t *idx, uint8_t *out, size_t w) {
    const __m128i p = _mm_loadu_si128((const __m128i *)pal);
    const __m128i top = _mm_set1_epi8((char)(size - 1));
    __m128i bad = _mm_setzero_si128();
    for (size_t i = 0; i < w; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(idx + i));
        bad = _mm_or_si128(bad, _mm_subs_epu8(v, top));
        _mm_storeu_si128((__m128i *)(out + i), _mm_shuffle_epi8(p, v));
    }
    return _mm_movemask_epi8(_mm_cmpeq_epi8(bad, _mm_setzero_si128())) != 0xffff;
}
#endif

static const char *decode_palette_field(const dec_ctx *c, dec_thread *t, cursor_t *cur, const layout_t *L,
                                        const field_t *F, uint8_t *dst, size_t nblocks) {
    const size_t bs = (size_t)L->block_size, w = (size_t)F->width;
    uint8_t *P = t->scratch, *V = P + nblocks;
    const char *err = decode_group(c, t, cur, F->tab[0], P, nblocks);
    if (!err) err = decode_group(c, t, cur, F->tab[1], V, nblocks);
    if (err) return err;
    size_t ndelta = 0;
    for (size_t b = 0; b < nblocks; b++) {
        if ((size_t)P[b] >= w) return "palette larger than its block";
        ndelta += P[b];
    }
    uint8_t *D = V + nblocks, *I = D + ndelta;
    err = decode_group(c, t, cur, F->tab[2], D, ndelta);
    if (!err) err = decode_group(c, t, cur, F->tab[3], I, nblocks * w);
    if (err) return err;
    const uint8_t bias = (uint8_t)F->param;
    const uint8_t *dp = D;
    uint8_t pal[256], tmp[MAX_BLOCK];
    memset(pal, 0, sizeof pal);
    for (size_t b = 0; b < nblocks; b++) {
        const unsigned size = (unsigned)P[b] + 1;
        unsigned v = V[b];
        pal[0] = (uint8_t)(v ^ bias);
        for (unsigned j = 1; j < size; j++) {
            v += (unsigned)*dp++ + 1;
            if (v > 255) return "palette values out of range";
            pal[j] = (uint8_t)(v ^ bias);
        }
        const uint8_t *ib = I + b * w;
        uint8_t *out = F->nruns == 1 ? dst + b * bs + F->runs[0].off : tmp;
        unsigned bad = 0;
#if defined(SIMD_ON_X86)
        if (size <= 16 && w % 16 == 0 && simd_has(CPU_SSSE3)) {
            bad = (unsigned)palette_map16(pal, size, ib, out, w);
        } else
#endif
        {
            for (size_t i = 0; i < w; i++) {
                bad |= ib[i] >= size;
                out[i] = pal[ib[i]];
            }
        }
        if (bad) return "palette index out of range";
        if (F->nruns != 1) put_block(dst + b * bs, F, tmp);
    }
    return NULL;
}

static const char *decode_chunk(dec_ctx *c, dec_thread *t, ptrdiff_t j) {
    const int64_t *job = c->jobs + 6 * j;
    int64_t so = job[0], sl = job[1], d_off = job[2], dl = job[3], crc = job[4], lo = job[5];
    if (so < 0 || sl < 0 || (uint64_t)so > c->src_len || (uint64_t)sl > c->src_len - (uint64_t)so)
        return "chunk lies outside the packed file";
    const int64_t rel = d_off - c->dst_base;
    if (d_off < 0 || dl < 0 || rel < 0 || (uint64_t)rel > c->dst_len || (uint64_t)dl > c->dst_len - (uint64_t)rel)
        return "chunk lies outside the output";
    if ((uint64_t)dl > MAX_CHUNK || (size_t)dl > c->chunk_max) return "chunk too large";
    if ((uint64_t)dl > 8 * (uint64_t)sl + 64) return "implausible compression ratio";
    layout_t *L = &t->layout;
    const char *err = parse_layout(c->layouts, c->nwords, lo, c->ntables, L);
    if (err) return err;
    if (dl % L->block_size) return "chunk size is not a whole number of blocks";
    const size_t nblocks = (size_t)dl / (size_t)L->block_size;
    uint8_t *dst = c->fd >= 0 ? t->chunk : c->dst + rel;
    cursor_t cur = {c->src + so, (size_t)sl, (size_t)L->ngroups * 16, 0};
    if (cur.pos > cur.blen) return "chunk header truncated";
    for (int f = 0; f < L->nfields; f++) {
        const field_t *F = &L->fields[f];
        const size_t nsym = nblocks * (size_t)F->width;
        switch (F->mode) {
        case MODE_RAW:
            if (nsym > cur.blen - cur.pos) return "raw field truncated";
            scatter(dst, nblocks, L->block_size, F, cur.base + cur.pos);
            cur.pos += nsym;
            break;
        case MODE_HUFF:
            err = decode_group(c, t, &cur, F->tab[0], t->scratch, nsym);
            if (err) return err;
            scatter(dst, nblocks, L->block_size, F, t->scratch);
            break;
        case MODE_CTX:
            err = decode_ctx_field(c, t, &cur, L, F, dst, nblocks);
            if (err) return err;
            break;
        default:
            err = decode_palette_field(c, t, &cur, L, F, dst, nblocks);
            if (err) return err;
        }
    }
    if (cur.pos != cur.blen) return "chunk has trailing bytes";
    if (c->verify_crc && crc32c(0, dst, (size_t)dl) != (uint32_t)crc) return "checksum mismatch";
    if (c->fd >= 0) { /* only checked data reaches the file */
        size_t done = 0;
        while (done < (size_t)dl) {
            ssize_t n = pwrite(c->fd, dst + done, (size_t)dl - done, (off_t)(d_off + (int64_t)done));
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) { c->write_errno = n < 0 ? errno : EIO; return WRITE_FAILED; }
            done += (size_t)n;
        }
    }
    return NULL;
}

/* Thread states kept between calls that ask for it (a stream of windows decoded one call each): their
 * scratch is already mapped and their tables already built, which a fresh state per call would redo for
 * every window. kept_release() frees them. */
static pthread_mutex_t kept_lock = PTHREAD_MUTEX_INITIALIZER;
static dec_thread *kept[POOL_MAX_THREADS];
static int nkept;

static void dec_thread_free(dec_thread *t) {
    if (!t) return;
    for (int i = 0; i < CACHE_SLOTS; i++) free(t->tab[i]);
    free(t->scratch);
    free(t->chunk);
    free(t);
}

static void kept_release(void) {
    pthread_mutex_lock(&kept_lock);
    while (nkept > 0) dec_thread_free(kept[--nkept]);
    pthread_mutex_unlock(&kept_lock);
}

static void kept_after_fork(void) { /* a forked child: the lock may be held by a thread that is gone */
    pthread_mutex_init(&kept_lock, NULL);
    nkept = 0;
}

/* A thread state with room for this call's chunks: a kept one when the call keeps them, else a new one. */
static dec_thread *dec_thread_take(const dec_ctx *c) {
    dec_thread *t = NULL;
    if (c->keep) {
        pthread_mutex_lock(&kept_lock);
        if (nkept > 0) t = kept[--nkept];
        pthread_mutex_unlock(&kept_lock);
    }
    if (!t) {
        if (!(t = calloc(1, sizeof(dec_thread)))) return NULL;
        for (int i = 0; i < CACHE_SLOTS; i++) t->tab_id[i] = -1;
    }
    const size_t need = SCRATCH_FACTOR * c->chunk_max + 64;
    if (t->scratch_cap < need) {
        free(t->scratch);
        t->scratch_cap = (t->scratch = malloc(need)) ? need : 0;
    }
    if (c->fd >= 0 && t->chunk_cap < c->chunk_max + 64) {
        free(t->chunk);
        t->chunk_cap = (t->chunk = malloc(c->chunk_max + 64)) ? c->chunk_max + 64 : 0;
    }
    if (!t->scratch || (c->fd >= 0 && !t->chunk)) {
        dec_thread_free(t);
        return NULL;
    }
    return t;
}

static void dec_thread_give(const dec_ctx *c, dec_thread *t) {
    if (c->keep) {
        pthread_mutex_lock(&kept_lock);
        if (nkept < POOL_MAX_THREADS) { kept[nkept++] = t; t = NULL; }
        pthread_mutex_unlock(&kept_lock);
    }
    dec_thread_free(t);
}

/* One decoding thread: its own scratch and table cache, chunks taken one at a time from c->next. */
static void dec_worker(void *arg, int tid, int nth) {
    (void)tid;
    (void)nth;
    dec_ctx *c = (dec_ctx *)arg;
    dec_thread *t = dec_thread_take(c);
    int ok = t != NULL;
    if (!ok) {
        pthread_mutex_lock(&c->lock);
        if (!c->err) { c->err = OOM; c->err_chunk = -1; }
        pthread_mutex_unlock(&c->lock);
        atomic_store(&c->failed, 1);
    }
    while (ok && !atomic_load(&c->failed)) {
        long long j = atomic_fetch_add(&c->next, 1);
        if (j >= c->njobs) break;
        const char *err = decode_chunk(c, t, (ptrdiff_t)j);
        if (err) {
            pthread_mutex_lock(&c->lock);
            /* report the first bad chunk; running out of memory or disk outranks bad data */
            if (!c->err || err_rank(err) < err_rank(c->err) ||
                (err_rank(err) == err_rank(c->err) && j < c->err_chunk)) {
                c->err = err;
                c->err_chunk = j;
            }
            pthread_mutex_unlock(&c->lock);
            atomic_store(&c->failed, 1);
        }
    }
    if (t) dec_thread_give(c, t);
}

/* Decode every chunk of c on up to `threads` threads. Call with the GIL released. Fresh threads,
 * not the persistent pool: they must inherit the caller's priority (see pool_run_fresh). */
static void decode_chunks(dec_ctx *c, int threads) {
    if (threads < 1) threads = 1;
    if (threads > POOL_MAX_THREADS) threads = POOL_MAX_THREADS;
    if (threads > c->njobs) threads = c->njobs > 0 ? (int)c->njobs : 1;
    pool_run_fresh(dec_worker, c, threads);
}

#endif
