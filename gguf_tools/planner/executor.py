"""One way to map a function over tensors: local threads, or a Ray cluster for models that outgrow one machine.

The tasks carry their data (sampled rows, importances), so a worker needs no access to the source file. Ray is an
optional extra (``gguf-tools[cluster]``), imported only when a cluster is asked for.

Locally the workers are threads, not processes: the work is the native quantizer and kernels and NumPy's loops, which
release the GIL, and a spawned process costs more to start (a fresh interpreter importing NumPy and the package) than
a small model's whole map.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from ..errors import ResourceError, UsageError

T = TypeVar("T")
R = TypeVar("R")


def run_map(fn: Callable[[T], R], tasks: Sequence[T], *, cluster: str | None = None, workers: int | None = None) -> list[R]:
    """``[fn(t) for t in tasks]``, in order: on ``cluster`` (``ray://HOST:PORT``, ``auto``, or ``local`` for a
    fresh in-process Ray) when given, else on ``workers`` local threads (1: in the calling thread). ``fn`` must be
    safe to run in several threads at once, and should run its native calls single-threaded."""
    if not tasks:
        return []
    if cluster:
        return _ray_map(fn, tasks, cluster)
    from ..system import default_threads

    n = min(workers or default_threads(), len(tasks))
    if n <= 1:
        return [fn(t) for t in tasks]
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(fn, tasks))


def _ray_map(fn: Callable[[T], R], tasks: Sequence[T], cluster: str) -> list[R]:
    if not (cluster in ("auto", "local") or cluster.startswith("ray://")):
        raise UsageError(f"--cluster must be ray://HOST:PORT, auto or local, got {cluster!r}")
    try:
        import ray
    except ImportError:
        raise ResourceError("a --cluster needs Ray: pip install 'gguf-tools[cluster]'") from None
    if not ray.is_initialized():
        ray.init(address=None if cluster == "local" else cluster, log_to_driver=False)
    remote = ray.remote(fn)
    return ray.get([remote.remote(t) for t in tasks])
