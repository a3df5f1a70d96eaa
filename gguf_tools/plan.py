"""Precision plans: which GGML type each tensor gets under a llama.cpp preset (Q4_K_M, ...).

The rules follow ``llama_model_quantize`` in llama.cpp (src/llama-quant.cpp) so that a file we
write with preset X has the same tensor types as ``llama-quantize model-f16.gguf X``; the tests
check this against llama.cpp's golden snapshots and against the library itself. Keeping them
identical is what lets users compare our quantizers with ggml's at equal size.

Shapes are in GGUF order (``shape[0]`` is ne0, the row length: the axis that is cut into blocks),
the reverse of the numpy/torch order of the same tensor.

Facts worth knowing (they surprise people):
* Only tensors with at least two dimensions of size > 1 whose names end in ``weight`` are
  quantized; norms, position embeddings, MoE routers, conv1d kernels etc. keep their type.
* The order of the tensors matters: the "first two attn_v" (Q3_K_M) and ``use_more_bits``
  (Q4_K_M, Q5_K_M) count attn_v-like tensors in llama.cpp's weight order (layer, then name).
* A K-quant needs ne0 % 256 == 0; otherwise llama.cpp falls back to a 32-block type
  (Q2_K/Q3_K -> Q4_0, Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0) and to F16 when even 32 does
  not divide ne0. On small models (hidden 576, 640) this hits most tensors and inflates the
  file: ``bits_per_weight`` and ``explain`` make that cost visible.
"""
from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import gguf

from .errors import InputError, UnsupportedError
from .gguf_file import layout
from .gguf_file.reader import GGUFFile

Q = gguf.GGMLQuantizationType
FT = gguf.LlamaFileType

MAX_DIMS = 4
MAX_DIM_SIZE = 1 << 40
MAX_TENSORS = 1 << 20
MAX_LAYERS = 4096  # llama.cpp's LLAMA_MAX_LAYERS is 512; stay generous but bounded


@dataclass(frozen=True)
class Preset:
    """A llama.cpp file type: the name users type, its id in ``general.file_type``, its base type."""

    name: str
    ftype: gguf.LlamaFileType
    base: gguf.GGMLQuantizationType


def _preset(name: str, ftype: FT, base: Q) -> tuple[str, Preset]:
    return name, Preset(name, ftype, base)


PRESETS: dict[str, Preset] = dict([
    _preset("F32", FT.ALL_F32, Q.F32),
    _preset("F16", FT.MOSTLY_F16, Q.F16),
    _preset("BF16", FT.MOSTLY_BF16, Q.BF16),
    _preset("Q8_0", FT.MOSTLY_Q8_0, Q.Q8_0),
    _preset("Q4_0", FT.MOSTLY_Q4_0, Q.Q4_0),
    _preset("Q4_1", FT.MOSTLY_Q4_1, Q.Q4_1),
    _preset("Q5_0", FT.MOSTLY_Q5_0, Q.Q5_0),
    _preset("Q5_1", FT.MOSTLY_Q5_1, Q.Q5_1),
    _preset("Q2_K", FT.MOSTLY_Q2_K, Q.Q2_K),
    _preset("Q3_K_S", FT.MOSTLY_Q3_K_S, Q.Q3_K),
    _preset("Q3_K_M", FT.MOSTLY_Q3_K_M, Q.Q3_K),
    _preset("Q3_K_L", FT.MOSTLY_Q3_K_L, Q.Q3_K),
    _preset("Q4_K_S", FT.MOSTLY_Q4_K_S, Q.Q4_K),
    _preset("Q4_K_M", FT.MOSTLY_Q4_K_M, Q.Q4_K),
    _preset("Q5_K_S", FT.MOSTLY_Q5_K_S, Q.Q5_K),
    _preset("Q5_K_M", FT.MOSTLY_Q5_K_M, Q.Q5_K),
    _preset("Q6_K", FT.MOSTLY_Q6_K, Q.Q6_K),
])

_FLOAT_TYPES = frozenset({Q.F32, Q.F16, Q.BF16})

# Where a type goes when the row length is not a multiple of its block (llama.cpp's table).
_FALLBACK: dict[Q, Q] = {
    Q.Q2_K: Q.Q4_0, Q.Q3_K: Q.Q4_0, Q.TQ1_0: Q.Q4_0, Q.TQ2_0: Q.Q4_0,
    Q.Q4_K: Q.Q5_0, Q.Q5_K: Q.Q5_1, Q.Q6_K: Q.Q8_0,
    Q.IQ1_S: Q.IQ4_NL, Q.IQ1_M: Q.IQ4_NL, Q.IQ2_XXS: Q.IQ4_NL, Q.IQ2_XS: Q.IQ4_NL,
    Q.IQ2_S: Q.IQ4_NL, Q.IQ3_XXS: Q.IQ4_NL, Q.IQ3_S: Q.IQ4_NL, Q.IQ4_XS: Q.IQ4_NL,
}

# Architectures whose llama.cpp model type is "70B" at this layer count (llama: see _is_70b).
_SEVENTY_B = {"deci": 80, "olmo": 80, "qwen2": 80, "jais2": 68}

# Substrings (or exact names) of tensors llama.cpp never quantizes, whatever the preset.
_KEEP_SUBSTRINGS = (
    "_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
    "per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight",
    "indexer.q_proj.weight", "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight",
    "time_mix_w2.weight", "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight",
    "time_mix_a0.weight", "time_mix_a1.weight", "time_mix_a2.weight", "time_mix_g1.weight",
    "time_mix_g2.weight", "time_mix_decay_w1.weight", "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight", "attn_rel_b.weight", ".position_embd", "sam.pos_embd",
    "sam.neck.", "sam.net_", ".rel_pos", ".patch_embd", ".patch_merger", "a.rvq.codebook",
    "mm.a.code_embd",
)
_KEEP_EXACT = ("position_embd.weight", "token_types.weight")
_KEEP_SUBSTRINGS_GLM5_NEXT = (
    "hc_", "indexer.attn_q_b", "indexer.attn_k", "indexer.proj", "indexer_compressor_gate",
    "indexer_compressor_ape", "ssm_f_a.weight", "ssm_f_b.weight", "ssm_g_a.weight",
    "ssm_g_b.weight", "ssm_beta.weight", "attn_kv_a_mqa.weight", "attn_k_b.weight",
    "attn_v_b.weight",
)


@dataclass(frozen=True)
class TensorSpec:
    """One tensor as the planner sees it.

    ``shape`` is in GGUF order: ``shape[0]`` (ne0) is the row length, the axis cut into blocks.
    ``dtype`` is the type the tensor has in the source; tensors that are never quantized keep it.
    """

    name: str
    shape: tuple[int, ...]
    dtype: gguf.GGMLQuantizationType = Q.F32

    @classmethod
    def from_row_major(cls, name: str, shape: Sequence[int], dtype: Q = Q.F32) -> TensorSpec:
        """From a numpy/torch shape (last axis is the row)."""
        return cls(name, layout.gguf_shape(shape), dtype)

    @property
    def ne0(self) -> int:
        return self.shape[0]

    @property
    def n_elements(self) -> int:
        return layout.n_elements(self.shape)

    @property
    def n_dims(self) -> int:
        """Dimensions up to the last one that is not 1, as ggml counts them ([576, 1] is 1-D)."""
        dims = 1
        for i, d in enumerate(self.shape):
            if d != 1:
                dims = i + 1
        return dims


@dataclass(frozen=True)
class Decision:
    """Why a tensor got its type: ``intended`` is the rule's choice before any shape fallback."""

    type: gguf.GGMLQuantizationType
    intended: gguf.GGMLQuantizationType
    reason: str

    @property
    def fell_back(self) -> bool:
        return self.type != self.intended


class Plan(dict):
    """``{tensor name: GGML type}`` with the reasons behind each choice (for ``explain``)."""

    def __init__(self, preset: Preset, arch: str, decisions: dict[str, Decision],
                 shapes: dict[str, tuple[int, ...]]):
        super().__init__((name, d.type) for name, d in decisions.items())
        self.preset = preset
        self.arch = arch
        self.decisions = decisions
        self.shapes = shapes


@dataclass(frozen=True)
class PlanRow:
    """One line of ``explain``'s table."""

    name: str
    shape: tuple[int, ...]
    type: str
    bits_per_weight: float
    reason: str


class _Cat(enum.Enum):
    TOKEN_EMBD = "token_embd"
    ATTN_Q = "attn_q"
    ATTN_K = "attn_k"
    ATTN_V = "attn_v"
    ATTN_QKV = "attn_qkv"
    ATTN_KV_B = "attn_kv_b"
    ATTN_OUTPUT = "attn_output"
    FFN_UP = "ffn_up"
    FFN_GATE = "ffn_gate"
    FFN_DOWN = "ffn_down"
    OUTPUT = "output"
    OTHER = "other"


_V_LIKE = frozenset({_Cat.ATTN_V, _Cat.ATTN_QKV, _Cat.ATTN_KV_B})

# First match wins, in llama.cpp's order (attn_qkv before attn_v, ffn_up before ffn_gate, ...).
_CATEGORY_SUBSTRINGS = (
    ("attn_qkv.weight", _Cat.ATTN_QKV), ("attn_kv_b.weight", _Cat.ATTN_KV_B),
    ("attn_v.weight", _Cat.ATTN_V), ("attn_k.weight", _Cat.ATTN_K), ("attn_q.weight", _Cat.ATTN_Q),
    ("attn_output.weight", _Cat.ATTN_OUTPUT), ("ffn_up", _Cat.FFN_UP), ("ffn_gate", _Cat.FFN_GATE),
    ("ffn_down", _Cat.FFN_DOWN),
)

_LAYER_RE = re.compile(r"blk\.(-?\d+)\.")


def _category(name: str) -> _Cat:
    if name == "output.weight":
        return _Cat.OUTPUT
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return _Cat.TOKEN_EMBD
    for sub, cat in _CATEGORY_SUBSTRINGS:
        if sub in name:
            return cat
    return _Cat.OTHER


def _layer_of(name: str) -> int | None:
    """The block index as C's sscanf("blk.%d.") reads it: only at the start of the name."""
    m = _LAYER_RE.match(name)
    return int(m.group(1)) if m else None


def _weight_order(spec: TensorSpec) -> tuple[int, bytes]:
    """llama.cpp's weight order: layer (non-block tensors first), then name byte-wise."""
    layer = _layer_of(spec.name)
    return (-1 if layer is None else layer, spec.name.encode("utf-8", "surrogatepass"))


def quantizable(spec: TensorSpec, arch: str) -> bool:
    """Whether llama.cpp would quantize this tensor at all (otherwise it keeps its type)."""
    name = spec.name
    if spec.n_dims < 2 or not name.endswith("weight"):
        return False
    if name in _KEEP_EXACT or any(s in name for s in _KEEP_SUBSTRINGS):
        return False
    return not (arch == "glm5-next" and any(s in name for s in _KEEP_SUBSTRINGS_GLM5_NEXT))


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    """llama.cpp's choice of layers that get more bits: first and last eighth, every third between."""
    eighth = n_layers // 8
    return i_layer < eighth or i_layer >= 7 * n_layers // 8 or (i_layer - eighth) % 3 == 2


def get_preset(preset: str | Preset) -> Preset:
    if isinstance(preset, Preset):
        return preset
    key = str(preset).upper()
    if key not in PRESETS:
        raise UnsupportedError(
            f"unknown quantization preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[key]


@dataclass
class _State:
    """The counters llama.cpp carries from tensor to tensor while choosing types."""

    n_attn_v: int
    n_layers: int
    i_attn_v: int = 0
    i_ffn_down: int = 0
    i_ffn_gate: int = 0
    i_ffn_up: int = 0


@dataclass(frozen=True)
class _Model:
    arch: str
    n_layers: int
    n_gqa: int
    n_expert: int
    is_70b: bool
    tied: bool
    has_imatrix: bool


def _is_70b(arch: str, n_layers: int, n_head: int, n_head_kv: int, n_expert: int) -> bool:
    if arch == "llama":
        return n_expert != 8 and n_layers == 80 and n_head != n_head_kv
    return _SEVENTY_B.get(arch) == n_layers


def _check_int(value: object, what: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InputError(f"{what} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def _check_specs(tensors: Sequence[TensorSpec]) -> None:
    if len(tensors) > MAX_TENSORS:
        raise InputError(f"{len(tensors)} tensors is over the limit of {MAX_TENSORS}")
    seen: set[str] = set()
    for t in tensors:
        if not isinstance(t, TensorSpec):
            raise InputError(f"expected TensorSpec, got {type(t).__name__}")
        if not isinstance(t.name, str) or not t.name:
            raise InputError(f"tensor name must be a non-empty string, got {t.name!r}")
        if t.name in seen:
            raise InputError(f"tensor {t.name!r} appears twice")
        seen.add(t.name)
        if not isinstance(t.shape, tuple) or not 1 <= len(t.shape) <= MAX_DIMS:
            raise InputError(f"tensor {t.name!r}: shape must be a tuple of 1..{MAX_DIMS} ints")
        for d in t.shape:
            _check_int(d, f"tensor {t.name!r}: dimension", 1, MAX_DIM_SIZE)
        if t.dtype not in gguf.GGML_QUANT_SIZES:
            raise InputError(f"tensor {t.name!r}: unknown type {t.dtype!r}")


def plan_types(
    tensors: Sequence[TensorSpec],
    arch: str,
    preset: str | Preset,
    *,
    n_layers: int,
    n_head: int,
    n_head_kv: int,
    n_expert: int = 0,
    has_imatrix: bool = False,
) -> Plan:
    """The GGML type of every tensor, as ``llama_model_quantize`` chooses it for ``preset``.

    ``n_layers`` is the GGUF ``block_count``; ``n_head``/``n_head_kv`` are layer 0's head counts
    (their ratio decides the GQA bumps); ``n_expert`` is the MoE expert count (0 for dense).
    ``has_imatrix`` matters only for Q4_0/Q5_0, whose first ffn_down layers then get Q4_1/Q5_1.
    The result is a dict (name -> type) that also carries the reasons, for ``explain``.
    """
    p = get_preset(preset)
    if not isinstance(arch, str) or not arch:
        raise InputError(f"architecture must be a non-empty string, got {arch!r}")
    _check_int(n_layers, "n_layers", 1, MAX_LAYERS)
    _check_int(n_head, "n_head", 0, 1 << 20)
    _check_int(n_head_kv, "n_head_kv", 0, 1 << 20)
    _check_int(n_expert, "n_expert", 0, 1 << 20)
    _check_specs(tensors)

    model = _Model(
        arch=arch,
        n_layers=n_layers,
        n_gqa=n_head // n_head_kv if n_head_kv else 0,
        n_expert=n_expert,
        is_70b=_is_70b(arch, n_layers, n_head, n_head_kv, n_expert),
        tied=not any(t.name == "output.weight" for t in tensors),
        has_imatrix=bool(has_imatrix),
    )
    state = _State(n_attn_v=sum(_category(t.name) in _V_LIKE for t in tensors), n_layers=n_layers)

    decisions: dict[str, Decision] = {}
    for spec in sorted(tensors, key=_weight_order):
        decisions[spec.name] = _decide(spec, p, model, state)
    ordered = {t.name: decisions[t.name] for t in tensors}
    return Plan(p, arch, ordered, {t.name: t.shape for t in tensors})


def _decide(spec: TensorSpec, p: Preset, model: _Model, state: _State) -> Decision:
    if not quantizable(spec, model.arch):
        why = "1-D tensor" if spec.n_dims < 2 else "never quantized (norm, router, embedding of positions, ...)"
        return Decision(spec.dtype, spec.dtype, f"kept {spec.dtype.name}: {why}")
    if p.base in _FLOAT_TYPES:
        return Decision(p.base, p.base, f"preset {p.name}")
    chosen, why = _rule(spec, p, model, state)
    final, fallback_why = _fallback(spec.ne0, chosen)
    reason = why if fallback_why is None else f"{why}; {fallback_why}"
    intended = chosen
    if _is_output_like(spec.name, model) and model.arch != "falcon" and spec.ne0 % layout.block(p.base)[0]:
        # output/tied embeddings take Q8_0 instead of Q6_K when the base type's block does not fit
        intended = Q.Q6_K if p.base != Q.Q8_0 else Q.Q8_0
    return Decision(final, intended, reason)


def _is_output_like(name: str, model: _Model) -> bool:
    cat = _category(name)
    return cat is _Cat.OUTPUT or (model.tied and cat is _Cat.TOKEN_EMBD)


def _rule(spec: TensorSpec, p: Preset, model: _Model, state: _State) -> tuple[Q, str]:
    """The preset's mixture rule for one tensor, before any shape fallback."""
    name, base, preset = spec.name, p.base, p.name
    cat = _category(name)

    if model.arch == "glm5-next" and any(s in name for s in ("attn_q_a", "attn_q_b", "nextn.eh_proj")):
        return Q.Q8_0, "glm5-next keeps this projection at Q8_0"

    if _is_output_like(name, model):
        what = "output" if cat is _Cat.OUTPUT else f"{name} (tied to output)"
        if model.arch == "falcon":
            return Q.Q8_0, f"{what}: Q8_0 for falcon"
        if spec.ne0 % layout.block(base)[0] != 0:
            # A shape fallback in all but name: report it as one (see _decide).
            return Q.Q8_0, f"{what}: fallback: {spec.ne0} not divisible by {layout.block(base)[0]} -> Q8_0"
        if base != Q.Q8_0:
            return Q.Q6_K, f"{what}: Q6_K"
        return base, f"{what}: Q8_0"

    if cat is _Cat.TOKEN_EMBD:
        return base, f"base type {base.name}"

    if cat in _V_LIKE:
        return _rule_attn_v(cat, p, model, state)

    if cat is _Cat.ATTN_K:
        if model.n_expert == 8:
            return Q.Q8_0, "attn_k: Q8_0 in 8-expert models"
        return base, f"base type {base.name}"

    if cat is _Cat.FFN_DOWN:
        i_layer, n_layer = _layer_info(name, state.i_ffn_down, model)
        state.i_ffn_down += 1
        return _rule_ffn_down(base, preset, model, i_layer, n_layer)

    if cat is _Cat.ATTN_OUTPUT:
        return _rule_attn_output(base, preset, model)

    if cat is _Cat.FFN_GATE:
        _layer_info(name, state.i_ffn_gate, model)
        state.i_ffn_gate += 1
    elif cat is _Cat.FFN_UP:
        _layer_info(name, state.i_ffn_up, model)
        state.i_ffn_up += 1
    return base, f"base type {base.name}"


def _layer_info(name: str, counter: int, model: _Model) -> tuple[int, int]:
    """Dense models count tensors; MoE models read the layer from the name (experts interleave)."""
    if model.n_expert <= 1:
        return counter, model.n_layers
    layer = _layer_of(name)
    if layer is None:
        raise InputError(f"cannot tell the layer of tensor {name!r} (expected blk.N.)")
    if not 0 <= layer < model.n_layers:
        raise InputError(f"tensor {name!r}: layer {layer} outside [0, {model.n_layers})")
    return layer, model.n_layers


def _rule_attn_v(cat: _Cat, p: Preset, model: _Model, state: _State) -> tuple[Q, str]:
    i, n = state.i_attn_v, state.n_attn_v
    state.i_attn_v += 1
    label = cat.value
    where = f"{label} {i} of {n}"
    new, why = p.base, f"base type {p.base.name}"
    if p.name == "Q2_K":
        if model.n_gqa >= 4:
            new, why = Q.Q4_K, f"{label} bumped to Q4_K (GQA {model.n_gqa} >= 4)"
        else:
            new, why = Q.Q3_K, f"{label} bumped to Q3_K"
    elif p.name == "Q3_K_M":
        new = Q.Q5_K if i < 2 else Q.Q4_K
        why = f"{label} bumped to {new.name} ({where}{', one of the first two' if i < 2 else ''})"
    elif p.name == "Q3_K_L":
        new, why = Q.Q5_K, f"{label} bumped to Q5_K"
    elif p.name in ("Q4_K_M", "Q5_K_M") and use_more_bits(i, n):
        new, why = Q.Q6_K, f"{label} bumped to Q6_K (use_more_bits: {where})"
    elif p.name == "Q4_K_S" and i < 4:
        new, why = Q.Q5_K, f"{label} bumped to Q5_K ({where}, one of the first four)"
    if model.is_70b and new in (Q.Q3_K, Q.Q4_K):
        new, why = Q.Q5_K, f"{label} bumped to Q5_K (70B model: attn_v is 8x smaller than attn_q)"
    if model.n_expert == 8:
        new, why = Q.Q8_0, f"{label}: Q8_0 in 8-expert models"
    return new, why


def _rule_ffn_down(base: Q, preset: str, model: _Model, i: int, n: int) -> tuple[Q, str]:
    where = f"layer {i} of {n}"
    falcon = model.arch == "falcon"
    if preset == "Q2_K":
        return Q.Q3_K, "ffn_down bumped to Q3_K"
    if preset == "Q3_K_M":
        if i < n // 16:
            return Q.Q5_K, f"ffn_down bumped to Q5_K ({where}, first sixteenth)"
        if not falcon or use_more_bits(i, n):
            return Q.Q4_K, f"ffn_down bumped to Q4_K ({where})"
        return Q.Q3_K, f"base type Q3_K (falcon, {where})"
    if preset == "Q3_K_L":
        new = Q.Q4_K if falcon else Q.Q5_K
        return new, f"ffn_down bumped to {new.name}"
    if preset == "Q4_K_M":
        if falcon:
            if i < n // 16:
                return Q.Q6_K, f"ffn_down bumped to Q6_K (falcon, {where}, first sixteenth)"
            if use_more_bits(i, n):
                return Q.Q5_K, f"ffn_down bumped to Q5_K (falcon, use_more_bits: {where})"
            return base, f"base type {base.name} ({where})"
        if use_more_bits(i, n):
            return Q.Q6_K, f"ffn_down bumped to Q6_K (use_more_bits: {where})"
        return base, f"base type {base.name} ({where})"
    if preset == "Q5_K_M" and use_more_bits(i, n):
        return Q.Q6_K, f"ffn_down bumped to Q6_K (use_more_bits: {where})"
    if preset == "Q4_K_S" and not falcon and i < n // 8:
        return Q.Q5_K, f"ffn_down bumped to Q5_K ({where}, first eighth)"
    if preset in ("Q4_0", "Q5_0") and model.has_imatrix and i < n // 8:
        new = Q.Q4_1 if preset == "Q4_0" else Q.Q5_1
        return new, f"ffn_down bumped to {new.name} (imatrix, {where}, first eighth)"
    return base, f"base type {base.name}"


def _rule_attn_output(base: Q, preset: str, model: _Model) -> tuple[Q, str]:
    if model.arch == "falcon":
        if preset == "Q3_K_L":
            return Q.Q4_K, "attn_output bumped to Q4_K (falcon)"
        return base, f"base type {base.name}"
    if model.n_expert == 8:
        if preset in ("Q2_K", "Q3_K_S", "Q3_K_M", "Q4_K_S", "Q4_K_M"):
            return Q.Q5_K, "attn_output bumped to Q5_K (8-expert model)"
        return base, f"base type {base.name}"
    bump = {"Q2_K": Q.Q3_K, "Q3_K_M": Q.Q4_K, "Q3_K_L": Q.Q5_K}.get(preset)
    if bump is not None:
        return bump, f"attn_output bumped to {bump.name}"
    return base, f"base type {base.name}"


def _fallback(ne0: int, qtype: Q) -> tuple[Q, str | None]:
    """llama.cpp's replacement when the row length is not a multiple of the type's block."""
    blk = layout.block(qtype)[0]
    if ne0 % blk == 0:
        return qtype, None
    if qtype in _FALLBACK:
        new = _FALLBACK[qtype]
    elif blk <= 32:
        new = qtype
    else:
        raise UnsupportedError(f"no fallback for type {qtype.name} with row length {ne0}")
    if ne0 % layout.block(new)[0] != 0:
        new = Q.F16
    return new, f"fallback: {ne0} not divisible by {blk} ({qtype.name}) -> {new.name}"


def _plan_shapes(plan: Mapping[str, Q], tensors: Sequence[TensorSpec] | None) -> dict[str, tuple[int, ...]]:
    if tensors is not None:
        shapes = {t.name: t.shape for t in tensors}
    elif isinstance(plan, Plan):
        shapes = plan.shapes
    else:
        raise InputError("bits_per_weight needs the tensors when the plan is a plain dict")
    missing = [name for name in plan if name not in shapes]
    if missing:
        raise InputError(f"no shape for tensor {missing[0]!r} ({len(missing)} missing)")
    return shapes


def bits_per_weight(plan: Mapping[str, Q], tensors: Sequence[TensorSpec] | None = None) -> float:
    """Tensor-data bits per weight of the whole model under ``plan`` (what llama.cpp prints as BPW)."""
    shapes = _plan_shapes(plan, tensors)
    n_bytes = n_weights = 0
    for name, qtype in plan.items():
        shape = shapes[name]
        n_bytes += layout.tensor_nbytes(shape, qtype)
        n_weights += layout.n_elements(shape)
    return 8.0 * n_bytes / n_weights if n_weights else 0.0


def intended_bits_per_weight(plan: Plan) -> float:
    """Bits per weight had every tensor got its rule's type (no shape fallbacks): the fallbacks' cost
    is ``bits_per_weight(plan) - intended_bits_per_weight(plan)``."""
    n_bits = 0.0
    n_weights = 0
    for name, d in plan.decisions.items():
        n = layout.n_elements(plan.shapes[name])
        n_bits += n * layout.bits_per_weight(d.intended)
        n_weights += n
    return n_bits / n_weights if n_weights else 0.0


def explain(plan: Plan) -> list[PlanRow]:
    """One row per tensor, in the plan's order: name, shape, type, bits per weight, why."""
    if not isinstance(plan, Plan):
        raise InputError("explain needs the Plan returned by plan_types")
    return [
        PlanRow(name, plan.shapes[name], d.type.name, layout.bits_per_weight(d.type), d.reason)
        for name, d in plan.decisions.items()
    ]


def format_table(rows: Sequence[PlanRow]) -> str:
    """``explain``'s rows as aligned text, for the CLI."""
    cells = [("tensor", "shape", "type", "bpw", "reason")]
    cells += [(r.name, "x".join(map(str, r.shape)), r.type, f"{r.bits_per_weight:.4g}", r.reason) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(4)]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(4)) + "  " + c[4] for c in cells]
    return "\n".join(line.rstrip() for line in lines)


@dataclass(frozen=True)
class GGUFModel:
    """What the planner needs from an existing GGUF file."""

    arch: str
    tensors: tuple[TensorSpec, ...]
    n_layers: int
    n_head: int
    n_head_kv: int
    n_expert: int


def _int_field(f: GGUFFile, key: str, default: int | None = None) -> int:
    v = f.get(key, default)
    if isinstance(v, list):  # per-layer arrays (head counts): llama.cpp's rules read layer 0
        v = v[0] if v else default
    if v is None:
        raise InputError(f"{f.what}: no {key!r}")
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return _check_int(v, key, 0, 1 << 40)


def model_from_gguf(f: GGUFFile) -> GGUFModel:
    """Tensor list and hyperparameters of a GGUF file, ready for ``plan_types``."""
    arch = f.architecture
    K = gguf.Keys
    n_head = _int_field(f, K.Attention.HEAD_COUNT.format(arch=arch), 0)
    return GGUFModel(
        arch=arch,
        tensors=tuple(TensorSpec(t.name, t.shape, t.ggml_type) for t in f.tensors),
        n_layers=_int_field(f, K.LLM.BLOCK_COUNT.format(arch=arch)),
        n_head=n_head,
        n_head_kv=_int_field(f, K.Attention.HEAD_COUNT_KV.format(arch=arch), n_head),
        n_expert=_int_field(f, K.LLM.EXPERT_COUNT.format(arch=arch), 0),
    )


def plan_gguf(f: GGUFFile, preset: str | Preset, *, has_imatrix: bool = False) -> Plan:
    """``plan_types`` for the tensors of an existing GGUF file (e.g. an F16 export)."""
    m = model_from_gguf(f)
    return plan_types(m.tensors, m.arch, preset, n_layers=m.n_layers, n_head=m.n_head,
                      n_head_kv=m.n_head_kv, n_expert=m.n_expert, has_imatrix=has_imatrix)
