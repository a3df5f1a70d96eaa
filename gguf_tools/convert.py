"""Hugging Face checkpoint -> GGUF: the converter's one pipeline.

checkpoint -> architecture map -> type per tensor -> encode -> streaming writer, one tensor at a time.
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import gguf
import numpy as np

from .errors import InputError
from .files import atomic_output
from .gguf_file.writer import OutTensor, write_gguf
from .hf.checkpoint import Checkpoint, open_checkpoint
from .hf.families import TensorJob, add_hparams, detect_family, plan_tensors, read_hparams
from .hf.naming import model_name, size_label
from .hf.provenance import add_provenance
from .pipeline import Progress, WriteResult, add_quant_metadata, reporting
from .plan import TensorSpec, get_preset, plan_types
from .quantize.encode import encode_tensor
from .tokenizer import add_tokenizer_metadata, load_tokenizer

Q = gguf.GGMLQuantizationType

def tensor_specs(jobs: list[TensorJob]) -> list[TensorSpec]:
    """What the planner sees: an HF checkpoint behaves like llama.cpp's F16 export (1-D kept F32)."""
    return [TensorSpec.from_row_major(j.name, j.shape, Q.F32 if len(j.shape) < 2 else Q.F16) for j in jobs]


def convert(
    src: str | Path,
    output: str | Path | None,
    *,
    quant: str = "F16",
    imatrix: str | Path | None = None,
    search: str = "default",
    allow_pickle: bool = False,
    overwrite: bool = True,
    progress: Progress | None = None,
    pre_tokenizer: str | None = None,
    pack: bool = False,
) -> WriteResult:
    """Convert a Hugging Face model directory (or HF cache snapshot) into one GGUF file.

    ``quant`` is a preset (F16, Q8_0, Q4_K_M, ...); with ``output=None`` only the plan is made.
    ``search`` is the block search (gguf_tools.quantize.SEARCHES). ``progress(done, total)`` hears the bytes
    of tensor data encoded (gguf_tools.pipeline.Progress). ``pack=True`` writes the Huffman-packed file
    (docs/packed-format.md) instead of the GGUF.
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
            return WriteResult(None, arch, 0, n_params, types, time.perf_counter() - start, plan, spec.notes)
        output = Path(output)

        def add_metadata(w: gguf.GGUFWriter) -> None:
            w.add_type(gguf.GGUFType.MODEL)
            w.add_name(model_name(ckpt.config, ckpt.root))
            w.add_size_label(size_label(n_params))
            add_provenance(w, ckpt.root)
            add_hparams(w, family, ckpt.config, hp)
            add_quant_metadata(w, preset, tensors, imatrix, search)
            add_tokenizer_metadata(w, spec)

        encoded = reporting(_produce(ckpt, jobs, tensors, importance or {}, search), tensors, progress)
        packed_size = None
        if pack:
            size, packed_size = _write_packed(
                output, overwrite, lambda dest: write_gguf(dest, arch, add_metadata, tensors, encoded))
        else:
            size = write_gguf(output, arch, add_metadata, tensors, encoded, overwrite=overwrite)
    return WriteResult(output, arch, size, n_params, types, time.perf_counter() - start, plan, spec.notes,
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


def _produce(ckpt: Checkpoint, jobs: list[TensorJob], tensors: list[OutTensor], importance: dict[str, np.ndarray],
             search: str) -> Iterator[np.ndarray]:
    """Each tensor's bytes in order."""
    for job, t in zip(jobs, tensors):
        yield encode_tensor(_rows(ckpt, job), job.shape, t.qtype, job.source or job.name, importance.get(job.name),
                            search=search)


def _rows(ckpt: Checkpoint, job: TensorJob) -> Callable[[int, int], np.ndarray]:
    """read(r0, r1) for encode_tensor. Plain 2-D copies are read from the checkpoint slice by slice, so only the
    output is held whole; computed or transformed tensors are made whole first."""
    label = job.source or job.name
    if job.source is not None and job.transform is None and len(job.shape) == 2:
        if tuple(ckpt.shape(job.source)) != job.shape:
            raise InputError(f"tensor {label!r}: shape {ckpt.shape(job.source)} does not match {job.shape}")
        return lambda r0, r1: ckpt.load(job.source, slice(r0, r1))
    arr = job.transform(ckpt.load(job.source) if job.source is not None else None) if job.transform \
        else ckpt.load(job.source)
    if arr.shape != job.shape:
        raise InputError(f"tensor {label!r}: shape {arr.shape} does not match the expected {job.shape}")
    rows = arr.reshape(-1, arr.shape[-1])
    return lambda r0, r1: rows[r0:r1]

