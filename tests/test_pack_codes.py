"""Huffman code construction, CRC-32C, and the format's constants and layout words that the C side
shares."""
from __future__ import annotations

import struct

import numpy as np
from pack_fixtures import index_of

from gguf_tools import _huffman
from gguf_tools.packed.codes import code_lengths, coded_bits
from gguf_tools.packed.format import MAX_BITS, MODE_HUFF, MODE_RAW, layout_words
from gguf_tools.packed.header import HEADER_SIZE
from gguf_tools.packed.reference import crc32c_ref

# ---------------------------------------------------------------- code construction

def test_code_lengths_respect_the_limit_and_form_a_complete_code(rng):
    for _ in range(50):
        n = int(rng.integers(2, 257))
        hist = np.zeros(256, np.int64)
        hist[rng.choice(256, n, replace=False)] = np.maximum(1, (rng.pareto(0.7, n) * 10).astype(np.int64))
        lengths = code_lengths(hist)
        used = lengths[hist > 0].astype(int)
        assert (lengths[hist == 0] == 0).all()
        assert used.max() <= MAX_BITS
        assert sum(2.0 ** -used) == 1.0
        # within a bit per symbol of the entropy: never worse than a flat code
        p = hist[hist > 0] / hist.sum()
        assert coded_bits(hist, lengths) / hist.sum() < -(p * np.log2(p)).sum() + 1


def test_a_lone_symbol_gets_a_one_bit_code():
    hist = np.zeros(256, np.int64)
    hist[7] = 1000
    lengths = code_lengths(hist)
    assert lengths[7] == 1 and lengths.sum() == 1


def test_native_crc32c_matches_the_reference_and_the_standard_check_value(rng):
    assert _huffman.crc32c(b"123456789") == 0xE3069283
    for n in (0, 1, 7, 8, 9, 4095, 12288, 12289, 50001):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert _huffman.crc32c(data) == crc32c_ref(data)


def test_native_limits_match_the_format_modules():
    from gguf_tools.packed import format as f
    from gguf_tools.packed import header as h

    names = ("MAX_BITS", "MAX_BLOCK", "MAX_FIELDS", "MAX_RUNS", "MAX_FIELD_TABLES", "MAX_CHUNK", "N_STREAMS",
             "MAX_TABLES", "MAX_SECTIONS")
    assert [getattr(_huffman, n) for n in names] == [getattr(f, n) for n in names]
    names = ("HEADER_SIZE", "MAX_RATIO", "RATIO_SLACK")
    assert [getattr(_huffman, n) for n in names] == [getattr(h, n) for n in names]


def test_layout_words_match_the_index_encoding(small):
    _, packed = small
    _, idx = index_of(packed)
    for s in idx.sections:
        words = layout_words(s.block_size, s.fields)
        assert words[0] == s.block_size and words[1] == len(s.fields)
        n = 2
        for f in s.fields:
            assert words[n] == f.mode
            n += 3 + len(f.tables) + len(f.ctx_map) + 1 + 2 * len(f.runs)
        assert n == len(words)
    assert {MODE_RAW, MODE_HUFF} <= {f.mode for s in idx.sections for f in s.fields}
    assert struct.calcsize("<8sIIQQQQ32sIII") + 4 == HEADER_SIZE
