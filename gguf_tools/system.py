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
        allowed = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        allowed = os.cpu_count() or 1
    import psutil

    physical = psutil.cpu_count(logical=False)  # None where it cannot tell: the logical count then
    n = min(allowed, physical) if physical else allowed
    return max(1, min(n, MAX_THREADS))


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
