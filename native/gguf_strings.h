/* GGUF strings (u64 little-endian length, then the bytes), skimmed without Python objects.
 *
 * A GGUF reader helper, not Huffman coding: it lives in _huffman only because that is the
 * extension gguf_tools/gguf_file/reader.py already loads (as _huffman.skip_strings).
 */
#ifndef GGUF_STRINGS_H
#define GGUF_STRINGS_H

#include <stdint.h>
#include <string.h>

/* The offset after `count` strings that start at `pos` in p[0..n), or -1 when they run past n. */
static int64_t gguf_skip_strings(const uint8_t *p, uint64_t n, uint64_t pos, uint64_t count) {
    if (pos > n) return -1;
    for (uint64_t i = 0; i < count; i++) {
        if (n - pos < 8) return -1;
        uint64_t len;
        memcpy(&len, p + pos, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        len = __builtin_bswap64(len);
#endif
        pos += 8;
        if (len > n - pos) return -1;
        pos += len;
    }
    return (int64_t)pos;
}

#endif
