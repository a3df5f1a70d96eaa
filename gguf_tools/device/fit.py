"""Memory plan before anything is loaded: will this GGUF run on that device, at that context?

Every number comes from the GGUF header (no model is loaded). The parts, as llama.cpp allocates them:

- weights: the tensor data, memory-mapped; the kernel can page it back to disk, so a model whose
  weights alone overflow the budget still runs (slowly): verdict ``pages``. A packed file decodes
  into anonymous memory instead, which cannot page: then the weights count like the rest.
- KV cache: for each layer, cells x (K width + V width) x bytes per element of the cache type. llama.cpp
  pads the context to 256 cells; a sliding-window (SWA) layer holds min(ctx, window + ubatch) cells
  padded to 256, unless the cache is full-size (``swa_full``, llama.cpp's default).
- compute: the activations of one prompt batch with one output row, as ggml's allocator lays them out
  for the real graph (not the worst-case reservation, most of which is the logits of a whole batch and
  never touched by a chat). Estimated as n_ubatch x 4 B x (4 n_embd + 3 n_ff + 2 n_head x attended
  cells); measured +19..23 MiB on SmolLM2-135M and Gemma-3-270M for a 480-token prompt, where this gives
  33 and 25 MiB.
- overhead: the Python process with llama-cpp-python loaded (45 MiB measured on x86-64 Linux), plus
  14 MiB + 210 B per vocabulary entry for llama.cpp's tokenizer tables, output row and graph. The two
  constants are fitted on SmolLM2 (49k vocab) and Gemma 3 (262k vocab) by the RSS test; they also
  absorb llama.cpp's repacked copy of Q4_0/Q4_K tensors on AVX2 (12.7 MiB for Gemma-3-270M).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..errors import InputError
from ..gguf_file.reader import GGUFFile

MiB = 1 << 20
PROCESS_BASE = 45 * MiB
RUNTIME_FIXED = 14 * MiB
RUNTIME_PER_TOKEN = 210
CELL_PAD = 256
N_UBATCH = 512

# bytes per element of a KV cache type
KV_TYPES: dict[str, float] = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q5_1": 24 / 32,
                              "q5_0": 22 / 32, "q4_1": 20 / 32, "q4_0": 18 / 32}

# architecture -> (SWA pattern period, dense layer first, default window): llama.cpp's per-model
# load_swa_pattern calls; a GGUF key {arch}.attention.sliding_window_pattern overrides the period.
SWA_ARCHS: dict[str, tuple[int, bool, int]] = {
    "gemma2": (2, False, 4096), "gemma3": (6, False, 0), "gemma3n": (5, False, 0), "gemma-embedding": (6, False, 0),
    "cohere2": (4, False, 0), "llama4": (4, False, 0), "olmo2": (4, False, 0), "exaone4": (4, False, 0),
    "gpt-oss": (2, False, 0),
}


@dataclass(frozen=True)
class ModelShape:
    """What memory depends on, from the header."""

    arch: str
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: tuple[int, ...]     # per layer
    k_dim: int                     # per KV head
    v_dim: int
    n_vocab: int
    n_ctx_train: int
    n_swa: int                     # 0: no sliding window
    swa_layers: tuple[bool, ...]   # per layer
    weight_bytes: int              # tensor data, as mapped
    read_per_token: int            # tensor bytes a decode step reads (embedding rows excepted)


@dataclass(frozen=True)
class Plan:
    """A memory plan; sizes in bytes."""

    ctx: int
    kv_type: str
    weights: int
    kv: int
    compute: int
    overhead: int
    total: int
    budget: int | None
    verdict: str                  # fits | pages | cannot | unknown (no budget)
    max_ctx: int | None           # largest context (multiple of 256) that fits; None when none does
    tokens_per_s: float | None    # decode upper bound from memory bandwidth
    packed: bool

    def as_dict(self) -> dict:
        return asdict(self)


def _int(f: GGUFFile, key: str, default: int | None = None) -> int:
    value = f.get(key, default)
    if value is None:
        raise InputError(f"GGUF header has no {key}")
    if isinstance(value, list):
        raise InputError(f"{key} is an array")
    return int(value)


def model_shape(f: GGUFFile, file_size: int) -> ModelShape:
    """The shape facts of a parsed header; only the keys read here are decoded."""
    arch = str(f.get("general.architecture", ""))
    if not arch:
        raise InputError("GGUF header has no general.architecture")
    n_layer = _int(f, f"{arch}.block_count")
    n_embd = _int(f, f"{arch}.embedding_length")
    ff = f.get(f"{arch}.feed_forward_length", 4 * n_embd)
    n_ff = max(ff) if isinstance(ff, list) else int(ff)
    heads = f.get(f"{arch}.attention.head_count", 1)
    n_head = max(heads) if isinstance(heads, list) else int(heads)
    kv = f.get(f"{arch}.attention.head_count_kv", heads)
    n_head_kv = tuple(int(h) for h in kv) if isinstance(kv, list) else (int(kv),) * n_layer
    if len(n_head_kv) != n_layer:
        raise InputError(f"{arch}.attention.head_count_kv has {len(n_head_kv)} entries for {n_layer} layers")
    k_dim = _int(f, f"{arch}.attention.key_length", n_embd // max(n_head, 1))
    v_dim = _int(f, f"{arch}.attention.value_length", k_dim)
    embd = next((t for t in f.tensors if t.name == "token_embd.weight"), None)
    n_vocab = int(f.get(f"{arch}.vocab_size") or (embd.shape[1] if embd and len(embd.shape) > 1 else 0))
    n_ctx_train = _int(f, f"{arch}.context_length", 2048)
    n_swa, swa = 0, (False,) * n_layer
    if arch in SWA_ARCHS:
        period, dense_first, default_window = SWA_ARCHS[arch]
        n_swa = int(f.get(f"{arch}.attention.sliding_window", default_window) or 0)
        pattern = f.get(f"{arch}.attention.sliding_window_pattern", period)
        if n_swa and isinstance(pattern, list):
            swa = tuple(bool(p) for p in pattern[:n_layer]) + (False,) * max(0, n_layer - len(pattern))
        elif n_swa:
            p = int(pattern)
            swa = tuple(p == 0 or (il % p != 0 if dense_first else il % p < p - 1) for il in range(n_layer))
    weight_bytes = max(0, file_size - f.data_offset)
    has_output = any(t.name == "output.weight" for t in f.tensors)
    skipped = embd.nbytes if embd is not None and has_output else 0
    return ModelShape(arch, n_layer, n_embd, n_ff, n_head, n_head_kv, k_dim, v_dim, n_vocab, n_ctx_train,
                      n_swa, swa, weight_bytes, max(0, weight_bytes - skipped))


def read_shape(path: str | os.PathLike) -> ModelShape:
    """The shape of a GGUF file on disk; only the keys it needs are decoded (never the vocabulary).
    The first shard of a split model stands for the whole: the other shards' tensor bytes are added."""
    path = Path(path)
    f = GGUFFile.open(path)
    shape = model_shape(f, path.stat().st_size)
    if int(f.get("split.count", 1) or 1) > 1:
        from .split import shard_paths

        rest = sum(p.stat().st_size - GGUFFile.open(p).data_offset for p in shard_paths(path)[1:])
        shape = replace(shape, weight_bytes=shape.weight_bytes + rest, read_per_token=shape.read_per_token + rest)
    return shape


def pad(n: int, to: int = CELL_PAD) -> int:
    return -(-n // to) * to


def kv_bytes(shape: ModelShape, ctx: int, kv_type: str = "f16", *, swa_full: bool = True,
             n_ubatch: int = N_UBATCH) -> int:
    """The KV cache llama.cpp allocates: per layer, cells x heads x (k_dim + v_dim) x element size."""
    size = KV_TYPES.get(kv_type)
    if size is None:
        raise InputError(f"unknown KV cache type {kv_type!r} (one of {', '.join(KV_TYPES)})")
    cells = pad(ctx)
    swa_cells = cells if swa_full else pad(min(cells, shape.n_swa + n_ubatch))
    total = 0
    for il in range(shape.n_layer):
        n = swa_cells if shape.swa_layers[il] else cells
        total += int(n * shape.n_head_kv[il] * (shape.k_dim + shape.v_dim) * size)
    return total


def compute_bytes(shape: ModelShape, ctx: int, n_ubatch: int = N_UBATCH) -> int:
    """Activations of one prompt batch with one output row (see the module docstring)."""
    attended = min(pad(ctx), n_ubatch)
    return n_ubatch * 4 * (4 * shape.n_embd + 3 * shape.n_ff + 2 * shape.n_head * attended)


def overhead_bytes(shape: ModelShape) -> int:
    return PROCESS_BASE + RUNTIME_FIXED + RUNTIME_PER_TOKEN * shape.n_vocab


def _total(shape: ModelShape, ctx: int, kv_type: str, swa_full: bool) -> tuple[int, int, int]:
    kv, compute = kv_bytes(shape, ctx, kv_type, swa_full=swa_full), compute_bytes(shape, ctx)
    return kv, compute, shape.weight_bytes + kv + compute + overhead_bytes(shape)


def verdict(shape: ModelShape, total: int, budget: int | None, packed: bool) -> str:
    if budget is None:
        return "unknown"
    if total <= budget:
        return "fits"
    if not packed and total - shape.weight_bytes < budget:
        return "pages"
    return "cannot"


def plan(shape: ModelShape, ctx: int | str = 4096, kv_type: str = "f16", *, budget: int | None = None,
         bandwidth: float | None = None, packed: bool = False, swa_full: bool = True) -> Plan:
    """The memory plan at ``ctx`` (``"max"``: the largest context that fits, up to the trained one)."""
    largest = None
    if budget is not None:
        lo, hi = 0, pad(shape.n_ctx_train) // CELL_PAD
        while lo < hi:   # the total grows with the context: bisect on multiples of 256
            mid = (lo + hi + 1) // 2
            if _total(shape, mid * CELL_PAD, kv_type, swa_full)[2] <= budget:
                lo = mid
            else:
                hi = mid - 1
        largest = lo * CELL_PAD or None
    if ctx == "max":
        ctx = largest or CELL_PAD
    ctx = int(ctx)
    if ctx <= 0:
        raise InputError(f"context must be positive, got {ctx}")
    kv, compute, total = _total(shape, ctx, kv_type, swa_full)
    speed = None
    if bandwidth:
        speed = bandwidth / max(1, shape.read_per_token + kv)
    return Plan(ctx, kv_type, shape.weight_bytes, kv, compute, overhead_bytes(shape), total, budget,
                verdict(shape, total, budget, packed), largest, speed, packed)


def fit(path: str | os.PathLike, ctx: int | str = 4096, kv_type: str = "f16", *, budget: int | None = None,
        bandwidth: float | None = None, swa_full: bool = True) -> Plan:
    """``plan`` for a GGUF or packed file on disk."""
    from ..packed import is_packed

    packed = is_packed(path)
    if packed:
        from ..packed import read_packed_header

        header = read_packed_header(path)
        shape = model_shape(header.gguf, header.original_size)
    else:
        shape = read_shape(path)
    return plan(shape, ctx, kv_type, budget=budget, bandwidth=bandwidth, packed=packed, swa_full=swa_full)
