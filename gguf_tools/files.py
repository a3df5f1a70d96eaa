"""File helpers shared by every command: bounded JSON reading and atomic output."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import InputError, OutputError

MAX_JSON_BYTES = 512 * 1024 * 1024


def read_json(path: Path, what: str = "JSON file") -> Any:
    """Parse a JSON file that came with a model: every failure is one InputError naming the file."""
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
