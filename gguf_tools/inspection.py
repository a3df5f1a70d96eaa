"""What is inside a GGUF file (plain or packed): metadata, tensors, types, bits per weight."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import gguf
import numpy as np

from .errors import InputError
from .packed import is_packed, open_for_llama, pack_info

ARRAY_PREVIEW = 8


def open_gguf(path: str | Path) -> gguf.GGUFReader:
    """GGUFReader with every failure on a hostile file turned into one InputError.

    A packed file is decoded into memory first (a memfd on Linux) and read from there: the reader
    maps it, so the decoded bytes live as long as the reader and no copy is left on disk.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if is_packed(path):
        with open_for_llama(path) as plain:
            return _reader(plain, path)
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise InputError(f"{path}: not a GGUF file (magic {magic!r})")
    return _reader(path, path)


def _reader(source: str | Path, path: Path) -> gguf.GGUFReader:
    try:
        return gguf.GGUFReader(source)
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
    if is_packed(path):
        return describe_packed(path)
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


def _preview(value, type_ids: tuple[int, ...]):
    """A packed file's metadata value shown as ``_value`` shows a GGUF's: long arrays cut short."""
    if isinstance(value, list) and len(value) > ARRAY_PREVIEW:
        try:
            element = gguf.GGUFValueType(type_ids[-1]).name.lower()
        except (ValueError, IndexError):
            element = "unknown"
        return {"type": f"array[{element}]", "length": len(value), "head": value[:ARRAY_PREVIEW]}
    return value


def describe_packed(path: str | Path) -> dict:
    """As ``describe``, read from the GGUF header a packed file keeps, plus what packing saved."""
    info = pack_info(path)
    h, view = info.header, info.header.gguf
    packed = {t.name: t for t in info.tensors}
    tensors = []
    n_params = 0
    for t in view.tensors:
        n = int(np.prod(t.shape, dtype=np.int64))
        n_params += n
        p = packed.get(t.name)
        tensors.append({"name": t.name, "shape": list(t.shape), "type": t.type_name, "bytes": t.nbytes or 0,
                        "offset": view.data_offset + t.offset, "packed_bytes": p.packed_bytes if p else 0,
                        "ratio": round(p.ratio, 4) if p else None})
    counts = Counter(t["type"] for t in tensors)
    return {
        "path": str(path),
        "size": h.packed_size,
        "version": view.version,
        "n_tensors": len(tensors),
        "n_params": n_params,
        "bits_per_weight": round(h.original_size * 8 / max(n_params, 1), 4),
        "types": dict(sorted(counts.items())),
        "packed": {
            "format_version": h.version,
            "gguf_size": h.original_size,
            "packed_size": h.packed_size,
            "ratio": round(h.packed_size / max(h.original_size, 1), 4),
            "bits_per_weight": round(h.packed_size * 8 / max(n_params, 1), 4),
            "sha256": h.sha256,
            "chunks": h.n_chunks,
            "index_bytes": info.index_bytes,
        },
        "metadata": {k: _preview(v, view.value_types.get(k, ())) for k, v in view.metadata.items()},
        "tensors": tensors,
    }


def format_text(info: dict) -> str:
    lines = [
        f"file      {info['path']}",
        f"size      {info['size']:,} bytes ({info['size'] / 2**20:.1f} MiB)",
        f"params    {info['n_params']:,}   {info['bits_per_weight']:.3f} bits per weight",
        f"tensors   {info['n_tensors']}   " + ", ".join(f"{k} x{v}" for k, v in info["types"].items()),
    ]
    packed = info.get("packed")
    if packed:
        lines[1] = (f"size      {info['size']:,} bytes packed ({info['size'] / 2**20:.1f} MiB), "
                    f"{100 * info['size'] / packed['gguf_size']:.1f}% of the GGUF's {packed['gguf_size']:,} bytes")
        lines.insert(2, f"packed    format {packed['format_version']}, {packed['chunks']} chunks, "
                        f"{packed['bits_per_weight']:.3f} bits per weight stored, sha256 {packed['sha256']}")
    lines += ["", "metadata:"]
    for key, value in info["metadata"].items():
        if isinstance(value, dict) and "length" in value:
            shown = f"{value['type']} of {value['length']}: {value['head']!r} ..."
        else:
            shown = repr(value)
            if len(shown) > 120:
                shown = shown[:117] + "..."
        lines.append(f"  {key:<44} {shown}")
    head = f"  {'name':<40} {'shape':<20} {'type':<8} {'bytes':>12}"
    lines += ["", "tensors:", head + (f" {'packed':>12} {'ratio':>6}" if packed else "")]
    for t in info["tensors"]:
        shape = "x".join(str(d) for d in t["shape"])
        row = f"  {t['name']:<40} {shape:<20} {t['type']:<8} {t['bytes']:>12,}"
        if packed:
            ratio = "" if t["ratio"] is None else f"{100 * t['ratio']:.1f}%"
            row += f" {t['packed_bytes']:>12,} {ratio:>6}"
        lines.append(row)
    return "\n".join(lines)
