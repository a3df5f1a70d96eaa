"""A pure-Python reference decoder, CRC-32C and decode plan, for differential tests and the fuzzer.

The reference follows docs/packed-format.md literally (bit by bit, canonical codes, the same
checks in the same order as native/huffman_decode.h) and shares no code with the C decoder, so the two
agreeing on many random and real streams is evidence that both follow the specification. Nothing
in the package imports this module.
"""
from __future__ import annotations

import struct

import numpy as np

from .format import (
    MAX_BITS,
    MAX_BLOCK,
    MAX_CHUNK,
    MAX_FIELD_TABLES,
    MAX_FIELDS,
    MAX_RATIO,
    MAX_RUNS,
    MODE_CTX,
    MODE_HUFF,
    MODE_PALETTE,
    MODE_RAW,
    N_STREAMS,
    RATIO_SLACK,
    FixedHeader,
    PackIndex,
    layout_words,
)


def canonical_codes(lengths) -> dict[tuple[int, int], int]:
    """(length, code) -> symbol, codes assigned shortest first, then by symbol value."""
    table: dict[tuple[int, int], int] = {}
    code = 0
    for length in range(1, MAX_BITS + 1):
        for s in range(256):
            if lengths[s] == length:
                table[(length, code)] = s
                code += 1
        code <<= 1
    return table


# ---------------------------------------------------------------- reference CRC-32C

def _crc_table() -> list[int]:
    out = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)
        out.append(c)
    return out


_CRC = _crc_table()


def crc32c_ref(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = (crc >> 8) ^ _CRC[(crc ^ b) & 0xFF]
    return crc ^ 0xFFFFFFFF


# ---------------------------------------------------------------- reference decoder

class DecodeError(ValueError):
    pass


def _check_lengths(lengths) -> None:
    used = [int(x) for x in lengths if x]
    if any(x > MAX_BITS for x in used):
        raise DecodeError("code length past the limit")
    if not used:
        raise DecodeError("empty code table")
    if len(used) == 1:
        if used[0] != 1:
            raise DecodeError("single-symbol code must have length 1")
        return
    kraft = sum(1 << (MAX_BITS - x) for x in used)
    if kraft > 1 << MAX_BITS:
        raise DecodeError("over-subscribed code table")
    if kraft < 1 << MAX_BITS:
        raise DecodeError("incomplete code table")


def decode_stream_ref(data: bytes, nsym: int, lengths) -> bytes:
    """Decode ``nsym`` symbols from one bit stream (LSB-first, codes MSB-first), exactly as specified."""
    if nsym > MAX_RATIO * len(data):
        raise DecodeError("more symbols than the stream can hold")
    lone = [s for s in range(256) if lengths[s]]
    codes = canonical_codes(lengths)
    out = bytearray()
    bitpos = 0

    def bit() -> int:
        nonlocal bitpos
        byte = data[bitpos >> 3] if (bitpos >> 3) < len(data) else 0
        b = (byte >> (bitpos & 7)) & 1
        bitpos += 1
        return b

    for _ in range(nsym):
        if len(lone) == 1:
            bit()  # a lone symbol's code is one bit, whatever its value
            out.append(lone[0])
            continue
        code = 0
        for length in range(1, MAX_BITS + 1):
            code = (code << 1) | bit()
            sym = codes.get((length, code))
            if sym is not None:
                out.append(sym)
                break
        else:  # unreachable with a complete code
            raise DecodeError("invalid code")
    if bitpos > 8 * len(data):
        raise DecodeError("bit stream overrun")
    if bitpos + 8 <= 8 * len(data):
        raise DecodeError("bit stream has trailing bytes")
    return bytes(out)


class _RefField:
    def __init__(self, mode: int, param: int, tables: list[int], ctx_map: list[int], runs: list[tuple[int, int]]):
        self.mode, self.param, self.tables, self.ctx_map, self.runs = mode, param, tables, ctx_map, runs
        self.width = sum(n for _, n in runs)

    def groups(self) -> int:
        return {MODE_RAW: 0, MODE_HUFF: 1, MODE_CTX: len(self.tables), MODE_PALETTE: 4}[self.mode]


def _layout(words, at: int, n_tables: int) -> tuple[int, list[_RefField]]:
    if at < 0 or at + 2 > len(words):
        raise DecodeError("layout offset out of range")
    i = at

    def take(n: int) -> list[int]:
        nonlocal i
        if i + n > len(words):
            raise DecodeError("layout truncated")
        i += n
        return [int(x) for x in words[i - n:i]]

    bs, nf = take(2)
    if not 1 <= bs <= MAX_BLOCK:
        raise DecodeError("block size out of range")
    if not 1 <= nf <= MAX_FIELDS:
        raise DecodeError("field count out of range")
    fields: list[_RefField] = []
    seen = [False] * bs
    for f in range(nf):
        mode, param, ntab = take(3)
        if mode == MODE_RAW and (ntab != 0 or param != 0):
            raise DecodeError("bad raw field")
        elif mode == MODE_HUFF and (ntab != 1 or param != 0):
            raise DecodeError("bad coded field")
        elif mode == MODE_CTX:
            if not 1 <= ntab <= MAX_FIELD_TABLES:
                raise DecodeError("context table count out of range")
            if not 0 <= param < f or fields[param].width != 1:
                raise DecodeError("context field must be an earlier one-byte field")
        elif mode == MODE_PALETTE and (ntab != 4 or param not in (0, 128)):
            raise DecodeError("bad palette field")
        elif mode not in (MODE_RAW, MODE_HUFF, MODE_CTX, MODE_PALETTE):
            raise DecodeError("unknown field mode")
        tables = take(ntab)
        if any(not 0 <= t < n_tables for t in tables):
            raise DecodeError("code table id out of range")
        ctx_map: list[int] = []
        if mode == MODE_CTX:
            ctx_map = take(256)
            if any(not 0 <= v < ntab for v in ctx_map):
                raise DecodeError("context map entry out of range")
        (nruns,) = take(1)
        if not 1 <= nruns <= MAX_RUNS:
            raise DecodeError("run count out of range")
        flat = take(2 * nruns)
        runs = []
        for k in range(nruns):
            off, ln = flat[2 * k], flat[2 * k + 1]
            if off < 0 or ln < 1 or off >= bs or ln > bs - off:
                raise DecodeError("field run outside the block")
            for x in range(off, off + ln):
                if seen[x]:
                    raise DecodeError("field runs overlap")
                seen[x] = True
            runs.append((off, ln))
        fields.append(_RefField(mode, param, tables, ctx_map, runs))
    if not all(seen):
        raise DecodeError("field runs do not cover the block")
    return bs, fields


class _Cursor:
    def __init__(self, payload: bytes, pos: int):
        self.payload, self.pos, self.hdr = payload, pos, 0

    def group(self, lengths, nsym: int) -> bytes:
        """One coded group: four streams whose lengths come next in the chunk header."""
        lens = struct.unpack_from("<4I", self.payload, self.hdr)
        self.hdr += 16
        parts = []
        for k in range(N_STREAMS):
            if lens[k] > len(self.payload) - self.pos:
                raise DecodeError("stream lengths exceed the chunk")
            parts.append(self.payload[self.pos:self.pos + lens[k]])
            self.pos += lens[k]
        if nsym:
            _check_lengths(lengths)
        counts = [nsym * (k + 1) // N_STREAMS - nsym * k // N_STREAMS for k in range(N_STREAMS)]
        for k in range(N_STREAMS):
            if counts[k] > MAX_RATIO * lens[k]:
                raise DecodeError("more symbols than the stream can hold")
        return b"".join(decode_stream_ref(parts[k], counts[k], lengths) for k in range(N_STREAMS))


def _put(out: bytearray, at: int, runs, data: bytes) -> None:
    k = 0
    for off, ln in runs:
        out[at + off:at + off + ln] = data[k:k + ln]
        k += ln


def decode_chunk_ref(src: bytes, job, words, tables: np.ndarray, dst_len: int, verify_crc: bool = True) -> bytes:
    """One chunk's original bytes, following the specification step by step."""
    so, sl, do, dl, crc, lo = (int(x) for x in job)
    if so < 0 or sl < 0 or so > len(src) or sl > len(src) - so:
        raise DecodeError("chunk lies outside the packed file")
    if do < 0 or dl < 0 or do > dst_len or dl > dst_len - do:
        raise DecodeError("chunk lies outside the output")
    if dl > MAX_CHUNK:
        raise DecodeError("chunk too large")
    if dl > MAX_RATIO * sl + RATIO_SLACK:
        raise DecodeError("implausible compression ratio")
    bs, fields = _layout(words, lo, len(tables))
    if dl % bs:
        raise DecodeError("chunk size is not a whole number of blocks")
    nb = dl // bs
    payload = bytes(src[so:so + sl])
    cur = _Cursor(payload, 16 * sum(f.groups() for f in fields))
    if cur.pos > sl:
        raise DecodeError("chunk header truncated")
    out = bytearray(dl)
    for F in fields:
        w = F.width
        if F.mode == MODE_RAW:
            if nb * w > sl - cur.pos:
                raise DecodeError("raw field truncated")
            data = payload[cur.pos:cur.pos + nb * w]
            cur.pos += nb * w
            for b in range(nb):
                _put(out, b * bs, F.runs, data[b * w:(b + 1) * w])
        elif F.mode == MODE_HUFF:
            data = cur.group(tables[F.tables[0]], nb * w)
            for b in range(nb):
                _put(out, b * bs, F.runs, data[b * w:(b + 1) * w])
        elif F.mode == MODE_CTX:
            coff = fields[F.param].runs[0][0]
            groups = [F.ctx_map[out[b * bs + coff]] for b in range(nb)]
            decoded = [cur.group(tables[t], groups.count(g) * w) for g, t in enumerate(F.tables)]
            taken = [0] * len(F.tables)
            for b, g in enumerate(groups):
                _put(out, b * bs, F.runs, decoded[g][taken[g]:taken[g] + w])
                taken[g] += w
        else:
            sizes = cur.group(tables[F.tables[0]], nb)
            firsts = cur.group(tables[F.tables[1]], nb)
            if any(p >= w for p in sizes):
                raise DecodeError("palette larger than its block")
            gaps = cur.group(tables[F.tables[2]], sum(sizes))
            index = cur.group(tables[F.tables[3]], nb * w)
            k = 0
            for b in range(nb):
                pal = [firsts[b]]
                for _ in range(sizes[b]):
                    pal.append(pal[-1] + gaps[k] + 1)
                    k += 1
                    if pal[-1] > 255:
                        raise DecodeError("palette values out of range")
                idx = index[b * w:(b + 1) * w]
                if any(i >= len(pal) for i in idx):
                    raise DecodeError("palette index out of range")
                _put(out, b * bs, F.runs, bytes(pal[i] ^ F.param for i in idx))
    if cur.pos != sl:
        raise DecodeError("chunk has trailing bytes")
    if verify_crc and crc32c_ref(out) != crc:
        raise DecodeError("checksum mismatch")
    return bytes(out)


def decode_ref(src: bytes, dst: bytearray, jobs: np.ndarray, words, tables: np.ndarray,
               verify_crc: bool = True) -> None:
    """The whole plan, in order; raises DecodeError('chunk N: ...') like the C decoder."""
    for j, job in enumerate(np.asarray(jobs).reshape(-1, 6)):
        do, dl = int(job[2]), int(job[3])
        try:
            data = decode_chunk_ref(src, job, words, tables, len(dst), verify_crc)
        except DecodeError as e:
            raise DecodeError(f"chunk {j}: {e}") from None
        dst[do:do + dl] = data


# ---------------------------------------------------------------- reference decode plan

def decode_plan(header: FixedHeader, index: PackIndex) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The flat arrays the C decoder (and the reference decoder) take: jobs, layout words, tables."""
    words: list[int] = []
    starts = np.empty(len(index.sections), dtype=np.int64)
    for si, s in enumerate(index.sections):
        starts[si] = len(words)
        words += layout_words(s.block_size, s.fields)
    c = index.chunks
    jobs = np.empty((len(c), 6), dtype=np.int64)
    jobs[:, 0] = c["packed_offset"].astype(np.int64)
    jobs[:, 1] = c["packed_size"]
    jobs[:, 3] = c["orig_size"]
    jobs[:, 2] = header.prefix_size + np.concatenate(([0], np.cumsum(jobs[:-1, 3]))) if len(c) else 0
    jobs[:, 4] = c["crc"]
    jobs[:, 5] = starts[c["section"].astype(np.int64)] if len(c) else 0
    return jobs, np.asarray(words, dtype=np.int32), np.ascontiguousarray(index.tables)
