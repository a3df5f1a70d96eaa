"""Every registered family is complete, and its transforms and their export inverses undo each other."""
from __future__ import annotations

import gguf
import numpy as np
import pytest

from gguf_tools.engine.transformer import ACTIVATIONS
from gguf_tools.errors import UnsupportedError
from gguf_tools.hf.families import REGISTRY, HParams, detect_family, families, family_for_arch

HP = HParams(n_layer=2, n_embd=256, n_ff=512, n_head=4, n_head_kv=2, head_dim=64, n_ctx=512, rms_eps=1e-5)
TENSORS = ["token_embd.weight", "output_norm.weight", "blk.0.attn_norm.weight", "blk.0.attn_q.weight",
           "blk.0.attn_k.weight", "blk.0.attn_v.weight", "blk.1.ffn_norm.weight", "blk.1.ffn_down.weight"]


@pytest.mark.parametrize("family", families(), ids=repr)
def test_each_family_is_found_by_every_hf_class_name_it_registers(family):
    assert family.hf_archs
    for name in family.hf_archs:
        assert detect_family({"architectures": [name]}) is family
    assert family_for_arch(family.name) is family


@pytest.mark.parametrize("family", families(), ids=repr)
def test_each_family_names_a_gguf_architecture_the_engine_can_run(family):
    assert family.name in gguf.MODEL_ARCH_NAMES.values()
    assert family.activation in ACTIVATIONS


@pytest.mark.parametrize("family", [f for f in families() if f.hf_export], ids=repr)
def test_export_inverts_every_conversion_transform(family):
    rng = np.random.default_rng(0)
    for name in TENSORS:
        rows = HP.n_head_kv * HP.head_dim if "attn_k" in name else HP.n_embd
        w = rng.standard_normal((rows, 8) if name.endswith(("_q.weight", "_k.weight", "_v.weight")) else (rows,))
        w = w.astype(np.float32)
        forward, inverse = family.transform(name, HP), family.untransform(name, HP)
        assert (forward is None) == (inverse is None), name
        if forward is not None:
            np.testing.assert_allclose(inverse(forward(w)), w, atol=1e-6, err_msg=name)


def test_the_registry_holds_the_supported_hf_classes():
    assert {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
            "Gemma3ForCausalLM", "Gemma3ForConditionalGeneration", "Phi3ForCausalLM"} <= set(REGISTRY)


def test_an_unregistered_hf_class_is_unsupported_and_the_message_lists_the_registered_ones():
    with pytest.raises(UnsupportedError, match="Qwen3ForCausalLM"):
        detect_family({"architectures": ["GPT2LMHeadModel"]})
    assert family_for_arch("gpt2") is None


def test_llama_permutes_q_and_k_rows_into_adjacent_pairs_per_head():
    llama = detect_family({"architectures": ["LlamaForCausalLM"]})
    q = np.arange(HP.n_embd, dtype=np.float32)[:, None]
    out = llama.transform("blk.0.attn_q.weight", HP)(q)[:, 0]
    half = HP.head_dim // 2
    assert list(out[:4]) == [0, half, 1, half + 1]  # head 0: rotate-half order becomes interleaved
    assert llama.transform("blk.0.attn_v.weight", HP) is None
