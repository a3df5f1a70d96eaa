"""GGUF -> GGUF at another preset: the `quantize` command (llama-quantize's job, with our blocks)."""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path

import gguf
import numpy as np

from .errors import UnsupportedError
from .files import release_pages
from .gguf_file.layout import numpy_shape
from .gguf_file.reader import GGUFFile
from .gguf_file.writer import OutTensor, RawValue, write_gguf
from .packed import open_gguf
from .pipeline import Progress, WriteResult, add_quant_metadata, reporting
from .plan import get_preset, plan_gguf
from .quantize import check_finite
from .quantize.encode import encode_tensor

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


def check_sources(src: str | Path, reader: GGUFFile, types: dict[str, Q], allow_requantize: bool) -> None:
    """Refuse to quantize an already quantized tensor to another type unless asked: the errors would compound."""
    for t in reader.tensors:
        if t.ggml_type not in FLOATS and types[t.name] != t.ggml_type and not allow_requantize:
            raise UnsupportedError(
                f"{src}: tensor {t.name} is already quantized ({t.ggml_type.name}); quantizing it again to"
                f" {types[t.name].name} compounds the error: start from an F16/BF16/F32 file or pass --allow-requantize"
            )


def quantize_gguf(
    src: str | Path,
    dst: str | Path | None,
    quant: str,
    *,
    imatrix: str | Path | None = None,
    search: str = "default",
    allow_requantize: bool = False,
    overwrite: bool = True,
    progress: Progress | None = None,
    threads: int | None = None,
) -> WriteResult:
    """Re-encode every tensor of ``src`` at the preset's types; ``dst=None`` only plans.

    ``search`` and ``progress`` are as for ``convert``; ``threads`` bounds the block search.
    """
    start = time.perf_counter()
    preset = get_preset(quant)
    importance = None
    if imatrix is not None:
        from .imatrix.file import load_imatrix

        importance = load_imatrix(imatrix)
    reader = open_gguf(src)
    arch = reader.architecture
    plan = plan_gguf(reader, preset, has_imatrix=importance is not None)
    tensors = [OutTensor(t.name, numpy_shape(t.shape), plan[t.name]) for t in reader.tensors]
    check_sources(src, reader, plan, allow_requantize)
    n_params = sum(int(np.prod(t.shape)) for t in tensors)
    types = dict(Counter(t.qtype.name for t in tensors))
    if dst is None:
        return WriteResult(None, arch, 0, n_params, types, time.perf_counter() - start, plan)

    def add_metadata(w: gguf.GGUFWriter) -> None:
        copy_metadata(reader, w)
        add_quant_metadata(w, preset, tensors, imatrix, search)

    data = reporting(produce(reader, tensors, importance or {}, search, threads), tensors, progress)
    size = write_gguf(Path(dst), arch, add_metadata, tensors, data, overwrite=overwrite)
    return WriteResult(Path(dst), arch, size, n_params, types, time.perf_counter() - start, plan)


def produce(reader: GGUFFile, tensors: list[OutTensor], importance: dict[str, np.ndarray],
             search: str, threads: int | None, known: MutableMapping | None = None) -> Iterator[np.ndarray]:
    """Each tensor's bytes in order: copied when its type stays (floats checked finite), else re-encoded.

    ``known`` maps (name, type) to bytes already encoded with the same importance and search (read, and filled with
    what is encoded here): a budgeted quantize writes the plan and a preset from one source."""
    for src, out in zip(reader.tensors, tensors):
        raw = reader.data(src)
        if src.ggml_type == out.qtype:
            if src.ggml_type in FLOATS:
                check_finite(raw, src.name, bf16_bits=src.ggml_type == Q.BF16)
            yield raw
        elif known is not None and (src.name, out.qtype) in known:
            yield known[src.name, out.qtype]
        else:
            enc = encode_tensor(_rows(raw, src.ggml_type, out.shape), out.shape, out.qtype, src.name,
                                importance.get(src.name), search=search, threads=threads)
            if known is not None:
                known[src.name, out.qtype] = enc
            yield enc
        release_pages(raw)  # written: drop its mapped pages, or the whole source ends up resident


def _rows(raw: np.ndarray, qtype: Q, shape: tuple[int, ...]) -> Callable[[int, int], np.ndarray]:
    """read(r0, r1) for encode_tensor: rows r0..r1 of a stored tensor, dequantized to float32."""
    from .engine.kernels import dequantize

    rows = raw.reshape(int(np.prod(shape[:-1], dtype=np.int64)), -1)

    def read(r0: int, r1: int) -> np.ndarray:
        w = dequantize(qtype, rows[r0:r1], (r1 - r0, shape[-1]))
        release_pages(rows[r0:r1])  # read once: keep the source's resident pages to one slice
        return w

    return read
