"""The plan as a file records it (``gguf_tools.plan.*``), and read back for ``inspect``.

The keys have a fixed size whatever the plan (type ids, not names), so the header is measured once, before choosing.
"""
from __future__ import annotations

import gguf

from .. import __version__
from .reader import GGUFFile

TARGET = "gguf_tools.plan.target_size"
TYPES = "gguf_tools.plan.types"
PREDICTED = "gguf_tools.plan.predicted_kld"
CHOSEN = "gguf_tools.plan.chosen"
VERSION = "gguf_tools.plan.version"
HEADER_SLACK = 64   # bytes kept for the variable part (the chosen label) when the header is measured


def add_plan_metadata(w: gguf.GGUFWriter, target: int, types: list[gguf.GGMLQuantizationType], predicted_kld: float,
                      chosen: str) -> None:
    w.add_uint64(TARGET, int(target))
    w.add_array(TYPES, [int(t) for t in types])
    w.add_float32(PREDICTED, float(predicted_kld))
    w.add_string(CHOSEN, chosen)
    w.add_string(VERSION, f"gguf-tools {__version__}")


def read_plan(f: GGUFFile) -> dict | None:
    """The recorded plan (target, chosen, predicted KLD, version, type per tensor), or None if the file has none."""
    if f.get(TYPES) is None:
        return None
    ids = list(f.get(TYPES))
    names = [t.name for t in f.tensors]
    types = {}
    for n, i in zip(names, ids):
        try:
            types[n] = gguf.GGMLQuantizationType(int(i)).name
        except ValueError:
            types[n] = f"unknown type {i}"
    return {"target_size": f.get(TARGET), "chosen": f.get(CHOSEN), "predicted_kld": f.get(PREDICTED),
            "version": f.get(VERSION), "n_types": len(ids), "types": types}
