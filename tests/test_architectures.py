"""Every supported family converts so that llama.cpp computes what transformers computes."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import llama_logits, load_llama
from tiny_models import CASES, build_tiny_model

from gguf_tools.convert import convert

CORPUS = [
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "Numbers: 3.14159 and 1234567890, dates 2026-11-22, 007 agents.",
    "Unicode: naïve café, Größe, Ελληνικά, русский, 日本語のテキスト, 中文, 한국어, emoji 🦙🚀✨.",
    "def f(x):\n    return x ** 2  # square\n\n\tindented\twith\ttabs",
    "   leading spaces, trailing spaces   \n\n\nmany newlines",
    "Mixed: <b>html</b> & {\"json\": [1, 2, 3]} ... --- ***",
]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="module", params=sorted(CASES))
def converted(request, models):
    case = request.param
    src = build_tiny_model(case, models)
    out = models / f"{case}.f32.gguf"
    if not out.exists():
        convert(src, out, quant="F32")
    return case, src, out


def test_llama_cpp_logits_match_transformers(converted):
    import torch
    import transformers

    case, src, gguf_path = converted
    tok = transformers.AutoTokenizer.from_pretrained(src)
    text = " ".join(CORPUS)[:400]
    ids = tok(text, add_special_tokens=False)["input_ids"][:40]
    if tok.bos_token_id is not None:
        ids = [tok.bos_token_id] + ids
    model = transformers.AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32, attn_implementation="eager")
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].numpy()
    got = llama_logits(gguf_path, ids)
    assert got.shape == ref.shape
    spread = float(ref.max() - ref.min())
    assert spread > 1.0, "logits too flat for a meaningful comparison"
    assert (got.argmax(-1) == ref.argmax(-1)).all(), f"{case}: top-1 differs"
    assert np.abs(got - ref).max() < 1e-3 * spread, f"{case}: max abs diff {np.abs(got - ref).max():.2e}"


def test_llama_cpp_tokenizes_like_the_hf_tokenizer(converted):
    import transformers

    case, src, gguf_path = converted
    tok = transformers.AutoTokenizer.from_pretrained(src)
    llm = load_llama(gguf_path, n_ctx=64)
    specials = [t for t in (tok.bos_token, tok.eos_token) if t]
    for text in CORPUS + [f"{specials[-1]} between {specials[0]} specials"]:
        expected = tok(text, add_special_tokens=False)["input_ids"]
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == expected, (case, text)
