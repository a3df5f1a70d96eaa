"""What this machine offers: one default thread count and one rule for a caller's own, for every threaded stage
(the C kernels, the block search, the Huffman decoder, llama.cpp)."""
from __future__ import annotations

import operator
import os
from functools import lru_cache
from pathlib import Path

from .errors import InputError

MAX_THREADS = 256  # the native thread pools' fixed size (native/kernels.c, native/huffman.c)


@lru_cache(maxsize=1)
def default_threads() -> int:
    """Physical cores this process may run on: hyper-threads share one core's ALUs and memory bandwidth,
    so they slow the matmuls and block searches down rather than up."""
    try:
        cpus = os.sched_getaffinity(0)
    except (AttributeError, OSError):  # not Linux
        cpus = set(range(os.cpu_count() or 1))
    physical = _cores_of(cpus)
    if physical is None:
        import psutil

        physical = psutil.cpu_count(logical=False)  # None where it cannot tell: the logical count then
    n = min(len(cpus), physical) if physical else len(cpus)
    return max(1, min(n, MAX_THREADS))


def _cores_of(cpus: set[int]) -> int | None:
    """Distinct cores among ``cpus``, from Linux's topology files; None elsewhere. (Importing psutil for
    this costs 40 ms, a third of ``gguf-tools unpack``'s start-up.)"""
    cores = set()
    for cpu in cpus:
        try:
            with open(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list") as f:
                cores.add(f.read().strip())
        except OSError:
            return None
    return len(cores) or None


def check_threads(threads: int | None) -> int:
    """A caller's thread count, checked (InputError, exit 3, from the API; the CLI checks while parsing), or the
    default for None."""
    if threads is None:
        return default_threads()
    try:
        n = operator.index(threads)  # ints and NumPy integers; not floats or strings
    except TypeError:
        n = None
    if n is None or isinstance(threads, bool):
        raise InputError(f"threads must be an integer, got {threads!r}")
    if not 1 <= n <= MAX_THREADS:
        raise InputError(f"threads must be between 1 and {MAX_THREADS}, got {threads}")
    return n


def cache_dir() -> Path:
    """Where built wheels, fixtures, demo models and measured sensitivities are kept (``$GGUF_TOOLS_CACHE``)."""
    return Path(os.environ.get("GGUF_TOOLS_CACHE", Path.home() / ".cache" / "gguf-tools"))
