"""File helpers shared by every command: bounded JSON reading, atomic output (files and directories), releasing
mapped pages."""
from __future__ import annotations

import contextlib
import errno
import mmap
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InputError, OutputError

if TYPE_CHECKING:
    import numpy as np

MAX_JSON_BYTES = 512 * 1024 * 1024
COPY_CHUNK = 16 << 20  # bytes per read when a file is copied or hashed whole


def read_json(path: Path, what: str = "JSON file") -> Any:
    """Parse a JSON file that came with a model: every failure is one InputError naming the file."""
    import json  # here: unpack, which reads no JSON, starts without it

    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise InputError(f"{path}: {what} is {size} bytes, over the {MAX_JSON_BYTES}-byte limit")
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: {what} not found") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read {what}: {e.strerror}") from None
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: {what} is not UTF-8 (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: {what} is not valid JSON ({e.msg}, line {e.lineno} column {e.colno})") from None
    except RecursionError:
        raise InputError(f"{path}: {what} is nested too deeply") from None


def release_pages(view: np.ndarray) -> None:
    """Drop the pages under ``view`` (an array over a read-only file map) from this process.

    A mapped input otherwise stays resident once read: quantizing a 15 GB file would hold 15 GB.
    MADV_DONTNEED on a file mapping only unmaps: the pages stay in the page cache and fault back
    in if read again, so the edge pages a neighbouring tensor shares are safe to drop. Arrays not
    backed by an mmap (heap memory, where it would zero data) and systems without madvise are
    left alone.
    """
    import numpy as np

    mm = _mapping_of(view)
    if mm is None or view.nbytes == 0 or not hasattr(mmap, "MADV_DONTNEED"):
        return
    origin = np.frombuffer(mm, dtype=np.uint8, count=1).__array_interface__["data"][0]
    byte_bounds = getattr(getattr(np.lib, "array_utils", None), "byte_bounds", None) or np.byte_bounds
    low, high = byte_bounds(view)
    start = (low - origin) // mmap.PAGESIZE * mmap.PAGESIZE
    if 0 <= start < high - origin <= len(mm):
        mm.madvise(mmap.MADV_DONTNEED, start, high - origin - start)


def _mapping_of(view: np.ndarray) -> mmap.mmap | None:
    """The mmap an array views, found through its chain of bases (np.frombuffer, np.memmap)."""
    base = view
    while base is not None:
        if isinstance(base, mmap.mmap):
            return base
        base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_free_space(directory: Path, needed: int) -> None:
    """Refuse up front rather than fill the disk and fail half-way."""
    free = shutil.disk_usage(directory).free
    margin = 16 * 1024 * 1024
    if needed + margin > free:
        raise OutputError(
            f"{directory}: not enough disk space: need {needed / 2**20:.1f} MiB, {free / 2**20:.1f} MiB free"
        )


@contextlib.contextmanager
def atomic_output(dest: Path, *, overwrite: bool = True, needed: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success fsync and rename it into place.

    On any error (or Ctrl-C) the temporary file is removed and ``dest`` is untouched.
    """
    dest = Path(dest)
    parent = dest.parent if str(dest.parent) else Path(".")
    if dest.is_dir():
        raise OutputError(f"{dest}: is a directory")
    if dest.exists() and not overwrite:
        raise OutputError(f"{dest}: already exists (use --force to replace it)")
    if not parent.is_dir():
        raise OutputError(f"{parent}: output directory does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{parent}: output directory is not writable")
    if needed is not None:
        check_free_space(parent, needed)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=parent)
    except OSError as e:
        raise OutputError(f"{parent}: cannot create a file: {e.strerror}") from None
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a model file should be readable like any other
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise OutputError(f"{dest}: not enough disk space: {e.strerror}") from None
        raise OutputError(f"{dest}: write failed: {e.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    with contextlib.suppress(OSError):
        dirfd = os.open(parent, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)


@contextlib.contextmanager
def atomic_directory(dest: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary directory beside ``dest``, renamed onto it at the end; removed on any error."""
    parent = dest.parent if str(dest.parent) else Path(".")
    if dest.exists() and not (overwrite and dest.is_dir()):
        raise OutputError(f"{dest}: already exists")
    if not parent.is_dir():
        raise OutputError(f"{parent}: output directory does not exist")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=parent))
    except OSError as e:
        raise OutputError(f"{parent}: cannot create a directory: {e.strerror}") from None
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old")
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
