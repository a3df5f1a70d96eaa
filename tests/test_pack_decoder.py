"""The C decoder against the pure-Python reference: the same bytes on random and real streams, and
the same error on corrupt streams, bad code tables and jobs that do not fit."""
from __future__ import annotations

import numpy as np
import pytest

from gguf_tools import _huffman
from gguf_tools.packed.codes import code_lengths
from gguf_tools.packed.format import (
    MAX_RUNS,
    MODE_CTX,
    MODE_HUFF,
    MODE_PALETTE,
    MODE_RAW,
    FieldCoding,
    layout_words,
)
from gguf_tools.packed.reference import DecodeError, decode_plan, decode_ref, decode_stream_ref

# ---------------------------------------------------------------- C decoder == reference decoder

def random_layout(rng: np.random.Generator) -> tuple[int, list[tuple[int, list[tuple[int, int]]]]]:
    """A block of random size cut into fields of random runs (some scattered), in random order."""
    bs = int(rng.integers(1, 48))
    perm = rng.permutation(bs)
    cuts = sorted(set(rng.integers(1, bs, size=int(rng.integers(0, min(bs, 6)))).tolist())) if bs > 1 else []
    fields = []
    for part in np.split(perm, cuts):
        part = sorted(part.tolist())
        runs: list[tuple[int, int]] = []
        for x in part:
            if runs and runs[-1][0] + runs[-1][1] == x:
                runs[-1] = (runs[-1][0], runs[-1][1] + 1)
            else:
                runs.append((x, 1))
        fields.append(runs[:MAX_RUNS])
    fields = [f for f in fields if sum(n for _, n in f) == len({x for a, n in f for x in range(a, a + n)})]
    covered = {x for f in fields for a, n in f for x in range(a, a + n)}
    fields += [[(x, 1)] for x in range(bs) if x not in covered]
    return bs, [(i, f) for i, f in enumerate(fields)]


def skewed_blocks(rng: np.random.Generator, nblocks: int, bs: int) -> np.ndarray:
    kind = rng.integers(0, 3)
    if kind == 0:   # few distinct values per block
        pal = rng.integers(0, 256, size=(nblocks, 4))
        return np.take_along_axis(pal, rng.integers(0, 4, size=(nblocks, bs)), axis=1).astype(np.uint8)
    if kind == 1:   # geometric
        return np.minimum(rng.geometric(0.3, size=(nblocks, bs)), 255).astype(np.uint8)
    return rng.integers(0, 256, size=(nblocks, bs), dtype=np.uint8)


def random_case(rng: np.random.Generator):
    """Random data, a random layout with random modes, tables fitted to the data, C-encoded."""
    bs, fields = random_layout(rng)
    nblocks = int(rng.integers(1, 120))
    data = skewed_blocks(rng, nblocks, bs)
    src = data.tobytes()
    raw_fields = [FieldCoding(MODE_RAW, tuple(runs)) for _, runs in fields]
    raw_words = np.asarray(layout_words(bs, raw_fields), np.int32)
    hist = np.frombuffer(_huffman.histogram(src, 0, len(src), raw_words, 0), np.uint64).reshape(-1, 256)
    tables: list[np.ndarray] = []

    def table(h: np.ndarray) -> int:
        h = h if h.sum() else np.ones(256, np.uint64)
        tables.append(code_lengths(h))
        return len(tables) - 1

    coded = []
    for fi, (_, runs) in enumerate(fields):
        width = sum(n for _, n in runs)
        ctx_candidates = [ci for ci in range(fi) if raw_fields[ci].width == 1]
        mode = int(rng.choice([MODE_RAW, MODE_HUFF, MODE_CTX, MODE_PALETTE]))
        if mode == MODE_CTX and not ctx_candidates:
            mode = MODE_HUFF
        if mode == MODE_RAW:
            coded.append(FieldCoding(MODE_RAW, tuple(runs)))
        elif mode == MODE_HUFF:
            coded.append(FieldCoding(MODE_HUFF, tuple(runs), (table(hist[fi]),)))
        elif mode == MODE_CTX:
            ci = int(rng.choice(ctx_candidates))
            joint = np.frombuffer(_huffman.joint_histogram(src, 0, len(src), raw_words, 0, fi, ci),
                                  np.uint64).reshape(256, 256)
            n_groups = int(rng.integers(1, 5))
            ctx_map = rng.integers(0, n_groups, 256).astype(np.uint8)
            tabs = tuple(table(joint[ctx_map == g].sum(axis=0)) for g in range(n_groups))
            coded.append(FieldCoding(MODE_CTX, tuple(runs), tabs, ci, ctx_map.tobytes()))
        else:
            bias = int(rng.choice([0, 128]))
            h4 = np.frombuffer(_huffman.palette_histogram(src, 0, len(src), raw_words, 0, fi, bias),
                               np.uint64).reshape(4, 256)
            coded.append(FieldCoding(MODE_PALETTE, tuple(runs), tuple(table(h) for h in h4), bias))
        assert width >= 1
    words = np.asarray(layout_words(bs, coded), np.int32)
    tab = np.stack(tables) if tables else np.zeros((0, 256), np.uint8)
    payload, crc = _huffman.encode_chunk(src, 0, len(src), words, 0, tab)
    job = np.array([[0, len(payload), 0, len(src), crc, 0]], np.int64)
    return src, payload, job, words, tab


def both_decoders(payload: bytes, job, words, tab, n: int, verify_crc: bool):
    c_out, py_out = bytearray(n), bytearray(n)
    c_err = py_err = None
    try:
        _huffman.decode(payload, c_out, job, words, tab, threads=1, verify_crc=verify_crc)
    except ValueError as e:
        c_err = str(e)
    try:
        decode_ref(payload, py_out, job, words, tab, verify_crc=verify_crc)
    except DecodeError as e:
        py_err = str(e)
    return c_out, c_err, py_out, py_err


def test_c_and_reference_decoders_agree_on_random_streams_in_every_mode(rng):
    for _ in range(40):
        src, payload, job, words, tab = random_case(rng)
        c_out, c_err, py_out, py_err = both_decoders(payload, job, words, tab, len(src), True)
        assert c_err is None and py_err is None
        assert bytes(c_out) == bytes(py_out) == src


def test_c_and_reference_decoders_agree_on_corrupted_streams(rng):
    disagreements = []
    for _ in range(40):
        src, payload, job, words, tab = random_case(rng)
        for _ in range(5):
            bad = bytearray(payload)
            for _ in range(int(rng.integers(1, 4))):
                bad[int(rng.integers(0, len(bad)))] ^= 1 << int(rng.integers(0, 8))
            c_out, c_err, py_out, py_err = both_decoders(bytes(bad), job, words, tab, len(src), False)
            if (c_err is None) != (py_err is None) or (c_err is None and c_out != py_out):
                disagreements.append((c_err, py_err))
            if c_err is not None:
                assert c_err == py_err   # same check, same order, same words
    assert not disagreements


def test_c_decoder_spreads_chunks_over_threads_with_the_same_result(rich):
    from gguf_tools.packed.decode import _Packed

    with _Packed(rich[1]) as p:
        jobs, words, tables = decode_plan(p.header, p.index)
        outs = []
        for threads in (1, 2, 5):
            dst = bytearray(p.header.original_size)
            _huffman.decode(p.mm, dst, jobs, words, tables, threads=threads)
            outs.append(bytes(dst[p.header.prefix_size:]))
        assert outs[0] == outs[1] == outs[2]



def test_kept_decoder_state_never_serves_one_plan_tables_built_for_another(rng):
    """decode(keep_state=True) keeps each thread's built tables between calls; cases from different data
    reuse the same table ids for other code lengths, so a table kept from one must not decode another."""
    cases = [random_case(rng) for _ in range(12)]
    try:
        for _ in range(3):
            for src, payload, job, words, tab in cases:
                out = bytearray(len(src))
                _huffman.decode(payload, out, job, words, tab, threads=2, keep_state=True)
                assert bytes(out) == src
    finally:
        _huffman.release_state()
    # and a kept state that met bad input decodes good input afterwards
    src, payload, job, words, tab = plain_case()
    bad = tab.copy()
    bad[0, 0] = 7  # over-subscribed
    try:
        with pytest.raises(ValueError):
            _huffman.decode(payload, bytearray(len(src)), job, words, bad, threads=2, keep_state=True)
        out = bytearray(len(src))
        _huffman.decode(payload, out, job, words, tab, threads=2, keep_state=True)
        assert bytes(out) == src
    finally:
        _huffman.release_state()


# ---------------------------------------------------------------- hostile input: the decoder

def plain_case():
    data = bytes(range(64)) * 16
    lengths = np.full(256, 8, np.uint8)
    words = np.asarray(layout_words(16, [FieldCoding(MODE_HUFF, ((0, 16),), (0,))]), np.int32)
    payload, crc = _huffman.encode_chunk(data, 0, len(data), words, 0, lengths[None])
    job = np.array([[0, len(payload), 0, len(data), crc, 0]], np.int64)
    return data, payload, job, words, lengths[None].copy()


@pytest.mark.parametrize("change, message", [
    (lambda lengths: lengths.__setitem__(0, 7), "over-subscribed"),
    (lambda lengths: lengths.__setitem__(0, 9), "incomplete"),
    (lambda lengths: lengths.__setitem__(slice(0, 256), 0), "empty"),
    (lambda lengths: lengths.__setitem__(slice(0, 256), np.r_[13, 13, np.zeros(254, np.uint8)]), "past the limit"),
    (lambda lengths: lengths.__setitem__(slice(1, 256), 0), "single-symbol"),
])
def test_decoder_rejects_bad_code_tables(change, message):
    data, payload, job, words, tables = plain_case()
    change(tables[0])
    for decoder in ("c", "ref"):
        with pytest.raises(ValueError, match=message):
            if decoder == "c":
                _huffman.decode(payload, bytearray(len(data)), job, words, tables)
            else:
                decode_ref(payload, bytearray(len(data)), job, words, tables)


@pytest.mark.parametrize("column, value, message", [
    (0, 5, "outside the packed file"),
    (1, 10 ** 9, "outside the packed file"),
    (2, 1, "outside the output"),
    (3, 10 ** 9, "outside the output"),
    (3, "ratio", "implausible compression ratio"),
    (3, 1001, "whole number of blocks"),
    (4, 12345, "checksum mismatch"),
    (5, 100, "layout offset out of range"),
])
def test_decoder_rejects_jobs_that_do_not_fit(column, value, message):
    data, payload, job, words, tables = plain_case()
    n = len(data)
    if value == "ratio":   # more output than 8 bits per coded bit could ever give
        value = n = -(-(8 * len(payload) + 65) // 16) * 16
    job[0, column] = value
    for decode in (_huffman.decode, decode_ref):
        with pytest.raises(ValueError, match=message):
            decode(payload, bytearray(n), job, words, tables)


def test_decoder_rejects_truncated_and_padded_streams():
    data, payload, job, words, tables = plain_case()
    short = job.copy()
    short[0, 1] -= 1
    with pytest.raises(ValueError):
        _huffman.decode(payload[:-1], bytearray(len(data)), short, words, tables)
    longer = job.copy()
    longer[0, 1] += 1
    with pytest.raises(ValueError, match="trailing"):
        _huffman.decode(payload + b"\0", bytearray(len(data)), longer, words, tables)


def test_stream_decoder_rejects_overrun_and_unused_bytes():
    lengths = np.full(256, 8, np.uint8)
    assert decode_stream_ref(b"\x00\x01", 2, lengths) == bytes([0, 128])
    with pytest.raises(DecodeError, match="overrun"):
        decode_stream_ref(b"\x00", 2, lengths)
    with pytest.raises(DecodeError, match="trailing"):
        decode_stream_ref(b"\x00\x00\x00", 2, lengths)
    with pytest.raises(DecodeError, match="more symbols"):
        decode_stream_ref(b"\x00", 9, lengths)
