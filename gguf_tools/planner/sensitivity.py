"""How much each tensor's quantization to each candidate type costs the model, in predicted KLD.

Two measurements, both on real data:

1. Per tensor x candidate, the activation-weighted squared error ``sum_ij a_j (w_ij - q_ij)^2`` of the block bytes the
   writer would produce (the same quantizer, the same importance and search), on a deterministic sample of rows scaled
   to the whole tensor. ``a_j`` is the mean squared input of column j, collected while the reference model reads the
   calibration text: the error a column makes counts as much as that column's input is large. llama.cpp also rounds
   the input to int8 per block (32 values beside the 32-weight types, 256 beside the K-quants), so the candidate's
   error adds ``sum_ij q_ij^2 r_j``, with ``r_j`` the mean squared rounding error of column j's real inputs at that
   block size: an input with outliers costs a K-quant more than its weight error says.
2. Per group of tensors (a role in a band of layers; the embedding; the output), the end-to-end KLD of the reference
   engine when the group alone is quantized to a probe type, on held-out calibration text. Its ratio to the group's
   weighted error at the probe type scales each tensor's errors (``calibrate``): predicted dKLD = alpha * error.

A probe reruns the model only from the first layer of its band (the residual stream entering it is kept from the
reference pass), and an output probe only the output matrix.
"""
from __future__ import annotations

import queue
import re
from collections.abc import Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import gguf
import numpy as np

from ..gguf_file.layout import numpy_shape
from ..gguf_file.reader import GGUFFile, TensorInfo
from .candidates import dequantize

Q = gguf.GGMLQuantizationType

METHOD = 3           # bump when what is measured changes: cached entries of another method are not read
PROBE = Q.Q4_0       # the type every group is perturbed with: valid for any row of 32s, near the bits plans use
MAX_ROWS = 32        # rows sampled per tensor for the weighted error
BANDS = 2            # layer bands per role: probes are (role x band), plus the embedding and the output
CTX = 64             # tokens of held-out calibration text per probe; the KLD is taken over the second half
# Roles that read the same input and act together share a probe (q and k meet in one dot product; gate and up in
# one product): fewer forward passes, the same per-tensor detail from the weighted errors.
SHARED_PROBE = {"attn_k": "attn_qk", "attn_q": "attn_qk", "ffn_gate": "ffn_gate_up", "ffn_up": "ffn_gate_up"}

BLOCK_NAME = re.compile(r"blk\.(\d+)\.(.+)\.weight$")


@dataclass
class ErrorTask:
    """One tensor's sample, with everything a worker needs (no file access)."""

    name: str
    rows: np.ndarray                 # (sampled rows, row length) float32
    scale: np.ndarray                # per sampled row: how many of the tensor's rows it stands for
    types: tuple[int, ...]
    importance: np.ndarray | None    # what the quantizer weighs (the user's imatrix), or None
    weights: np.ndarray | None       # what the error weighs (mean squared activations), or None: uniform
    search: str
    rounding: dict[int, np.ndarray] = field(default_factory=dict)   # block size -> mean squared input rounding


def tensor_errors(task: ErrorTask) -> dict[str, float]:
    """{type name: weighted squared error of the whole tensor at that type}, from the row sample."""
    from ..quantize import quantize

    w = task.rows
    a = np.ones(w.shape[1], np.float64) if task.weights is None else task.weights.astype(np.float64)
    out = {}
    for t in map(Q, task.types):
        if t == Q.F16:
            deq = w.astype(np.float16).astype(np.float32)
        elif t == Q.F32:
            deq = w
        else:
            blocks = quantize(w, t, task.importance, search=task.search, threads=1)
            deq = dequantize(t, blocks, w.shape, threads=1)
        e = (deq - w).astype(np.float64)
        err = np.einsum("ij,ij,j->i", e, e, a)
        r = task.rounding.get(activation_block(t))
        if r is not None:
            err += np.einsum("ij,ij,j->i", deq, deq, r.astype(np.float64))
        out[t.name] = float(err @ task.scale)
    return out


def activation_block(qtype: Q) -> int | None:
    """The block the input is rounded in beside ``qtype`` (None: float arithmetic)."""
    if qtype in (Q.F16, Q.F32, Q.BF16):
        return None
    return 256 if qtype in (Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K) else 32


def rounding_error(x: np.ndarray, block: int) -> np.ndarray:
    """Per column, the sum over rows of the squared error of rounding ``x`` to int8 per ``block`` values."""
    b = x.reshape(x.shape[0], -1, block)
    scale = np.abs(b).max(-1, keepdims=True) / np.float32(127)
    q = np.round(np.divide(b, scale, out=np.zeros_like(b), where=scale > 0)) * scale
    return ((b - q) ** 2).reshape(x.shape).sum(0, dtype=np.float64)


def group_of(name: str, n_layers: int, bands: int = BANDS) -> str:
    """``ffn_down@1`` (role in band 1 of ``bands``) for layer tensors, the tensor's own name for the rest."""
    m = BLOCK_NAME.match(name)
    if m is None:
        return name.removesuffix(".weight")
    role = SHARED_PROBE.get(m.group(2), m.group(2))
    return f"{role}@{int(m.group(1)) * bands // max(n_layers, 1)}"


def sample_rows(f: GGUFFile, t: TensorInfo, max_rows: int = MAX_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """A sample of a tensor's rows as float32, and per row the factor that scales its error to the rows it stands
    for. The rows with the largest weights are always in, each for itself (a lone outlier weight can hold a model
    together, and an even sample would miss its row); evenly spaced rows stand for the rest."""
    shape = numpy_shape(t.shape)
    n_rows = int(np.prod(shape[:-1], dtype=np.int64))
    raw = f.data(t).reshape(n_rows, -1)
    if n_rows <= max_rows:
        return dequantize(t.ggml_type, np.ascontiguousarray(raw), (n_rows, shape[-1])), np.ones(n_rows)
    peak = np.empty(n_rows, np.float32)
    step = max(1, (16 << 20) // (4 * shape[-1]))
    for r0 in range(0, n_rows, step):
        part = dequantize(t.ggml_type, np.ascontiguousarray(raw[r0 : r0 + step]), (min(step, n_rows - r0), shape[-1]))
        peak[r0 : r0 + step] = np.abs(part).max(1)
    top = np.argsort(peak)[-(max_rows // 4):]
    rest = np.setdiff1d(np.arange(n_rows), top)
    even = rest[np.linspace(0, rest.size - 1, max_rows - top.size).round().astype(np.int64)]
    idx = np.concatenate([top, even])
    scale = np.concatenate([np.ones(top.size), np.full(even.size, rest.size / even.size)])
    return dequantize(t.ggml_type, np.ascontiguousarray(raw[idx]), (idx.size, shape[-1])), scale


def column_weights(sum2: dict[str, np.ndarray], count: dict[str, int], name: str) -> np.ndarray | None:
    """Mean squared input per column of the matmul by ``name`` (None when it never multiplied: uniform)."""
    if name not in sum2 or not count.get(name):
        return None
    return (sum2[name] / count[name]).astype(np.float32)


def column_rounding(ref: Reference, name: str) -> dict[int, np.ndarray]:
    """Mean squared int8 rounding error per column of the matmul by ``name``, per block size."""
    if not ref.count.get(name):
        return {}
    return {b: (r / ref.count[name]).astype(np.float32) for (n, b), r in ref.rounding.items() if n == name}


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def scored(h: np.ndarray) -> np.ndarray:
    """The positions the KLD is taken over: the second half, where every token has context behind it."""
    return np.ascontiguousarray(h[h.shape[0] // 2 :])


def kld(ref_logp: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """KL(reference || model) per scored position."""
    logp = log_softmax(logits)
    return (np.exp(ref_logp) * (ref_logp - logp)).sum(-1)


@dataclass
class Reference:
    """What the reference pass leaves: log-probabilities, activation statistics, the stream entering each band."""

    logp: np.ndarray
    sum2: dict[str, np.ndarray]
    count: dict[str, int]
    rounding: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)   # (name, block) -> summed squares
    band_inputs: dict[int, np.ndarray] = field(default_factory=dict)   # first layer of the band -> residual stream
    final: np.ndarray | None = None                                     # normed hidden state before the output


def reference_pass(engine, tokens: list[int], band_starts: list[int]) -> Reference:
    """Run the unquantized model once, keeping what the probes restart from."""
    sum2: dict[str, np.ndarray] = {}
    count: dict[str, int] = {}
    rounding: dict[tuple[str, int], np.ndarray] = {}

    def observe(name: str, x: np.ndarray) -> None:
        x2 = np.asarray(x, np.float32).reshape(-1, x.shape[-1])
        s = np.einsum("ij,ij->j", x2, x2, dtype=np.float64)
        sum2[name] = sum2[name] + s if name in sum2 else s
        count[name] = count.get(name, 0) + x2.shape[0]
        for block in (32, 256):
            if x2.shape[1] % block == 0:
                r = rounding_error(x2, block)
                key = (name, block)
                rounding[key] = rounding[key] + r if key in rounding else r

    engine.observer = observe
    try:
        ref = Reference(np.empty(0), sum2, count, rounding)
        x, pos = embed(engine, tokens)
        for i in range(engine.cfg.n_layer):
            if i in band_starts:
                ref.band_inputs[i] = x.copy()
            x = engine.block(i, x, pos)
        ref.final = scored(engine.norm("output_norm.weight", x).astype(np.float32))
        ref.logp = log_softmax(engine.head(ref.final))
    finally:
        engine.observer = None
    return ref


def embed(engine, tokens: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The residual stream entering layer 0, and the positions."""
    engine.reset()
    ids = np.asarray(tokens, dtype=np.int64)
    return engine.embed(ids), np.arange(ids.size)


def probe(engine, ref: Reference, tokens: list[int], start: int | None, override: dict) -> float:
    """Mean KLD with the weights in ``override`` in place, rerunning from layer ``start`` (None: only the output
    matrix; 0 with a changed embedding: from the embedding)."""
    saved = {n: engine.w[n] for n in override}
    try:
        for n, w in override.items():
            engine.w[n] = w
        if start is None:
            h = ref.final
        else:
            if "token_embd.weight" in override:
                x, pos = embed(engine, tokens)
            else:
                x, pos = ref.band_inputs[start].copy(), np.arange(len(tokens))
            for i in range(start, engine.cfg.n_layer):
                x = engine.block(i, x, pos)
            h = scored(engine.norm("output_norm.weight", x).astype(np.float32))
        return float(kld(ref.logp, engine.head(h)).mean())
    finally:
        engine.w.update(saved)


def quantized_copy(f: GGUFFile, t: TensorInfo, qtype: Q, importance: np.ndarray | None, search: str,
                   threads: int | None = None):
    """The whole tensor quantized to ``qtype``, as the engine's weight (a probe runs it as llama.cpp would)."""
    from ..engine.transformer import Weight
    from ..quantize.encode import encode_tensor

    shape = numpy_shape(t.shape)
    rows = f.data(t).reshape(int(np.prod(shape[:-1], dtype=np.int64)), -1)

    def read(r0: int, r1: int) -> np.ndarray:
        return dequantize(t.ggml_type, np.ascontiguousarray(rows[r0:r1]), (r1 - r0, shape[-1]), threads)

    return Weight(t.name, qtype, encode_tensor(read, shape, qtype, t.name, importance, search=search,
                                               threads=threads), shape)


def calibrate(engines: list, f: GGUFFile, ref: Reference, tokens: list[int], groups: dict[str, list[str]],
              errors: dict[str, dict[str, float]], importance: dict[str, np.ndarray], search: str,
              first_layer: Callable[[str], int | None], keep: MutableMapping | None = None) -> dict[str, float]:
    """{tensor: alpha}: the group's measured probe KLD, shared equally by its tensors at the probe type, over each
    tensor's weighted error at that type.

    Equal shares, not shares in proportion to the weighted error: a tensor with a huge input column (a massive
    activation, which the norms downstream largely absorb) has a weighted error out of all proportion to what it
    does to the output, and would otherwise take the whole group's KLD and leave its neighbours looking free.

    The probes are independent: with several ``engines`` (each its own weights and caches over the same file) they
    run side by side, one per thread, each single-threaded. A probe of 64 tokens is many small matmuls and NumPy
    steps: two probes at once keep two cores busy, where one probe's matmuls split over two threads mostly wait for
    each other. Each probe computes what it would alone, so the numbers do not depend on how many run at once.
    ``keep`` (a planner.reuse.Encodings) receives the probe-type encodings, for the files written after."""
    infos = {t.name: t for t in f.tensors}
    probed = {g: [n for n in names if PROBE.name in errors[n]] for g, names in groups.items()}
    probed = {g: names for g, names in probed.items() if names and sum(errors[n][PROBE.name] for n in names) > 0}
    threads = 1 if len(engines) > 1 else engines[0].threads
    idle: queue.SimpleQueue = queue.SimpleQueue()
    for e in engines:
        idle.put(e)

    def measure_group(names: list[str]) -> float:
        engine = idle.get()
        try:
            override = {n: quantized_copy(f, infos[n], PROBE, importance.get(n), search, threads) for n in names}
            if keep is not None:
                for n, w in override.items():
                    keep[n, PROBE] = w.data
            starts = [first_layer(n) for n in names]
            start = None if all(s is None for s in starts) and "token_embd.weight" not in override else \
                min((s for s in starts if s is not None), default=0)
            return probe(engine, ref, tokens, start, override)
        finally:
            idle.put(engine)

    if len(engines) > 1:
        with ThreadPoolExecutor(len(engines)) as pool:
            measured = dict(zip(probed, pool.map(measure_group, probed.values())))
    else:
        measured = {g: measure_group(names) for g, names in probed.items()}
    alphas: dict[str, float] = {}
    for g, names in probed.items():
        share = measured[g] / len(names)
        for n in names:
            if errors[n][PROBE.name] > 0:
                alphas[n] = share / errors[n][PROBE.name]
    if alphas:
        fill = float(np.median(list(alphas.values())))
        for names in groups.values():
            for n in names:
                alphas.setdefault(n, fill)
    return alphas
