"""A budgeted plan as a table (``--plan``) or as data (``--plan --json``)."""
from __future__ import annotations

from ..gguf_file import layout
from .budget import BudgetPlan


def plan_rows(plan: BudgetPlan, shapes: dict[str, tuple[int, ...]]) -> list[dict]:
    """One row per tensor: type, bits per weight, bytes, predicted dKLD and its share of the plan's."""
    total = plan.predicted_kld or 1.0
    rows = []
    for name, q in plan.types.items():
        n = layout.n_elements(shapes[name])
        b = plan.tensor_bytes.get(name, 0)
        d = plan.damage.get(name, 0.0)
        rows.append({"name": name, "shape": list(shapes[name]), "type": q.name,
                     "bits_per_weight": round(8 * b / max(n, 1), 4), "bytes": b,
                     "predicted_dkld": d, "damage_share": d / total if plan.predicted_kld else 0.0})
    return rows


def as_dict(plan: BudgetPlan, shapes: dict[str, tuple[int, ...]], n_params: int) -> dict:
    return {
        "target_size": plan.target,
        "size": plan.size,
        "bits_per_weight": round(plan.size * 8 / max(n_params, 1), 4),
        "predicted_kld": plan.predicted_kld,
        "chosen": plan.chosen,
        "measured_kld": plan.measured_kld,
        "rival_preset": plan.rival,
        "rival_size": plan.rival_size,
        "rival_kld": plan.rival_kld,
        "notes": plan.notes,
        "tensors": plan_rows(plan, shapes),
    }


def format_plan(plan: BudgetPlan, shapes: dict[str, tuple[int, ...]], n_params: int) -> str:
    rows = plan_rows(plan, shapes)
    lines = [f"{'tensor':<34} {'type':<7} {'bpw':>6} {'bytes':>12} {'damage':>7}"]
    for r in rows:
        lines.append(f"{r['name']:<34} {r['type']:<7} {r['bits_per_weight']:>6.2f} {r['bytes']:>12,}"
                     f" {100 * r['damage_share']:>6.1f}%")
    lines.append("")
    lines.append(summary(plan, n_params))
    return "\n".join(lines)


def summary(plan: BudgetPlan, n_params: int) -> str:
    """Two lines: the plan against its budget, and against the preset it had to beat."""
    out = (f"{plan.size:,} bytes ({plan.size / 1e6:.2f} MB, {plan.size * 8 / max(n_params, 1):.3f} bpw) for a target"
           f" of {plan.target:,}; predicted KLD {plan.predicted_kld:.5f}")
    if plan.measured_kld is not None:
        out += f", measured {plan.measured_kld:.5f}"
    if plan.rival is not None:
        out += f"\nbest preset under the target: {plan.rival} ({plan.rival_size:,} bytes"
        out += f", measured KLD {plan.rival_kld:.5f})" if plan.rival_kld is not None else ")"
    if plan.chosen != "plan":
        out += f"\nwritten: {plan.chosen} (it measured better than the plan)"
    return out
