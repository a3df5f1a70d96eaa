"""Model families: everything that differs between Llama, Qwen2, Qwen3, Gemma 3 and Phi-3, one class each.

A family is registered under the Hugging Face architecture class names it converts, and carries what
every stage needs to know about it: the hparams llama.cpp reads (``add_hparams``), per-tensor transforms
(``transform``) and generated tensors, the facts the reference engine runs by (activation, RoPE style,
embedding scale, sliding-window layers) and what exporting a GGUF back to Hugging Face needs (the
inverse transforms, the HF class and config). The stages read attributes and call methods; none of them
compares family names. Tensor names go through the `gguf` package's TensorNameMap, so they agree with
llama.cpp by construction.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import gguf
import numpy as np

from ..errors import InputError, UnsupportedError

Transform = Callable[[np.ndarray], np.ndarray]


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


@dataclass(frozen=True)
class TensorJob:
    """One output tensor: where it comes from and how it is reshaped on the way."""

    name: str  # GGUF name
    shape: tuple[int, ...]  # numpy order (rows, row length)
    source: str | None  # checkpoint tensor, or None for a generated one
    transform: Transform | None = None


REGISTRY: dict[str, Family] = {}  # Hugging Face architecture class name -> family


def register(*hf_archs: str) -> Callable[[type[Family]], type[Family]]:
    """Class decorator: the family converts checkpoints whose config names one of ``hf_archs``."""

    def add(cls: type[Family]) -> type[Family]:
        cls.hf_archs = hf_archs
        family = cls()
        for name in hf_archs:
            REGISTRY[name] = family
        return cls

    return add


def families() -> list[Family]:
    """Each registered family once, in registration order."""
    return list(dict.fromkeys(REGISTRY.values()))


def family_for_arch(arch: str) -> Family | None:
    """The family that writes GGUF architecture ``arch`` (what the engine and export start from)."""
    return next((f for f in families() if f.name == arch), None)


class Family:
    """The defaults are Llama's neighbours (Qwen2, Qwen3, Phi-3): subclasses override what differs."""

    arch: ClassVar[gguf.MODEL_ARCH]
    hf_archs: ClassVar[tuple[str, ...]] = ()
    tied_by_default: ClassVar[bool] = False  # tie_word_embeddings when config.json does not say
    truncate_vocab: ClassVar[bool] = False  # the embedding may be padded past the tokenizer's vocabulary
    # Reference engine facts
    activation: ClassVar[str] = "silu"  # of the gated FFN: "silu" or "gelu_tanh"
    neox_rope: ClassVar[bool] = True  # RoPE rotates halves of each head (llama.cpp's NEOX) vs adjacent pairs
    embed_scale: ClassVar[bool] = False  # embeddings are multiplied by sqrt(n_embd)
    sliding_window_layers: ClassVar[bool] = False  # some layers attend within a window only
    # Export facts: (HF architecture class, model_type), or None where export is not supported
    hf_export: ClassVar[tuple[str, str] | None] = None
    hf_ffn_norm: ClassVar[str] = "post_attention_layernorm"  # the HF name of GGUF's ffn_norm

    @property
    def name(self) -> str:
        """The GGUF architecture name (general.architecture)."""
        return gguf.MODEL_ARCH_NAMES[self.arch]

    def __repr__(self) -> str:
        return f"<family {self.name}>"

    # -- conversion ------------------------------------------------------------------------
    def add_hparams(self, w: gguf.GGUFWriter, cfg: dict, hp: HParams) -> None:
        """The hparams every family shares; ``cfg`` is the language model's config (text_config merged)."""
        w.add_context_length(hp.n_ctx)
        w.add_embedding_length(hp.n_embd)
        w.add_block_count(hp.n_layer)
        w.add_feed_forward_length(hp.n_ff)
        w.add_head_count(hp.n_head)
        w.add_head_count_kv(hp.n_head_kv)
        w.add_layer_norm_rms_eps(hp.rms_eps)
        if "rope_theta" in hp.rope:
            w.add_rope_freq_base(float(hp.rope["rope_theta"]))
        if "head_dim" in cfg or hp.head_dim * hp.n_head != hp.n_embd:  # as llama.cpp: whenever config states it
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

    def transform(self, gguf_name: str, hp: HParams) -> Transform | None:
        """How a checkpoint tensor's values become the GGUF tensor's (None: copied as they are)."""
        return None

    def untransform(self, gguf_name: str, hp: HParams) -> Transform | None:
        """The inverse of ``transform``, for export."""
        return None

    def generated(self, hp: HParams) -> list[TensorJob]:
        """Tensors llama.cpp expects that the checkpoint expresses as config (RoPE frequency factors)."""
        return []

    # -- export ----------------------------------------------------------------------------
    def export_config(self, cfg: dict, meta: Callable[[str, object], object]) -> None:
        """Adjust the Hugging Face config built from the GGUF; ``meta(key, default)`` reads ``<arch>.key``."""


@register("LlamaForCausalLM", "MistralForCausalLM")
class Llama(Family):
    """Llama 2/3, Mistral, SmolLM2, TinyLlama. HF keeps q/k in rotate-half order; llama.cpp's llama RoPE
    rotates adjacent pairs, so their rows are permuted on the way in and back on the way out."""

    arch = gguf.MODEL_ARCH.LLAMA
    neox_rope = False
    hf_export = ("LlamaForCausalLM", "llama")

    def add_hparams(self, w: gguf.GGUFWriter, cfg: dict, hp: HParams) -> None:
        super().add_hparams(w, cfg, hp)
        w.add_rope_dimension_count(hp.head_dim)
        w.add_vocab_size(_int(cfg, "vocab_size"))

    def transform(self, gguf_name: str, hp: HParams) -> Transform | None:
        n = _qk_heads(gguf_name, hp)
        return None if n is None else lambda w: _pair_rows(w, n, interleave=True)

    def untransform(self, gguf_name: str, hp: HParams) -> Transform | None:
        n = _qk_heads(gguf_name, hp)
        return None if n is None else lambda w: _pair_rows(w, n, interleave=False)

    def generated(self, hp: HParams) -> list[TensorJob]:
        if str(hp.rope.get("rope_type", "")).lower() != "llama3":
            return []
        factors = llama3_rope_factors(hp.rope, hp.head_dim)
        return [TensorJob("rope_freqs.weight", factors.shape, None, lambda _w: factors)]


@register("Qwen2ForCausalLM")
class Qwen2(Family):
    arch = gguf.MODEL_ARCH.QWEN2
    hf_export = ("Qwen2ForCausalLM", "qwen2")

    def export_config(self, cfg: dict, meta: Callable[[str, object], object]) -> None:
        cfg["attention_bias"] = True


@register("Qwen3ForCausalLM")
class Qwen3(Family):
    arch = gguf.MODEL_ARCH.QWEN3
    hf_export = ("Qwen3ForCausalLM", "qwen3")


@register("Gemma3ForCausalLM", "Gemma3ForConditionalGeneration")
class Gemma3(Family):
    """Gemma 3: RMSNorm weights stored as w - 1, GELU, scaled embeddings, interleaved sliding-window layers
    with their own RoPE base, a logit soft-cap, and an embedding padded past the tokenizer."""

    arch = gguf.MODEL_ARCH.GEMMA3
    tied_by_default = True
    truncate_vocab = True
    activation = "gelu_tanh"
    embed_scale = True
    sliding_window_layers = True
    hf_export = ("Gemma3ForCausalLM", "gemma3_text")
    hf_ffn_norm = "pre_feedforward_layernorm"

    def add_hparams(self, w: gguf.GGUFWriter, cfg: dict, hp: HParams) -> None:
        super().add_hparams(w, cfg, hp)
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
        if scalar is not None and scalar != hp.head_dim and hp.n_layer != 62:  # 27B: llama.cpp knows its scale
            raise UnsupportedError(
                f"config.json: query_pre_attn_scalar {scalar} differs from head_dim {hp.head_dim};"
                " llama.cpp derives the attention scale from head_dim"
            )

    def transform(self, gguf_name: str, hp: HParams) -> Transform | None:
        return _add(1.0) if gguf_name.endswith("norm.weight") else None

    def untransform(self, gguf_name: str, hp: HParams) -> Transform | None:
        return _add(-1.0) if gguf_name.endswith("norm.weight") else None

    def export_config(self, cfg: dict, meta: Callable[[str, object], object]) -> None:
        window = meta("attention.sliding_window", None)
        cfg.update(
            hidden_activation="gelu_pytorch_tanh",
            query_pre_attn_scalar=cfg["head_dim"],
            rope_local_base_freq=float(meta("rope.freq_base_swa", 10000.0)),
            final_logit_softcapping=None,
            attn_logit_softcapping=None,
        )
        if window:
            cfg["sliding_window"] = int(window)
            cfg["layer_types"] = [
                "sliding_attention" if (i + 1) % 6 else "full_attention" for i in range(cfg["num_hidden_layers"])
            ]


@register("Phi3ForCausalLM")
class Phi3(Family):
    """Phi-3: fused qkv and gate|up projections, partial rotary dimensions, LongRoPE factor tensors."""

    arch = gguf.MODEL_ARCH.PHI3

    def add_hparams(self, w: gguf.GGUFWriter, cfg: dict, hp: HParams) -> None:
        super().add_hparams(w, cfg, hp)
        partial = float(hp.rope.get("partial_rotary_factor", cfg.get("partial_rotary_factor", 1.0)))
        w.add_rope_dimension_count(int(partial * hp.n_embd) // hp.n_head)
        orig = hp.rope.get("original_max_position_embeddings", cfg.get("original_max_position_embeddings"))
        if orig:
            w.add_rope_scaling_orig_ctx_len(int(orig))
        w.add_sliding_window(int(cfg.get("sliding_window") or 0))

    def generated(self, hp: HParams) -> list[TensorJob]:
        if str(hp.rope.get("rope_type", "")).lower() not in ("su", "longrope"):
            return []
        out = []
        for key, gname in (("long_factor", "rope_factors_long.weight"), ("short_factor", "rope_factors_short.weight")):
            vals = np.asarray(hp.rope.get(key, []), dtype=np.float32)
            if vals.ndim != 1 or vals.size == 0:
                raise InputError(f"config.json: rope scaling {key} is missing or not a list")
            out.append(TensorJob(gname, vals.shape, None, lambda _w, v=vals: v))
        return out


SUPPORTED = ", ".join(REGISTRY)

# Checkpoint entries that carry no weights llama.cpp needs.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq", "attention.masked_bias", "attention.bias")
IGNORED_PREFIXES = ("vision_tower.", "multi_modal_projector.", "model.vision_tower.", "model.multi_modal_projector.")


def detect_family(config: dict) -> Family:
    archs = config.get("architectures")
    if not isinstance(archs, list) or not archs or not all(isinstance(a, str) for a in archs):
        raise InputError("config.json has no 'architectures' list naming the model class")
    family = REGISTRY.get(archs[0])
    if family is None:
        raise UnsupportedError(f"unsupported architecture {archs[0]!r}; supported: {SUPPORTED}")
    return family


def text_config(config: dict) -> dict:
    """Multimodal checkpoints keep the language model's hparams under text_config."""
    sub = config.get("text_config")
    return {**config, **sub} if isinstance(sub, dict) else config


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
    family.add_hparams(w, text_config(config), hp)


# ---------------------------------------------------------------------------------------------
# Tensors


def _qk_heads(gguf_name: str, hp: HParams) -> int | None:
    """The head count whose rows a q or k projection (weight or bias) is made of; None for other tensors."""
    if gguf_name.endswith(("attn_q.weight", "attn_q.bias")):
        return hp.n_head
    if gguf_name.endswith(("attn_k.weight", "attn_k.bias")):
        return hp.n_head_kv
    return None


def _pair_rows(w: np.ndarray, n_head: int, *, interleave: bool) -> np.ndarray:
    """Per head, rotate-half row order (HF) <-> adjacent-pair order (llama.cpp's llama RoPE)."""
    shape = w.shape
    half = shape[0] // n_head // 2
    split = (n_head, 2, half) if interleave else (n_head, half, 2)
    return w.reshape(*split, *shape[1:]).swapaxes(1, 2).reshape(shape)


def _add(delta: float) -> Transform:
    return lambda w: (w + np.float32(delta)).astype(np.float32)


def _rows(n: int) -> Transform:
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
    tied = bool(cfg.get("tie_word_embeddings", config.get("tie_word_embeddings", family.tied_by_default)))
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
        transform = family.transform(gname, hp)
        if gname == "token_embd.weight" and shape[0] != n_vocab:
            if family.truncate_vocab and shape[0] > n_vocab:
                transform, shape = _rows(n_vocab), (n_vocab, *shape[1:])
            elif shape[0] < n_vocab:
                raise InputError(f"embedding has {shape[0]} rows but the tokenizer has {n_vocab} tokens")
        jobs.append(TensorJob(gname, shape, src, transform))
    jobs.extend(family.generated(hp))
    _check_complete(hp, jobs)
    return sorted(jobs, key=_order)


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
