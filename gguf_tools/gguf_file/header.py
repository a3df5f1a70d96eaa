"""A bounded reader for the GGUF header (metadata + tensor infos) that packed files keep verbatim.

It works on the header bytes alone (no tensor data needed), so an inspector can show a packed file
without unpacking it, and the unpacker can check every section against the tensor infos. Every
count and length is checked against the bytes left before anything is allocated.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import gguf

from ..errors import InputError

GGUF_MAGIC = b"GGUF"
MAX_DIMS = 4
MAX_ARRAY_DEPTH = 3
MAX_KEY_BYTES = 65535
MAX_ENTRIES = 1 << 20    # metadata entries, and tensors: far beyond any real model

# value type id -> (struct format, size); strings (8) and arrays (9) are handled apart
_SCALARS: dict[int, tuple[str, int]] = {
    0: ("<B", 1), 1: ("<b", 1), 2: ("<H", 2), 3: ("<h", 2), 4: ("<I", 4), 5: ("<i", 4),
    6: ("<f", 4), 7: ("<?", 1), 10: ("<Q", 8), 11: ("<q", 8), 12: ("<d", 8),
}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int              # relative to the start of the tensor data
    nbytes: int | None       # None when the type is unknown to the gguf package

    @property
    def type_name(self) -> str:
        try:
            return gguf.GGMLQuantizationType(self.ggml_type).name
        except ValueError:
            return f"type{self.ggml_type}"


@dataclass(frozen=True)
class GGUFView:
    version: int
    metadata: dict[str, Any] = field(repr=False)
    tensors: list[TensorInfo] = field(repr=False)
    alignment: int
    data_offset: int         # where tensor data starts in the original file
    value_types: dict[str, tuple[int, ...]] = field(default_factory=dict, repr=False)  # key -> type ids, outer first


class _Cursor:
    def __init__(self, buf: memoryview, what: str):
        self.buf, self.pos, self.what = buf, 0, what

    def left(self) -> int:
        return len(self.buf) - self.pos

    def take(self, n: int) -> memoryview:
        if n < 0 or n > self.left():
            raise InputError(f"{self.what}: GGUF header truncated at byte {self.pos} (needs {n} more bytes)")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, size: int) -> Any:
        return struct.unpack(fmt, self.take(size))[0]

    def string(self, limit: int | None = None) -> bytes:
        n = self.unpack("<Q", 8)
        if limit is not None and n > limit:
            raise InputError(f"{self.what}: GGUF string of {n} bytes at byte {self.pos} is over the {limit}-byte limit")
        return bytes(self.take(n))


def _value(cur: _Cursor, vtype: int, keep: bool, depth: int = 0) -> Any:
    if vtype in _SCALARS:
        fmt, size = _SCALARS[vtype]
        return cur.unpack(fmt, size)
    if vtype == _STRING:
        if not keep:
            cur.take(cur.unpack("<Q", 8))
            return None
        return cur.string().decode("utf-8", errors="replace")
    if vtype == _ARRAY:
        if depth >= MAX_ARRAY_DEPTH:
            raise InputError(f"{cur.what}: GGUF arrays nested more than {MAX_ARRAY_DEPTH} deep")
        etype = cur.unpack("<I", 4)
        count = cur.unpack("<Q", 8)
        min_size = _SCALARS[etype][1] if etype in _SCALARS else 8 if etype == _STRING else 12 if etype == _ARRAY else 0
        if min_size == 0:
            raise InputError(f"{cur.what}: unknown GGUF array element type {etype}")
        if count > cur.left() // min_size:
            raise InputError(f"{cur.what}: GGUF array of {count} elements does not fit in the header")
        if etype in _SCALARS:
            fmt, size = _SCALARS[etype]
            raw = cur.take(count * size)
            return list(struct.unpack(f"<{count}{fmt[1]}", raw)) if keep else None
        if etype == _STRING and not keep:   # a vocabulary: skim it in C
            from .. import _huffman

            try:
                cur.pos = _huffman.skip_strings(cur.buf, cur.pos, count)
            except ValueError:
                raise InputError(f"{cur.what}: GGUF string array runs past the end of the header") from None
            return None
        items = [_value(cur, etype, keep, depth + 1) for _ in range(count)]
        return items if keep else None
    raise InputError(f"{cur.what}: unknown GGUF value type {vtype} at byte {cur.pos}")


def tensor_nbytes(shape: tuple[int, ...], ggml_type: int) -> int | None:
    """Bytes of a tensor's data, or None for a type the gguf package does not know."""
    try:
        block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError):
        return None
    n = 1
    for d in shape:
        n *= d
    if shape and shape[0] % block:
        return None
    return n // block * size


def parse_gguf_header(buf: bytes | memoryview, *, what: str = "GGUF", keep_values: bool = True,
                      keep_scalars: bool = False) -> GGUFView:
    """Parse magic, metadata and tensor infos from the first bytes of a GGUF file.

    ``keep_values=False`` skips building Python values for metadata (tokenizer arrays are large):
    the structure is still fully checked. ``keep_scalars=True`` then keeps every value that is not
    an array (the model's shape, the chat template) at the cost of a few milliseconds.
    """
    cur = _Cursor(memoryview(buf).cast("B"), what)
    magic = bytes(cur.take(4))
    if magic != GGUF_MAGIC:
        raise InputError(f"{what}: not a GGUF file (magic {magic!r})")
    version = cur.unpack("<I", 4)
    if version not in (2, 3):
        raise InputError(f"{what}: unsupported GGUF version {version}")
    n_tensors = cur.unpack("<Q", 8)
    n_kv = cur.unpack("<Q", 8)
    if n_kv > min(MAX_ENTRIES, cur.left() // 13):
        raise InputError(f"{what}: {n_kv} metadata entries cannot fit in the header")
    metadata: dict[str, Any] = {}
    value_types: dict[str, tuple[int, ...]] = {}
    alignment = gguf.GGUF_DEFAULT_ALIGNMENT
    for _ in range(n_kv):
        key = cur.string(MAX_KEY_BYTES).decode("utf-8", errors="replace")
        vtype = cur.unpack("<I", 4)
        kept = keep_values or (keep_scalars and vtype != _ARRAY)
        if keep_values:
            value_types[key] = _type_ids(cur, vtype)
        value = _value(cur, vtype, kept or key == "general.alignment")
        if key == "general.alignment":
            if vtype != 4 or not isinstance(value, int) or value <= 0 or value & (value - 1) or value > 1 << 20:
                raise InputError(f"{what}: general.alignment must be a power-of-two uint32, got {value!r}")
            alignment = value
        if kept:
            metadata[key] = value
    if n_tensors > min(MAX_ENTRIES, cur.left() // 24):
        raise InputError(f"{what}: {n_tensors} tensor infos cannot fit in the header")
    tensors: list[TensorInfo] = []
    for _ in range(n_tensors):
        name = cur.string(MAX_KEY_BYTES).decode("utf-8", errors="replace")
        n_dims = cur.unpack("<I", 4)
        if n_dims > MAX_DIMS:
            raise InputError(f"{what}: tensor {name!r} has {n_dims} dimensions (at most {MAX_DIMS})")
        shape = tuple(cur.unpack("<Q", 8) for _ in range(n_dims))
        total = 1
        for d in shape:
            total *= d
        if total >= 1 << 62:
            raise InputError(f"{what}: tensor {name!r} shape {shape} is implausibly large")
        ggml_type = cur.unpack("<I", 4)
        offset = cur.unpack("<Q", 8)
        tensors.append(TensorInfo(name, shape, ggml_type, offset, tensor_nbytes(shape, ggml_type)))
    data_offset = (cur.pos + alignment - 1) // alignment * alignment
    return GGUFView(version, metadata, tensors, alignment, data_offset, value_types)


def _type_ids(cur: _Cursor, vtype: int) -> tuple[int, ...]:
    """A value's type, and for arrays the element types, read ahead without moving the cursor."""
    ids, pos = [vtype], cur.pos
    while ids[-1] == _ARRAY and len(ids) <= MAX_ARRAY_DEPTH and pos + 4 <= len(cur.buf):
        ids.append(struct.unpack_from("<I", cur.buf, pos)[0])
        pos += 12   # element type, count; a nested array's first element starts with its own type
    return tuple(ids)
