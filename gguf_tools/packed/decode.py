"""Reading packed files: the checked open (``_Packed``), ``pack_info``, and unpacking to a file or to memory.

Opening checks the fixed header and the kept GGUF header's CRC; the index is then checked either in
Python (``check``: its objects are kept, for inspection) or in C while building the decoder's jobs
(``decode_jobs``: decoding starts sooner). Both apply format.py's rules.

Unpacking to a file streams: a window of chunks is decoded (on threads, in C) while the window before it
is hashed and written by another thread, so memory holds two windows, not the file. Nothing here imports
NumPy (format.py does, for ``check`` and ``pack_info`` only): ``gguf-tools unpack`` starts fast.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import mmap
import os
import queue
import threading
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

from ..errors import InputError, ResourceError, UnsupportedError
from ..files import atomic_output
from ..gguf_file.reader import GGUFFile, TensorInfo
from ..system import check_threads
from .header import HEADER_SIZE, MAGIC, FixedHeader, crc32c, parse_header, read_view

if TYPE_CHECKING:
    from .format import PackIndex

# How far opening a packed file checks it: the fixed header and the kept GGUF header only, or also the index.
Checks = Literal["header", "index"]


def _native():
    try:
        from .. import _huffman
    except ImportError as e:  # pragma: no cover - a broken install, not bad input
        raise UnsupportedError(f"the native Huffman module is not built ({e}); run `make native`") from None
    return _huffman




# ---------------------------------------------------------------- public data

class PackedHeader(NamedTuple):
    path: Path
    version: int
    original_size: int
    packed_size: int
    sha256: str
    gguf_header: bytes          # the original file's bytes up to its tensor data, verbatim
    gguf: GGUFFile              # parsed: metadata, tensor infos, alignment, data offset
    n_chunks: int
    chunk_target: int


class FieldInfo(NamedTuple):
    name: str
    mode: str                   # "raw", "huffman", "huffman+context" or "palette"
    raw_bytes: int
    packed_bytes: int


class TensorPackInfo(NamedTuple):
    name: str                   # "(padding)" for bytes between tensors
    type_name: str
    raw_bytes: int
    packed_bytes: int
    fields: tuple[FieldInfo, ...]

    @property
    def ratio(self) -> float:
        return self.packed_bytes / self.raw_bytes if self.raw_bytes else 1.0


class PackInfo(NamedTuple):
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
        self._jobs: tuple[bytes, bytes, bytes] | None = None
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
        from .format import parse_index, validate

        h, what = self.header, str(self.path)
        self.view: GGUFFile = read_view(self.prefix, h, what, keep_values)
        raw_index = self.mm[h.index_offset:h.index_offset + h.index_size]
        if crc32c(raw_index) != h.index_crc:
            raise InputError(f"{what}: index checksum mismatch")
        self.index: PackIndex = parse_index(raw_index, h, what, 2 * len(self.view.tensors) + 1)
        validate(h, self.view, self.index, what)

    def decode_jobs(self) -> tuple[bytes, bytes, bytes]:
        """What the C decoder takes (jobs: int64 [n][6]; layout words: int32; tables: uint8 [n][256]), with the
        index checked in C by the rules ``check()`` applies, without building its Python objects: decoding
        starts sooner."""
        if self._jobs is None:
            h, what = self.header, str(self.path)
            view = getattr(self, "view", None) or read_view(self.prefix, h, what, False)
            self.view = view
            raw_index = self.mm[h.index_offset:h.index_offset + h.index_size]
            if crc32c(raw_index) != h.index_crc:
                raise InputError(f"{what}: index checksum mismatch")
            spans = array("q", [x for t in view.tensors for x in _span(view.data_offset + t.offset, t.nbytes)])
            try:
                self._jobs = _native().plan(raw_index, h.original_size, h.prefix_size, h.index_offset,
                                            2 * len(view.tensors) + 1, spans.tobytes())
            except ValueError as e:
                raise InputError(f"{what}: {e}") from None
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
        self.check_digest(hashlib.sha256(data).digest())

    def check_digest(self, digest: bytes) -> None:
        """The sha256 of what was decoded against the packed file's record of the original."""
        if digest != self.header.sha256:
            raise InputError(f"{self.path}: sha256 of the unpacked data does not match the packed file's record")

    def packed_header(self) -> PackedHeader:
        h = self.header
        n_chunks = len(self.index.chunks) if hasattr(self, "index") else len(self.decode_jobs()[0]) // _JOB_BYTES
        return PackedHeader(self.path, h.version, h.original_size, self.size, h.sha256.hex(), bytes(self.prefix),
                            self.view, n_chunks, h.chunk_target)


_JOB_BYTES = 6 * 8  # one row of the decode plan: src_off, src_len, dst_off, dst_len, crc32c, layout offset


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
    import numpy as np

    from .format import MODE_NAMES, MODE_RAW, NO_TENSOR, field_name

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

WINDOW = 4 << 20  # decoded bytes per step: a few chunks for the threads to share
BUFFERS = 3        # windows in flight: one being decoded, the ones before it being hashed and written

Progress = Callable[[int, int], None]  # (bytes written, total)


def unpack(src: str | os.PathLike, dst: str | os.PathLike, *, threads: int | None = None,
           progress: Progress | None = None) -> PackedHeader:
    """Restore the original GGUF byte for byte; the sha256 is checked before ``dst`` appears.
    Returns the packed file's header (size and sha256 of what was written).

    Memory stays at a few windows of decoded data and the decoder's per-thread scratch, whatever the
    file's size. ``dst`` appears by an atomic rename of a temporary file, after an fsync (see
    files.atomic_output); on any error, Ctrl-C included, nothing is left behind.
    """
    n = check_threads(threads)
    with _Packed(Path(src), checks="header") as p:
        size = p.header.original_size
        p.decode_jobs()
        with atomic_output(Path(dst), needed=size) as tmp:
            fd = os.open(tmp, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
            out = _Output(fd, tmp)
            try:
                digest = _stream(p, out, n, progress)
                written = os.fstat(fd).st_size
            finally:
                out.close()
            if written != size:
                raise InputError(f"{src}: unpacked data is {written} bytes, not {size}")
            p.check_digest(digest)
        return p.packed_header()


def _windows(jobs: bytes, start: int, size: int, what: str) -> list[tuple[int, int, int, int]]:
    """(first job, end job, output offset, bytes) per window: consecutive chunks up to WINDOW bytes.
    The plan's chunks must tile the output in order after the GGUF header (plan() checks as much)."""
    rows = memoryview(jobs).cast("q")
    out: list[tuple[int, int, int, int]] = []
    first, at, pos = 0, start, start
    for j in range(len(rows) // 6):
        d_off, d_len = rows[6 * j + 2], rows[6 * j + 3]
        if d_off != pos:
            raise InputError(f"{what}: chunk {j} is out of order")
        if pos + d_len - at > WINDOW and j > first:
            out.append((first, j, at, pos - at))
            first, at = j, pos
        pos += d_len
    if pos != size:
        raise InputError(f"{what}: chunks end at {pos}, the original file at {size}")
    if pos > at:
        out.append((first, len(rows) // 6, at, pos - at))
    return out


def _stream(p: _Packed, out: _Output, threads: int, progress: Progress | None) -> bytes:
    """Write the original file to ``out``; return its sha256. This thread decodes a window (the GIL released
    in C, on ``threads`` threads) while one thread hashes and another writes the windows before it
    (hashlib and os.pwrite release the GIL too): the three costs overlap instead of adding up. The decoder
    keeps its threads' buffers and built tables from one window to the next, and frees them at the end."""
    h = p.header
    jobs, words, tables = p.decode_jobs()
    windows = _windows(jobs, h.prefix_size, h.original_size, str(p.path))
    digest = hashlib.sha256(p.prefix)
    _pwrite_all(out.fd, p.prefix, 0)
    if not windows:
        return digest.digest()
    rows = memoryview(jobs).cast("q")
    try:
        # page-aligned (anonymous maps) with a page to spare: a window sits at its file offset's alignment, so
        # its whole pages can be written with O_DIRECT
        buffers = [mmap.mmap(-1, max(w[3] for w in windows) + _ALIGN) for _ in range(min(BUFFERS, len(windows)))]
    except MemoryError:
        raise ResourceError(f"{p.path}: not enough memory to decode") from None
    errors: list[BaseException] = []
    stages = [_Stage(lambda view, at: digest.update(view), errors),
              _Stage(out.write, errors)]
    native, page = _native(), mmap.PAGESIZE
    in_flight, done = 0, h.prefix_size
    try:
        for k, (first, end, at, n) in enumerate(windows):
            if in_flight == len(buffers):  # the oldest window's buffer is next: wait until both stages are done
                for stage in stages:
                    stage.done.get()
                in_flight -= 1
            if errors:
                break
            whole = buffers[k % len(buffers)]
            pad = at % _ALIGN
            buf = memoryview(whole)[pad:pad + n]
            try:
                native.decode(p.mm, buf, jobs[first * _JOB_BYTES:end * _JOB_BYTES], words, tables, threads=threads,
                              base=at, keep_state=True)
            except ValueError as e:
                raise InputError(f"{p.path}: corrupt packed data: {e}") from None
            except MemoryError:
                raise ResourceError(f"{p.path}: not enough memory to decode") from None
            # the packed bytes just decoded are not read again: drop them from this process (they stay cached)
            lo = rows[6 * first] // page * page
            with contextlib.suppress(OSError, ValueError, AttributeError):
                p.mm.madvise(mmap.MADV_DONTNEED, lo, rows[6 * (end - 1)] + rows[6 * (end - 1) + 1] - lo)
            for stage in stages:
                stage.work.put((buf, at))
            in_flight += 1
            done += n
            if progress:
                progress(done, h.original_size)
    finally:
        for stage in stages:
            stage.stop()
        native.release_state()
    if errors:
        raise errors[0]
    return digest.digest()


class _Stage:
    """A thread applying ``fn(view, offset)`` to each decoded window in order; the first error stops the work
    (it is raised by the caller) but not the acknowledgements, so the caller never waits forever."""

    def __init__(self, fn: Callable[[memoryview, int], None], errors: list[BaseException]):
        self.work: queue.SimpleQueue = queue.SimpleQueue()
        self.done: queue.SimpleQueue = queue.SimpleQueue()
        self._fn, self._errors = fn, errors
        self._thread = threading.Thread(target=self._run, name="gguf-unpack-stage", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self.work.get()) is not None:
            view, at = item
            if not self._errors:
                try:
                    self._fn(view, at)
                except BaseException as e:  # noqa: BLE001  (raised in the caller's thread)
                    self._errors.append(e)
            self.done.put(None)

    def stop(self) -> None:
        self.work.put(None)
        self._thread.join()


_ALIGN = max(4096, mmap.PAGESIZE)  # what O_DIRECT asks of offsets, lengths and addresses, at most


class _Output:
    """The file being unpacked: whole aligned pages go out with O_DIRECT where the system and the file system
    take it (no copy into the page cache, the largest cost of a buffered write here), the pieces at a window's
    ends and everything else through the ordinary descriptor. The caller's fsync then covers both."""

    def __init__(self, fd: int, path: Path):
        self.fd, self.direct = fd, None
        flag = getattr(os, "O_DIRECT", 0)
        if flag:
            with contextlib.suppress(OSError):
                self.direct = os.open(path, os.O_WRONLY | flag | getattr(os, "O_CLOEXEC", 0))

    def write(self, view: memoryview, at: int) -> None:
        end = at + len(view)
        lo, hi = -(-at // _ALIGN) * _ALIGN, end // _ALIGN * _ALIGN
        if self.direct is None or hi <= lo:
            _pwrite_all(self.fd, view, at)
            return
        if lo > at:
            _pwrite_all(self.fd, view[:lo - at], at)
        try:
            _pwrite_all(self.direct, view[lo - at:hi - at], lo)
        except OSError as e:  # EINVAL: this file system does not do direct writes after all
            if e.errno != errno.EINVAL:
                raise
            self.close_direct()
            _pwrite_all(self.fd, view[lo - at:hi - at], lo)
        if end > hi:
            _pwrite_all(self.fd, view[hi - at:], hi)

    def close_direct(self) -> None:
        if self.direct is not None:
            os.close(self.direct)
            self.direct = None

    def close(self) -> None:
        self.close_direct()
        os.close(self.fd)


def _pwrite_all(fd: int, data, offset: int) -> None:
    with memoryview(data) as view:
        while len(view):
            n = os.pwrite(fd, view, offset)
            view, offset = view[n:], offset + n


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

