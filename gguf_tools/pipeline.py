"""What the two pipelines (convert, requantize) share: the result they return, the provenance metadata they
record, and how they report progress (a callback: only the CLI draws)."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np

from . import __version__
from .gguf_file.writer import OutTensor
from .plan import Plan, Preset

Q = gguf.GGMLQuantizationType

# progress(done, total): bytes of tensor data encoded so far, of all; called with done=0 first, then as each
# tensor is handed to the writer.
Progress = Callable[[int, int], None]


@dataclass
class WriteResult:
    """What ``convert`` and ``quantize_gguf`` made; with ``output=None`` only the plan was made (size 0)."""

    output: Path | None
    arch: str
    size: int
    n_params: int
    types: dict[str, int] = field(default_factory=dict)  # type name -> tensor count
    seconds: float = 0.0
    plan: Plan | None = None
    notes: list[str] = field(default_factory=list)  # what the user should hear about, e.g. tokenizer gaps
    packed_size: int | None = None  # bytes on disk when the output was packed (``size`` is the GGUF's)
    budget: object | None = None  # planner.budget.BudgetPlan, when the types were planned for a size budget
    sensitivity: object | None = None  # planner.measure.Sensitivity behind that plan

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


def add_quant_metadata(w: gguf.GGUFWriter, preset: Preset, tensors: list[OutTensor], imatrix: str | Path | None,
                       search: str) -> None:
    """The file type llama.cpp reports, plus how this file's precision was chosen (provenance)."""
    w.add_file_type(preset.ftype)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)  # as llama.cpp's converter, float files included
    if any(t.qtype not in (Q.F32, Q.F16, Q.BF16) for t in tensors):
        w.add_string("gguf_tools.quant.search", search)
    w.add_string("general.quantized_by", f"gguf-tools {__version__}")
    w.add_string("gguf_tools.quant.preset", preset.name)
    if imatrix is not None:
        w.add_string("gguf_tools.quant.imatrix", Path(imatrix).name)


def reporting(data: Iterable[np.ndarray], tensors: list[OutTensor], progress: Progress | None) -> Iterator[np.ndarray]:
    """``data`` unchanged, calling ``progress`` as each tensor is ready for the writer (encoding is the slow part;
    the writer may stop pulling after the last tensor, so nothing is reported after a yield)."""
    if progress is None:
        yield from data
        return
    total = sum(t.nbytes for t in tensors)
    done = 0
    progress(done, total)
    for arr in data:
        done += arr.nbytes
        progress(done, total)
        yield arr
