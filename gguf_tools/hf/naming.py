"""general.name and general.size_label, derived the way llama.cpp's converter derives them.

The name comes from config.json's ``_name_or_path`` when that is a Hub id (``org/model``), else from the
model directory (or the Hub cache's repository name), title-cased word by word except acronyms and
version numbers. The size label is the parameter count, rounded to at least two significant digits.
"""
from __future__ import annotations

import re
from pathlib import Path


def model_name(config: dict, root: Path) -> str:
    ident = config.get("_name_or_path")
    if not (isinstance(ident, str) and ident.strip() and ident.count("/") <= 1):
        ident = root.name
        if root.parent.name == "snapshots" and root.parent.parent.name.startswith("models--"):
            ident = root.parent.parent.name.split("--")[-1]
    return _title(ident.rstrip("/").split("/")[-1])


def _title(ident: str) -> str:
    """``smollm2-135m-instruct`` -> ``Smollm2 135m Instruct``; ``Qwen2.5-0.5B`` keeps its capitals."""
    words = ident.strip().replace("-", " ").split()
    return " ".join(w.title() if w.islower() and not re.match(r"^(v\d+(\.\d+)*|\d.*)$", w) else w for w in words)


def size_label(n_params: int) -> str:
    """``135M``, ``1.7B``, ``18M``: the count in the largest unit it exceeds, with at least two digits."""
    scale, suffix = next(((s, u) for s, u in ((1e12, "T"), (1e9, "B"), (1e6, "M")) if n_params > s), (1e3, "K"))
    value = n_params / scale
    decimals = max(2 - len(str(round(value)).lstrip("0")), 0)
    return f"{value:.{decimals}f}{suffix}"
