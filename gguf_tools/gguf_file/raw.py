"""A GGUF file's metadata and tensors, read without decoding what is only copied.

gguf.GGUFReader builds a numpy view per string of every array: a tokenizer of 49k tokens and
49k merges costs seconds, more than quantizing a small model. Re-quantizing copies metadata
verbatim, so here each key keeps its encoded bytes (written back unchanged through
writer.RawValue) and is decoded only when asked. Every count and length is checked against
the bytes that remain before anything is allocated.
"""
from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from ..errors import InputError

V = gguf.GGUFValueType
Q = gguf.GGMLQuantizationType

_SCALARS = {V.UINT8: "<B", V.INT8: "<b", V.UINT16: "<H", V.INT16: "<h", V.UINT32: "<I", V.INT32: "<i",
            V.FLOAT32: "<f", V.BOOL: "<?", V.UINT64: "<Q", V.INT64: "<q", V.FLOAT64: "<d"}
MAX_KV = 1 << 20
MAX_TENSORS = 1 << 24
MAX_DIMS = 4


@dataclass(frozen=True)
class RawField:
    """One metadata key: its value types (ARRAY then the element type for arrays) and encoded bytes."""

    name: str
    types: list[V]
    raw: bytes  # the value's type tag and payload, exactly as in the file

    def contents(self) -> Any:
        """The decoded value: a Python scalar, str, or list for arrays."""
        value, _ = _decode(memoryview(self.raw), 4, self.types[0], len(self.raw))
        return value


@dataclass(frozen=True)
class RawTensor:
    name: str
    shape: tuple[int, ...]  # GGUF order: row length first
    tensor_type: Q
    data_offset: int
    n_bytes: int
    data: np.ndarray  # a view of the mapped file: float32 / float16 for those types, else bytes

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


class RawGGUF:
    """Header, metadata and tensor infos of a GGUF file; tensor data as views of a read-only map."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as fh:
                self._mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as e:
            raise InputError(f"{self.path}: cannot read: {e}") from None
        try:
            self.fields, self.tensors = self._parse()
        except (struct.error, ValueError, KeyError, UnicodeDecodeError, OverflowError) as e:
            raise InputError(f"{self.path}: corrupt GGUF file: {e}") from None

    def _parse(self) -> tuple[dict[str, RawField], list[RawTensor]]:
        buf, size = memoryview(self._mm), len(self._mm)
        if size < 24 or bytes(buf[:4]) != b"GGUF":
            raise InputError(f"{self.path}: not a GGUF file")
        version, n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
        if version not in (2, 3):
            raise InputError(f"{self.path}: unsupported GGUF version {version}")
        if n_kv > MAX_KV or n_tensors > MAX_TENSORS:
            raise InputError(f"{self.path}: implausible counts ({n_kv} keys, {n_tensors} tensors)")
        pos = 24
        fields: dict[str, RawField] = {}
        for _ in range(n_kv):
            key, pos = _string(buf, pos, size)
            vtype = V(_unpack("<I", buf, pos, size))
            start = pos
            types = [vtype]
            if vtype == V.ARRAY:
                types.append(V(_unpack("<I", buf, pos + 4, size)))
            pos = _skip(buf, pos + 4, vtype, size)
            if key in fields:
                raise ValueError(f"duplicate key {key!r}")
            fields[key] = RawField(key, types, bytes(buf[start:pos]))
        infos = []
        for _ in range(n_tensors):
            name, pos = _string(buf, pos, size)
            n_dims = _unpack("<I", buf, pos, size)
            if not 1 <= n_dims <= MAX_DIMS:
                raise ValueError(f"tensor {name!r} has {n_dims} dimensions")
            dims = struct.unpack_from(f"<{n_dims}Q", buf, pos + 4)
            qtype = Q(_unpack("<I", buf, pos + 4 + 8 * n_dims, size))
            offset = _unpack("<Q", buf, pos + 8 + 8 * n_dims, size)
            pos += 16 + 8 * n_dims
            infos.append((name, tuple(int(d) for d in dims), qtype, offset))
        align = fields.get("general.alignment")
        alignment = int(align.contents()) if align is not None else gguf.GGUF_DEFAULT_ALIGNMENT
        if alignment <= 0 or alignment & (alignment - 1):
            raise ValueError(f"alignment {alignment} is not a power of two")
        data_start = -(-pos // alignment) * alignment
        tensors = []
        for name, dims, qtype, offset in infos:
            block, bsize = gguf.GGML_QUANT_SIZES[qtype]
            n = int(np.prod(dims, dtype=np.int64))
            if any(d < 0 for d in dims) or dims[0] % block or n > size:
                raise ValueError(f"tensor {name!r}: shape {dims} does not fit {qtype.name}")
            nbytes = n // block * bsize
            begin = data_start + offset
            if begin + nbytes > size:
                raise ValueError(f"tensor {name!r} runs past the end of the file")
            dtype = {Q.F32: np.float32, Q.F16: np.float16}.get(qtype, np.uint8)
            data = np.frombuffer(self._mm, dtype=dtype, count=nbytes // np.dtype(dtype).itemsize, offset=begin)
            tensors.append(RawTensor(name, dims, qtype, begin, nbytes, data))
        return fields, tensors


def _unpack(fmt: str, buf: memoryview, pos: int, size: int) -> Any:
    n = struct.calcsize(fmt)
    if pos + n > size:
        raise ValueError("truncated")
    return struct.unpack_from(fmt, buf, pos)[0]


def _string(buf: memoryview, pos: int, size: int) -> tuple[str, int]:
    n = _unpack("<Q", buf, pos, size)
    if pos + 8 + n > size:
        raise ValueError("string runs past the end of the file")
    return bytes(buf[pos + 8: pos + 8 + n]).decode("utf-8"), pos + 8 + n


def _skip(buf: memoryview, pos: int, vtype: V, size: int) -> int:
    """Position after a value of vtype starting at pos (no decoding)."""
    if vtype in _SCALARS:
        pos += struct.calcsize(_SCALARS[vtype])
    elif vtype == V.STRING:
        pos += 8 + _unpack("<Q", buf, pos, size)
    elif vtype == V.ARRAY:
        sub = V(_unpack("<I", buf, pos, size))
        count = _unpack("<Q", buf, pos + 4, size)
        pos += 12
        if sub in _SCALARS:
            pos += count * struct.calcsize(_SCALARS[sub])
        elif sub == V.STRING:
            if count > (size - pos) // 8:
                raise ValueError("array count exceeds the file")
            for _ in range(count):
                pos += 8 + _unpack("<Q", buf, pos, size)
        else:
            raise ValueError(f"unsupported array element type {sub.name}")
    else:
        raise ValueError(f"unknown value type {vtype}")
    if pos > size:
        raise ValueError("value runs past the end of the file")
    return pos


def _decode(buf: memoryview, pos: int, vtype: V, size: int) -> tuple[Any, int]:
    if vtype in _SCALARS:
        return _unpack(_SCALARS[vtype], buf, pos, size), pos + struct.calcsize(_SCALARS[vtype])
    if vtype == V.STRING:
        return _string(buf, pos, size)
    sub = V(_unpack("<I", buf, pos, size))
    count = _unpack("<Q", buf, pos + 4, size)
    pos += 12
    if sub in _SCALARS:
        item = struct.calcsize(_SCALARS[sub])
        if pos + count * item > size:
            raise ValueError("array runs past the end")
        arr = np.frombuffer(buf, dtype=np.dtype(_SCALARS[sub]), count=count, offset=pos)
        return arr.tolist(), pos + count * item
    out = []
    for _ in range(count):
        v, pos = _decode(buf, pos, sub, size)
        out.append(v)
    return out, pos
