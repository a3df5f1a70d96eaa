"""Reading packed files: the checked open (``_Packed``), ``pack_info``, and unpacking to a file or to memory.

Opening checks the fixed header and the kept GGUF header's CRC; the index is then checked either in
Python (``check``: its objects are kept, for inspection) or in C while building the decoder's jobs
(``decode_jobs``: decoding starts sooner). Both apply format.py's rules.
"""
from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import InputError, ResourceError, UnsupportedError
from ..files import atomic_output
from ..gguf_file.reader import GGUFFile, TensorInfo
from ..system import check_threads
from .format import (
    HEADER_SIZE,
    MAGIC,
    MODE_NAMES,
    MODE_RAW,
    NO_TENSOR,
    FixedHeader,
    PackIndex,
    crc32c,
    field_name,
    parse_header,
    parse_index,
    read_view,
    validate,
)

# How far opening a packed file checks it: the fixed header and the kept GGUF header only, or also the index.
Checks = Literal["header", "index"]


def _native():
    try:
        from .. import _huffman
    except ImportError as e:  # pragma: no cover - a broken install, not bad input
        raise UnsupportedError(f"the native Huffman module is not built ({e}); run `make native`") from None
    return _huffman




# ---------------------------------------------------------------- public data

@dataclass(frozen=True)
class PackedHeader:
    path: Path
    version: int
    original_size: int
    packed_size: int
    sha256: str
    gguf_header: bytes          # the original file's bytes up to its tensor data, verbatim
    gguf: GGUFFile              # parsed: metadata, tensor infos, alignment, data offset
    n_chunks: int
    chunk_target: int


@dataclass(frozen=True)
class FieldInfo:
    name: str
    mode: str                   # "raw", "huffman", "huffman+context" or "palette"
    raw_bytes: int
    packed_bytes: int


@dataclass(frozen=True)
class TensorPackInfo:
    name: str                   # "(padding)" for bytes between tensors
    type_name: str
    raw_bytes: int
    packed_bytes: int
    fields: tuple[FieldInfo, ...]

    @property
    def ratio(self) -> float:
        return self.packed_bytes / self.raw_bytes if self.raw_bytes else 1.0


@dataclass(frozen=True)
class PackInfo:
    header: PackedHeader
    tensors: list[TensorPackInfo]
    index_bytes: int


# ---------------------------------------------------------------- reading packed files

class _Packed:
    """An open packed file: mapped, its headers checked and (with ``checks="index"``) its index parsed
    and cross-checked."""

    def __init__(self, path: Path, keep_values: bool = False, *, checks: Checks = "index"):
        """``checks="header"`` stops after the fixed header and the kept GGUF header's CRC: enough to
        hand the GGUF header on; ``check()`` then parses and cross-checks the rest, or ``decode_jobs()``
        checks it in C for decoding alone."""
        self.path = Path(path)
        self._jobs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        what = str(self.path)
        try:
            self._fh = open(self.path, "rb")  # noqa: SIM115  (held open for the mapping's lifetime)
        except FileNotFoundError:
            raise InputError(f"{what}: no such file") from None
        except OSError as e:
            raise InputError(f"{what}: cannot read: {e.strerror}") from None
        try:
            self.size = os.fstat(self._fh.fileno()).st_size
            if self.size < HEADER_SIZE:
                if self._fh.read(len(MAGIC)) != MAGIC:
                    raise InputError(f"{what}: not a packed GGUF file")
                raise InputError(f"{what}: packed file truncated ({self.size} bytes)")
            self.mm = mmap.mmap(self._fh.fileno(), 0, access=mmap.ACCESS_READ)
        except BaseException:
            self._fh.close()
            raise
        try:
            self.header: FixedHeader = parse_header(self.mm[:HEADER_SIZE], self.size, what)
            self.prefix = self.mm[HEADER_SIZE:HEADER_SIZE + self.header.prefix_size]
            if crc32c(self.prefix) != self.header.prefix_crc:
                raise InputError(f"{what}: GGUF header checksum mismatch")
            if checks == "index":
                self.check(keep_values)
        except BaseException:
            self.close()
            raise

    def check(self, keep_values: bool = False) -> None:
        """Parse the kept GGUF header and the index, and check that they agree."""
        h, what = self.header, str(self.path)
        self.view: GGUFFile = read_view(self.prefix, h, what, keep_values)
        raw_index = self.mm[h.index_offset:h.index_offset + h.index_size]
        if crc32c(raw_index) != h.index_crc:
            raise InputError(f"{what}: index checksum mismatch")
        self.index: PackIndex = parse_index(raw_index, h, what, 2 * len(self.view.tensors) + 1)
        validate(h, self.view, self.index, what)

    def decode_jobs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What the C decoder takes (jobs, layout words, tables), with the index checked in C by the
        rules ``check()`` applies, without building its Python objects: decoding starts sooner."""
        if self._jobs is None:
            h, what = self.header, str(self.path)
            view = getattr(self, "view", None) or read_view(self.prefix, h, what, False)
            raw_index = self.mm[h.index_offset:h.index_offset + h.index_size]
            if crc32c(raw_index) != h.index_crc:
                raise InputError(f"{what}: index checksum mismatch")
            spans = np.array([_span(view.data_offset + t.offset, t.nbytes) for t in view.tensors],
                             dtype=np.int64).reshape(-1, 2)
            try:
                jobs, words, tables = _native().plan(raw_index, h.original_size, h.prefix_size, h.index_offset,
                                                     2 * len(view.tensors) + 1, spans.tobytes())
            except ValueError as e:
                raise InputError(f"{what}: {e}") from None
            self._jobs = (np.frombuffer(jobs, np.int64).reshape(-1, 6), np.frombuffer(words, np.int32),
                          np.frombuffer(tables, np.uint8).reshape(-1, 256))
        return self._jobs

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.mm.close()
        self._fh.close()

    def __enter__(self) -> _Packed:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def decode_into(self, dst, threads: int | None, verify_crc: bool = True) -> None:
        """Write the whole original file into ``dst`` (a writable buffer of original_size bytes)."""
        h = self.header
        mv = memoryview(dst).cast("B")
        try:
            if len(mv) != h.original_size:
                raise ValueError("destination size differs from the original size")
            mv[:h.prefix_size] = self.prefix
        finally:
            mv.release()
        jobs, words, tables = self.decode_jobs()
        try:
            _native().decode(self.mm, dst, jobs, words, tables, threads=check_threads(threads), verify_crc=verify_crc)
        except ValueError as e:
            raise InputError(f"{self.path}: corrupt packed data: {e}") from None
        except MemoryError:
            raise ResourceError(f"{self.path}: not enough memory to decode") from None

    def decode_to_fd(self, fd: int, threads: int | None) -> None:
        """Write the tensor data into an open file (the prefix is the caller's), each chunk checked
        before it is written."""
        h = self.header
        jobs, words, tables = self.decode_jobs()
        try:
            _native().decode_to_fd(self.mm, fd, h.original_size, jobs, words, tables, threads=check_threads(threads))
        except ValueError as e:
            raise InputError(f"{self.path}: corrupt packed data: {e}") from None
        except MemoryError:
            raise ResourceError(f"{self.path}: not enough memory to decode") from None

    def check_file_sha256(self, fd: int) -> None:
        size = self.header.original_size
        with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as data:
            self.check_sha256(data)

    def check_sha256(self, data) -> None:
        digest = hashlib.sha256(data).digest()
        if digest != self.header.sha256:
            raise InputError(f"{self.path}: sha256 of the unpacked data does not match the packed file's record")

    def packed_header(self) -> PackedHeader:
        h = self.header
        return PackedHeader(self.path, h.version, h.original_size, self.size, h.sha256.hex(), bytes(self.prefix),
                            self.view, len(self.index.chunks), h.chunk_target)


def _span(offset: int, nbytes: int | None) -> tuple[int, int]:
    """A tensor's place in the original file for the C check; (-1, -1) matches no section."""
    if nbytes is None or offset >= 1 << 63 or nbytes >= 1 << 63:
        return -1, -1
    return offset, nbytes


def is_packed(path: str | os.PathLike) -> bool:
    """True when the file starts with the packed-GGUF magic (nothing else is checked)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def read_packed_header(path: str | os.PathLike) -> PackedHeader:
    """The kept GGUF header of a packed file, raw and parsed, after checking the whole index."""
    with _Packed(Path(path), keep_values=True) as p:
        return p.packed_header()


def pack_info(path: str | os.PathLike) -> PackInfo:
    """Per-tensor and per-field sizes, raw and packed, for an inspect command."""
    with _Packed(Path(path), keep_values=True) as p:
        chunks = p.index.chunks
        tensors: list[TensorPackInfo] = []
        for s in p.index.sections:
            info: TensorInfo | None = p.view.tensors[s.tensor] if s.tensor != NO_TENSOR else None
            sec = chunks[s.first_chunk:s.first_chunk + s.n_chunks]
            nblocks = s.orig_size // s.block_size
            n_groups = [f.n_groups for f in s.fields]
            total = sum(n_groups)
            coded = [0] * len(s.fields)
            if total:
                for c in sec:
                    if int(c["packed_size"]) < 16 * total:
                        raise InputError(f"{p.path}: a chunk of section {s.orig_offset} is shorter than its header")
                    head = np.frombuffer(p.mm, dtype="<u4", count=4 * total, offset=int(c["packed_offset"]))
                    g = 0
                    for i, k in enumerate(n_groups):
                        coded[i] += int(head[4 * g:4 * (g + k)].sum()) + 16 * k
                        g += k
            fields = tuple(
                FieldInfo(field_name(info.ggml_type if info else None, f.runs), MODE_NAMES[f.mode],
                          nblocks * f.width, coded[i] if f.mode != MODE_RAW else nblocks * f.width)
                for i, f in enumerate(s.fields))
            tensors.append(TensorPackInfo(info.name if info else "(padding)", info.type_name if info else "bytes",
                                          s.orig_size, int(sec["packed_size"].sum()), fields))
        return PackInfo(p.packed_header(), tensors, p.header.index_size)


# ---------------------------------------------------------------- unpacking

def unpack(src: str | os.PathLike, dst: str | os.PathLike, *, threads: int | None = None) -> PackedHeader:
    """Restore the original GGUF byte for byte; the sha256 is checked before ``dst`` appears.
    Returns the packed file's header (size and sha256 of what was written)."""
    with _Packed(Path(src)) as p:
        size = p.header.original_size
        with atomic_output(Path(dst), needed=size) as tmp, open(tmp, "r+b") as fh:
            os.pwrite(fh.fileno(), p.prefix, 0)
            p.decode_to_fd(fh.fileno(), threads)
            if os.fstat(fh.fileno()).st_size != size:
                raise InputError(f"{src}: unpacked data is {os.fstat(fh.fileno()).st_size} bytes, not {size}")
            p.check_file_sha256(fh.fileno())
        return p.packed_header()


def unpack_to_memory(src: str | os.PathLike, *, threads: int | None = None, verify: bool = True) -> bytearray:
    """The whole original GGUF in memory (sha256-checked unless ``verify=False``; chunk CRCs always)."""
    with _Packed(Path(src)) as p:
        try:
            out = bytearray(p.header.original_size)
        except MemoryError:
            raise ResourceError(f"{src}: {p.header.original_size} bytes do not fit in memory") from None
        p.decode_into(out, threads)
        if verify:
            p.check_sha256(out)
        return out

