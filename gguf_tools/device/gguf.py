"""The one place this stage reads a GGUF header: swap the parser here and every command follows."""
from __future__ import annotations

import contextlib
import mmap
import os
from pathlib import Path

from ..errors import InputError
from ..gguf_file.header import GGUFView, TensorInfo, parse_gguf_header

__all__ = ["GGUFView", "TensorInfo", "read_gguf"]


def read_gguf(path: str | os.PathLike, *, values: bool = True) -> GGUFView:
    """Metadata and tensor infos of a GGUF file, bounded and checked; no tensor data is read.

    ``values=False`` keeps scalars only (no tokenizer arrays): enough to plan memory, in milliseconds.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            if os.fstat(fh.fileno()).st_size == 0:
                raise InputError(f"{path}: empty file, not a GGUF file")
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror}") from None
    try:
        return parse_gguf_header(mm, what=str(path), keep_values=values, keep_scalars=True)
    finally:
        with contextlib.suppress(BufferError):
            mm.close()
