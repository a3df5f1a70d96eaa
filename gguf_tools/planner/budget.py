"""From measured sensitivity and a byte budget to a type per tensor, and the presets it competes with."""
from __future__ import annotations

from dataclasses import dataclass, field

import gguf

from ..gguf_file.reader import GGUFFile
from ..plan import TensorSpec, plan_gguf
from .allocate import TOLERANCE, Allocation, Option, allocate, check_budget, reachable
from .candidates import candidates, cost
from .measure import Sensitivity

Q = gguf.GGMLQuantizationType

# The llama.cpp presets a plan must beat (the float ones are never smaller than a plan's largest file).
RIVALS = ("Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_0", "Q4_1", "Q4_K_S", "Q4_K_M", "Q5_0", "Q5_1", "Q5_K_S",
          "Q5_K_M", "Q6_K", "Q8_0")


@dataclass
class BudgetPlan:
    """The types of a budgeted file, what they are predicted to cost, and what the verification found."""

    target: int
    types: dict[str, Q]                      # every tensor, in the source's order
    size: int                                # the file's bytes, header included
    predicted_kld: float
    tensor_bytes: dict[str, int]
    damage: dict[str, float]
    chosen: str = "plan"                     # "plan", or the preset kept because it measured better
    measured_kld: float | None = None
    rival: str | None = None                 # the best preset under the budget
    rival_size: int | None = None
    rival_kld: float | None = None
    notes: list[str] = field(default_factory=list)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)   # GGUF order
    curve: list[tuple[int, float]] = field(default_factory=list)        # (bytes, predicted KLD) of plans
    presets: dict[str, tuple[int, float]] = field(default_factory=dict)  # name -> (bytes, predicted KLD)


def specs(f: GGUFFile) -> list[TensorSpec]:
    return [TensorSpec(t.name, t.shape, t.ggml_type) for t in f.tensors]


def options(f: GGUFFile, sens: Sensitivity | None) -> dict[str, list[Option]]:
    """Every tensor's candidates at their byte cost and predicted damage (one free option for a kept tensor; no
    damage at all without ``sens``, enough to know the reachable sizes)."""
    out = {}
    for s in specs(f):
        out[s.name] = [Option(q.name, cost(s, q), sens.damage(s.name, q.name) if sens and s.name in sens.errors
                              else 0.0) for q in candidates(s, f.architecture)]
    return out


def check_reachable(f: GGUFFile, target: int, header: int) -> None:
    """BudgetError, with the range, when no choice of types lands in [target - 1%, target]: before any measuring."""
    check_budget(options(f, None), header, target)


def plan_budget(f: GGUFFile, sens: Sensitivity, target: int, header: int) -> BudgetPlan:
    """The least-damage types whose file, ``header`` bytes (metadata, padded) included, is at most ``target``."""
    a: Allocation = allocate(options(f, sens), header, target)
    plan = BudgetPlan(target, {n: Q[a.types[n]] for n in (t.name for t in f.tensors)}, a.total, a.predicted,
                      a.bytes, a.damage, shapes={t.name: tuple(t.shape) for t in f.tensors})
    if a.total < target * (1 - TOLERANCE):
        plan.notes.append(f"no mix of types comes within 1% below {target:,} bytes (the next step up is a tensor"
                          f" too large for the bytes left); the file is {a.total:,} bytes")
    return plan


def preset_size(f: GGUFFile, types: dict[str, Q], header: int) -> int:
    return header + sum(cost(s, types[s.name]) for s in specs(f))


def rivals(f: GGUFFile, header: int, *, has_imatrix: bool) -> list[tuple[str, dict[str, Q], int]]:
    """Every rival preset of ``f``: (name, types, file bytes)."""
    out = []
    for name in RIVALS:
        types = dict(plan_gguf(f, name, has_imatrix=has_imatrix))
        out.append((name, types, preset_size(f, types, header)))
    return out


def best_rival(f: GGUFFile, target: int, header: int, *, has_imatrix: bool) -> tuple[str, dict[str, Q], int] | None:
    """The largest preset file at most ``target`` bytes: (name, types, bytes), or None when none fits."""
    fitting = [r for r in rivals(f, header, has_imatrix=has_imatrix) if r[2] <= target]
    return max(fitting, key=lambda r: r[2], default=None)


def predicted(f: GGUFFile, sens: Sensitivity, types: dict[str, Q]) -> float:
    """The predicted KLD of any set of types (a preset's, for the size/KLD curve)."""
    return sum(sens.damage(n, q.name) for n, q in types.items() if n in sens.errors)


def size_curve(f: GGUFFile, sens: Sensitivity, header: int, *, points: int = 10,
               has_imatrix: bool = False) -> tuple[list[tuple[int, float]], dict[str, tuple[int, float]]]:
    """Predicted KLD of plans at ``points`` budgets across the reachable range, and of every preset."""
    opts = options(f, sens)
    lo, hi = reachable(opts, header)
    curve = []
    for i in range(points):
        target = int(lo + (hi - lo) * (i / (points - 1)) ** 2) if points > 1 else hi
        a = allocate(opts, header, max(target, lo))
        curve.append((a.total, a.predicted))
    presets = {name: (size, predicted(f, sens, types))
               for name, types, size in rivals(f, header, has_imatrix=has_imatrix)}
    return curve, presets
