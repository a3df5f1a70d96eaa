"""Hugging Face checkpoint -> GGUF: the converter's one pipeline.

checkpoint -> architecture map -> type per tensor -> encode -> streaming writer, one tensor at a time.
"""
from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np

from . import __version__
from .errors import InputError
from .files import atomic_output
from .gguf_file.writer import OutTensor, write_gguf
from .hf.checkpoint import Checkpoint, open_checkpoint
from .hf.families import TensorJob, add_hparams, detect_family, plan_tensors, read_hparams
from .hf.provenance import add_provenance
from .plan import Plan, TensorSpec, get_preset, plan_types
from .quantize.encode import encode
from .tokenizer import add_tokenizer_metadata, load_tokenizer

Q = gguf.GGMLQuantizationType

@dataclass
class ConvertResult:
    output: Path | None
    arch: str
    size: int
    n_params: int
    types: dict[str, int] = field(default_factory=dict)  # type name -> tensor count
    seconds: float = 0.0
    plan: Plan | None = None
    notes: list[str] = field(default_factory=list)  # what the user should hear about, e.g. tokenizer gaps
    packed_size: int | None = None  # bytes on disk when the output was packed (``size`` is the GGUF's)

    @property
    def bits_per_weight(self) -> float:
        return self.size * 8 / max(self.n_params, 1)

    def as_dict(self) -> dict:
        return {
            "output": str(self.output) if self.output else None,
            "arch": self.arch,
            "size": self.size,
            **({"packed_size": self.packed_size} if self.packed_size is not None else {}),
            "n_params": self.n_params,
            "bits_per_weight": round(self.bits_per_weight, 4),
            "types": self.types,
            "seconds": round(self.seconds, 3),
            "notes": self.notes,
        }


def tensor_specs(jobs: list[TensorJob]) -> list[TensorSpec]:
    """What the planner sees: an HF checkpoint behaves like llama.cpp's F16 export (1-D kept F32)."""
    return [TensorSpec.from_row_major(j.name, j.shape, Q.F32 if len(j.shape) < 2 else Q.F16) for j in jobs]


def convert(
    src: str | Path,
    output: str | Path | None,
    *,
    quant: str = "F16",
    imatrix: str | Path | None = None,
    mode: str = "default",
    allow_pickle: bool = False,
    overwrite: bool = True,
    progress: bool | None = None,
    pre_tokenizer: str | None = None,
    pack: bool = False,
) -> ConvertResult:
    """Convert a Hugging Face model directory (or HF cache snapshot) into one GGUF file.

    ``quant`` is a preset (F16, Q8_0, Q4_K_M, ...); with ``output=None`` only the plan is made.
    ``pack=True`` writes the Huffman-packed file (docs/packed-format.md) instead of the GGUF.
    """
    preset = get_preset(quant)
    importance = None
    if imatrix is not None:
        from .imatrix.file import load_imatrix

        importance = load_imatrix(imatrix)
    start = time.perf_counter()
    with open_checkpoint(src, allow_pickle=allow_pickle) as ckpt:
        family = detect_family(ckpt.config)
        hp = read_hparams(ckpt.config)
        spec = load_tokenizer(ckpt.root, ckpt.config, pre=pre_tokenizer)
        jobs = plan_tensors(family, ckpt.config, hp, ckpt.names(), ckpt.shape, len(spec.tokens))
        arch = gguf.MODEL_ARCH_NAMES[family.arch]
        plan = plan_types(tensor_specs(jobs), arch, preset, n_layers=hp.n_layer, n_head=hp.n_head,
                          n_head_kv=hp.n_head_kv, has_imatrix=importance is not None)
        tensors = [OutTensor(j.name, j.shape, plan[j.name]) for j in jobs]
        n_params = sum(int(np.prod(t.shape)) for t in tensors)
        types = dict(Counter(t.qtype.name for t in tensors))
        if output is None:
            return ConvertResult(None, arch, 0, n_params, types, time.perf_counter() - start, plan, spec.notes)
        output = Path(output)

        def add_metadata(w: gguf.GGUFWriter) -> None:
            w.add_type(gguf.GGUFType.MODEL)
            w.add_name(_model_name(ckpt))
            add_provenance(w, ckpt.root, n_params)
            add_hparams(w, family, ckpt.config, hp)
            add_quant_metadata(w, preset, tensors, imatrix, mode)
            add_tokenizer_metadata(w, spec)

        encoded = _produce(ckpt, jobs, tensors, progress, importance or {}, mode)
        packed_size = None
        if pack:
            size, packed_size = _write_packed(
                output, overwrite, lambda dest: write_gguf(dest, arch, add_metadata, tensors, encoded))
        else:
            size = write_gguf(output, arch, add_metadata, tensors, encoded, overwrite=overwrite)
    return ConvertResult(output, arch, size, n_params, types, time.perf_counter() - start, plan, spec.notes,
                         packed_size)


def _write_packed(output: Path, overwrite: bool, write: Callable[[Path], int]) -> tuple[int, int]:
    """The GGUF goes to a temporary file beside ``output``, is packed into place, and is removed:
    nothing but the finished packed file is ever left. Returns the GGUF's size and the packed size."""
    from .packed import pack

    with atomic_output(output, overwrite=overwrite) as staged:
        raw = staged.with_name(staged.name + ".gguf")
        try:
            size = write(raw)
            packed = pack(raw, staged)
        finally:
            raw.unlink(missing_ok=True)
    return size, packed.packed_size


def add_quant_metadata(w: gguf.GGUFWriter, preset, tensors: list[OutTensor], imatrix, mode: str) -> None:
    """The file type llama.cpp reports, plus how this file's precision was chosen (provenance)."""
    w.add_file_type(preset.ftype)
    if any(t.qtype not in (Q.F32, Q.F16, Q.BF16) for t in tensors):
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        w.add_string("gguf_tools.quant.search", mode)
    w.add_string("general.quantized_by", f"gguf-tools {__version__}")
    w.add_string("gguf_tools.quant.preset", preset.name)
    if imatrix is not None:
        w.add_string("gguf_tools.quant.imatrix", Path(imatrix).name)


CHUNK_BYTES = 16 * 2**20  # f32 bytes per slice of a large tensor: bounds peak memory


def _produce(
    ckpt: Checkpoint, jobs: list[TensorJob], tensors: list[OutTensor], progress: bool | None,
    importance: dict[str, np.ndarray], mode: str,
) -> Iterator[np.ndarray]:
    bar = _progress_bar(sum(t.nbytes for t in tensors), progress)
    try:
        for job, t in zip(jobs, tensors):
            yield _encode_job(ckpt, job, t, importance.get(job.name), mode)
            if bar is not None:
                bar.update(t.nbytes)
    finally:
        if bar is not None:
            bar.close()


def _encode_job(ckpt: Checkpoint, job: TensorJob, t: OutTensor, imp: np.ndarray | None, mode: str) -> np.ndarray:
    """Encode one tensor; plain 2-D copies go slice by slice so only the output is held whole."""
    label = job.source or job.name
    if job.source is None or job.transform is not None or len(job.shape) != 2:
        arr = job.transform(ckpt.load(job.source) if job.source is not None else None) if job.transform \
            else ckpt.load(job.source)
        if arr.shape != job.shape:
            raise InputError(f"tensor {label!r}: shape {arr.shape} does not match the expected {job.shape}")
        _check_finite(arr, label)
        return encode(arr, t.qtype, imp, mode=mode)
    if tuple(ckpt.shape(job.source)) != job.shape:
        raise InputError(f"tensor {label!r}: shape {ckpt.shape(job.source)} does not match {job.shape}")
    n_rows, row_len = job.shape
    step = max(1, CHUNK_BYTES // (4 * row_len))
    out = None
    for r0 in range(0, n_rows, step):
        part = ckpt.load(job.source, slice(r0, min(n_rows, r0 + step)))
        _check_finite(part, label)
        enc = encode(part, t.qtype, imp, mode=mode)
        if out is None:
            out = np.empty((n_rows, *enc.shape[1:]), dtype=enc.dtype)
        out[r0 : r0 + len(part)] = enc
    return out


def _check_finite(arr: np.ndarray, label: str) -> None:
    if arr.size and not (np.isfinite(arr.min()) and np.isfinite(arr.max())):
        raise InputError(f"tensor {label!r} contains NaN or Inf values")


def _progress_bar(total: int, progress: bool | None):
    if progress is False or (progress is None and not sys.stderr.isatty()):
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="writing", file=sys.stderr)


def _model_name(ckpt: Checkpoint) -> str:
    name = ckpt.config.get("_name_or_path")
    if isinstance(name, str) and name.strip():
        return Path(name.rstrip("/")).name
    root = ckpt.root
    if root.parent.name == "snapshots" and root.parent.parent.name.startswith("models--"):
        return root.parent.parent.name.split("--")[-1]
    return root.name
