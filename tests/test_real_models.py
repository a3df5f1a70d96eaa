"""Real trained weights survive GGUF -> Hugging Face checkpoint -> gguf-tools convert unchanged."""
from __future__ import annotations

import gguf
import numpy as np
import pytest
from conftest import greedy, load_llama
from plan_fixtures import f16_gguf, source_gguf

from gguf_tools.convert import convert
from gguf_tools.export.checkpoint import export_checkpoint

PROMPTS = [
    "The three primary colors are",
    "def fibonacci(n):",
    "Question: What is the capital of Japan?\nAnswer:",
]


@pytest.fixture(scope="module", params=["smollm2", "gemma3"])
def pair(request, tmp_path_factory):
    name = request.param
    try:
        src = source_gguf(name)
    except FileNotFoundError as e:
        pytest.skip(str(e))
    work = tmp_path_factory.mktemp(name)
    ckpt = export_checkpoint(src, work / "hf", dtype="f32")
    out = work / f"{name}.f16.gguf"
    convert(ckpt, out, quant="F16")
    return name, out, f16_gguf(name)


def test_converted_tensors_equal_the_dequantized_original(pair):
    _name, out, ref = pair
    got = {t.name: t for t in gguf.GGUFReader(out).tensors}
    want = {t.name: t for t in gguf.GGUFReader(ref).tensors}
    assert set(got) == set(want)
    for name, w in want.items():
        g = got[name]
        assert g.tensor_type == w.tensor_type, name
        if len(w.shape) >= 2 and w.shape[1] > 1:
            assert np.array_equal(np.asarray(g.data), np.asarray(w.data)), name
        else:
            np.testing.assert_allclose(np.asarray(g.data), np.asarray(w.data), rtol=1e-6, err_msg=name)


def test_greedy_completions_match_the_original(pair):
    _name, out, ref = pair
    ours, original = load_llama(out, n_ctx=256), load_llama(ref, n_ctx=256)
    for prompt in PROMPTS:
        assert greedy(ours, prompt, 64) == greedy(original, prompt, 64), prompt
