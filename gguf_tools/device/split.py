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
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import gguf

from ..errors import InputError, OutputError
from ..files import atomic_output, check_free_space
from ..gguf_file.reader import GGUFFile, TensorInfo
from .manifest import file_digest

V = gguf.GGUFValueType
SPLIT_NO, SPLIT_COUNT, SPLIT_TENSORS = "split.no", "split.count", "split.tensors.count"
SPLIT_SHA = "split.original.sha256"
_SPLIT_KEYS = {SPLIT_NO, SPLIT_COUNT, SPLIT_TENSORS, SPLIT_SHA}
_SHARD = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")

KV = tuple[str, bytes]   # a key and its value as GGUF encodes it (type tag and payload)


def shard_name(prefix: str, no: int, count: int) -> str:
    """llama.cpp's split_path: ``PREFIX-%05d-of-%05d.gguf``, ``no`` counted from 1."""
    return f"{prefix}-{no:05d}-of-{count:05d}.gguf"


def _string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def _header(version: int, kvs: list[KV], tensors: list[TensorInfo], alignment: int) -> tuple[bytes, list[int]]:
    """A GGUF header for ``tensors`` laid out in order, each padded to ``alignment``; padded to it too.
    Returns the header and each tensor's offset in the data section."""
    out = [b"GGUF", struct.pack("<IQQ", version, len(tensors), len(kvs)), _encode_kvs(kvs)]
    offsets, pos = [], 0
    for t in tensors:
        offsets.append(pos)
        out += [_string(t.name), struct.pack("<I", len(t.shape)), struct.pack(f"<{len(t.shape)}Q", *t.shape),
                struct.pack("<IQ", t.ggml_type, pos)]
        pos += gguf.GGUFWriter.ggml_pad(t.nbytes, alignment)
    head = b"".join(out)
    return head + b"\0" * (gguf.GGUFWriter.ggml_pad(len(head), alignment) - len(head)), offsets


def _encode_kvs(kvs: list[KV]) -> bytes:
    return b"".join(_string(k) + raw for k, raw in kvs)


def _kvs(f: GGUFFile) -> list[KV]:
    """The file's metadata as it is encoded there: copied, never re-encoded, so a merge is byte-exact."""
    return [(k, field.raw) for k, field in f.fields.items()]


def _split_kvs(no: int, count: int, n_tensors: int) -> list[KV]:
    return [(SPLIT_NO, struct.pack("<IH", V.UINT16, no)), (SPLIT_COUNT, struct.pack("<IH", V.UINT16, count)),
            (SPLIT_TENSORS, struct.pack("<Ii", V.INT32, n_tensors))]


@dataclass(frozen=True)
class _Shard:
    tensors: list[TensorInfo]
    header: bytes
    offsets: list[int]
    size: int


def plan_split(f: GGUFFile, max_size: int, sha256: str, what: str) -> list[_Shard]:
    """Greedy shards under ``max_size`` bytes each (whole files), tensors in their original order."""
    kv_size = [len(_encode_kvs(_shard_kvs(f, first, sha256, 0, 0))) for first in (True, False)]

    def size(tensors: list[TensorInfo], first: bool) -> int:
        infos = sum(8 + len(t.name.encode("utf-8")) + 4 + 8 * len(t.shape) + 12 for t in tensors)
        data = sum(gguf.GGUFWriter.ggml_pad(t.nbytes, f.alignment) for t in tensors)
        return gguf.GGUFWriter.ggml_pad(24 + kv_size[not first] + infos, f.alignment) + data

    groups: list[list[TensorInfo]] = [[]]
    for t in f.tensors:
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
        header, offsets = _header(f.version, _shard_kvs(f, i == 0, sha256, i, count), g, f.alignment)
        shards.append(_Shard(g, header, offsets, len(header) + sum(gguf.GGUFWriter.ggml_pad(t.nbytes, f.alignment) for t in g)))
    return shards


def _shard_kvs(f: GGUFFile, first: bool, sha256: str, no: int, count: int) -> list[KV]:
    kvs = (_kvs(f) if first else []) + _split_kvs(no, count, len(f.tensors))
    return kvs + [(SPLIT_SHA, struct.pack("<I", V.STRING) + _string(sha256))] if first else kvs


def _write_data(out, f: GGUFFile, tensors: list[TensorInfo]) -> None:
    """The tensors' bytes (views of ``f``'s map, checked in range when it was read), each padded."""
    for t in tensors:
        out.write(f.data(t))
        out.write(b"\0" * (gguf.GGUFWriter.ggml_pad(t.nbytes, f.alignment) - t.nbytes))


def split(path: str | os.PathLike, max_size: int, out_dir: str | os.PathLike | None = None,
          prefix: str | None = None) -> list[Path]:
    """Write the shards beside ``path`` (or into ``out_dir``); all are renamed into place together."""
    path = Path(path)
    f = GGUFFile.open(path)
    if any(k in f.fields for k in (SPLIT_NO, SPLIT_COUNT)):
        raise InputError(f"{path}: is already a shard (merge it first)")
    out = Path(out_dir) if out_dir is not None else path.parent
    prefix = prefix or path.name.removesuffix(".gguf")
    shards = plan_split(f, max_size, file_digest(path, "sha256"), str(path))
    if not out.is_dir():
        raise OutputError(f"{out}: output directory does not exist")
    check_free_space(out, sum(s.size for s in shards))
    names = [out / shard_name(prefix, i + 1, len(shards)) for i in range(len(shards))]
    temps: list[Path] = []
    try:
        for name, s in zip(names, shards):
            tmp = name.with_name(f".{name.name}.partial")
            temps.append(tmp)
            with open(tmp, "wb") as fh:
                fh.write(s.header)
                _write_data(fh, f, s.tensors)
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
    shards = [GGUFFile.open(p) for p in paths]
    for i, (p, s) in enumerate(zip(paths, shards)):
        if s.get(SPLIT_NO) != i or s.get(SPLIT_COUNT) != len(paths):
            raise InputError(f"{p}: split.no/split.count say {s.get(SPLIT_NO)}/{s.get(SPLIT_COUNT)},"
                             f" expected {i}/{len(paths)}")
    head = shards[0]
    tensors = [t for s in shards for t in s.tensors]
    if head.get(SPLIT_TENSORS) != len(tensors):
        raise InputError(f"{paths[0]}: split.tensors.count is {head.get(SPLIT_TENSORS)}, the shards hold"
                         f" {len(tensors)} tensors")
    kvs = [kv for kv in _kvs(head) if kv[0] not in _SPLIT_KEYS]
    header, _ = _header(head.version, kvs, tensors, head.alignment)
    size = len(header) + sum(gguf.GGUFWriter.ggml_pad(t.nbytes, head.alignment) for t in tensors)
    dest = Path(dest)
    with atomic_output(dest, overwrite=overwrite, needed=size) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(header)
            for s in shards:
                _write_data(fh, s, s.tensors)
        want = head.get(SPLIT_SHA)
        if want is not None and file_digest(tmp, "sha256") != want:
            raise InputError(f"{paths[0]}: the merged file's sha256 differs from the original's ({want})")
    return dest
