"""Architecture map: which GGUF tensors a Hugging Face checkpoint becomes, and the hparams llama.cpp reads.

One table of families; each family is plain data plus at most a few per-tensor transforms.
Names go through the `gguf` package's TensorNameMap, so they agree with llama.cpp by construction.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import gguf
import numpy as np

from ..errors import InputError, UnsupportedError


@dataclass(frozen=True)
class Family:
    name: str
    arch: gguf.MODEL_ARCH
    hf_archs: tuple[str, ...]
    permute_qk: bool = False  # HF rotate-half RoPE -> llama.cpp's interleaved (NORM) RoPE
    norm_shift: float = 0.0  # Gemma stores RMSNorm weights as w - 1
    truncate_vocab: bool = False  # Gemma pads the embedding past the tokenizer's vocabulary


FAMILIES: tuple[Family, ...] = (
    Family("llama", gguf.MODEL_ARCH.LLAMA, ("LlamaForCausalLM", "MistralForCausalLM"), permute_qk=True),
    Family("qwen2", gguf.MODEL_ARCH.QWEN2, ("Qwen2ForCausalLM",)),
    Family("qwen3", gguf.MODEL_ARCH.QWEN3, ("Qwen3ForCausalLM",)),
    Family(
        "gemma3",
        gguf.MODEL_ARCH.GEMMA3,
        ("Gemma3ForCausalLM", "Gemma3ForConditionalGeneration"),
        norm_shift=1.0,
        truncate_vocab=True,
    ),
    Family("phi3", gguf.MODEL_ARCH.PHI3, ("Phi3ForCausalLM",)),
)

SUPPORTED = ", ".join(a for f in FAMILIES for a in f.hf_archs)

# Checkpoint entries that carry no weights llama.cpp needs.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq", "attention.masked_bias", "attention.bias")
IGNORED_PREFIXES = ("vision_tower.", "multi_modal_projector.", "model.vision_tower.", "model.multi_modal_projector.")


def detect_family(config: dict) -> Family:
    archs = config.get("architectures")
    if not isinstance(archs, list) or not archs or not all(isinstance(a, str) for a in archs):
        raise InputError("config.json has no 'architectures' list naming the model class")
    for family in FAMILIES:
        if archs[0] in family.hf_archs:
            return family
    raise UnsupportedError(f"unsupported architecture {archs[0]!r}; supported: {SUPPORTED}")


def text_config(config: dict) -> dict:
    """Multimodal checkpoints keep the language model's hparams under text_config."""
    sub = config.get("text_config")
    return {**config, **sub} if isinstance(sub, dict) else config


@dataclass(frozen=True)
class HParams:
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ctx: int
    rms_eps: float
    rope: dict = field(default_factory=dict)  # full-attention RoPE parameters
    rope_swa: dict = field(default_factory=dict)  # sliding-window layers' RoPE, where they differ


def _int(cfg: dict, key: str, default: int | None = None) -> int:
    v = cfg.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0 or v > 2**31:
        raise InputError(f"config.json: {key} must be a positive integer, got {v!r}")
    return v


def _rope_params(cfg: dict) -> tuple[dict, dict]:
    """transformers 5 writes rope_parameters (maybe per attention type); 4.x writes rope_theta + rope_scaling."""
    params = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    if not isinstance(params, dict):
        raise InputError("config.json: rope_parameters must be an object")
    if "full_attention" in params:
        full, swa = dict(params["full_attention"]), dict(params.get("sliding_attention") or {})
    else:
        full, swa = dict(params), {}
    if "rope_theta" not in full and "rope_theta" in cfg:
        full["rope_theta"] = cfg["rope_theta"]
    if "rope_theta" not in swa and "rope_local_base_freq" in cfg:
        swa["rope_theta"] = cfg["rope_local_base_freq"]
    if "type" in full and "rope_type" not in full:
        full["rope_type"] = full["type"]
    return full, swa


def read_hparams(config: dict) -> HParams:
    cfg = text_config(config)
    n_head = _int(cfg, "num_attention_heads")
    n_embd = _int(cfg, "hidden_size")
    head_dim = cfg.get("head_dim") or n_embd // n_head
    rope, rope_swa = _rope_params(cfg)
    return HParams(
        n_layer=_int(cfg, "num_hidden_layers"),
        n_embd=n_embd,
        n_ff=_int(cfg, "intermediate_size"),
        n_head=n_head,
        n_head_kv=_int(cfg, "num_key_value_heads", n_head),
        head_dim=int(head_dim),
        n_ctx=_int(cfg, "max_position_embeddings", 4096),
        rms_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        rope=rope,
        rope_swa=rope_swa,
    )


def add_hparams(w: gguf.GGUFWriter, family: Family, config: dict, hp: HParams) -> None:
    cfg = text_config(config)
    w.add_context_length(hp.n_ctx)
    w.add_embedding_length(hp.n_embd)
    w.add_block_count(hp.n_layer)
    w.add_feed_forward_length(hp.n_ff)
    w.add_head_count(hp.n_head)
    w.add_head_count_kv(hp.n_head_kv)
    w.add_layer_norm_rms_eps(hp.rms_eps)
    if "rope_theta" in hp.rope:
        w.add_rope_freq_base(float(hp.rope["rope_theta"]))
    if hp.head_dim * hp.n_head != hp.n_embd or family.name in ("gemma3", "qwen3"):
        w.add_key_length(hp.head_dim)
        w.add_value_length(hp.head_dim)

    rope_type = str(hp.rope.get("rope_type", "default")).lower()
    factor = hp.rope.get("factor")
    if rope_type == "linear" and factor:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(factor))
    elif rope_type == "yarn" and factor:
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(float(factor))
        w.add_rope_scaling_orig_ctx_len(int(hp.rope["original_max_position_embeddings"]))
    elif rope_type in ("su", "longrope"):
        w.add_rope_scaling_type(gguf.RopeScalingType.LONGROPE)
    elif rope_type not in ("default", "llama3"):
        raise UnsupportedError(f"config.json: RoPE scaling type {rope_type!r} is not supported")

    if family.name == "llama":
        w.add_rope_dimension_count(hp.head_dim)
        w.add_vocab_size(_int(cfg, "vocab_size"))
    elif family.name == "gemma3":
        if cfg.get("final_logit_softcapping"):
            w.add_final_logit_softcapping(float(cfg["final_logit_softcapping"]))
        if cfg.get("sliding_window"):
            w.add_sliding_window(int(cfg["sliding_window"]))
            layer_types = cfg.get("layer_types")
            if isinstance(layer_types, list) and len(layer_types) == hp.n_layer:
                w.add_sliding_window_pattern([t == "sliding_attention" for t in layer_types])
            elif cfg.get("sliding_window_pattern"):
                w.add_sliding_window_pattern(int(cfg["sliding_window_pattern"]))
            if "rope_theta" in hp.rope_swa:
                w.add_rope_freq_base_swa(float(hp.rope_swa["rope_theta"]))
        scalar = cfg.get("query_pre_attn_scalar")
        if scalar is not None and scalar != hp.head_dim and hp.n_layer != 62:
            raise UnsupportedError(
                f"config.json: query_pre_attn_scalar {scalar} differs from head_dim {hp.head_dim};"
                " llama.cpp derives the attention scale from head_dim"
            )
    elif family.name == "phi3":
        partial = float(hp.rope.get("partial_rotary_factor", cfg.get("partial_rotary_factor", 1.0)))
        w.add_rope_dimension_count(int(partial * hp.n_embd) // hp.n_head)
        orig = hp.rope.get("original_max_position_embeddings", cfg.get("original_max_position_embeddings"))
        if orig:
            w.add_rope_scaling_orig_ctx_len(int(orig))
        w.add_sliding_window(int(cfg.get("sliding_window") or 0))


# ---------------------------------------------------------------------------------------------
# Tensors


@dataclass(frozen=True)
class TensorJob:
    """One output tensor: where it comes from and how it is reshaped on the way."""

    name: str  # GGUF name
    shape: tuple[int, ...]  # numpy order (rows, row length)
    source: str | None  # checkpoint tensor, or None for a generated one
    transform: Callable[[np.ndarray], np.ndarray] | None = None


def _permute(n_head: int) -> Callable[[np.ndarray], np.ndarray]:
    def f(w: np.ndarray) -> np.ndarray:
        shape = w.shape
        return w.reshape(n_head, 2, shape[0] // n_head // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)

    return f


def _shift(delta: float, inner: Callable | None = None) -> Callable[[np.ndarray], np.ndarray]:
    def f(w: np.ndarray) -> np.ndarray:
        w = inner(w) if inner else w
        return (w + np.float32(delta)).astype(np.float32)

    return f


def _rows(n: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda w: w[:n]


def _strip(name: str) -> str:
    for prefix in ("language_model.", "model.language_model."):
        if name.startswith(prefix):
            rest = name[len(prefix):]
            return rest if rest.startswith(("model.", "lm_head")) else "model." + rest
    return name


def plan_tensors(
    family: Family,
    config: dict,
    hp: HParams,
    names: list[str],
    shape_of: Callable[[str], tuple[int, ...]],
    n_vocab: int,
) -> list[TensorJob]:
    """Every GGUF tensor with its source, in llama.cpp's conventional order. Unknown tensors are errors."""
    cfg = text_config(config)
    tmap = gguf.get_tensor_name_map(family.arch, hp.n_layer)
    tied = bool(cfg.get("tie_word_embeddings", config.get("tie_word_embeddings", family.name == "gemma3")))
    jobs: list[TensorJob] = []
    for src in names:
        if src.endswith(IGNORED_SUFFIXES) or src.startswith(IGNORED_PREFIXES):
            continue
        hf = _strip(src)
        if hf == "lm_head.weight" and tied:
            continue
        gname = tmap.get_name(hf, try_suffixes=(".weight", ".bias"))
        if gname is None:
            raise UnsupportedError(f"tensor {src!r} has no GGUF equivalent for {family.name}")
        shape = tuple(shape_of(src))
        transform = None
        if family.permute_qk and gname.endswith(("attn_q.weight", "attn_q.bias")):
            transform = _permute(hp.n_head)
        elif family.permute_qk and gname.endswith(("attn_k.weight", "attn_k.bias")):
            transform = _permute(hp.n_head_kv)
        if family.norm_shift and gname.endswith("norm.weight"):
            transform = _shift(family.norm_shift, transform)
        if gname == "token_embd.weight" and shape[0] != n_vocab:
            if family.truncate_vocab and shape[0] > n_vocab:
                transform, shape = _rows(n_vocab), (n_vocab, *shape[1:])
            elif shape[0] < n_vocab:
                raise InputError(f"embedding has {shape[0]} rows but the tokenizer has {n_vocab} tokens")
        jobs.append(TensorJob(gname, shape, src, transform))
    jobs.extend(_generated(family, hp))
    _check_complete(hp, jobs)
    return sorted(jobs, key=_order)


def _generated(family: Family, hp: HParams) -> list[TensorJob]:
    """Tensors llama.cpp expects that the checkpoint expresses as config (RoPE frequency factors)."""
    rope_type = str(hp.rope.get("rope_type", "")).lower()
    if family.name == "llama" and rope_type == "llama3":
        factors = llama3_rope_factors(hp.rope, hp.head_dim)
        return [TensorJob("rope_freqs.weight", factors.shape, None, lambda _w, f=factors: f)]
    if family.name == "phi3" and rope_type in ("su", "longrope"):
        out = []
        for key, gname in (("long_factor", "rope_factors_long.weight"), ("short_factor", "rope_factors_short.weight")):
            vals = np.asarray(hp.rope.get(key, []), dtype=np.float32)
            if vals.ndim != 1 or vals.size == 0:
                raise InputError(f"config.json: rope scaling {key} is missing or not a list")
            out.append(TensorJob(gname, vals.shape, None, lambda _w, v=vals: v))
        return out
    return []


def llama3_rope_factors(rope: dict, head_dim: int) -> np.ndarray:
    """Llama 3.1's frequency-dependent RoPE scaling, as per-dimension divisors of the frequency."""
    base = float(rope.get("rope_theta", 10000.0))
    factor = float(rope.get("factor", 8.0))
    low = float(rope.get("low_freq_factor", 1.0))
    high = float(rope.get("high_freq_factor", 4.0))
    old_ctx = float(rope.get("original_max_position_embeddings", 8192))
    freqs = 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < old_ctx / high:
            out.append(1.0)
        elif wavelen > old_ctx / low:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, dtype=np.float32)


def _check_complete(hp: HParams, jobs: list[TensorJob]) -> None:
    have = {j.name for j in jobs}
    needed = ["token_embd.weight", "output_norm.weight"]  # a missing output.weight means tied
    for i in range(hp.n_layer):
        needed += [f"blk.{i}.attn_norm.weight", f"blk.{i}.ffn_down.weight"]
    missing = [n for n in needed if n not in have]
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise InputError(f"checkpoint is missing tensors for {', '.join(missing[:3])}{more}")


def _order(job: TensorJob) -> tuple:
    """Non-layer tensors first, then layer by layer: the layout llama.cpp's own files use."""
    parts = job.name.split(".")
    if parts[0] == "blk":
        return (1, int(parts[1]), job.name)
    return (0, 0, job.name)
