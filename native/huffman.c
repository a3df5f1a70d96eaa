/* Canonical Huffman coding of GGUF tensor data (docs/packed-format.md).
 *
 * Decoder: table-driven, up to two symbols per 12-bit lookup, four interleaved bit streams per
 * coded group so the lookups of one stream hide the latency of the others, chunks spread over
 * pthreads with the GIL released. Everything read from a packed file is bounds-checked here
 * again, even though the Python side has validated the index: this code never trusts its input.
 *
 * Plans come from Python as flat arrays (gguf_tools/pack_format.py, decode_plan):
 *   jobs    int64[n][6]: src_off, src_len, dst_off, dst_len, crc32c, layout word offset
 *   layouts int32 words: block_size, n_fields, then per field:
 *           mode, param, n_tables, table ids..., [256 context-map words if mode is CTX],
 *           n_runs, (offset, length) * n_runs
 *   tables  uint8[n_tables][256]: code length per byte symbol (0 = absent)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HUF_X86 1
#endif
#if defined(__aarch64__) && defined(__ARM_FEATURE_CRC32)
#include <arm_acle.h>
#define HUF_ARM_CRC 1
#endif

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
#define MAX_THREADS 64
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

/* ------------------------------------------------------------------ CRC-32C (Castagnoli) */

static uint32_t crc_table[8][256];
static int have_hw_crc, have_ssse3;

#define CRC_LANE 4096   /* bytes per lane when three lanes run side by side */
static uint32_t crc_shift1[4][256], crc_shift2[4][256]; /* raw register after CRC_LANE / 2*CRC_LANE zeros */

static uint32_t gf2_times(const uint32_t *mat, uint32_t vec) {
    uint32_t sum = 0;
    for (int i = 0; vec; i++, vec >>= 1)
        if (vec & 1) sum ^= mat[i];
    return sum;
}

static void gf2_square(uint32_t *sq, const uint32_t *mat) {
    for (int i = 0; i < 32; i++) sq[i] = gf2_times(mat, mat[i]);
}

/* Tables that run a raw (uninverted) CRC register through n zero bytes, n a power of two. */
static void crc_shift_tables(uint32_t tab[4][256], unsigned log2_bytes) {
    uint32_t a[32], b[32];
    a[0] = 0x82F63B78u; /* one zero bit: shift right, fold the polynomial in when bit 0 was set */
    for (int i = 1; i < 32; i++) a[i] = 1u << (i - 1);
    for (unsigned k = 0; k < log2_bytes + 3; k++) {
        gf2_square(b, a);
        memcpy(a, b, sizeof a);
    }
    for (int k = 0; k < 4; k++)
        for (uint32_t v = 0; v < 256; v++) tab[k][v] = gf2_times(a, v << (8 * k));
}

static inline uint32_t crc_shift(const uint32_t tab[4][256], uint32_t c) {
    return tab[0][c & 0xff] ^ tab[1][(c >> 8) & 0xff] ^ tab[2][(c >> 16) & 0xff] ^ tab[3][c >> 24];
}

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
    crc_shift_tables(crc_shift1, 12);
    crc_shift_tables(crc_shift2, 13);
#if defined(HUF_X86)
    __builtin_cpu_init();
    have_hw_crc = __builtin_cpu_supports("sse4.2");
    have_ssse3 = __builtin_cpu_supports("ssse3");
#elif defined(HUF_ARM_CRC)
    have_hw_crc = 1;
#endif
}

static uint32_t crc32c_sw(uint32_t crc, const uint8_t *p, size_t n) {
    crc = ~crc;
    while (n >= 8) {
        uint32_t lo = crc ^ load32le(p), hi = load32le(p + 4);
        crc = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^ crc_table[5][(lo >> 16) & 0xff] ^
              crc_table[4][lo >> 24] ^ crc_table[3][hi & 0xff] ^ crc_table[2][(hi >> 8) & 0xff] ^
              crc_table[1][(hi >> 16) & 0xff] ^ crc_table[0][hi >> 24];
        p += 8; n -= 8;
    }
    while (n--) crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xff];
    return ~crc;
}

#if defined(HUF_X86) && defined(__x86_64__)
__attribute__((target("sse4.2")))
static uint32_t crc32c_hw(uint32_t crc, const uint8_t *p, size_t n) {
    uint64_t c = ~crc & 0xffffffffu;
    /* Three independent lanes hide the instruction's latency; the earlier lanes' registers are
     * then run through the later lanes' length of zeros and folded in. */
    while (n >= 3 * CRC_LANE) {
        uint64_t c1 = 0, c2 = 0;
        for (size_t i = 0; i < CRC_LANE; i += 8) {
            c = _mm_crc32_u64(c, load64le(p + i));
            c1 = _mm_crc32_u64(c1, load64le(p + CRC_LANE + i));
            c2 = _mm_crc32_u64(c2, load64le(p + 2 * CRC_LANE + i));
        }
        c = crc_shift(crc_shift2, (uint32_t)c) ^ crc_shift(crc_shift1, (uint32_t)c1) ^ (uint32_t)c2;
        p += 3 * CRC_LANE;
        n -= 3 * CRC_LANE;
    }
    while (n >= 8) { c = _mm_crc32_u64(c, load64le(p)); p += 8; n -= 8; }
    while (n--) c = _mm_crc32_u8((uint32_t)c, *p++);
    return ~(uint32_t)c;
}
#elif defined(HUF_ARM_CRC)
static uint32_t crc32c_hw(uint32_t crc, const uint8_t *p, size_t n) {
    uint32_t c = ~crc;
    while (n >= 8) { c = __crc32cd(c, load64le(p)); p += 8; n -= 8; }
    while (n--) c = __crc32cb(c, *p++);
    return ~c;
}
#endif

static uint32_t crc32c(uint32_t crc, const uint8_t *p, size_t n) {
#if (defined(HUF_X86) && defined(__x86_64__)) || defined(HUF_ARM_CRC)
    if (have_hw_crc) return crc32c_hw(crc, p, n);
#endif
    return crc32c_sw(crc, p, n);
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
static const char *parse_layout(const int32_t *w, size_t nwords, int64_t at, Py_ssize_t n_tables,
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

/* Entry: bits 0-7 first symbol, 8-15 second symbol, 16-23 bits used by the entry,
 * 24-27 length of the first symbol alone, 28-31 number of symbols (1 or 2). */
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
        const uint32_t e = sym | (sym << 8) | (2u << 16) | (1u << 24) | (2u << 28);
        for (unsigned i = 0; i < TABLE_SIZE; i++) table[i] = e;
        return NULL;
    }
    /* one symbol per entry, then entries whose leftover bits hold a whole second code get it too
     * (an upgraded entry keeps its first symbol and length where later lookups read them) */
    for (unsigned k = 0; k < 256; k++) {
        const unsigned l = lengths[k];
        if (!l) continue;
        if (l < lmin) lmin = l;
        const uint32_t e = k | (k << 8) | (l << 16) | (l << 24) | (1u << 28);
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
            table[i] = (e1 & 0xffu) | ((e2 & 0xffu) << 8) | ((l1 + l2) << 16) | (l1 << 24) | (2u << 28);
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
        uint32_t e_ = table[(s).buf & (TABLE_SIZE - 1)];          \
        memcpy((s).out, &e_, 2);                                  \
        (s).out += e_ >> 28;                                      \
        unsigned nb_ = (e_ >> 16) & 0xffu;                        \
        (s).buf >>= nb_;                                          \
        (s).cnt -= nb_;                                           \
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
        *s->out++ = (uint8_t)e;
        s->buf >>= l1;
        s->cnt -= l1;
    }
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
    /* Fast loop: 4 lookups (at most 48 bits) per refill, at most 8 symbols written per stream.
     * Streams live in locals so they stay in registers; the loop bound is worked out ahead. */
    if (base_len >= 8) {
        const size_t lim = base_len - 8;
        uint64_t b0 = st[0].buf, b1 = st[1].buf, b2 = st[2].buf, b3 = st[3].buf;
        unsigned c0 = st[0].cnt, c1 = st[1].cnt, c2 = st[2].cnt, c3 = st[3].cnt;
        size_t p0 = st[0].pos, p1 = st[1].pos, p2 = st[2].pos, p3 = st[3].pos;
        uint8_t *o0 = st[0].out, *o1 = st[1].out, *o2 = st[2].out, *o3 = st[3].out;
        for (;;) {
            /* each round reads at most 7 new bytes and writes at most 8 symbols per stream */
            size_t n = SIZE_MAX;
#define ROUNDS(k)                                                          \
            do {                                                           \
                size_t r_ = p##k > lim ? 0 : (lim - p##k) / 7 + 1;          \
                size_t w_ = (size_t)(st[k].out_end - o##k) / 8;            \
                if (r_ < n) n = r_;                                        \
                if (w_ < n) n = w_;                                        \
            } while (0)
            ROUNDS(0); ROUNDS(1); ROUNDS(2); ROUNDS(3);
#undef ROUNDS
            if (n == 0) break;
#define LREFILL(k)                                                         \
            do {                                                           \
                b##k |= load64le(base + p##k) << c##k;                     \
                p##k += (63u - c##k) >> 3;                                 \
                c##k |= 56u;                                               \
            } while (0)
#define LDEC(k)                                                            \
            do {                                                           \
                uint32_t e_ = table[b##k & (TABLE_SIZE - 1)];              \
                memcpy(o##k, &e_, 2);                                      \
                o##k += e_ >> 28;                                          \
                unsigned nb_ = (e_ >> 16) & 0xffu;                         \
                b##k >>= nb_;                                              \
                c##k -= nb_;                                               \
            } while (0)
            while (n--) {
                LREFILL(0); LREFILL(1); LREFILL(2); LREFILL(3);
                LDEC(0); LDEC(1); LDEC(2); LDEC(3);
                LDEC(0); LDEC(1); LDEC(2); LDEC(3);
                LDEC(0); LDEC(1); LDEC(2); LDEC(3);
                LDEC(0); LDEC(1); LDEC(2); LDEC(3);
            }
#undef LREFILL
#undef LDEC
        }
        st[0].buf = b0; st[1].buf = b1; st[2].buf = b2; st[3].buf = b3;
        st[0].cnt = c0; st[1].cnt = c1; st[2].cnt = c2; st[3].cnt = c3;
        st[0].pos = p0; st[1].pos = p1; st[2].pos = p2; st[3].pos = p3;
        st[0].out = o0; st[1].out = o1; st[2].out = o2; st[3].out = o3;
    }
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

#if defined(HUF_X86) && defined(__x86_64__)
__attribute__((target("bmi2")))
static const char *decode_field_bmi2(const uint8_t *base, size_t base_len, const size_t *starts,
                                     const size_t *lens, uint8_t *out, size_t nsym, const uint32_t *table) {
    return decode_field_impl(base, base_len, starts, lens, out, nsym, table);
}
#endif

static decode_field_fn decode_field = decode_field_plain;

static void dispatch_init(void) {
#if defined(HUF_X86) && defined(__x86_64__)
    if (__builtin_cpu_supports("bmi2")) decode_field = decode_field_bmi2;
#endif
}

/* ------------------------------------------------------------------ chunk decoding */

static const char OOM[] = "out of memory";
static const char WRITE_FAILED[] = "write failed";

static int err_rank(const char *e) { return e == OOM || e == WRITE_FAILED ? 0 : 1; }

typedef struct {
    const uint8_t *src; size_t src_len;
    uint8_t *dst; size_t dst_len;
    const int64_t *jobs; Py_ssize_t njobs;
    const int32_t *layouts; size_t nwords;
    const uint8_t *tables; Py_ssize_t ntables;
    int verify_crc;
    int fd;                       /* >= 0: write each chunk to this file with pwrite, dst unused */
    int write_errno;
    size_t chunk_max;
    atomic_llong next;
    atomic_int failed;
    pthread_mutex_t lock;
    Py_ssize_t err_chunk;
    const char *err;
} dec_ctx;

typedef struct {
    uint8_t *scratch;
    uint8_t *chunk;               /* the decoded chunk, when writing to a file */
    uint32_t *tab[CACHE_SLOTS];
    int32_t tab_id[CACHE_SLOTS];
    layout_t layout;
    size_t counts[MAX_FIELD_TABLES];
    const uint8_t *gptr[MAX_FIELD_TABLES];
} dec_thread;

/* A per-thread cache of built decode tables, direct-mapped by table id. */
static const char *get_table(const dec_ctx *c, dec_thread *t, int32_t id, const uint32_t **out) {
    const int slot = id % CACHE_SLOTS;
    if (t->tab_id[slot] == id) { *out = t->tab[slot]; return NULL; }
    if (!t->tab[slot] && !(t->tab[slot] = malloc(TABLE_SIZE * sizeof(uint32_t)))) return OOM;
    t->tab_id[slot] = -1;
    const char *err = build_decode_table(c->tables + 256 * (size_t)id, t->tab[slot]);
    if (err) return err;
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
        for (size_t b = 0; b < nblocks; b++) {
            const int s = F->map[ctx[b * bs]];
            memcpy(d + b * bs, t->gptr[s], w);
            t->gptr[s] += w;
        }
    } else {
        for (size_t b = 0; b < nblocks; b++) {
            const int s = F->map[ctx[b * bs]];
            put_block(dst + b * bs, F, t->gptr[s]);
            t->gptr[s] += w;
        }
    }
    return NULL;
}

#if defined(HUF_X86)
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
#if defined(HUF_X86)
        if (size <= 16 && w % 16 == 0 && have_ssse3) {
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

static const char *decode_chunk(dec_ctx *c, dec_thread *t, Py_ssize_t j) {
    const int64_t *job = c->jobs + 6 * j;
    int64_t so = job[0], sl = job[1], d_off = job[2], dl = job[3], crc = job[4], lo = job[5];
    if (so < 0 || sl < 0 || (uint64_t)so > c->src_len || (uint64_t)sl > c->src_len - (uint64_t)so)
        return "chunk lies outside the packed file";
    if (d_off < 0 || dl < 0 || (uint64_t)d_off > c->dst_len || (uint64_t)dl > c->dst_len - (uint64_t)d_off)
        return "chunk lies outside the output";
    if ((uint64_t)dl > MAX_CHUNK || (size_t)dl > c->chunk_max) return "chunk too large";
    if ((uint64_t)dl > 8 * (uint64_t)sl + 64) return "implausible compression ratio";
    layout_t *L = &t->layout;
    const char *err = parse_layout(c->layouts, c->nwords, lo, c->ntables, L);
    if (err) return err;
    if (dl % L->block_size) return "chunk size is not a whole number of blocks";
    const size_t nblocks = (size_t)dl / (size_t)L->block_size;
    uint8_t *dst = c->fd >= 0 ? t->chunk : c->dst + d_off;
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

static void *dec_worker(void *arg) {
    dec_ctx *c = (dec_ctx *)arg;
    dec_thread *t = calloc(1, sizeof(dec_thread));
    int ok = t != NULL;
    if (ok) {
        for (int i = 0; i < CACHE_SLOTS; i++) t->tab_id[i] = -1;
        ok = (t->scratch = malloc(SCRATCH_FACTOR * c->chunk_max + 64)) != NULL;
        if (ok && c->fd >= 0) ok = (t->chunk = malloc(c->chunk_max + 64)) != NULL;
    }
    if (!ok) {
        pthread_mutex_lock(&c->lock);
        if (!c->err) { c->err = OOM; c->err_chunk = -1; }
        pthread_mutex_unlock(&c->lock);
        atomic_store(&c->failed, 1);
    }
    while (ok && !atomic_load(&c->failed)) {
        long long j = atomic_fetch_add(&c->next, 1);
        if (j >= c->njobs) break;
        const char *err = decode_chunk(c, t, (Py_ssize_t)j);
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
    if (t) {
        for (int i = 0; i < CACHE_SLOTS; i++) free(t->tab[i]);
        free(t->scratch);
        free(t->chunk);
        free(t);
    }
    return NULL;
}

/* ------------------------------------------------------------------ Python glue */

static int get_buffer(PyObject *o, Py_buffer *b, int writable, const char *what) {
    if (PyObject_GetBuffer(o, b, writable ? PyBUF_WRITABLE : PyBUF_SIMPLE) < 0) {
        PyErr_Format(PyExc_TypeError, "%s must be a %sbuffer", what, writable ? "writable " : "");
        return -1;
    }
    return 0;
}

static PyObject *run_decode(Py_buffer *bs, uint8_t *dst, size_t dst_len, int fd, PyObject *o_jobs, PyObject *o_lay,
                            PyObject *o_tab, int threads, int verify) {
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
    c.dst = dst; c.dst_len = dst_len; c.fd = fd;
    c.jobs = bj.buf; c.njobs = bj.len / 48;
    c.layouts = bl.buf; c.nwords = (size_t)bl.len / 4;
    c.tables = bt.buf; c.ntables = bt.len / 256;
    c.verify_crc = verify;
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
    if (threads < 1) threads = 1;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads > c.njobs) threads = c.njobs > 0 ? (int)c.njobs : 1;
    Py_BEGIN_ALLOW_THREADS
    pthread_t tid[MAX_THREADS];
    int started = 0;
    for (int i = 1; i < threads; i++) {
        if (pthread_create(&tid[started], NULL, dec_worker, &c) != 0) break;
        started++;
    }
    dec_worker(&c);
    for (int i = 0; i < started; i++) pthread_join(tid[i], NULL);
    Py_END_ALLOW_THREADS
    pthread_mutex_destroy(&c.lock);
    if (c.err == OOM) {
        PyErr_SetString(PyExc_MemoryError, "out of memory while decoding");
    } else if (c.err == WRITE_FAILED) {
        errno = c.write_errno;
        PyErr_SetFromErrno(PyExc_OSError);
    } else if (c.err) {
        PyErr_Format(PyExc_ValueError, "chunk %zd: %s", c.err_chunk, c.err);
    } else {
        result = Py_None;
        Py_INCREF(result);
    }
done:
    PyBuffer_Release(&bj); PyBuffer_Release(&bl); PyBuffer_Release(&bt);
    return result;
}

static PyObject *py_decode(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"src", "dst", "jobs", "layouts", "tables", "threads", "verify_crc", NULL};
    PyObject *o_src, *o_dst, *o_jobs, *o_lay, *o_tab;
    int threads = 1, verify = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOO|ip", kwlist, &o_src, &o_dst, &o_jobs, &o_lay, &o_tab,
                                     &threads, &verify))
        return NULL;
    Py_buffer bs, bd;
    if (get_buffer(o_src, &bs, 0, "src")) return NULL;
    if (get_buffer(o_dst, &bd, 1, "dst")) { PyBuffer_Release(&bs); return NULL; }
    PyObject *r = run_decode(&bs, bd.buf, (size_t)bd.len, -1, o_jobs, o_lay, o_tab, threads, verify);
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
    PyObject *r = run_decode(&bs, NULL, (size_t)size, fd, o_jobs, o_lay, o_tab, threads, verify);
    PyBuffer_Release(&bs);
    return r;
}

/* ------------------------------------------------------------------ the index, straight to a decode plan */

/* The same rules as pack_format.parse_index + validate (the reference, in Python), checked in one
 * pass over the index without building Python objects, so a loader can start decoding sooner. */

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

/* skip_strings(buffer, offset, count) -> offset after `count` GGUF strings (u64 length + bytes),
 * or ValueError when they run past the end: skims a tokenizer's vocabulary without Python objects. */
static PyObject *py_skip_strings(PyObject *self, PyObject *args) {
    PyObject *o;
    Py_ssize_t off, count;
    if (!PyArg_ParseTuple(args, "Onn", &o, &off, &count)) return NULL;
    Py_buffer b;
    if (get_buffer(o, &b, 0, "buffer")) return NULL;
    const uint8_t *p = b.buf;
    uint64_t pos = (uint64_t)(off < 0 ? 0 : off), n = (uint64_t)b.len;
    int bad = off < 0 || count < 0 || pos > n;
    for (Py_ssize_t i = 0; !bad && i < count; i++) {
        if (n - pos < 8) { bad = 1; break; }
        uint64_t len = load64le(p + pos);
        pos += 8;
        if (len > n - pos) { bad = 1; break; }
        pos += len;
    }
    PyBuffer_Release(&b);
    if (bad) { PyErr_SetString(PyExc_ValueError, "strings run past the end"); return NULL; }
    return PyLong_FromUnsignedLongLong(pos);
}

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

static PyObject *py_decoder_kind(PyObject *self, PyObject *noargs) {
    return PyUnicode_FromString(decode_field == decode_field_plain ? "plain" : "bmi2");
}

static PyMethodDef methods[] = {
    {"decode", (PyCFunction)(void (*)(void))py_decode, METH_VARARGS | METH_KEYWORDS,
     "decode(src, dst, jobs, layouts, tables, threads=1, verify_crc=True): decode chunks into dst."},
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
    crc_init();
    rev_init();
    dispatch_init();
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
