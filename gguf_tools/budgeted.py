"""The file that fits a budget: ``convert`` / ``quantize`` with ``--target-size`` or ``--bpw``.

Measure (or read from the cache) the source's sensitivity, plan the types that fit the bytes, write them, then measure
the written file against the largest llama.cpp preset under the same budget and keep the preset if it is better.
A Hugging Face checkpoint is first converted to an F16 GGUF in a scratch directory beside the output: the reference
engine and the tokenizer read GGUF.
"""
from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import gguf
import numpy as np

from .errors import OutputError, UsageError
from .gguf_file.layout import numpy_shape
from .gguf_file.writer import OutTensor, header_size, write_gguf
from .packed import open_gguf
from .pipeline import Progress, WriteResult, add_quant_metadata, reporting
from .plan import PRESETS, Preset
from .requantize import FLOATS, check_sources, copy_metadata, produce

Q = gguf.GGMLQuantizationType


def quantize_to_budget(
    src: str | Path,
    dst: str | Path | None,
    *,
    calibration: str,
    target_size: int | None = None,
    bpw: float | None = None,
    imatrix: str | Path | None = None,
    search: str = "default",
    cluster: str | None = None,
    verify: bool = True,
    allow_requantize: bool = False,
    overwrite: bool = True,
    progress: Progress | None = None,
    events=None,
    threads: int | None = None,
    cache_dir: str | Path | None = None,
    curve: bool = False,
) -> WriteResult:
    """The best file of ``src`` that fits ``target_size`` bytes (or ``bpw`` bits per weight), metadata included.

    Sensitivity is measured on the ``calibration`` text (or read from the cache); the plan is written, then measured
    against the largest llama.cpp preset under the same budget, which is kept instead when it measures better
    (``verify=False`` skips that). ``dst=None`` only plans. ``result.budget`` holds the plan and the figures;
    ``curve=True`` adds the predicted size/KLD curve and the presets' points (for ``--plot``).
    """
    from .planner.budget import best_rival, check_reachable, plan_budget, predicted, size_curve
    from .planner.measure import file_kld, file_klds, measure
    from .planner.reuse import Encodings
    from .planner.sizes import bpw_bytes

    start = time.perf_counter()
    if (target_size is None) == (bpw is None):
        raise UsageError("give one of a target size and bits per weight")
    reader = open_gguf(src)
    arch = reader.architecture
    n_params = sum(int(np.prod(t.shape)) for t in reader.tensors)
    target = int(target_size) if target_size is not None else bpw_bytes(bpw, n_params)
    importance = None
    if imatrix is not None:
        from .imatrix.file import load_imatrix

        importance = load_imatrix(imatrix)

    header = _header(reader, target, imatrix, search)
    check_reachable(reader, target, header)
    encoded = Encodings()   # the probes' encodings, then the plan's, for the files written after them
    sens = measure(src, calibration, imatrix=imatrix, search=search, cluster=cluster, threads=threads,
                   cache_dir=cache_dir, events=events, keep=encoded)
    plan = plan_budget(reader, sens, target, header)
    check_sources(src, reader, plan.types, allow_requantize)
    rival = best_rival(reader, target, header, has_imatrix=importance is not None)
    if curve:
        plan.curve, plan.presets = size_curve(reader, sens, header, has_imatrix=importance is not None)
    if rival is not None:
        plan.rival, plan.rival_size = rival[0], rival[2]
    types = dict(Counter(q.name for q in plan.types.values()))
    result = WriteResult(None, arch, 0, n_params, types, 0.0, None)
    result.budget, result.sensitivity = plan, sens
    if dst is None:
        result.seconds = time.perf_counter() - start
        return result

    def write(path: Path, types: dict[str, Q], kld: float, chosen: str, report: Progress | None) -> int:
        outs = _shaped(reader, types)
        data = reporting(produce(reader, outs, importance or {}, search, threads, encoded), outs, report)
        meta = _metadata(reader, types, target, kld, chosen, imatrix, search)
        return write_gguf(path, arch, meta, outs, data, overwrite=True)

    dst = Path(dst)
    if dst.exists() and not overwrite:
        raise OutputError(f"{dst} exists (pass --force to replace it)")
    size = write(dst, plan.types, plan.predicted_kld, "plan", progress)
    if verify and rival is not None:
        name, rival_types, _ = rival
        label = f"preset {name}"
        plan.rival_kld = sens.kld.get(label)
        kept = None
        if plan.rival_kld is None:
            kept = dst.with_name(f".{dst.name}.{name}.rival")
            try:
                write(kept, rival_types, predicted(reader, sens, rival_types), label, None)
                plan.measured_kld, plan.rival_kld = file_klds([dst, kept], sens, threads)
                sens.remember(label, plan.rival_kld)
            except BaseException:
                kept.unlink(missing_ok=True)
                raise
        else:
            plan.measured_kld = file_kld(dst, sens, threads)
        if plan.rival_kld < plan.measured_kld:
            plan.chosen = label
            plan.notes.append(f"kept {name}: it measured KLD {plan.rival_kld:.5f}, the plan {plan.measured_kld:.5f}")
            if kept is not None:
                os.replace(kept, dst)
            else:
                write(dst, rival_types, predicted(reader, sens, rival_types), label, None)
            plan.types = dict(rival_types)
            size = dst.stat().st_size
            result.types = dict(Counter(q.name for q in plan.types.values()))
        elif kept is not None:
            kept.unlink(missing_ok=True)
    result.output, result.size = dst, size
    result.seconds = time.perf_counter() - start
    return result


def _shaped(reader, types: dict[str, Q]) -> list[OutTensor]:
    return [OutTensor(t.name, numpy_shape(t.shape), types[t.name]) for t in reader.tensors]


def _metadata(reader, types: dict[str, Q], target: int, kld: float, chosen: str, imatrix, search: str):
    """The writer callback adding the source's metadata, the quantization keys and the recorded plan."""
    from .gguf_file.plan_record import add_plan_metadata

    outs = _shaped(reader, types)
    preset = _file_type(types)

    def add(w: gguf.GGUFWriter) -> None:
        copy_metadata(reader, w)
        add_quant_metadata(w, preset, outs, imatrix, search)
        add_plan_metadata(w, target, list(types.values()), kld, chosen)
    return add


def _header(reader, target: int, imatrix, search: str) -> int:
    """A planned file's header bytes, padded (fixed whatever the types: the plan keys hold type ids)."""
    from .gguf_file.plan_record import HEADER_SLACK

    floats = {t.name: Q.F16 if t.ggml_type in FLOATS else t.ggml_type for t in reader.tensors}
    return header_size(reader.architecture, _metadata(reader, floats, target, 0.0, "plan", imatrix, search),
                       _shaped(reader, floats)) + HEADER_SLACK


def plan_sizes(src: str | Path, *, imatrix: str | Path | None = None, search: str = "default") -> tuple[int, int, int]:
    """(header, smallest file, largest file) of a plan of ``src``, in bytes, nothing measured: for a caller with a
    budget of its own (``package --device``). ``header`` is the metadata a planned file has at least; a file's tensor
    data is its size less that."""
    from .gguf_file.plan_record import HEADER_SLACK
    from .planner.allocate import reachable
    from .planner.budget import options

    reader = open_gguf(src)
    fixed = _header(reader, 0, imatrix, search)
    lo, hi = reachable(options(reader, None), fixed)
    return fixed - HEADER_SLACK, lo, hi


def _file_type(types: dict[str, Q]) -> Preset:
    """What ``general.file_type`` says of a mixture: the preset of its most common quantized type (by tensors)."""
    counts = Counter(q for q in types.values() if q not in FLOATS)
    if not counts:
        return PRESETS["F16"]
    base = counts.most_common(1)[0][0]
    for p in PRESETS.values():
        if p.base == base:
            return Preset("plan", p.ftype, base)
    ftype = gguf.LlamaFileType.MOSTLY_IQ4_NL if base == Q.IQ4_NL else gguf.LlamaFileType.MOSTLY_Q4_K_M
    return Preset("plan", ftype, base)


def convert_to_budget(src: str | Path, output: str | Path | None, *, calibration: str, allow_pickle: bool = False,
                      pre_tokenizer: str | None = None, **options) -> WriteResult:
    """``quantize_to_budget`` of the F16 GGUF that ``convert`` makes of the checkpoint ``src`` (made in a scratch
    directory beside ``output`` and removed)."""
    from .convert import convert

    where = Path(output).resolve().parent if output is not None else None
    with tempfile.TemporaryDirectory(prefix=".gguf-tools-plan-", dir=where) as tmp:
        f16 = Path(tmp) / "source.f16.gguf"
        first = convert(src, f16, quant="F16", allow_pickle=allow_pickle, pre_tokenizer=pre_tokenizer)
        result = quantize_to_budget(f16, output, calibration=calibration, **options)
    result.notes = first.notes + result.notes
    return result
