"""Tiny randomly initialised models of every supported family, saved as real HF checkpoints.

Dimensions are multiples of 256 so K-quant work can reuse them; weights are drawn wider than
transformers' default init so logits spread out and top-1 comparisons are meaningful.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from tokenizer_fixtures import tokenizer_dir

HIDDEN, FFN, HEADS, LAYERS = 256, 512, 4, 2

# case name -> (transformers config class, tokenizer fixture, extra config)
CASES: dict[str, tuple[str, str, dict]] = {
    "llama3": ("LlamaConfig", "llama-bpe", {"num_key_value_heads": 2, "tie_word_embeddings": False}),
    "llama2": ("LlamaConfig", "llama-spm", {"num_key_value_heads": 4, "tie_word_embeddings": False}),
    "smollm2": ("LlamaConfig", "smollm2", {"num_key_value_heads": 1, "tie_word_embeddings": True}),
    "mistral": ("MistralConfig", "llama-spm", {"num_key_value_heads": 2, "sliding_window": None}),
    "qwen2": ("Qwen2Config", "qwen2", {"num_key_value_heads": 2, "tie_word_embeddings": True}),
    "qwen3": ("Qwen3Config", "qwen2", {"num_key_value_heads": 2, "head_dim": 64, "tie_word_embeddings": False}),
    "gemma3": (
        "Gemma3TextConfig",
        "gemma3",
        {
            "num_key_value_heads": 1,
            "head_dim": 64,
            "query_pre_attn_scalar": 64,
            "sliding_window": 16,
            "layer_types": ["sliding_attention", "full_attention"],
        },
    ),
    "phi3": ("Phi3Config", "phi-3", {"num_key_value_heads": 4, "tie_word_embeddings": False}),
}


def build_tiny_model(case: str, root: Path) -> Path:
    """Save a tiny model of ``case`` with its real tokenizer under ``root/case`` and return the dir."""
    import torch
    import transformers

    cls_name, tok_name, extra = CASES[case]
    out = root / case
    if (out / "config.json").exists():
        return out
    tok_src = tokenizer_dir(tok_name)
    tok = transformers.AutoTokenizer.from_pretrained(tok_src)
    vocab = len(tok)
    cfg = getattr(transformers, cls_name)(
        vocab_size=vocab,
        hidden_size=HIDDEN,
        intermediate_size=FFN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **extra,
    )
    torch.manual_seed(sum(map(ord, case)))
    model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.normal_(0.0, 1.0 / np.sqrt(p.shape[-1]) * 1.5)
            elif "norm" in name:
                p.uniform_(0.5, 1.5) if case != "gemma3" else p.uniform_(-0.5, 0.5)
            else:
                p.normal_(0.0, 0.1)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    for f in tok_src.iterdir():
        if f.is_file() and f.name not in ("config.json", "generation_config.json"):
            shutil.copy(f, out / f.name)
    meta = json.loads((out / "config.json").read_text())
    assert meta["architectures"], meta
    return out
