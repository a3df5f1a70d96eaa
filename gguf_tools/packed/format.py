"""The packed-GGUF container: index, block-field layouts, and their validation (the fixed header is header.py).

docs/packed-format.md is the specification; this module is its Python implementation (native/huffman_index.h
checks the index again, by the same rules, when it builds the decoder's jobs). Parsing treats
the file as hostile: every count, size and offset is checked against caps and the bytes present
before anything is allocated, and each failure is one InputError line.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import gguf
import numpy as np

from ..errors import InputError
from ..gguf_file.reader import GGUFFile
from .header import MAX_RATIO, RATIO_SLACK, FixedHeader

MAX_BITS = 12            # longest Huffman code
MAX_BLOCK = 1024         # largest block a layout may describe
MAX_FIELDS = 32
MAX_RUNS = 32
MAX_FIELD_TABLES = 64    # context groups per field
MAX_CHUNK = 64 << 20     # largest decoded chunk a reader accepts
N_STREAMS = 4            # interleaved bit streams per coded field per chunk
MAX_SECTIONS = 1 << 21  # every tensor plus the padding before it
MAX_TABLES = 1 << 24

MODE_RAW, MODE_HUFF, MODE_CTX, MODE_PALETTE = 0, 1, 2, 3
MODE_NAMES = {MODE_RAW: "raw", MODE_HUFF: "huffman", MODE_CTX: "huffman+context", MODE_PALETTE: "palette"}
PALETTE_BIASES = (0, 128)
NO_TENSOR = -1

CHUNK_DTYPE = np.dtype(
    [("packed_offset", "<u8"), ("packed_size", "<u4"), ("orig_size", "<u4"), ("crc", "<u4"), ("section", "<u4")]
)
TABLE_BYTES = 128        # 256 code lengths, two 4-bit lengths per byte


# ---------------------------------------------------------------- block-field layouts

Run = tuple[int, int]    # (offset in block, length)


@dataclass(frozen=True)
class Field:
    name: str
    runs: tuple[Run, ...]

    @property
    def width(self) -> int:
        return sum(n for _, n in self.runs)


def _f(name: str, start: int, stop: int | None = None) -> Field:
    return Field(name, ((start, (stop if stop is not None else start + 1) - start),))


def _half(name: str, at: int) -> list[Field]:
    """An f16 as two byte streams, high byte first: sign and exponent code far better than the low
    byte, and the low byte codes better again with the high byte as its context."""
    return [_f(f"{name}.hi", at + 1), _f(f"{name}.lo", at)]


def _planes(width: int) -> list[Field]:
    """Little-endian numbers as byte planes, most significant first (the natural contexts)."""
    return [_f(f"byte{i}", i) for i in reversed(range(width))]


T = gguf.GGMLQuantizationType
LAYOUTS: dict[int, list[Field]] = {
    T.F32: _planes(4), T.F16: _planes(2), T.BF16: _planes(2), T.F64: _planes(8),
    T.I8: _planes(1), T.I16: _planes(2), T.I32: _planes(4), T.I64: _planes(8),
    T.Q4_0: _half("d", 0) + [_f("qs", 2, 18)],
    T.Q4_1: _half("d", 0) + _half("m", 2) + [_f("qs", 4, 20)],
    T.Q5_0: _half("d", 0) + [_f("qh", 2, 6), _f("qs", 6, 22)],
    T.Q5_1: _half("d", 0) + _half("m", 2) + [_f("qh", 4, 8), _f("qs", 8, 24)],
    T.Q8_0: _half("d", 0) + [_f("qs", 2, 34)],
    T.Q8_1: _half("d", 0) + _half("s", 2) + [_f("qs", 4, 40)],
    T.Q2_K: [_f("scales", 0, 16), _f("qs", 16, 80)] + _half("d", 80) + _half("dmin", 82),
    T.Q3_K: [_f("hmask", 0, 32), _f("qs", 32, 96), _f("scales.lo", 96, 104), _f("scales.hi", 104, 108)]
    + _half("d", 108),
    T.Q4_K: _half("d", 0) + _half("dmin", 2)
    + [_f("scales.a", 4, 8), _f("scales.b", 8, 12), _f("scales.c", 12, 16), _f("qs", 16, 144)],
    T.Q5_K: _half("d", 0) + _half("dmin", 2)
    + [_f("scales.a", 4, 8), _f("scales.b", 8, 12), _f("scales.c", 12, 16), _f("qh", 16, 48), _f("qs", 48, 176)],
    T.Q6_K: [_f("ql", 0, 128), _f("qh", 128, 192), _f("scales", 192, 208)] + _half("d", 208),
    T.Q8_K: _planes(4) + [_f("qs", 4, 260),
                          Field("bsums.lo", tuple((260 + 2 * i, 1) for i in range(16))),
                          Field("bsums.hi", tuple((261 + 2 * i, 1) for i in range(16)))],
    T.IQ4_NL: _half("d", 0) + [_f("qs", 2, 18)],
    T.IQ4_XS: _half("d", 0) + [_f("scales_h", 2, 4), _f("scales_l", 4, 8), _f("qs", 8, 136)],
    T.IQ2_XXS: _half("d", 0) + [_f("qs", 2, 66)],
    T.IQ2_XS: _half("d", 0) + [_f("qs", 2, 66), _f("scales", 66, 74)],
    T.IQ2_S: _half("d", 0) + [_f("qs", 2, 66), _f("qh", 66, 74), _f("scales", 74, 82)],
    T.IQ3_XXS: _half("d", 0) + [_f("qs", 2, 98)],
    T.IQ3_S: _half("d", 0) + [_f("qs", 2, 66), _f("qh", 66, 74), _f("signs", 74, 106), _f("scales", 106, 110)],
    T.IQ1_S: _half("d", 0) + [_f("qs", 2, 34), _f("qh", 34, 50)],
    T.IQ1_M: [_f("qs", 0, 32), _f("qh", 32, 48), _f("scales", 48, 56)],
    T.TQ1_0: [_f("qs", 0, 48), _f("qh", 48, 52)] + _half("d", 52),
    T.TQ2_0: [_f("qs", 0, 64)] + _half("d", 64),
    T.MXFP4: [_f("e", 0), _f("qs", 1, 17)],
}
GAP_LAYOUT = [_f("bytes", 0)]


def layout_for(ggml_type: int) -> tuple[int, list[Field]]:
    """Block size and fields for a tensor type; a type without a known layout is one field."""
    _, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ggml_type)]
    fields = LAYOUTS.get(ggml_type)
    if fields is None or sum(f.width for f in fields) != size or size > MAX_BLOCK:
        fields = [_f("block", 0, size)] if size <= MAX_BLOCK else GAP_LAYOUT
        size = size if size <= MAX_BLOCK else 1
    return size, fields


def field_name(ggml_type: int | None, runs: tuple[Run, ...]) -> str:
    """The layout name of a coded field, for reports."""
    if ggml_type is not None and ggml_type in LAYOUTS:
        for f in LAYOUTS[ggml_type]:
            if f.runs == runs:
                return f.name
    if len(runs) == 1:
        a, n = runs[0]
        return f"bytes[{a}:{a + n}]"
    return f"{len(runs)} runs"


# ---------------------------------------------------------------- index

@dataclass(frozen=True)
class FieldCoding:
    mode: int
    runs: tuple[Run, ...]
    tables: tuple[int, ...] = ()   # global table ids: none (raw), one, a group each (context), four (palette)
    param: int = 0                 # context: index of the context field; palette: the bias (0 or 128)
    ctx_map: bytes = b""           # context: 256 bytes, context value -> group

    @property
    def n_groups(self) -> int:
        return len(self.tables)

    @property
    def width(self) -> int:
        return sum(n for _, n in self.runs)


@dataclass(frozen=True)
class Section:
    orig_offset: int          # in the original file
    orig_size: int
    tensor: int               # index into the GGUF tensor infos, -1 for bytes between tensors
    block_size: int
    fields: tuple[FieldCoding, ...]
    first_chunk: int
    n_chunks: int


@dataclass(frozen=True)
class PackIndex:
    tables: np.ndarray        # uint8 [n_tables, 256] code lengths
    sections: list[Section]
    chunks: np.ndarray        # CHUNK_DTYPE [n_chunks]


def _pack_tables(tables: np.ndarray) -> bytes:
    t = np.asarray(tables, dtype=np.uint8).reshape(-1, 256)
    return (t[:, 0::2] | (t[:, 1::2] << 4)).astype(np.uint8).tobytes()


def encode_index(tables: np.ndarray, sections: list[Section], chunks: np.ndarray) -> bytes:
    out = [struct.pack("<IIII", len(tables), len(sections), len(chunks), 0), _pack_tables(tables)]
    for s in sections:
        out.append(struct.pack("<QQqIIII", s.orig_offset, s.orig_size, s.tensor, s.block_size, len(s.fields),
                               s.first_chunk, s.n_chunks))
        for f in s.fields:
            out.append(struct.pack("<BBBB", f.mode, len(f.runs), f.param, len(f.tables)))
            out.append(struct.pack(f"<{len(f.tables)}I", *f.tables))
            out.append(f.ctx_map)
            out.append(b"".join(struct.pack("<HH", a, n) for a, n in f.runs))
    out.append(np.ascontiguousarray(chunks, dtype=CHUNK_DTYPE).tobytes())
    return b"".join(out)


def check_tables(tables: np.ndarray, what: str) -> None:
    """Code lengths within the limit, and complete prefix codes (or one symbol of length 1)."""
    if not len(tables):
        return
    t = tables.astype(np.int64)
    over = np.flatnonzero(t.max(axis=1) > MAX_BITS)
    if over.size:
        raise InputError(f"{what}: code table {over[0]} has a code length past the {MAX_BITS}-bit limit")
    used = (t > 0).sum(axis=1)
    kraft = np.where(t > 0, 1 << (MAX_BITS - t), 0).sum(axis=1)
    for kind, bad in (("is empty", used == 0),
                      ("has a lone symbol whose code length is not 1", (used == 1) & (kraft != 1 << (MAX_BITS - 1))),
                      ("is over-subscribed", (used > 1) & (kraft > 1 << MAX_BITS)),
                      ("is incomplete", (used > 1) & (kraft < 1 << MAX_BITS))):
        hit = np.flatnonzero(bad)
        if hit.size:
            raise InputError(f"{what}: code table {hit[0]} {kind}")


def parse_index(raw: bytes | memoryview, header: FixedHeader, what: str, max_sections: int = MAX_SECTIONS
                ) -> PackIndex:
    """The index, checked field by field; ``max_sections`` is twice the tensor count plus one when
    the GGUF header is known (a section per tensor and per gap between tensors)."""
    buf = memoryview(raw).cast("B")
    pos = 0

    def take(n: int) -> memoryview:
        nonlocal pos
        if n < 0 or n > len(buf) - pos:
            raise InputError(f"{what}: index truncated at byte {pos}")
        pos += n
        return buf[pos - n:pos]

    n_tables, n_sections, n_chunks, _ = struct.unpack("<IIII", take(16))
    if n_tables > MAX_TABLES or n_tables * TABLE_BYTES > len(buf) - pos:
        raise InputError(f"{what}: index declares {n_tables} code tables, more than it holds")
    if n_sections > min(MAX_SECTIONS, max_sections) or n_sections * 40 > len(buf) - pos:
        raise InputError(f"{what}: index declares {n_sections} sections, more than it holds")
    if n_chunks * CHUNK_DTYPE.itemsize > len(buf) - pos:
        raise InputError(f"{what}: index declares {n_chunks} chunks, more than it holds")
    packed = np.frombuffer(take(n_tables * TABLE_BYTES), dtype=np.uint8).reshape(n_tables, TABLE_BYTES)
    tables = np.empty((n_tables, 256), dtype=np.uint8)
    tables[:, 0::2] = packed & 15
    tables[:, 1::2] = packed >> 4
    check_tables(tables, what)
    sections: list[Section] = []
    for si in range(n_sections):
        orig_offset, orig_size, tensor, block_size, n_fields, first_chunk, sn_chunks = struct.unpack(
            "<QQqIIII", take(40))
        if not 1 <= block_size <= MAX_BLOCK:
            raise InputError(f"{what}: section {si} has block size {block_size} (1..{MAX_BLOCK})")
        if not 1 <= n_fields <= MAX_FIELDS:
            raise InputError(f"{what}: section {si} has {n_fields} fields (1..{MAX_FIELDS})")
        fields: list[FieldCoding] = []
        seen = bytearray(block_size)
        for fi in range(n_fields):
            mode, n_runs, param, n_tab = struct.unpack("<BBBB", take(4))
            where = f"{what}: section {si} field {fi}"
            if mode not in MODE_NAMES:
                raise InputError(f"{where} has unknown mode {mode}")
            expected = {MODE_RAW: n_tab == 0 and param == 0, MODE_HUFF: n_tab == 1 and param == 0,
                        MODE_CTX: 1 <= n_tab <= MAX_FIELD_TABLES, MODE_PALETTE: n_tab == 4 and param in PALETTE_BIASES}
            if not expected[mode]:
                raise InputError(f"{where}: {n_tab} code tables and parameter {param} do not suit a "
                                 f"{MODE_NAMES[mode]} field")
            tabs = struct.unpack(f"<{n_tab}I", take(4 * n_tab))
            if any(t >= n_tables for t in tabs):
                raise InputError(f"{where} refers to a code table past the {n_tables} present")
            ctx_map = b""
            if mode == MODE_CTX:
                if param >= fi or fields[param].width != 1:
                    raise InputError(f"{where}: its context must be an earlier one-byte field")
                ctx_map = bytes(take(256))
                if max(ctx_map) >= n_tab:
                    raise InputError(f"{where}: context map points past its {n_tab} groups")
            if not 1 <= n_runs <= MAX_RUNS:
                raise InputError(f"{where} has {n_runs} runs (1..{MAX_RUNS})")
            runs = tuple(struct.iter_unpack("<HH", take(4 * n_runs)))
            for a, n in runs:
                if n < 1 or a + n > block_size or any(seen[a:a + n]):
                    raise InputError(f"{where} has runs outside the block or overlapping")
                seen[a:a + n] = b"\x01" * n
            fields.append(FieldCoding(mode, runs, tabs, param, ctx_map))
        if not all(seen):
            raise InputError(f"{what}: section {si} fields do not cover its {block_size}-byte block")
        sections.append(Section(orig_offset, orig_size, tensor, block_size, tuple(fields), first_chunk, sn_chunks))
    chunks = np.frombuffer(take(n_chunks * CHUNK_DTYPE.itemsize), dtype=CHUNK_DTYPE)
    if pos != len(buf):
        raise InputError(f"{what}: index has {len(buf) - pos} trailing bytes")
    return PackIndex(tables, sections, chunks)


def validate(header: FixedHeader, view: GGUFFile, index: PackIndex, what: str) -> None:
    """Sections tile the tensor data exactly and agree with the GGUF tensor infos; chunks tile the
    sections in order and sit back to back between the GGUF header and the index."""
    pos = header.prefix_size
    used_tensors: set[int] = set()
    chunks = index.chunks
    n_chunks = len(chunks)
    next_chunk = 0
    for si, s in enumerate(index.sections):
        if s.orig_offset != pos:
            raise InputError(f"{what}: section {si} starts at {s.orig_offset}, expected {pos}")
        if s.orig_size == 0 or s.orig_size > header.original_size - pos:
            raise InputError(f"{what}: section {si} size {s.orig_size} runs past the original file")
        if s.orig_size % s.block_size:
            raise InputError(f"{what}: section {si} size {s.orig_size} is not whole {s.block_size}-byte blocks")
        if s.tensor != NO_TENSOR:
            if not 0 <= s.tensor < len(view.tensors) or s.tensor in used_tensors:
                raise InputError(f"{what}: section {si} refers to tensor {s.tensor}, which is not in the GGUF header")
            t = view.tensors[s.tensor]
            if t.nbytes is None or view.data_offset + t.offset != s.orig_offset or t.nbytes != s.orig_size:
                raise InputError(
                    f"{what}: section {si} ({s.orig_size} bytes at {s.orig_offset}) disagrees with tensor "
                    f"{t.name!r} in the GGUF header ({t.nbytes} bytes at {view.data_offset + t.offset})")
            used_tensors.add(s.tensor)
        if s.first_chunk != next_chunk or s.n_chunks < 1 or s.n_chunks > n_chunks - next_chunk:
            raise InputError(f"{what}: section {si} chunk range {s.first_chunk}+{s.n_chunks} is out of order or range")
        sec = chunks[s.first_chunk:s.first_chunk + s.n_chunks]
        sizes = sec["orig_size"].astype(np.int64)
        if (sec["section"] != si).any():
            raise InputError(f"{what}: section {si} owns chunks that name another section")
        if (sizes <= 0).any() or (sizes > MAX_CHUNK).any() or (sizes % s.block_size).any():
            raise InputError(f"{what}: section {si} has a chunk of bad size (not whole blocks, empty, or over {MAX_CHUNK})")
        if int(sizes.sum()) != s.orig_size:
            raise InputError(f"{what}: chunks of section {si} hold {int(sizes.sum())} bytes, the section {s.orig_size}")
        next_chunk += s.n_chunks
        pos += s.orig_size
    if pos != header.original_size:
        raise InputError(f"{what}: sections end at {pos}, the original file at {header.original_size}")
    if next_chunk != n_chunks:
        raise InputError(f"{what}: {n_chunks - next_chunk} chunks belong to no section")
    if n_chunks:
        offs = chunks["packed_offset"].astype(np.uint64)
        sizes = chunks["packed_size"].astype(np.uint64)
        ends = offs + sizes
        if offs[0] != header.data_start or (offs[1:] != ends[:-1]).any() or ends[-1] != header.index_offset:
            raise InputError(f"{what}: chunk offsets are out of range, overlapping or leave gaps")
        if (chunks["orig_size"].astype(np.uint64) > sizes * MAX_RATIO + RATIO_SLACK).any():
            raise InputError(f"{what}: a chunk claims an implausible compression ratio (over {MAX_RATIO}:1)")
    elif header.index_offset != header.data_start:
        raise InputError(f"{what}: packed data present but no chunks")


def layout_words(block_size: int, fields) -> list[int]:
    """One section's layout as the flat words the C and reference coders read."""
    words = [block_size, len(fields)]
    for f in fields:
        words += [f.mode, f.param, len(f.tables), *f.tables, *f.ctx_map, len(f.runs)]
        for a, n in f.runs:
            words += [a, n]
    return words
