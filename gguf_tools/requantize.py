"""GGUF -> GGUF at another preset: the `quantize` command (llama-quantize's job, with our blocks)."""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import gguf
import numpy as np

from .convert import CHUNK_BYTES, ConvertResult, _check_finite, _progress_bar, add_quant_metadata
from .errors import InputError, UnsupportedError
from .files import release_pages
from .gguf_file.raw import RawField, RawGGUF
from .gguf_file.writer import OutTensor, RawValue, write_gguf
from .inspection import open_gguf
from .plan import get_preset, plan_gguf
from .quantize.encode import encode

Q = gguf.GGMLQuantizationType
FLOATS = (Q.F32, Q.F16, Q.BF16)
# Keys that describe how the source was quantized: rewritten, not copied.
REWRITTEN = ("general.file_type", "general.quantization_version", "general.quantized_by")


def open_source(src: str | Path) -> RawGGUF | gguf.GGUFReader:
    """The input file: read raw (fast, metadata copied verbatim) unless it is a packed file."""
    from .packed import is_packed

    path = Path(src)
    if path.is_file() and not is_packed(path):
        return RawGGUF(path)
    return open_gguf(path)


def copy_metadata(reader: RawGGUF | gguf.GGUFReader, w: gguf.GGUFWriter) -> None:
    for key, field in reader.fields.items():
        if key.startswith(("GGUF.", "gguf_tools.")) or key in REWRITTEN or key == "general.architecture":
            continue
        if isinstance(field, RawField):
            w.add_key_value(key, RawValue(field.raw), field.types[0])
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(key, field.contents(), vtype, sub_type=sub)


def quantize_gguf(
    src: str | Path,
    dst: str | Path | None,
    quant: str,
    *,
    imatrix: str | Path | None = None,
    mode: str = "default",
    allow_requantize: bool = False,
    overwrite: bool = True,
    progress: bool | None = None,
    threads: int | None = None,
) -> ConvertResult:
    """Re-encode every tensor of ``src`` at the preset's types; ``dst=None`` only plans."""
    start = time.perf_counter()
    preset = get_preset(quant)
    importance = None
    if imatrix is not None:
        from .imatrix.file import load_imatrix

        importance = load_imatrix(imatrix)
    reader = open_source(src)
    arch = str(reader.fields["general.architecture"].contents())
    plan = plan_gguf(reader, preset, has_imatrix=importance is not None)
    tensors = [OutTensor(t.name, tuple(int(d) for d in reversed(t.shape)), plan[t.name]) for t in reader.tensors]
    for t in reader.tensors:
        if t.tensor_type not in FLOATS and plan[t.name] != t.tensor_type and not allow_requantize:
            raise UnsupportedError(
                f"{src}: tensor {t.name} is already quantized ({t.tensor_type.name}); quantizing it again to"
                f" {plan[t.name].name} compounds the error: start from an F16/BF16/F32 file or pass --allow-requantize"
            )
    n_params = sum(int(np.prod(t.shape)) for t in tensors)
    types = dict(Counter(t.qtype.name for t in tensors))
    if dst is None:
        return ConvertResult(None, arch, 0, n_params, types, time.perf_counter() - start, plan)

    def add_metadata(w: gguf.GGUFWriter) -> None:
        copy_metadata(reader, w)
        add_quant_metadata(w, preset, tensors, imatrix, mode)

    data = _produce(reader, tensors, importance or {}, mode, progress, threads)
    size = write_gguf(Path(dst), arch, add_metadata, tensors, data, overwrite=overwrite)
    return ConvertResult(Path(dst), arch, size, n_params, types, time.perf_counter() - start, plan)


def _produce(reader: RawGGUF | gguf.GGUFReader, tensors: list[OutTensor], importance: dict[str, np.ndarray], mode: str,
             progress: bool | None, threads: int | None = None) -> Iterator[np.ndarray]:
    from .engine.kernels import dequantize

    bar = _progress_bar(sum(t.nbytes for t in tensors), progress)
    try:
        for src, out in zip(reader.tensors, tensors):
            raw = np.asarray(src.data)
            if src.tensor_type == out.qtype:
                if src.tensor_type in FLOATS:
                    _check_copied(raw, src.tensor_type, src.name)
                yield raw
            else:
                n_rows = int(np.prod(out.shape[:-1], dtype=np.int64)) if len(out.shape) > 1 else 1
                row_len = out.shape[-1]
                rows_raw = raw.reshape(n_rows, -1)
                step = max(1, CHUNK_BYTES // (4 * row_len))
                parts = []
                for r0 in range(0, n_rows, step):
                    block = rows_raw[r0 : r0 + step]
                    w = dequantize(src.tensor_type, block, (len(block), row_len))
                    _check_finite(w, src.name)
                    parts.append(encode(w, out.qtype, importance.get(src.name), mode=mode, threads=threads))
                    release_pages(block)
                yield np.concatenate(parts).reshape(-1) if len(parts) > 1 else parts[0]
            release_pages(raw)  # written: drop its mapped pages, or the whole source ends up resident
            if bar is not None:
                bar.update(out.nbytes)
    finally:
        if bar is not None:
            bar.close()


def _check_copied(raw: np.ndarray, qtype: Q, name: str) -> None:
    """A float tensor copied as it is must be finite too (the same rule as for encoded ones)."""
    if qtype == Q.BF16:
        bits = raw.view(np.uint16)
        if bits.size and ((bits & 0x7F80) == 0x7F80).any():
            raise InputError(f"tensor {name!r} contains NaN or Inf values")
    else:
        _check_finite(raw, name)
