"""Split a GGUF into llama.cpp-compatible shards, and merge them back byte for byte.

The format is llama.cpp's (gguf-split): files ``NAME-00001-of-0000N.gguf``; every shard carries
``split.no`` (u16, from 0), ``split.count`` (u16) and ``split.tensors.count`` (i32, the whole model's);
the first shard also carries all the model's metadata, so llama.cpp loads it and finds the rest.
Unlike gguf-split, the limit bounds whole files (header included), and a tensor that cannot fit
under it is an error naming the tensor rather than a silent oversize shard. The first shard also
records the original file's sha256 (``split.original.sha256``), which ``merge`` checks before it
renames its output into place.
"""
from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError, OutputError
from ..files import atomic_output, check_free_space
from .gguf import GGUFView, TensorInfo, read_gguf

SPLIT_NO, SPLIT_COUNT, SPLIT_TENSORS = "split.no", "split.count", "split.tensors.count"
SPLIT_SHA = "split.original.sha256"
_SPLIT_KEYS = {SPLIT_NO, SPLIT_COUNT, SPLIT_TENSORS, SPLIT_SHA}
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_U16, _I32, _STRING, _ARRAY = 2, 5, 8, 9
_SHARD = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")
_CHUNK = 16 << 20


def shard_name(prefix: str, no: int, count: int) -> str:
    """llama.cpp's split_path: ``PREFIX-%05d-of-%05d.gguf``, ``no`` counted from 1."""
    return f"{prefix}-{no:05d}-of-{count:05d}.gguf"


def _encode(types: tuple[int, ...], value: Any) -> bytes:
    vtype = types[0]
    if vtype in _SCALARS:
        return struct.pack(_SCALARS[vtype], value)
    if vtype == _STRING:
        raw = value.encode("utf-8")
        return struct.pack("<Q", len(raw)) + raw
    if vtype == _ARRAY:
        sub = types[1:] or (_I32,)
        return struct.pack("<IQ", sub[0], len(value)) + b"".join(_encode(sub, v) for v in value)
    raise InputError(f"cannot re-encode GGUF value type {vtype}")


def _string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def _header(version: int, kvs: list[tuple[str, tuple[int, ...], Any]], tensors: list[TensorInfo],
            alignment: int) -> tuple[bytes, list[int]]:
    """A GGUF header for ``tensors`` laid out in order, each padded to ``alignment``; padded to it too.
    Returns the header and each tensor's offset in the data section."""
    out = [b"GGUF", struct.pack("<IQQ", version, len(tensors), len(kvs)), _encode_kvs(kvs)]
    offsets, pos = [], 0
    for t in tensors:
        offsets.append(pos)
        out += [_string(t.name), struct.pack("<I", len(t.shape)), struct.pack(f"<{len(t.shape)}Q", *t.shape),
                struct.pack("<IQ", t.ggml_type, pos)]
        pos += _pad(t.nbytes or 0, alignment)
    head = b"".join(out)
    return head + b"\0" * (_pad(len(head), alignment) - len(head)), offsets


def _encode_kvs(kvs: list[tuple[str, tuple[int, ...], Any]]) -> bytes:
    return b"".join(_string(k) + struct.pack("<I", types[0]) + _encode(types, v) for k, types, v in kvs)


def _pad(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


def _kvs(view: GGUFView) -> list[tuple[str, tuple[int, ...], Any]]:
    return [(k, view.value_types[k], v) for k, v in view.metadata.items()]


def _split_kvs(no: int, count: int, n_tensors: int) -> list[tuple[str, tuple[int, ...], Any]]:
    return [(SPLIT_NO, (_U16,), no), (SPLIT_COUNT, (_U16,), count), (SPLIT_TENSORS, (_I32,), n_tensors)]


def _checked(view: GGUFView, what: str) -> None:
    for t in view.tensors:
        if t.nbytes is None:
            raise InputError(f"{what}: tensor {t.name!r} has a type this tool cannot size ({t.type_name})")


@contextlib.contextmanager
def _mapped(path: Path) -> Iterator[mmap.mmap]:
    with open(path, "rb") as fh:
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        yield mm
    finally:
        with contextlib.suppress(BufferError):
            mm.close()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class _Shard:
    tensors: list[TensorInfo]
    header: bytes
    offsets: list[int]
    size: int


def plan_split(view: GGUFView, max_size: int, sha256: str, what: str) -> list[_Shard]:
    """Greedy shards under ``max_size`` bytes each (whole files), tensors in their original order."""
    _checked(view, what)
    kv_size = [len(_encode_kvs(_shard_kvs(view, first, sha256, 0, 0))) for first in (True, False)]

    def size(tensors: list[TensorInfo], first: bool) -> int:
        infos = sum(8 + len(t.name.encode("utf-8")) + 4 + 8 * len(t.shape) + 12 for t in tensors)
        data = sum(_pad(t.nbytes or 0, view.alignment) for t in tensors)
        return _pad(24 + kv_size[not first] + infos, view.alignment) + data

    groups: list[list[TensorInfo]] = [[]]
    for t in view.tensors:
        if size(groups[-1] + [t], len(groups) == 1) > max_size:
            if not groups[-1] or size([t], False) > max_size:
                raise InputError(f"{what}: tensor {t.name!r} ({t.nbytes} bytes) does not fit in a shard of at most"
                                 f" {max_size} bytes with its header")
            groups.append([t])
        else:
            groups[-1].append(t)
    count = len(groups)
    shards = []
    for i, g in enumerate(groups):
        header, offsets = _header(view.version, _shard_kvs(view, i == 0, sha256, i, count), g, view.alignment)
        shards.append(_Shard(g, header, offsets, len(header) + sum(_pad(t.nbytes or 0, view.alignment) for t in g)))
    return shards


def _shard_kvs(view: GGUFView, first: bool, sha256: str, no: int, count: int) -> list:
    kvs = (_kvs(view) if first else []) + _split_kvs(no, count, len(view.tensors))
    return kvs + [(SPLIT_SHA, (_STRING,), sha256)] if first else kvs


def _write_data(out, mm: mmap.mmap, data_offset: int, tensors: list[TensorInfo], alignment: int) -> None:
    for t in tensors:
        start = data_offset + t.offset
        n = t.nbytes or 0
        if start + n > len(mm):
            raise InputError(f"tensor {t.name!r} runs past the end of its file")
        for pos in range(start, start + n, _CHUNK):
            out.write(mm[pos:min(start + n, pos + _CHUNK)])
        out.write(b"\0" * (_pad(n, alignment) - n))


def split(path: str | os.PathLike, max_size: int, out_dir: str | os.PathLike | None = None,
          prefix: str | None = None) -> list[Path]:
    """Write the shards beside ``path`` (or into ``out_dir``); all are renamed into place together."""
    path = Path(path)
    view = read_gguf(path)
    if any(k in view.metadata for k in (SPLIT_NO, SPLIT_COUNT)):
        raise InputError(f"{path}: is already a shard (merge it first)")
    out = Path(out_dir) if out_dir is not None else path.parent
    prefix = prefix or path.name.removesuffix(".gguf")
    shards = plan_split(view, max_size, _sha256(path), str(path))
    if not out.is_dir():
        raise OutputError(f"{out}: output directory does not exist")
    check_free_space(out, sum(s.size for s in shards))
    names = [out / shard_name(prefix, i + 1, len(shards)) for i in range(len(shards))]
    temps: list[Path] = []
    try:
        with _mapped(path) as mm:
            for name, s in zip(names, shards):
                tmp = name.with_name(f".{name.name}.partial")
                temps.append(tmp)
                with open(tmp, "wb") as fh:
                    fh.write(s.header)
                    _write_data(fh, mm, view.data_offset, s.tensors, view.alignment)
                    fh.flush()
                    os.fsync(fh.fileno())
        for tmp, name in zip(temps, names):
            os.replace(tmp, name)
    except OSError as e:
        raise OutputError(f"{out}: cannot write shards: {e.strerror}") from None
    finally:
        for tmp in temps:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    return names


def shard_paths(first: str | os.PathLike) -> list[Path]:
    """Every shard of the split whose first shard is ``first``, by llama.cpp's naming; all must exist."""
    first = Path(first)
    m = _SHARD.match(first.name)
    if not m or int(m["no"]) != 1:
        raise InputError(f"{first}: not the first shard of a split (NAME-00001-of-0000N.gguf)")
    count = int(m["count"])
    paths = [first.with_name(shard_name(m["prefix"], i, count)) for i in range(1, count + 1)]
    for p in paths:
        if not p.is_file():
            raise InputError(f"{p}: shard {paths.index(p) + 1} of {count} is missing")
    return paths


def merge(first: str | os.PathLike, dest: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Join the shards into one GGUF, checking counts and the original sha256; atomic."""
    paths = shard_paths(first)
    views = [read_gguf(p) for p in paths]
    for i, (p, v) in enumerate(zip(paths, views)):
        _checked(v, str(p))
        if v.metadata.get(SPLIT_NO) != i or v.metadata.get(SPLIT_COUNT) != len(paths):
            raise InputError(f"{p}: split.no/split.count say {v.metadata.get(SPLIT_NO)}/"
                             f"{v.metadata.get(SPLIT_COUNT)}, expected {i}/{len(paths)}")
    head = views[0]
    tensors = [t for v in views for t in v.tensors]
    if head.metadata.get(SPLIT_TENSORS) != len(tensors):
        raise InputError(f"{paths[0]}: split.tensors.count is {head.metadata.get(SPLIT_TENSORS)}, the shards hold"
                         f" {len(tensors)} tensors")
    kvs = [kv for kv in _kvs(head) if kv[0] not in _SPLIT_KEYS]
    header, _ = _header(head.version, kvs, tensors, head.alignment)
    size = len(header) + sum(_pad(t.nbytes or 0, head.alignment) for t in tensors)
    dest = Path(dest)
    with atomic_output(dest, overwrite=overwrite, needed=size) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(header)
            for p, v in zip(paths, views):
                with _mapped(p) as mm:
                    _write_data(fh, mm, v.data_offset, v.tensors, v.alignment)
        want = head.metadata.get(SPLIT_SHA)
        if want is not None and _sha256(tmp) != want:
            raise InputError(f"{paths[0]}: the merged file's sha256 differs from the original's ({want})")
    return dest
