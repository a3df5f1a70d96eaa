"""A hardened, memory-mapped safetensors reader.

The header is untrusted JSON: every offset and size is checked against the file before any tensor
is touched, so a hostile file fails with one InputError instead of a crash or a huge allocation.
Tensor data is never copied until a caller converts it.
"""
from __future__ import annotations

import json
import mmap
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError

MAX_HEADER_BYTES = 100 * 1024 * 1024
MAX_TENSORS = 1_000_000
MAX_DIMS = 8

# safetensors dtype -> (numpy storage dtype, bytes per element). BF16 is stored as raw uint16.
DTYPES: dict[str, tuple[np.dtype, int]] = {
    "F64": (np.dtype("<f8"), 8),
    "F32": (np.dtype("<f4"), 4),
    "F16": (np.dtype("<f2"), 2),
    "BF16": (np.dtype("<u2"), 2),
    "I64": (np.dtype("<i8"), 8),
    "I32": (np.dtype("<i4"), 4),
    "I16": (np.dtype("<i2"), 2),
    "I8": (np.dtype("i1"), 1),
    "U8": (np.dtype("u1"), 1),
    "BOOL": (np.dtype("?"), 1),
}


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # offset in the data section
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


class SafetensorsFile:
    """One .safetensors file: validated header plus a read-only mmap of the data."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self._fh = open(self.path, "rb")
        except OSError as e:
            raise InputError(f"{self.path}: cannot open: {e.strerror}") from None
        try:
            self.entries, self.metadata, self._data_start = _parse_header(self._fh, self.path)
            size = self.path.stat().st_size
            self._mm = mmap.mmap(self._fh.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        except BaseException:
            self._fh.close()
            raise

    def close(self) -> None:
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:  # arrays still view the map: leave it to the GC
                pass
        self._fh.close()

    def raw(self, name: str) -> np.ndarray:
        """The tensor's bytes as an array of its storage dtype (a view of the map, no copy)."""
        e = self.entries[name]
        np_dtype, item = DTYPES[e.dtype]
        count = e.nbytes // item
        arr = np.frombuffer(self._mm, dtype=np_dtype, count=count, offset=self._data_start + e.begin)
        return arr.reshape(e.shape)


def _fail(path: Path, why: str) -> InputError:
    return InputError(f"{path}: not a valid safetensors file: {why}")


def _parse_header(fh, path: Path) -> tuple[dict[str, TensorEntry], dict[str, str], int]:
    file_size = path.stat().st_size
    head = fh.read(8)
    if len(head) < 8:
        raise _fail(path, "shorter than its 8-byte header length")
    (n,) = struct.unpack("<Q", head)
    if n > MAX_HEADER_BYTES:
        raise _fail(path, f"header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit")
    if n > file_size - 8:
        raise _fail(path, f"header length {n} runs past the end of the file ({file_size} bytes)")
    raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise _fail(path, "header is not UTF-8") from None
    except json.JSONDecodeError as e:
        raise _fail(path, f"header is not valid JSON ({e.msg} at byte {e.pos})") from None
    if not isinstance(header, dict):
        raise _fail(path, "header is not a JSON object")
    if len(header) > MAX_TENSORS:
        raise _fail(path, f"{len(header)} entries exceed the limit of {MAX_TENSORS}")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise _fail(path, "__metadata__ is not an object")

    data_start = 8 + n
    data_size = file_size - data_start
    entries: dict[str, TensorEntry] = {}
    for name, info in header.items():
        entries[name] = _parse_entry(path, name, info, data_size)
    spans = sorted((e.begin, e.end, e.name) for e in entries.values() if e.nbytes)
    for (_b0, e0, n0), (b1, _e1, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise _fail(path, f"tensors {n0!r} and {n1!r} overlap")
    return entries, {str(k): str(v) for k, v in metadata.items()}, data_start


def _parse_entry(path: Path, name: str, info: object, data_size: int) -> TensorEntry:
    if not isinstance(info, dict):
        raise _fail(path, f"entry {name!r} is not an object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if dtype not in DTYPES:
        raise _fail(path, f"tensor {name!r} has unsupported dtype {dtype!r}")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_DIMS
        or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**40 for d in shape)
    ):
        raise _fail(path, f"tensor {name!r} has an invalid shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
    ):
        raise _fail(path, f"tensor {name!r} has invalid data_offsets {offsets!r}")
    begin, end = offsets
    if not 0 <= begin <= end <= data_size:
        raise _fail(path, f"tensor {name!r} data [{begin}, {end}) lies outside the {data_size}-byte data section")
    expected = int(np.prod(shape, dtype=np.int64)) * DTYPES[dtype][1]
    if end - begin != expected:
        raise _fail(path, f"tensor {name!r} occupies {end - begin} bytes but {dtype}{shape} needs {expected}")
    return TensorEntry(name, dtype, tuple(shape), begin, end)


def write_safetensors(
    path: Path,
    entries: list[tuple[str, str, tuple[int, ...], Callable[[], np.ndarray]]],
    metadata: dict[str, str] | None = None,
) -> None:
    """Stream tensors (name, "bf16"|"f16"|"f32", shape, producer of float32) into one file, atomically."""
    from ..files import atomic_output
    from ..quantize.blocks import to_bf16_bits

    kinds = {"bf16": ("BF16", 2), "f16": ("F16", 2), "f32": ("F32", 4)}
    header: dict[str, object] = {"__metadata__": metadata or {}}
    offset = 0
    for name, kind, shape, _ in entries:
        st, item = kinds[kind]
        n = int(np.prod(shape, dtype=np.int64)) * item
        header[name] = {"dtype": st, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    with atomic_output(Path(path)) as tmp, open(tmp, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)))
        fh.write(blob)
        for _name, kind, shape, produce in entries:
            arr = np.asarray(produce(), dtype=np.float32).reshape(shape)
            if kind == "bf16":
                out = to_bf16_bits(arr)
            elif kind == "f16":
                out = arr.astype("<f2")
            else:
                out = arr.astype("<f4")
            fh.write(out.tobytes())
