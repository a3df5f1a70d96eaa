"""The one GGUF reader: bounded, lazy where it can be, and the same for every command.

A GGUF file is hostile input: every count, length and offset is checked against a cap and the
bytes left before anything is allocated, arrays nest at most ``MAX_ARRAY_DEPTH`` deep, and any
failure is one InputError naming the file and the field. Values keep their encoded bytes (the
re-quantizer writes them back unchanged) and are decoded when asked, because decoding a 262k-token
vocabulary costs more than the rest of the header: ``values`` says what to decode up front.
Tensor data is never read here; ``data`` gives views of a read-only map.
"""
from __future__ import annotations

import mmap
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from ..errors import InputError
from .constants import GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGMLQuantizationType, GGUFValueType, Keys
from .layout import GGUFShape, n_elements, numpy_shape, tensor_nbytes

if TYPE_CHECKING:
    import numpy as np

V = GGUFValueType
Q = GGMLQuantizationType
Values = Literal["raw", "scalars", "all"]

MAGIC = b"GGUF"
VERSIONS = (2, 3)
MAX_KV = 1 << 20           # metadata entries: far beyond any real model
MAX_TENSORS = 1 << 20
MAX_DIMS = 4               # ggml's GGML_MAX_DIMS
MAX_KEY_BYTES = 65535
MAX_TENSOR_NAME = 63       # ggml's GGML_MAX_NAME less its NUL: llama.cpp refuses longer names
MAX_ARRAY_DEPTH = 3
MAX_ALIGNMENT = 1 << 20
MAX_ELEMENTS = 1 << 62     # keeps every product and byte count inside int64

_SCALARS: dict[int, struct.Struct] = {
    int(t): struct.Struct(f) for t, f in (
        (V.UINT8, "<B"), (V.INT8, "<b"), (V.UINT16, "<H"), (V.INT16, "<h"), (V.UINT32, "<I"), (V.INT32, "<i"),
        (V.FLOAT32, "<f"), (V.BOOL, "<?"), (V.UINT64, "<Q"), (V.INT64, "<q"), (V.FLOAT64, "<d"))
}
_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")


class Field(NamedTuple):
    """One metadata key: its types (ARRAY then the element type, for arrays) and encoded bytes."""

    name: str
    types: tuple[V, ...]
    raw: bytes             # the value's type tag and payload, exactly as in the file
    what: str = ""         # the file, for error messages

    def contents(self) -> Any:
        """The decoded value: a Python scalar, str, or (nested) list for arrays."""
        return _decode(_Cursor(memoryview(self.raw), f"{self.what}: GGUF key {self.name!r}", 4), self.types[0], 0)

    def head(self, n: int) -> tuple[int, list]:
        """An array's length and its first ``n`` elements, decoding nothing past them."""
        cur = _Cursor(memoryview(self.raw), f"{self.what}: GGUF key {self.name!r}", 4)
        sub, count = _array_head(cur, "value", 0)
        return count, [_decode(cur, sub, 1) for _ in range(min(n, count))]


class TensorInfo(NamedTuple):
    name: str
    shape: GGUFShape       # GGUF order: shape[0] is the row length
    ggml_type: Q
    offset: int            # relative to the start of the tensor data, as in the file
    nbytes: int

    @property
    def type_name(self) -> str:
        return self.ggml_type.name

    @property
    def n_elements(self) -> int:
        return n_elements(self.shape)


class _Cursor:
    """Little-endian reads that never pass the end of the buffer."""

    def __init__(self, buf: memoryview, what: str, pos: int = 0):
        self.buf, self.what, self.pos = buf, what, pos

    def left(self) -> int:
        return len(self.buf) - self.pos

    def fail(self, message: str) -> InputError:
        return InputError(f"{self.what}: {message}")

    def take(self, n: int, field: str) -> memoryview:
        if n < 0 or n > self.left():
            raise self.fail(f"{field} needs {n} bytes at byte {self.pos}, {max(self.left(), 0)} are left")
        self.pos += n
        return self.buf[self.pos - n:self.pos]

    def u32(self, field: str) -> int:
        return _U32.unpack(self.take(4, field))[0]

    def u64(self, field: str) -> int:
        return _U64.unpack(self.take(8, field))[0]

    def text(self, field: str, limit: int) -> str:
        n = self.u64(f"{field}'s length")
        if n > limit:
            raise self.fail(f"{field} is {n} bytes long, over the {limit}-byte limit")
        try:
            return str(self.take(n, field), "utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{field} is not UTF-8") from None


def _value_type(cur: _Cursor, field: str) -> V:
    tag = cur.u32(f"{field}'s type")
    try:
        return V(tag)
    except ValueError:
        raise cur.fail(f"{field} has unknown value type {tag}") from None


def _skip(cur: _Cursor, vtype: V, field: str, depth: int) -> None:
    """Move past one value of ``vtype``, checking its structure without building it."""
    if vtype in _SCALARS:
        cur.take(_SCALARS[vtype].size, field)
    elif vtype == V.STRING:
        cur.take(cur.u64(f"{field}'s length"), field)
    else:
        sub, count = _array_head(cur, field, depth)
        if sub in _SCALARS:
            cur.take(count * _SCALARS[sub].size, field)
        elif sub == V.STRING:
            from .. import _huffman  # walks a vocabulary's lengths in C

            try:
                cur.pos = _huffman.skip_strings(cur.buf, cur.pos, count)
            except ValueError:
                raise cur.fail(f"{field}: its strings run past the end of the header") from None
        else:   # arrays of arrays: each element is an array head and its elements
            for _ in range(count):
                _skip(cur, sub, field, depth + 1)


def _array_head(cur: _Cursor, field: str, depth: int) -> tuple[V, int]:
    """An array's element type and count, the count checked against the bytes left."""
    if depth >= MAX_ARRAY_DEPTH:
        raise cur.fail(f"{field} nests arrays more than {MAX_ARRAY_DEPTH} deep")
    sub = _value_type(cur, field)
    count = cur.u64(f"{field}'s element count")
    least = _SCALARS[sub].size if sub in _SCALARS else 8 if sub == V.STRING else 12
    if count > cur.left() // least:
        raise cur.fail(f"{field} claims {count} elements, more than the {cur.left()} bytes left can hold")
    return sub, count


def _decode(cur: _Cursor, vtype: V, depth: int) -> Any:
    if vtype in _SCALARS:
        return _SCALARS[vtype].unpack(cur.take(_SCALARS[vtype].size, "value"))[0]
    if vtype == V.STRING:
        return cur.text("value", len(cur.buf))
    sub, count = _array_head(cur, "value", depth)
    if sub in _SCALARS:
        s = _SCALARS[sub]
        raw = cur.take(count * s.size, "value")
        import numpy as np  # here, not at the top: reading a header alone (unpack, install) never needs it

        dtype = np.bool_ if sub == V.BOOL else np.dtype(s.format)
        return np.frombuffer(raw, dtype=dtype).tolist()
    if sub == V.STRING:
        return _strings(cur, count)
    return [_decode(cur, sub, depth + 1) for _ in range(count)]


def _strings(cur: _Cursor, count: int) -> list[str]:
    """``count`` strings, bounded like ``_Cursor.text`` but without its per-call cost (vocabularies)."""
    buf, pos, end, out = cur.buf, cur.pos, len(cur.buf), []
    unpack = _U64.unpack_from
    try:
        for _ in range(count):
            if end - pos < 8:
                raise ValueError
            n = unpack(buf, pos)[0]
            pos += 8
            if n > end - pos:
                raise ValueError
            out.append(str(buf[pos:pos + n], "utf-8"))
            pos += n
    except ValueError:   # UnicodeDecodeError included
        raise cur.fail(f"string {len(out)} of the array runs past the end or is not UTF-8") from None
    cur.pos = pos
    return out


class GGUFFile:
    """Metadata and tensor infos of a GGUF file, checked; tensor data as views of a read-only map."""

    def __init__(self, buf: memoryview, what: str, *, values: Values = "raw", file_size: int | None = None,
                 path: Path | None = None):
        self.what, self.path = what, path
        self._buf: memoryview | None = buf
        cur = _Cursor(buf, what)
        magic = bytes(cur.take(4, "magic")) if cur.left() >= 4 else bytes(buf)
        if magic != MAGIC:
            raise InputError(f"{what}: not a GGUF file (magic {magic!r})")
        self.version = cur.u32("version")
        if self.version not in VERSIONS:
            raise InputError(f"{what}: unsupported GGUF version {self.version} (2 and 3 are read)")
        n_tensors = cur.u64("tensor count")
        n_kv = cur.u64("metadata count")
        if n_kv > min(MAX_KV, cur.left() // 13):   # the smallest entry: an empty key, a tag, one byte
            raise InputError(f"{what}: {n_kv} metadata entries cannot fit in {cur.left()} bytes")
        self.fields: dict[str, Field] = {}
        for i in range(n_kv):
            key = cur.text(f"metadata key {i}", MAX_KEY_BYTES)
            if not key:
                raise InputError(f"{what}: metadata key {i} is empty")
            if key in self.fields:
                raise InputError(f"{what}: GGUF key {key!r} appears twice")
            start = cur.pos
            field = f"GGUF key {key!r}"
            vtype = _value_type(cur, field)
            _skip(cur, vtype, field, 0)   # checks an array's element type too
            types = (vtype, V(_U32.unpack_from(buf, start + 4)[0])) if vtype == V.ARRAY else (vtype,)
            self.fields[key] = Field(key, types, bytes(buf[start:cur.pos]), what)
        self.alignment = self._alignment()
        if n_tensors > min(MAX_TENSORS, cur.left() // 24):   # name length, one dim, type, offset
            raise InputError(f"{what}: {n_tensors} tensor infos cannot fit in {cur.left()} bytes")
        self.tensors = [self._tensor_info(cur, i) for i in range(n_tensors)]
        self.data_offset = -(-cur.pos // self.alignment) * self.alignment
        self._check_tensors(file_size)
        if path is None:   # header bytes only: hold no view of them, so a map can close under us
            self._buf = None
            buf.release()
        self._cache: dict[str, Any] = {}
        if values != "raw":
            for key, f in self.fields.items():
                if values == "all" or f.types[0] != V.ARRAY:
                    self.get(key)

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, *, values: Values = "raw", what: str | None = None) -> GGUFFile:
        """Read a GGUF file's header through a read-only map (tensor data is viewed, not read).
        ``what`` names the file in messages (default: ``path``). Packed files open through
        ``gguf_tools.packed.open_gguf``, which builds on this module."""
        path = Path(path)
        what = what or str(path)
        if not path.is_file():
            raise InputError(f"{what}: no such file")
        return cls._map(path, what, values, path)

    @classmethod
    def _map(cls, source: Path, what: str, values: Values, path: Path) -> GGUFFile:
        try:
            with open(source, "rb") as fh:
                size = fh.seek(0, 2)
                mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        except (OSError, ValueError) as e:
            raise InputError(f"{what}: cannot read: {e}") from None
        return cls(memoryview(mm), what, values=values, file_size=size, path=path)

    @classmethod
    def from_header(cls, header: bytes | memoryview | mmap.mmap, *, what: str, values: Values = "raw",
                    file_size: int | None = None) -> GGUFFile:
        """Parse the first bytes of a GGUF file (a packed file keeps them verbatim). Tensor data
        ranges are checked against ``file_size`` when it is known."""
        return cls(memoryview(header).cast("B"), what, values=values, file_size=file_size)

    # -- checks ----------------------------------------------------------------------------
    def _alignment(self) -> int:
        f = self.fields.get(Keys.General.ALIGNMENT)
        if f is None:
            return GGUF_DEFAULT_ALIGNMENT
        value = f.contents() if f.types[0] == V.UINT32 else None
        if value is None or value <= 0 or value & (value - 1) or value > MAX_ALIGNMENT:
            shown = f.types[0].name if value is None else value
            raise InputError(f"{self.what}: {Keys.General.ALIGNMENT} must be a power-of-two UINT32, got {shown}")
        return value

    def _tensor_info(self, cur: _Cursor, i: int) -> TensorInfo:
        name = cur.text(f"tensor {i}'s name", MAX_KEY_BYTES)
        where = f"tensor {name!r}"
        if len(name.encode("utf-8")) > MAX_TENSOR_NAME:
            raise cur.fail(f"{where}: the name is over {MAX_TENSOR_NAME} bytes")
        n_dims = cur.u32(f"{where}'s dimension count")
        if not 1 <= n_dims <= MAX_DIMS:
            raise cur.fail(f"{where} has {n_dims} dimensions (1 to {MAX_DIMS})")
        shape = tuple(cur.u64(f"{where}'s shape") for _ in range(n_dims))
        if any(d >= MAX_ELEMENTS for d in shape) or n_elements(shape) >= MAX_ELEMENTS:
            raise cur.fail(f"{where} has an implausible shape {list(shape)}")
        tag = cur.u32(f"{where}'s type")
        try:
            qtype = Q(tag)
            GGML_QUANT_SIZES[qtype]
        except (ValueError, KeyError):
            raise cur.fail(f"{where} has unknown tensor type {tag}") from None
        offset = cur.u64(f"{where}'s offset")
        try:
            nbytes = tensor_nbytes(shape, qtype)
        except InputError as e:
            raise cur.fail(f"{where}: {e}") from None
        return TensorInfo(name, shape, qtype, offset, nbytes)

    def _check_tensors(self, file_size: int | None) -> None:
        names: set[str] = set()
        room = None if file_size is None else max(file_size - self.data_offset, 0)
        for t in self.tensors:
            where = f"{self.what}: tensor {t.name!r}"
            if t.name in names:
                raise InputError(f"{where} appears twice")
            names.add(t.name)
            if t.offset % self.alignment:
                raise InputError(f"{where}: data offset {t.offset} is not a multiple of the alignment {self.alignment}")
            if t.nbytes >= MAX_ELEMENTS or t.offset >= MAX_ELEMENTS:
                raise InputError(f"{where}: {t.nbytes} bytes at offset {t.offset} is implausibly large")
            if room is not None and t.offset + t.nbytes > room:
                raise InputError(f"{where}: {t.nbytes} bytes at offset {t.offset} run past the end of the file")

    # -- access ----------------------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        """The decoded value of ``key`` (a scalar, str or list), or ``default`` when absent."""
        if key in self._cache:
            return self._cache[key]
        f = self.fields.get(key)
        if f is None:
            return default
        value = self._cache[key] = f.contents()
        return value

    def value_type(self, key: str) -> tuple[V, ...]:
        f = self.fields.get(key)
        return f.types if f is not None else ()

    @property
    def architecture(self) -> str:
        arch = self.get(Keys.General.ARCHITECTURE)
        if not isinstance(arch, str) or not arch:
            raise InputError(f"{self.what}: no {Keys.General.ARCHITECTURE}")
        return arch

    def arch_get(self, key: str, default: Any = None) -> Any:
        """A per-architecture key (a ``Keys.LLM``/``Attention``/``Rope`` template) of this model."""
        return self.get(key.format(arch=self.architecture), default)

    def positive_int(self, key: str) -> int:
        """A required count or width (layers, heads, embedding length): one InputError naming the key if not."""
        v = self.arch_get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise InputError(f"{self.what}: {key.format(arch=self.architecture)} must be a positive integer, got {v!r}")
        return v

    def data(self, t: TensorInfo) -> np.ndarray:
        """A tensor's bytes as a view of the map: float32 / float16 values in numpy order for those
        types, else uint8 rows (rows, row bytes)."""
        if self._buf is None:
            raise InputError(f"{self.what}: only the header was read, not the tensor data")
        import numpy as np

        begin = self.data_offset + t.offset
        shape = numpy_shape(t.shape)
        if t.ggml_type in (Q.F32, Q.F16):
            dtype = np.float32 if t.ggml_type == Q.F32 else np.float16
            return np.frombuffer(self._buf, dtype=dtype, count=t.n_elements, offset=begin).reshape(shape)
        flat = np.frombuffer(self._buf, dtype=np.uint8, count=t.nbytes, offset=begin)
        return flat.reshape(*shape[:-1], t.nbytes // max(n_elements(shape[:-1]), 1)) if t.nbytes else flat


def adds_bos(f: GGUFFile) -> bool:
    """Whether the model's tokenizer starts a text with BOS (llama.cpp's default when unsaid: yes)."""
    value = f.get(Keys.Tokenizer.ADD_BOS)
    return True if value is None else bool(value)
