"""Loader integration: a packed file decoded in the background into a file llama.cpp can open.

On Linux that file is an anonymous memory file (memfd), sealed read-only once its data is checked;
elsewhere, or when the model would not fit in free memory, a temporary file that is removed afterwards.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from ..errors import ResourceError
from ..gguf_file.reader import GGUFFile, Values
from .decode import _Packed, is_packed


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
    with _Packed(src, checks="header") as p:
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


def open_gguf(path: str | os.PathLike, *, values: Values = "raw", what: str | None = None) -> GGUFFile:
    """A GGUF file's header and mapped tensors, plain or packed. A packed file is decoded into memory
    first (a memfd on Linux): the map keeps the decoded bytes alive, and nothing is left on disk."""
    path = Path(path)
    if not is_packed(path):
        return GGUFFile.open(path, values=values, what=what)
    with open_for_llama(path) as plain:
        return GGUFFile.open(plain, values=values, what=what or str(path))
