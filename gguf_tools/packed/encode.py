"""Packing: the original file cut into sections (one per tensor, byte sections between), the cheapest
coding chosen per block field by estimated size, and chunks encoded in C on a thread pool and written
in order, with the index and the fixed header last.
"""
from __future__ import annotations

import hashlib
import mmap
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..files import atomic_output
from ..gguf_file.reader import GGUFFile
from ..system import check_threads
from .codes import code_lengths, coded_bits
from .decode import _native, is_packed
from .format import (
    CHUNK_DTYPE,
    GAP_LAYOUT,
    MAX_BITS,
    MODE_CTX,
    MODE_HUFF,
    MODE_PALETTE,
    MODE_RAW,
    N_STREAMS,
    NO_TENSOR,
    PALETTE_BIASES,
    TABLE_BYTES,
    Field,
    FieldCoding,
    FixedHeader,
    Section,
    encode_index,
    layout_for,
    layout_words,
)
from .header import HEADER_SIZE, VERSION, crc32c, encode_header

CHUNK_TARGET = 1 << 20      # decoded bytes per chunk: many chunks per thread, tables built once per chunk
MIN_SAVING = 0.05           # default: fields whose coding saves under 5% (4-6-bit quants) stay raw:
                            # half the decoding time for a file 0.5-2% larger (min_saving=0: smallest)
RICH_FIELD_MIN = 1 << 16    # fields smaller than this (symbols) get one table or none
CTX_GROUP_MIN = 1 << 15     # symbols a context value needs for a table of its own
MAX_CTX_GROUPS = 32
PALETTE_MIN_WIDTH = 8


@dataclass(frozen=True)
class PackStats:
    original_size: int
    packed_size: int
    n_chunks: int
    n_tables: int
    seconds: float

    @property
    def ratio(self) -> float:
        """Packed size as a fraction of the original."""
        return self.packed_size / self.original_size if self.original_size else 1.0


@dataclass
class _SectionLayout:
    orig_offset: int
    orig_size: int
    tensor: int
    ggml_type: int | None
    block_size: int
    fields: list[Field]


def _section_layouts(view: GGUFFile, file_size: int, prefix_size: int, what: str) -> list[_SectionLayout]:
    """Tensors in file order as coded sections; any bytes between or after them as byte sections."""
    found = []
    for i, t in enumerate(view.tensors):
        if t.nbytes is None or t.nbytes == 0:
            continue
        start = view.data_offset + t.offset
        if start + t.nbytes > file_size:
            raise InputError(f"{what}: tensor {t.name!r} ({t.nbytes} bytes at {start}) runs past the end of the file")
        found.append((start, i, t))
    found.sort(key=lambda x: (x[0], x[1]))
    layouts: list[_SectionLayout] = []
    pos = prefix_size

    def gap(upto: int) -> None:
        if upto > pos:
            layouts.append(_SectionLayout(pos, upto - pos, NO_TENSOR, None, 1, GAP_LAYOUT))

    for start, i, t in found:
        if start < pos:  # overlaps the previous tensor: its bytes are already covered
            continue
        gap(start)
        block, fields = layout_for(t.ggml_type)
        if t.nbytes % block:
            block, fields = 1, GAP_LAYOUT
        layouts.append(_SectionLayout(start, t.nbytes, i, t.ggml_type, block, fields))
        pos = start + t.nbytes
    gap(file_size)
    return layouts


def _words(block_size: int, fields) -> np.ndarray:
    return np.asarray(layout_words(block_size, fields), dtype=np.int32)


class _TableSet:
    """Code tables of the whole file, shared between sections when identical."""

    def __init__(self) -> None:
        self.ids: dict[bytes, int] = {}
        self.rows: list[np.ndarray] = []

    def add(self, lengths: np.ndarray) -> tuple[int, bool]:
        key = lengths.tobytes()
        if key in self.ids:
            return self.ids[key], False
        self.ids[key] = len(self.rows)
        self.rows.append(lengths)
        return self.ids[key], True

    def array(self) -> np.ndarray:
        return np.stack(self.rows) if self.rows else np.zeros((0, 256), dtype=np.uint8)


@dataclass
class _Choice:
    cost: int                    # estimated packed bytes of the field in this section
    mode: int
    hists: list[np.ndarray]      # one histogram per coded group
    param: int = 0
    ctx_map: bytes = b""


def _huffman_bytes(hist: np.ndarray) -> tuple[int, np.ndarray]:
    lengths = code_lengths(hist, MAX_BITS)
    return (coded_bits(hist, lengths) + 7) // 8, lengths


def _group_overhead(n_groups: int, n_chunks: int) -> int:
    """Each group costs a table, and per chunk 16 header bytes plus about 2 bytes of stream padding."""
    return n_groups * (TABLE_BYTES + n_chunks * (16 + N_STREAMS // 2))


def _context_choice(joint: np.ndarray, n_chunks: int) -> _Choice | None:
    """Blocks grouped by context value: frequent values get a table each, the rest share one."""
    rows = joint.sum(axis=1)
    order = [int(v) for v in np.argsort(-rows, kind="stable") if rows[v] > 0]
    own = [v for v in order if rows[v] >= CTX_GROUP_MIN][:MAX_CTX_GROUPS - 1]
    rest = [v for v in order if v not in own]
    if not own or (len(own) == 1 and not rest):
        return None
    ctx_map = np.zeros(256, dtype=np.uint8)
    hists = []
    for g, v in enumerate(own):
        ctx_map[v] = g
        hists.append(joint[v])
    if rest:
        ctx_map[rest] = len(own)
        ctx_map[[v for v in range(256) if rows[v] == 0]] = len(own)
        hists.append(joint[rest].sum(axis=0))
    cost = sum(_huffman_bytes(h)[0] for h in hists) + _group_overhead(len(hists), n_chunks) + 256
    return _Choice(cost, MODE_CTX, hists, ctx_map=ctx_map.tobytes())


def _choose_field(native, buf, layout: _SectionLayout, raw_words: np.ndarray, fi: int, hist: np.ndarray,
                  n_chunks: int) -> _Choice:
    """The cheapest of raw, one table, tables by context, and block palettes, by estimated size."""
    n = int(hist.sum())
    width = layout.fields[fi].width
    best = _Choice(n, MODE_RAW, [])
    huff = _Choice(_huffman_bytes(hist)[0] + _group_overhead(1, n_chunks), MODE_HUFF, [hist])
    if huff.cost < best.cost:
        best = huff
    if n < RICH_FIELD_MIN:
        return best
    args = (buf, layout.orig_offset, layout.orig_size, raw_words, 0)
    for ci in range(fi):
        if layout.fields[ci].width != 1:
            continue
        joint = np.frombuffer(native.joint_histogram(*args, fi, ci), dtype=np.uint64).reshape(256, 256)
        choice = _context_choice(joint, n_chunks)
        if choice is not None and choice.cost < best.cost:
            choice.param = ci
            best = choice
    if width >= PALETTE_MIN_WIDTH:
        for bias in PALETTE_BIASES:
            h4 = np.frombuffer(native.palette_histogram(*args, fi, bias), dtype=np.uint64).reshape(4, 256)
            cost = sum(_huffman_bytes(h)[0] for h in h4) + _group_overhead(4, n_chunks)
            if cost < best.cost:
                best = _Choice(cost, MODE_PALETTE, list(h4), param=bias)
    return best


def _choose_codes(native, buf, layout: _SectionLayout, n_chunks: int, tables: _TableSet, min_saving: float
                  ) -> tuple[list[FieldCoding], list[FieldCoding], np.ndarray]:
    """Per field, the coding with the smallest estimated size (raw when nothing saves bytes).
    Returns the codings with global table ids, with section-local ids (for the encoder), and the
    section's tables."""
    raw_words = _words(layout.block_size, [FieldCoding(MODE_RAW, f.runs) for f in layout.fields])
    hist = np.frombuffer(native.histogram(buf, layout.orig_offset, layout.orig_size, raw_words, 0),
                         dtype=np.uint64).reshape(len(layout.fields), 256)
    global_fields, local_fields = [], []
    local_rows: list[np.ndarray] = []
    for fi, f in enumerate(layout.fields):
        choice = _choose_field(native, buf, layout, raw_words, fi, hist[fi], n_chunks)
        if choice.mode != MODE_RAW and choice.cost >= int(hist[fi].sum()) * (1.0 - min_saving):
            choice = _Choice(0, MODE_RAW, [])
        gids, lids = [], []
        for h in choice.hists:
            if h.sum() == 0:  # a group with no symbols in this section: any valid code will do
                h = np.ones(256, dtype=np.uint64)
            lengths = code_lengths(h, MAX_BITS)
            gids.append(tables.add(lengths)[0])
            lids.append(len(local_rows))
            local_rows.append(lengths)
        global_fields.append(FieldCoding(choice.mode, f.runs, tuple(gids), choice.param, choice.ctx_map))
        local_fields.append(FieldCoding(choice.mode, f.runs, tuple(lids), choice.param, choice.ctx_map))
    return global_fields, local_fields, (np.stack(local_rows) if local_rows else np.zeros((0, 256), np.uint8))


def pack(src: str | os.PathLike, dst: str | os.PathLike, *, threads: int | None = None,
         chunk_size: int = CHUNK_TARGET, min_saving: float = MIN_SAVING) -> PackStats:
    """Entropy-code ``src`` (a GGUF file) into ``dst``; ``unpack`` restores it byte for byte.

    ``min_saving`` trades size for unpacking speed: a field whose coding would save less than this
    fraction of its bytes is stored raw (copied, not decoded). The default, 0.05, leaves the
    near-incompressible 4-6-bit quants raw and roughly halves decode time; 0 gives the smallest file.
    """
    t0 = time.perf_counter()
    src, dst = Path(src), Path(dst)
    what = str(src)
    native = _native()
    n_threads = check_threads(threads)
    if not src.is_file():
        raise InputError(f"{what}: no such file")
    if is_packed(src):
        raise InputError(f"{what}: already packed")
    if not 1 <= chunk_size <= 16 << 20:
        raise ValueError("chunk_size must be between 1 byte and 16 MiB")
    if not 0.0 <= min_saving < 1.0:
        raise ValueError("min_saving must be in [0, 1)")
    with open(src, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size < 24:
            raise InputError(f"{what}: not a GGUF file ({size} bytes)")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            view = _parse_in_place(mm, what)
            prefix_size = min(view.data_offset, size)
            layouts = _section_layouts(view, size, prefix_size, what)
            with atomic_output(dst, needed=size + (1 << 20)) as tmp, open(tmp, "wb") as out, \
                    ThreadPoolExecutor(max_workers=n_threads) as pool:
                try:
                    stats = _write_packed(native, mm, size, prefix_size, layouts, out, pool, n_threads, chunk_size,
                                          min_saving)
                finally:
                    pool.shutdown(wait=True, cancel_futures=True)
    n_chunks, n_tables, packed_size = stats
    return PackStats(size, packed_size, n_chunks, n_tables, time.perf_counter() - t0)


def _parse_in_place(mm: mmap.mmap, what: str) -> GGUFFile:
    """Parse the GGUF header straight from the map. A failure is raised afresh, without the
    traceback whose frames still hold views of the map (the map could not close under them)."""
    try:
        return GGUFFile.from_header(mm, what=what, file_size=len(mm))
    except InputError as e:
        message = str(e)
    raise InputError(message)


def _write_packed(native, mm, size: int, prefix_size: int, layouts: list[_SectionLayout], out, pool: ThreadPoolExecutor,
                  n_threads: int, chunk_size: int, min_saving: float) -> tuple[int, int, int]:
    sha_future: Future = pool.submit(lambda: hashlib.sha256(mm).digest())
    out.write(b"\0" * HEADER_SIZE)
    out.write(mm[:prefix_size])
    pos = HEADER_SIZE + prefix_size
    tables = _TableSet()
    sections: list[Section] = []
    chunk_rows: list[tuple[int, int, int, int, int]] = []
    pending: deque[tuple[Future, int, int]] = deque()
    window = 2 * n_threads + 2

    def drain(limit: int) -> None:
        nonlocal pos
        while len(pending) > limit:
            fut, orig_size, section = pending.popleft()
            payload, crc = fut.result()
            out.write(payload)
            chunk_rows.append((pos, len(payload), orig_size, crc, section))
            pos += len(payload)

    for si, layout in enumerate(layouts):
        step = max(1, chunk_size // layout.block_size) * layout.block_size
        starts = list(range(0, layout.orig_size, step))
        global_fields, local_fields, local_tables = _choose_codes(native, mm, layout, len(starts), tables, min_saving)
        words = _words(layout.block_size, local_fields)
        sections.append(Section(layout.orig_offset, layout.orig_size, layout.tensor, layout.block_size,
                                tuple(global_fields), len(chunk_rows) + len(pending), len(starts)))
        for a in starts:
            n = min(step, layout.orig_size - a)
            pending.append((pool.submit(native.encode_chunk, mm, layout.orig_offset + a, n, words, 0, local_tables),
                            n, si))
            drain(window)
    drain(0)
    chunks = np.array(chunk_rows, dtype=CHUNK_DTYPE) if chunk_rows else np.zeros(0, dtype=CHUNK_DTYPE)
    table_arr = tables.array()
    index = encode_index(table_arr, sections, chunks)
    out.write(index)
    header = FixedHeader(VERSION, 0, size, prefix_size, pos, len(index), sha_future.result(), crc32c(index),
                         crc32c(mm[:prefix_size]), chunk_size)
    out.seek(0)
    out.write(encode_header(header))
    out.flush()
    return len(chunks), len(table_arr), pos + len(index)
