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
from .gguf_file.layout import numpy_shape
from .gguf_file.reader import GGUFFile
from .gguf_file.writer import OutTensor, RawValue, write_gguf
from .plan import get_preset, plan_gguf
from .quantize.encode import encode

Q = gguf.GGMLQuantizationType
FLOATS = (Q.F32, Q.F16, Q.BF16)
# Keys that describe how the source was quantized: rewritten, not copied.
REWRITTEN = (gguf.Keys.General.FILE_TYPE, gguf.Keys.General.QUANTIZATION_VERSION,
             gguf.Keys.General.QUANTIZED_BY)


def copy_metadata(reader: GGUFFile, w: gguf.GGUFWriter) -> None:
    """Every key but the rewritten ones, in its encoded bytes (a tokenizer costs no re-encoding)."""
    for key, field in reader.fields.items():
        if key.startswith("gguf_tools.") or key in REWRITTEN or key == gguf.Keys.General.ARCHITECTURE:
            continue
        w.add_key_value(key, RawValue(field.raw), field.types[0])


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
    reader = GGUFFile.open(src)
    arch = reader.architecture
    plan = plan_gguf(reader, preset, has_imatrix=importance is not None)
    tensors = [OutTensor(t.name, numpy_shape(t.shape), plan[t.name]) for t in reader.tensors]
    for t in reader.tensors:
        if t.ggml_type not in FLOATS and plan[t.name] != t.ggml_type and not allow_requantize:
            raise UnsupportedError(
                f"{src}: tensor {t.name} is already quantized ({t.ggml_type.name}); quantizing it again to"
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


def _produce(reader: GGUFFile, tensors: list[OutTensor], importance: dict[str, np.ndarray], mode: str,
             progress: bool | None, threads: int | None = None) -> Iterator[np.ndarray]:
    from .engine.kernels import dequantize

    bar = _progress_bar(sum(t.nbytes for t in tensors), progress)
    try:
        for src, out in zip(reader.tensors, tensors):
            raw = reader.data(src)
            if src.ggml_type == out.qtype:
                if src.ggml_type in FLOATS:
                    _check_copied(raw, src.ggml_type, src.name)
                yield raw
            else:
                n_rows = int(np.prod(out.shape[:-1], dtype=np.int64)) if len(out.shape) > 1 else 1
                row_len = out.shape[-1]
                rows_raw = raw.reshape(n_rows, -1)
                step = max(1, CHUNK_BYTES // (4 * row_len))
                parts = []
                for r0 in range(0, n_rows, step):
                    block = rows_raw[r0 : r0 + step]
                    w = dequantize(src.ggml_type, block, (len(block), row_len))
                    _check_finite(w, src.name)
                    parts.append(encode(w, out.qtype, importance.get(src.name), mode=mode, threads=threads))
                yield np.concatenate(parts).reshape(-1) if len(parts) > 1 else parts[0]
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
