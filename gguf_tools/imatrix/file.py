"""llama.cpp importance matrices: read both file forms, write the GGUF one.

An imatrix holds, per weight matrix, the mean squared input activation of each column: how much
an error in that column moves the layer's output. Two file forms exist (tools/imatrix in
llama.cpp):

* GGUF: tensors ``<name>.in_sum2`` (F32, ne = [n_per_row, n_mat]) with the raw sums of squared
  activations and ``<name>.counts`` (F32, ne = [1, n_mat]) with how many activations each
  matrix saw; keys ``imatrix.datasets``, ``imatrix.chunk_count``, ``imatrix.chunk_size``.
* legacy ``.dat``: int32 n_entries, then per entry int32 name length, name, int32 ncall,
  int32 nval, nval float32 (already averaged, times ncall); optionally int32 chunk count and a
  length-prefixed dataset name.

`load_imatrix` returns what llama-quantize hands to the quantizer: sums / counts for GGUF
(1 where a matrix saw nothing), values / ncall for the legacy form.
"""
from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from pathlib import Path

import gguf
import numpy as np

from ..errors import InputError
from ..files import atomic_output
from ..gguf_file.reader import GGUFFile

MAX_FILE_BYTES = 8 << 30  # an imatrix of a 1T-parameter model is a few GiB at most
MAX_ENTRIES = 1 << 20
MAX_NAME_BYTES = 4096
MAX_VALUES = 1 << 31

KEY_DATASETS = gguf.Keys.IMatrix.DATASETS
KEY_CHUNK_COUNT = gguf.Keys.IMatrix.CHUNK_COUNT
KEY_CHUNK_SIZE = gguf.Keys.IMatrix.CHUNK_SIZE
SUM_SUFFIX = ".in_sum2"
COUNT_SUFFIX = ".counts"


def load_imatrix(path: str | Path) -> dict[str, np.ndarray]:
    """Per-column importance for each tensor name ("blk.0.attn_q.weight" -> float32 array).

    The array is 1-D (n_per_row,) for an ordinary matrix, (n_expert, n_per_row) for stacked experts.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise InputError(f"{path}: imatrix file is {size} bytes, over the {MAX_FILE_BYTES}-byte limit")
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except FileNotFoundError:
        raise InputError(f"{path}: imatrix file not found") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read imatrix file: {e.strerror}") from None
    if magic == b"GGUF":
        return _load_gguf(path)
    return _load_legacy(path, path.read_bytes())


def _check_values(path: Path, name: str, v: np.ndarray) -> np.ndarray:
    if not np.isfinite(v).all() or (v < 0).any():
        raise InputError(f"{path}: imatrix entry {name!r} has negative, NaN or infinite values")
    return v


def _load_gguf(path: Path) -> dict[str, np.ndarray]:
    f = GGUFFile.open(path)
    tensors = {t.name: t for t in f.tensors}
    sums = {n[: -len(SUM_SUFFIX)]: t for n, t in tensors.items() if n.endswith(SUM_SUFFIX)}
    counts = {n[: -len(COUNT_SUFFIX)]: t for n, t in tensors.items() if n.endswith(COUNT_SUFFIX)}
    if not sums and not counts:
        raise InputError(f"{path}: GGUF file has no imatrix tensors (<name>.in_sum2 / <name>.counts)")
    out: dict[str, np.ndarray] = {}
    for name in sorted(set(sums) | set(counts)):
        if name not in sums or name not in counts:
            raise InputError(f"{path}: imatrix entry {name!r} lacks its in_sum2 or counts tensor")
        ts, tc = sums[name], counts[name]
        if ts.ggml_type != gguf.GGMLQuantizationType.F32 or tc.ggml_type != gguf.GGMLQuantizationType.F32:
            raise InputError(f"{path}: imatrix entry {name!r} must be F32")
        s = f.data(ts).reshape(-1)
        c = f.data(tc).reshape(-1)
        if c.size == 0 or s.size == 0 or s.size % c.size:
            raise InputError(f"{path}: imatrix entry {name!r}: {s.size} sums do not split over {c.size} counts")
        if not np.isfinite(c).all() or (c < 0).any():
            raise InputError(f"{path}: imatrix entry {name!r} has invalid counts")
        ne0 = s.size // c.size
        cnt = np.rint(c).astype(np.float32)  # llama.cpp rounds the stored counts to integers
        seen = cnt > 0
        with np.errstate(all="ignore"):
            v = np.where(seen[:, None], s.reshape(c.size, ne0) / np.where(seen, cnt, 1)[:, None], np.float32(1))
        v = _check_values(path, name, v.astype(np.float32))
        out[name] = v.reshape(ne0) if c.size == 1 else v
    return out


class _Cursor:
    """Bounded little-endian reads over the bytes of a legacy imatrix."""

    def __init__(self, path: Path, data: bytes) -> None:
        self.path, self.data, self.pos = path, data, 0

    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or n > self.left():
            raise InputError(f"{self.path}: truncated imatrix file: {what} needs {n} bytes, {self.left()} left")
        b = self.data[self.pos: self.pos + n]
        self.pos += n
        return b

    def i32(self, what: str) -> int:
        return struct.unpack("<i", self.take(4, what))[0]


def _load_legacy(path: Path, data: bytes) -> dict[str, np.ndarray]:
    cur = _Cursor(path, data)
    n_entries = cur.i32("entry count")
    if n_entries < 1 or n_entries > MAX_ENTRIES:
        raise InputError(f"{path}: not an imatrix file (entry count {n_entries})")
    out: dict[str, np.ndarray] = {}
    for i in range(n_entries):
        n = cur.i32(f"entry {i} name length")
        if n < 1 or n > MAX_NAME_BYTES:
            raise InputError(f"{path}: entry {i} has a name length of {n} bytes")
        try:
            name = cur.take(n, f"entry {i} name").decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{path}: entry {i} name is not UTF-8") from None
        ncall = cur.i32(f"entry {name!r} call count")
        nval = cur.i32(f"entry {name!r} value count")
        if nval < 1 or nval > MAX_VALUES or nval * 4 > cur.left():
            raise InputError(f"{path}: entry {name!r} claims {nval} values, {cur.left()} bytes left")
        if name in out:
            raise InputError(f"{path}: entry {name!r} appears twice")
        v = np.frombuffer(cur.take(nval * 4, f"entry {name!r} values"), dtype="<f4").astype(np.float32)
        if ncall > 0:
            v = v / np.float32(ncall)
        out[name] = _check_values(path, name, v)
    # the trailing chunk count and dataset name are optional and not needed here
    return out


def write_imatrix_gguf(path: str | Path, stats: Mapping[str, tuple[np.ndarray, int | np.ndarray]], *,
                       datasets: Iterable[str] = (), chunk_count: int = 0, chunk_size: int = 0) -> None:
    """Write collected activation statistics as the GGUF imatrix `llama-quantize --imatrix` reads.

    stats maps a tensor name to (sum of squared activations per column, number of activations):
    sum2 of shape (n_per_row,) with an int count, or (n_expert, n_per_row) with one count per
    expert. The write is atomic. With no datasets named, one called "unspecified" is recorded.
    """
    entries = []
    for name in sorted(stats):
        sum2, count = stats[name]
        s = np.asarray(sum2, dtype=np.float32)
        if s.ndim == 1:
            s = s.reshape(1, -1)
        if s.ndim != 2 or s.size == 0:
            raise ValueError(f"imatrix entry {name!r}: sum2 must be (n_per_row,) or (n_expert, n_per_row)")
        c = np.asarray(count, dtype=np.float64).reshape(-1)
        if c.size == 1 and s.shape[0] > 1:
            c = np.repeat(c, s.shape[0])
        if c.size != s.shape[0] or (c < 0).any() or not np.isfinite(c).all():
            raise ValueError(f"imatrix entry {name!r}: need one non-negative count per matrix")
        if not np.isfinite(s).all() or (s < 0).any():
            raise ValueError(f"imatrix entry {name!r}: sums must be finite and non-negative")
        if not name or len(name.encode()) + len(SUM_SUFFIX) > 63:
            raise ValueError(f"imatrix entry {name!r}: tensor names are limited to 63 bytes in GGUF")
        entries.append((name, s, c.astype(np.float32).reshape(-1, 1)))
    with atomic_output(Path(path)) as tmp:
        w = gguf.GGUFWriter(tmp, arch="imatrix")
        w.add_string("general.type", "imatrix")
        # llama-quantize needs the key present; the gguf package cannot write an empty array
        w.add_array(KEY_DATASETS, [str(d) for d in datasets] or ["unspecified"])
        w.add_uint32(KEY_CHUNK_COUNT, int(chunk_count))
        w.add_uint32(KEY_CHUNK_SIZE, int(chunk_size))
        for name, s, c in entries:
            w.add_tensor(name + SUM_SUFFIX, s)
            w.add_tensor(name + COUNT_SUFFIX, c)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
