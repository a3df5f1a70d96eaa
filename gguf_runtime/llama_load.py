"""llama.cpp models from plain or packed GGUF files.

A packed file is decoded in the background while llama.cpp parses the header, loads the
vocabulary and lays out the model, which on small models is most of the loading time. llama.cpp
reads no tensor data before the first call of its load-progress callback, and that callback
waits for the decoder: the model never sees a byte that is not in place and checked.

llama.cpp is also held, in its C log callback, at the line it logs just before it maps the file:
mapping a memory file whose pages the decoder has not written yet would make llama.cpp's thread
create them itself. That hold saves time only; the progress callback is what keeps the data safe.
Ctrl-C while llama.cpp is held takes effect once the decoder is done.
"""
from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from gguf_tools.packed import is_packed, unpack_for_llama


@dataclass(frozen=True)
class LlamaSource:
    """What llama.cpp opens (``path``), and what must return before it may read tensor data."""

    path: str
    ready: Callable[[], None] | None = None


@contextlib.contextmanager
def llama_source(path: str | os.PathLike, *, threads: int | None = None) -> Iterator[LlamaSource]:
    """A plain GGUF as it is; a packed one decoding into memory for as long as the block runs."""
    if not is_packed(path):
        yield LlamaSource(os.fspath(path))
        return
    with unpack_for_llama(path, threads=threads) as job:
        yield LlamaSource(job.path, job.wait)


_defaults_lock = threading.Lock()   # the default-params and log hooks below are process-wide


@contextlib.contextmanager
def _c_log(verbose: bool) -> Iterator[None]:
    """llama.cpp logs through a C callback for the duration: every line when ``verbose``, else
    errors only (its warnings are notes for its developers; Gemma gets one on every load).
    llama-cpp-python's own callback is Python, so every line llama.cpp logs while it loads would
    wait for the GIL, held by whatever Python runs beside the load (the decoder reading the GGUF
    header, the thread waiting for it), and the C callback can also hold the load before
    llama.cpp maps the file."""
    import ctypes

    import llama_cpp
    from llama_cpp import _logger

    from . import _llama_log

    _llama_log.print_all(verbose)
    llama_cpp.llama_log_set(ctypes.cast(_llama_log.callback_address(), llama_cpp.llama_log_callback),
                            ctypes.c_void_p(0))
    try:
        yield
    finally:
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))


def new_llama(source: LlamaSource, **kw):
    """``llama_cpp.Llama(source.path, **kw)``, holding llama.cpp at its first tensor until
    ``source.ready()`` (called on another thread as the load starts) has returned. An error from
    ``ready`` aborts the load and is raised as it is."""
    from llama_cpp import Llama

    with _defaults_lock, _c_log(kw.get("verbose", True)):
        if source.ready is None or kw.get("vocab_only"):   # a vocab-only load reads the header alone
            return Llama(source.path, **kw)
        return _gated_llama(source, Llama, kw)


class _Readiness:
    """``ready()`` on a thread of its own, which releases llama.cpp's C-side hold when it returns,
    however it returns."""

    def __init__(self, ready: Callable[[], None]):
        from . import _llama_log

        self.error: BaseException | None = None
        self._release = _llama_log.release
        _llama_log.hold()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="gguf-ready", daemon=True)
        self._thread.start()

    def _run(self, ready: Callable[[], None]) -> None:
        try:
            ready()
        except BaseException as e:  # noqa: BLE001  (handed to whoever waits)
            self.error = e
        finally:
            self._release()

    def wait(self) -> None:
        self._thread.join()
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Never leave the hold on for a later load (the thread may still be waiting)."""
        self._release()


def _gated_llama(source: LlamaSource, Llama, kw: dict):
    import llama_cpp.llama_cpp as lib

    state: dict = {"passed": False, "error": None}
    readiness = _Readiness(source.ready)

    @lib.llama_progress_callback
    def progress(_fraction, _user):
        if not state["passed"]:
            try:
                readiness.wait()
            except BaseException as e:  # noqa: BLE001  (Ctrl-C included: stop loading, raise it below)
                state["error"] = e
                return False
            state["passed"] = True
        return True

    # Llama() builds its model parameters from llama_model_default_params() and takes no
    # progress callback of its own: hand it defaults that carry ours.
    defaults = lib.llama_model_default_params

    def with_progress():
        params = defaults()
        params.progress_callback = progress
        return params

    lib.llama_model_default_params = with_progress
    try:
        llm = Llama(source.path, **kw)
    except ValueError:
        if state["error"] is not None:
            raise state["error"] from None
        raise
    finally:
        lib.llama_model_default_params = defaults
        readiness.close()
    if not state["passed"]:   # the callback never ran: llama.cpp may have read data still being written
        readiness.wait()
        llm.close()
        llm = Llama(source.path, **kw)
    return llm
