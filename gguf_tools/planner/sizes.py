"""Sizes as users write them: the one parser for every size option of the tool.

``MB``/``GB`` are powers of ten (a disk vendor's and llama.cpp gguf-split's ``G``), ``MiB``/``GiB`` powers of two; a bare
number is bytes. A budget may also be given in bits per weight, which needs the model's parameter count.
"""
from __future__ import annotations

import math
import re

from ..errors import UsageError

FAT32_LIMIT = 4_294_967_295
_UNITS = {"": 1, "B": 1, "K": 10**3, "KB": 10**3, "M": 10**6, "MB": 10**6, "G": 10**9, "GB": 10**9,
          "T": 10**12, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
NAMED_SIZES = {"fat32": FAT32_LIMIT, "hf": 50 * 10**9}   # the Hugging Face Hub refuses files over 50 GB


def parse_size(text: str | float) -> int:
    """'4GiB', '100MB', '3.5G', 'fat32', 'hf' or a byte count -> bytes."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        if not math.isfinite(text) or text <= 0:
            raise UsageError(f"not a size: {text!r} (a size is positive)")
        return int(text)
    if not isinstance(text, str):
        raise UsageError(f"not a size: {text!r}")
    named = NAMED_SIZES.get(text.strip().lower())
    if named is not None:
        return named
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).upper() not in _UNITS:
        raise UsageError(f"not a size: {text!r} (examples: 95MB, 4GiB, 3.5G, 123456789, fat32, hf)")
    size = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if size <= 0:
        raise UsageError(f"not a size: {text!r} (a size is positive)")
    return size


def bpw_bytes(bpw: float, n_params: int) -> int:
    """The file size of ``n_params`` weights at ``bpw`` bits each (metadata included in the budget)."""
    if isinstance(bpw, bool) or not isinstance(bpw, int | float) or not math.isfinite(bpw) or not 0 < bpw <= 64:
        raise UsageError(f"bits per weight must be a number in (0, 64], got {bpw!r}")
    return int(bpw * n_params / 8)
