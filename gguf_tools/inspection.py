"""What is inside a GGUF file (plain or packed): metadata, tensors, types, bits per weight."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import gguf

from .gguf_file.plan_record import read_plan
from .gguf_file.reader import GGUFFile
from .packed import is_packed, open_gguf, pack_info

ARRAY_PREVIEW = 8


def _metadata(f: GGUFFile) -> dict:
    """Every key's value, long arrays cut to their first ``ARRAY_PREVIEW`` elements (a vocabulary
    is not decoded to show eight tokens)."""
    out = {}
    for key, field in f.fields.items():
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            n, head = field.head(ARRAY_PREVIEW + 1)
            if n > ARRAY_PREVIEW:
                out[key] = {"type": f"array[{field.types[-1].name.lower()}]", "length": n, "head": head[:ARRAY_PREVIEW]}
                continue
        out[key] = f.get(key)
    return out


def _tensors(f: GGUFFile) -> list[dict]:
    return [{"name": t.name, "shape": list(t.shape), "type": t.type_name, "bytes": t.nbytes,
             "offset": f.data_offset + t.offset} for t in f.tensors]


def describe(path: str | Path) -> dict:
    if is_packed(path):
        return describe_packed(path)
    f = open_gguf(path)
    size = Path(path).stat().st_size
    tensors = _tensors(f)
    n_params = sum(t.n_elements for t in f.tensors)
    return {
        "path": str(path),
        "size": size,
        "version": f.version,
        "n_tensors": len(tensors),
        "n_params": n_params,
        "bits_per_weight": round(size * 8 / max(n_params, 1), 4),
        "types": dict(sorted(Counter(t["type"] for t in tensors).items())),
        "metadata": _metadata(f),
        "tensors": tensors,
        **_plan(f),
    }


def _plan(f: GGUFFile) -> dict:
    """A budgeted file's recorded plan: its target, how it was chosen, and whether its tensors still match it."""
    plan = read_plan(f)
    if plan is None:
        return {}
    types = plan.pop("types")
    plan["matches_tensors"] = types == {t.name: t.type_name for t in f.tensors}
    return {"plan": plan}


def describe_packed(path: str | Path) -> dict:
    """As ``describe``, read from the GGUF header a packed file keeps, plus what packing saved."""
    info = pack_info(path)
    h, f = info.header, info.header.gguf
    packed = {t.name: t for t in info.tensors}
    tensors = _tensors(f)
    for t in tensors:
        p = packed.get(t["name"])
        t.update(packed_bytes=p.packed_bytes if p else 0, ratio=round(p.ratio, 4) if p else None)
    n_params = sum(t.n_elements for t in f.tensors)
    return {
        "path": str(path),
        "size": h.packed_size,
        "version": f.version,
        "n_tensors": len(tensors),
        "n_params": n_params,
        "bits_per_weight": round(h.original_size * 8 / max(n_params, 1), 4),
        "types": dict(sorted(Counter(t["type"] for t in tensors).items())),
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
        "metadata": _metadata(f),
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
    plan = info.get("plan")
    if plan:
        kld = plan["predicted_kld"]
        lines.append(f"plan      target {plan['target_size']:,} bytes, {plan['chosen']}, predicted KLD"
                     f" {kld:.5f}, {plan['version']}" + ("" if plan["matches_tensors"] else
                                                        " (the tensors no longer match the recorded types)"))
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
