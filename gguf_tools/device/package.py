"""package / install: from a checkpoint or a GGUF to a verified, device-ready directory, and back out.

package: choose the quant (given, or with ``device`` the best preset whose ``fit`` verdict is
``fits``; with calibration text, the budgeted planner's file for the weights' share of the budget),
write the model (split under a file-size limit when needed), manifest.json and a README.md model
card, all in a temporary directory renamed into place at the end: an error leaves nothing
half-written. A smoke test, when asked for, is a callback (the runtime lives above this stage).
(install, the way back out, is install.py.)
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gguf

from ..errors import ResourceError, UsageError
from ..files import atomic_directory, check_free_space
from ..gguf_file.layout import tensor_nbytes
from ..gguf_file.reader import GGUFFile
from .devices import Device
from .fit import Plan, model_shape, plan, read_shape
from .manifest import build_manifest, file_entry, gguf_files, identity, write_manifest
from .split import split

# best quality first: --device takes the first whose plan fits
CANDIDATES = ("Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q4_K_M", "Q4_K_S", "Q3_K_L", "Q3_K_M", "Q3_K_S", "Q2_K")
CARD_CONTEXTS = (512, 2048, 4096, 8192, 32768)
MiB = 1 << 20
PACKED_SUFFIX = ".ggpk"


@dataclass(frozen=True)
class PackageResult:
    directory: Path
    files: list[Path]
    quant: str | None
    plan: Plan | None

    def as_dict(self) -> dict:
        return {"directory": str(self.directory), "files": [str(f) for f in self.files], "quant": self.quant,
                "plan": self.plan.as_dict() if self.plan else None}


def _is_gguf(src: Path) -> bool:
    if not src.is_file():
        return False
    with open(src, "rb") as fh:
        return fh.read(4) == b"GGUF"


def preset_needs(gguf_src: Path, ctx: int, kv_type: str = "f16", device: Device | None = None,
                 presets: tuple[str, ...] = CANDIDATES) -> dict[str, Plan]:
    """The fit plan of each preset, from the planned tensor types alone (nothing is quantized)."""
    from ..requantize import quantize_gguf

    f = GGUFFile.open(gguf_src)
    shape = model_shape(f, gguf_src.stat().st_size)
    shapes = {t.name: t.shape for t in f.tensors}
    out = {}
    for p in presets:
        types = quantize_gguf(gguf_src, None, p, allow_requantize=True).plan
        sizes = {n: gguf.GGUFWriter.ggml_pad(tensor_nbytes(shapes[n], q), f.alignment)
                 for n, q in types.items()}
        weights = sum(sizes.values())
        embd = sizes.get("token_embd.weight", 0) if "output.weight" in sizes else 0
        planned = dataclasses.replace(shape, weight_bytes=weights, read_per_token=weights - embd)
        out[p] = plan(planned, ctx, kv_type, budget=device.budget if device else None,
                      bandwidth=device.bandwidth if device else None)
    return out


def choose_preset(needs: dict[str, Plan], device: Device, ctx: int) -> str:
    """The first candidate (best quality) whose verdict is ``fits``; else ResourceError with the smallest need."""
    for name, p in needs.items():
        if p.verdict == "fits":
            return name
    smallest = min(needs, key=lambda n: needs[n].total)
    raise ResourceError(f"no preset fits {device.name} at ctx {ctx}: the smallest, {smallest}, needs"
                        f" {needs[smallest].total / MiB:.0f} MiB; the device's budget is {device.budget / MiB:.0f} MiB")


def _weights_budget(gguf_src: Path, ctx: int, kv_type: str, device: Device) -> int:
    """The bytes of weights that leave room on ``device`` for the rest a context of ``ctx`` needs (KV cache, compute
    buffers, runtime overhead: none of them depends on the weights' types). May be zero or less."""
    need = next(iter(preset_needs(gguf_src, ctx, kv_type, device, presets=("Q8_0",)).values()))
    return device.budget - (need.total - need.weights)


def plan_target(gguf_src: Path, budget: int, device: Device | None, ctx: int) -> int:
    """The planner's file-size target for ``budget``: bytes of tensor data with ``device`` (``fit`` counts the tensor
    data as the weights, not the header, whose vocabulary the overhead covers), bytes of file without. Capped at the
    largest plan; ResourceError naming the smallest need when even the smallest plan is over it (a device's budget
    is what it is, not a usage error)."""
    from ..budgeted import plan_sizes

    header, lo, hi = plan_sizes(gguf_src)
    target = budget + header if device is not None else budget
    if target < lo:
        if device is None:
            raise ResourceError(f"no plan is under {budget} bytes: the smallest is {lo}")
        need = device.budget - budget + lo - header
        raise ResourceError(f"no plan fits {device.name} at ctx {ctx}: the smallest needs {need / MiB:.0f} MiB;"
                            f" the device's budget is {device.budget / MiB:.0f} MiB")
    return min(target, hi)


def planned_record(model: Path, result) -> dict:
    """What a package says of a planned file: the recorded plan (read back from the file) and the measured figures."""
    from ..gguf_file.plan_record import read_plan

    rec = read_plan(GGUFFile.open(model)) or {}
    p = result.budget
    return {"target_size": rec.get("target_size", p.target), "chosen": rec.get("chosen", p.chosen),
            "predicted_kld": p.predicted_kld, "measured_kld": p.measured_kld, "rival": p.rival,
            "rival_kld": p.rival_kld, "types": dict(result.types)}


def choose_by_size(needs: dict[str, Plan], target: int) -> str:
    """The best candidate whose tensor data fits in ``target`` bytes."""
    for name, p in needs.items():
        if p.weights <= target:
            return name
    smallest = min(needs, key=lambda n: needs[n].weights)
    raise ResourceError(f"no preset is under {target} bytes: the smallest, {smallest}, is {needs[smallest].weights}")


def model_card(meta: GGUFFile, memory: list[tuple[int, Plan]], quant: str | None, files: list[str],
               planned: dict | None = None) -> str:
    """README.md with Hugging Face front matter, repeating the GGUF's provenance keys."""
    org, base = meta.get("general.base_model.0.organization"), meta.get("general.base_model.0.name")
    base = f"{org}/{base}" if org and base else base or meta.get("general.basename") or meta.get("general.name", "")
    front = ["---", f"base_model: {json.dumps(str(base))}"]
    if license_ := meta.get("general.license"):
        front.append(f"license: {json.dumps(str(license_))}")
    tags = ["gguf"] + [str(t) for t in meta.get("general.tags") or [] if str(t) != "gguf"]
    front += ["quantized_by: gguf-tools", f"tags: [{', '.join(json.dumps(t) if t != 'gguf' else t for t in tags)}]",
              "---", ""]
    name = meta.get("general.name") or base or "model"
    body = [f"# {name} (GGUF{', ' + quant if quant else ''})", "",
            "Files: " + ", ".join(f"`{f}`" for f in files) + ". llama.cpp loads the first; `gguf-tools verify .` checks"
            " every byte against `manifest.json`.", ""]
    if planned:
        kld = planned["measured_kld"] if planned["measured_kld"] is not None else planned["predicted_kld"]
        which = "measured" if planned["measured_kld"] is not None else "predicted"
        mix = ", ".join(f"{n} {c}" for n, c in sorted(planned["types"].items(), key=lambda x: -x[1]))
        what = ("a type per tensor" if planned["chosen"] == "plan" else
                f"{planned['chosen']}, which measured better than the plan")
        body += [f"Planned: {what}, from sensitivity measured on calibration text, for a file of at most"
                 f" {planned['target_size']:,} bytes; {which} KLD against the source {kld:.5f}. Tensors: {mix}.", ""]
    body += ["| context | KV cache (f16) | total RAM |", "|---:|---:|---:|"]
    body += [f"| {c} | {p.kv / MiB:.0f} MiB | {p.total / MiB:.0f} MiB |" for c, p in memory]
    return "\n".join(front + body) + "\n"


def package(src: str | os.PathLike, dest: str | os.PathLike, *, quant: str | None = None,
            device: Device | None = None, target_size: int | None = None, ctx: int = 4096, kv_type: str = "f16",
            max_file_size: int | None = None, pack: bool = False,
            smoke: Callable[[Path], dict] | None = None, overwrite: bool = False,
            calibration: str | None = None) -> PackageResult:
    """Build the package directory ``dest`` from an HF checkpoint or a GGUF file.

    With ``calibration`` text, ``target_size`` and ``device`` are met by the budgeted planner (a type per tensor,
    from measured sensitivity) instead of the best whole preset: the file is the best that fits the size, or the
    device's budget less the context's memory (KV cache, compute buffers, overhead), capped at the largest plan;
    ResourceError with the smallest need when even the smallest plan does not fit. Calibration text without a
    budget, or with ``quant``, is a UsageError: it would be ignored."""
    src, dest = Path(src), Path(dest)
    if calibration is not None and (quant is not None or (device is None and target_size is None)):
        raise UsageError("--calibration plans a file for --device or --target-size; it cannot be used with --quant"
                         if quant is not None else "--calibration needs --device or --target-size (the budget to plan"
                         " for)")
    if max_file_size is None and device is not None:
        max_file_size = device.file_size_limit
    with atomic_directory(dest, overwrite) as work:
        gguf_src = src
        if not _is_gguf(src):
            if quant is None and device is None and target_size is None:
                quant = "Q8_0"
            if quant is None:   # plan from an F16 conversion's header, then convert at the chosen preset
                from ..convert import convert

                gguf_src = work / "planning-f16.gguf"
                convert(src, gguf_src, quant="F16")
        budget = planned = None
        if quant is None and calibration is not None:
            budget = target_size if device is None else _weights_budget(gguf_src, ctx, kv_type, device)
            budget = plan_target(gguf_src, budget, device, ctx)
            quant = "planned"
        elif quant is None and device is not None:
            quant = choose_preset(preset_needs(gguf_src, ctx, kv_type, device), device, ctx)
        elif quant is None and target_size is not None:
            quant = choose_by_size(preset_needs(gguf_src, ctx, kv_type), target_size)
        name = (src.name.removesuffix(".gguf") if _is_gguf(src) else src.name) + (f"-{quant}" if quant else "")
        model = work / f"{name}.gguf"
        if budget is not None:
            from ..budgeted import quantize_to_budget

            result = quantize_to_budget(gguf_src, model, calibration=calibration, target_size=budget,
                                        allow_requantize=True)
            planned = planned_record(model, result)
            if gguf_src != src:
                gguf_src.unlink()
        elif _is_gguf(src) and quant is None:
            check_free_space(work, src.stat().st_size)
            shutil.copyfile(src, model)
        elif _is_gguf(src):
            from ..requantize import quantize_gguf

            quantize_gguf(src, model, quant, allow_requantize=True)
        else:
            from ..convert import convert

            convert(src, model, quant=quant)
            if gguf_src != src:
                gguf_src.unlink()
        if max_file_size is not None and model.stat().st_size > max_file_size:
            split(model, max_file_size, work, name)
            model.unlink()
        files = gguf_files(work)
        shape = read_shape(files[0])
        chosen = plan(shape, ctx, kv_type, budget=device.budget if device else None,
                      bandwidth=device.bandwidth if device else None)
        if device is not None and chosen.verdict != "fits":
            raise ResourceError(f"{name} needs {chosen.total / MiB:.0f} MiB at ctx {ctx}; {device.name}'s budget is"
                                f" {device.budget / MiB:.0f} MiB")
        smoke_result = smoke(files[0]) if smoke else None
        memory = [(c, plan(shape, c, "f16")) for c in CARD_CONTEXTS if c <= max(shape.n_ctx_train, 512)]
        meta = GGUFFile.open(files[0])
        m = build_manifest(work, files, plan={"device": device.name if device else None, **chosen.as_dict()},
                           smoke=smoke_result)
        m["identity"] = identity(meta)
        if planned is not None:
            m["planned"] = planned
        if pack:
            files = _pack_files(work, m)
        card = model_card(meta, memory, quant, [f.name for f in files], planned)
        (work / "README.md").write_text(card, encoding="utf-8")
        m["files"].append(file_entry(work, work / "README.md"))
        write_manifest(work / "manifest.json", m)
    return PackageResult(dest, [dest / f.name for f in files], quant, chosen)


def _pack_files(work: Path, m: dict) -> list[Path]:
    """Entropy-code each GGUF; its manifest entry moves under ``unpacks_to`` of the packed file's entry.
    (A packed file run directly sits in anonymous memory: install unpacks it to a mappable GGUF.)"""
    from ..packed import pack as pack_file

    out, entries = [], []
    for e in m["files"]:
        gguf_path = work / e["path"]
        packed = gguf_path.with_suffix(PACKED_SUFFIX)
        pack_file(gguf_path, packed)
        gguf_path.unlink()
        entries.append({**file_entry(work, packed), "unpacks_to": e})
        out.append(packed)
    m["files"] = entries
    return out
