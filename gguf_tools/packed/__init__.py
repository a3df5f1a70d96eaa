"""Lossless Huffman packing of GGUF files (docs/packed-format.md).

Tensor data is split per block field (scales apart from quants, f16 high bytes apart from low
bytes), each field of each tensor gets its own canonical Huffman code, and the coded data is cut
into independently decodable chunks that the C decoder spreads over threads. The GGUF header is
kept verbatim, so a packed file can be inspected without unpacking it.
"""
from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, ResourceError, UnsupportedError
from ..files import atomic_output
from ..gguf_file.reader import GGUFFile, TensorInfo
from .codes import code_lengths, coded_bits
from .format import (
    CHUNK_DTYPE,
    GAP_LAYOUT,
    HEADER_SIZE,
    MAGIC,
    MAX_BITS,
    MODE_CTX,
    MODE_HUFF,
    MODE_NAMES,
    MODE_PALETTE,
    MODE_RAW,
    N_STREAMS,
    NO_TENSOR,
    PALETTE_BIASES,
    TABLE_BYTES,
    VERSION,
    Field,
    FieldCoding,
    FixedHeader,
    PackIndex,
    Section,
    crc32c,
    encode_header,
    encode_index,
    field_name,
    layout_for,
    layout_words,
    parse_header,
    parse_index,
    read_view,
    validate,
)

CHUNK_TARGET = 1 << 20      # decoded bytes per chunk: many chunks per thread, tables built once per chunk
MIN_SAVING = 0.05           # default: fields whose coding saves under 5% (4-6-bit quants) stay raw:
                            # half the decoding time for a file 0.5-2% larger (min_saving=0: smallest)
RICH_FIELD_MIN = 1 << 16    # fields smaller than this (symbols) get one table or none
CTX_GROUP_MIN = 1 << 15     # symbols a context value needs for a table of its own
MAX_CTX_GROUPS = 32
PALETTE_MIN_WIDTH = 8

__all__ = [
    "FieldInfo",
    "PackInfo",
    "PackStats",
    "PackedHeader",
    "TensorPackInfo",
    "Unpacking",
    "is_packed",
    "open_for_llama",
    "pack",
    "pack_info",
    "read_packed_header",
    "unpack",
    "unpack_for_llama",
    "unpack_to_memory",
]


def _native():
    try:
        from .. import _huffman
    except ImportError as e:  # pragma: no cover - a broken install, not bad input
        raise UnsupportedError(f"the native Huffman module is not built ({e}); run `make native`") from None
    return _huffman


def _threads(threads: int | None) -> int:
    if threads is not None:
        if threads < 1:
            raise ValueError("threads must be at least 1")
        return threads
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


# ---------------------------------------------------------------- public data

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
    """An open packed file: mapped, its headers checked and (unless checked=False) its index parsed
    and cross-checked."""

    def __init__(self, path: Path, keep_values: bool = False, *, checked: bool = True):
        """``checked=False`` stops after the fixed header and the kept GGUF header's CRC: enough to
        hand the GGUF header on; ``check()`` then parses and cross-checks the rest, or ``plan()``
        checks it in C for decoding alone."""
        self.path = Path(path)
        self._plan: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
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
            if checked:
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

    def plan(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What the C decoder takes (jobs, layout words, tables), with the index checked in C by the
        rules ``check()`` applies, without building its Python objects: decoding starts sooner."""
        if self._plan is None:
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
            self._plan = (np.frombuffer(jobs, np.int64).reshape(-1, 6), np.frombuffer(words, np.int32),
                          np.frombuffer(tables, np.uint8).reshape(-1, 256))
        return self._plan

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
        jobs, words, tables = self.plan()
        try:
            _native().decode(self.mm, dst, jobs, words, tables, threads=_threads(threads), verify_crc=verify_crc)
        except ValueError as e:
            raise InputError(f"{self.path}: corrupt packed data: {e}") from None
        except MemoryError:
            raise ResourceError(f"{self.path}: not enough memory to decode") from None

    def decode_to_fd(self, fd: int, threads: int | None) -> None:
        """Write the tensor data into an open file (the prefix is the caller's), each chunk checked
        before it is written."""
        h = self.header
        jobs, words, tables = self.plan()
        try:
            _native().decode_to_fd(self.mm, fd, h.original_size, jobs, words, tables, threads=_threads(threads))
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


def _available_memory() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except (ImportError, OSError, RuntimeError):
        return None


class Unpacking:
    """A packed file being decoded in the background into a file that llama.cpp can open.

    ``path`` holds the GGUF header and has the full size at once, so a loader can parse the
    metadata and build the model while the tensor data is still being written; that data is
    complete (chunk CRCs checked, sha256 too when asked) only once ``wait()`` has returned.
    """

    def __init__(self, packed: _Packed, fd: int, path: str, threads: int | None, verify: bool, sealable: bool):
        self.path = path
        self._packed, self._fd, self._verify, self._sealable = packed, fd, verify, sealable
        self._error: BaseException | None = None
        self._checked = False
        self._thread = threading.Thread(target=self._decode, args=(threads,), name="gguf-unpack", daemon=True)
        self._thread.start()

    def _decode(self, threads: int | None) -> None:
        # Below the loader's priority: it works on one core meanwhile, and the decoder's threads
        # (which inherit this) should take the other core without slowing it down.
        with contextlib.suppress(AttributeError, OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        try:
            self._packed.decode_to_fd(self._fd, threads)
        except BaseException as e:  # noqa: BLE001  (handed to whoever waits)
            self._error = e

    def wait(self) -> None:
        """Block until every byte is in place; raise the decoder's error if it failed."""
        self._thread.join()
        if self._checked:
            return
        p = self._packed
        if isinstance(self._error, OSError):
            where = "memory" if self._sealable else self.path
            raise ResourceError(f"{p.path}: cannot hold the unpacked model ({p.header.original_size} bytes) in "
                                f"{where}: {self._error.strerror}") from None
        if self._error is not None:
            raise self._error
        if self._verify:
            p.check_file_sha256(self._fd)
        if self._sealable:
            _seal(self._fd)
        self._checked = True


@contextlib.contextmanager
def unpack_for_llama(src: str | os.PathLike, *, threads: int | None = None, verify: bool = False
                     ) -> Iterator[Unpacking]:
    """Start decoding a packed file into memory; the path stays valid inside the ``with`` block.

    On Linux the data lives in an anonymous memory file (memfd) that llama.cpp maps directly, so no
    copy touches the disk; where that is unavailable, or the model would not fit in free memory, a
    temporary file is used and removed afterwards. Chunk CRCs are always checked before data is
    written; ``verify=True`` also checks the whole file's sha256 in ``wait()``. Leaving the block
    waits for the decoder, whatever happened inside it.
    """
    src = Path(src)
    with _Packed(src, checked=False) as p:
        size = p.header.original_size
        avail = _available_memory()
        fd, name = -1, None
        if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd") and (avail is None or size < 0.8 * avail):
            flags = getattr(os, "MFD_CLOEXEC", 0) | getattr(os, "MFD_ALLOW_SEALING", 0)
            with contextlib.suppress(OSError):
                fd = os.memfd_create(src.name[:200], flags)
        if fd < 0:
            fd, name = tempfile.mkstemp(prefix=f".{src.name}.", suffix=".gguf")
        job = None
        try:
            try:
                os.ftruncate(fd, size)
                os.pwrite(fd, p.prefix, 0)
            except OSError as e:
                raise ResourceError(f"{src}: cannot hold the unpacked model ({size} bytes) in "
                                    f"{name or 'memory'}: {e.strerror}") from None
            job = Unpacking(p, fd, name or f"/proc/self/fd/{fd}", threads, verify, sealable=name is None)
            yield job
        finally:
            if job is not None:
                job._thread.join()
            os.close(fd)
            if name is not None:
                with contextlib.suppress(OSError):
                    os.unlink(name)


@contextlib.contextmanager
def open_for_llama(src: str | os.PathLike, *, threads: int | None = None, verify: bool = False) -> Iterator[str]:
    """A path llama.cpp can open, holding the whole unpacked GGUF, valid inside the ``with`` block
    (``unpack_for_llama`` with the decoding finished first)."""
    with unpack_for_llama(src, threads=threads, verify=verify) as job:
        job.wait()
        yield job.path


def _seal(fd: int) -> None:
    """Make the memory file read-only for good, so nothing can change the model under llama.cpp."""
    import fcntl

    seals = sum(getattr(fcntl, n, 0) for n in ("F_SEAL_SEAL", "F_SEAL_SHRINK", "F_SEAL_GROW", "F_SEAL_WRITE"))
    if hasattr(fcntl, "F_ADD_SEALS") and seals:
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)


# ---------------------------------------------------------------- packing

@dataclass
class _SectionPlan:
    orig_offset: int
    orig_size: int
    tensor: int
    ggml_type: int | None
    block_size: int
    fields: list[Field]


def _plan_sections(view: GGUFFile, file_size: int, prefix_size: int, what: str) -> list[_SectionPlan]:
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
    plans: list[_SectionPlan] = []
    pos = prefix_size

    def gap(upto: int) -> None:
        if upto > pos:
            plans.append(_SectionPlan(pos, upto - pos, NO_TENSOR, None, 1, GAP_LAYOUT))

    for start, i, t in found:
        if start < pos:  # overlaps the previous tensor: its bytes are already covered
            continue
        gap(start)
        block, fields = layout_for(t.ggml_type)
        if t.nbytes % block:
            block, fields = 1, GAP_LAYOUT
        plans.append(_SectionPlan(start, t.nbytes, i, t.ggml_type, block, fields))
        pos = start + t.nbytes
    gap(file_size)
    return plans


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


def _choose_field(native, buf, plan: _SectionPlan, raw_words: np.ndarray, fi: int, hist: np.ndarray,
                  n_chunks: int) -> _Choice:
    """The cheapest of raw, one table, tables by context, and block palettes, by estimated size."""
    n = int(hist.sum())
    width = plan.fields[fi].width
    best = _Choice(n, MODE_RAW, [])
    huff = _Choice(_huffman_bytes(hist)[0] + _group_overhead(1, n_chunks), MODE_HUFF, [hist])
    if huff.cost < best.cost:
        best = huff
    if n < RICH_FIELD_MIN:
        return best
    args = (buf, plan.orig_offset, plan.orig_size, raw_words, 0)
    for ci in range(fi):
        if plan.fields[ci].width != 1:
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


def _choose_codes(native, buf, plan: _SectionPlan, n_chunks: int, tables: _TableSet, min_saving: float
                  ) -> tuple[list[FieldCoding], list[FieldCoding], np.ndarray]:
    """Per field, the coding with the smallest estimated size (raw when nothing saves bytes).
    Returns the codings with global table ids, with section-local ids (for the encoder), and the
    section's tables."""
    raw_words = _words(plan.block_size, [FieldCoding(MODE_RAW, f.runs) for f in plan.fields])
    hist = np.frombuffer(native.histogram(buf, plan.orig_offset, plan.orig_size, raw_words, 0),
                         dtype=np.uint64).reshape(len(plan.fields), 256)
    global_fields, local_fields = [], []
    local_rows: list[np.ndarray] = []
    for fi, f in enumerate(plan.fields):
        choice = _choose_field(native, buf, plan, raw_words, fi, hist[fi], n_chunks)
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
    n_threads = _threads(threads)
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
            plans = _plan_sections(view, size, prefix_size, what)
            with atomic_output(dst, needed=size + (1 << 20)) as tmp, open(tmp, "wb") as out, \
                    ThreadPoolExecutor(max_workers=n_threads) as pool:
                try:
                    stats = _write_packed(native, mm, size, prefix_size, plans, out, pool, n_threads, chunk_size,
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


def _write_packed(native, mm, size: int, prefix_size: int, plans: list[_SectionPlan], out, pool: ThreadPoolExecutor,
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

    for si, plan in enumerate(plans):
        step = max(1, chunk_size // plan.block_size) * plan.block_size
        starts = list(range(0, plan.orig_size, step))
        global_fields, local_fields, local_tables = _choose_codes(native, mm, plan, len(starts), tables, min_saving)
        words = _words(plan.block_size, local_fields)
        sections.append(Section(plan.orig_offset, plan.orig_size, plan.tensor, plan.block_size,
                                tuple(global_fields), len(chunk_rows) + len(pending), len(starts)))
        for a in starts:
            n = min(step, plan.orig_size - a)
            pending.append((pool.submit(native.encode_chunk, mm, plan.orig_offset + a, n, words, 0, local_tables),
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
