"""What is inside a GGUF file: metadata, tensors, types, bits per weight."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import gguf
import numpy as np

from .errors import InputError

ARRAY_PREVIEW = 8


def open_gguf(path: str | Path) -> gguf.GGUFReader:
    """GGUFReader with every failure on a hostile file turned into one InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise InputError(f"{path}: not a GGUF file (magic {magic!r})")
    try:
        return gguf.GGUFReader(path)
    except (ValueError, IndexError, KeyError, OverflowError, MemoryError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: corrupt GGUF file: {e}") from None


def _value(field: gguf.ReaderField):
    types = field.types
    if types and types[0] == gguf.GGUFValueType.ARRAY:
        n = len(field.data)
        if n > ARRAY_PREVIEW:
            head = [field.contents(i) for i in range(ARRAY_PREVIEW)]
            return {"type": f"array[{types[-1].name.lower()}]", "length": n, "head": head}
        return field.contents()
    return field.contents()


def describe(path: str | Path) -> dict:
    reader = open_gguf(path)
    size = Path(path).stat().st_size
    metadata = {k: _value(f) for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    tensors = []
    n_params = 0
    for t in reader.tensors:
        shape = [int(d) for d in t.shape]
        n = int(np.prod(shape, dtype=np.int64))
        n_params += n
        tensors.append(
            {"name": t.name, "shape": shape, "type": t.tensor_type.name, "bytes": int(t.n_bytes), "offset": int(t.data_offset)}
        )
    counts = Counter(t["type"] for t in tensors)
    return {
        "path": str(path),
        "size": size,
        "version": int(reader.fields["GGUF.version"].contents()) if "GGUF.version" in reader.fields else None,
        "n_tensors": len(tensors),
        "n_params": n_params,
        "bits_per_weight": round(size * 8 / max(n_params, 1), 4),
        "types": dict(sorted(counts.items())),
        "metadata": metadata,
        "tensors": tensors,
    }


def format_text(info: dict) -> str:
    lines = [
        f"file      {info['path']}",
        f"size      {info['size']:,} bytes ({info['size'] / 2**20:.1f} MiB)",
        f"params    {info['n_params']:,}   {info['bits_per_weight']:.3f} bits per weight",
        f"tensors   {info['n_tensors']}   " + ", ".join(f"{k} x{v}" for k, v in info["types"].items()),
        "",
        "metadata:",
    ]
    for key, value in info["metadata"].items():
        if isinstance(value, dict) and "length" in value:
            shown = f"{value['type']} of {value['length']}: {value['head']!r} ..."
        else:
            shown = repr(value)
            if len(shown) > 120:
                shown = shown[:117] + "..."
        lines.append(f"  {key:<44} {shown}")
    lines += ["", "tensors:", f"  {'name':<40} {'shape':<20} {'type':<8} {'bytes':>12}"]
    for t in info["tensors"]:
        shape = "x".join(str(d) for d in t["shape"])
        lines.append(f"  {t['name']:<40} {shape:<20} {t['type']:<8} {t['bytes']:>12,}")
    return "\n".join(lines)
