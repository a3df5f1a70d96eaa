"""The NumPy reference engine: a whole transformer on a page, matmuls straight from quantized blocks.

It reads the GGUF tensors in place (memory-mapped), so a model costs its file size, and every
weight matmul goes through the native dequant-matmul kernels. Readable first: this is the
reference the project measures against and the tool that collects activation statistics.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from ..errors import InputError, UnsupportedError
from ..gguf_file.layout import numpy_shape
from ..gguf_file.reader import GGUFFile
from ..hf.families import Family, families, family_for_arch
from ..packed import open_gguf
from . import kernels

Q = gguf.GGMLQuantizationType


@dataclass
class Weight:
    """One tensor as stored in the file: raw blocks plus the logical (rows, cols) shape."""

    name: str
    qtype: Q
    data: np.ndarray  # raw bytes (quantized) or the values (F32/F16), rows first
    shape: tuple[int, ...]  # numpy order

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Dequantized rows (embedding lookup) without touching the rest of the table."""
        raw = self.data.reshape(self.shape[0], -1)[ids]
        return kernels.dequantize(self.qtype, raw, (len(ids), self.shape[1]))

    def dense(self) -> np.ndarray:
        return kernels.dequantize(self.qtype, self.data, self.shape).reshape(self.shape)


@dataclass
class Config:
    family: Family  # activation, RoPE style, embedding scale, sliding-window layers
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_rot: int
    eps: float
    rope_base: float
    rope_base_swa: float
    rope_scale: float
    n_swa: int
    swa_layers: tuple[bool, ...]
    softcap: float


K = gguf.Keys


def read_config(f: GGUFFile) -> Config:
    arch = f.architecture
    family = family_for_arch(arch)
    if family is None:
        names = ", ".join(f.name for f in families())
        raise UnsupportedError(f"the reference engine runs {names}; this model is {arch!r}")

    g, need = f.arch_get, f.positive_int

    n_embd, n_head = need(K.LLM.EMBEDDING_LENGTH), need(K.Attention.HEAD_COUNT)
    n_layer = need(K.LLM.BLOCK_COUNT)
    head_dim = int(g(K.Attention.KEY_LENGTH, n_embd // n_head))
    n_swa = int(g(K.Attention.SLIDING_WINDOW, 0) or 0)
    pattern = g(K.Attention.SLIDING_WINDOW_PATTERN)
    if not family.sliding_window_layers or n_swa == 0:
        swa = (False,) * n_layer
    elif isinstance(pattern, list):
        swa = tuple(bool(x) for x in pattern)
    else:
        period = int(pattern or 6)
        swa = tuple(i % period < period - 1 for i in range(n_layer))
    scale_type = str(g(K.Rope.SCALING_TYPE, "none"))
    return Config(
        family=family,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=int(g(K.Attention.HEAD_COUNT_KV, n_head)),
        head_dim=head_dim,
        n_rot=int(g(K.Rope.DIMENSION_COUNT, head_dim)),
        eps=float(g(K.Attention.LAYERNORM_RMS_EPS, 1e-5)),
        rope_base=float(g(K.Rope.FREQ_BASE, 10000.0)),
        rope_base_swa=float(g(K.Rope.FREQ_BASE_SWA, 10000.0)),
        rope_scale=float(g(K.Rope.SCALING_FACTOR, 1.0)) if scale_type == "linear" else 1.0,
        n_swa=n_swa,
        swa_layers=swa,
        softcap=float(g(K.LLM.FINAL_LOGIT_SOFTCAPPING, 0.0) or 0.0),
    )


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(np.float32(0.7978845608028654) * (x + np.float32(0.044715) * x * x * x)))


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


ACTIVATIONS = {"silu": silu, "gelu_tanh": gelu_tanh}  # by Family.activation


def rope_angles(pos: np.ndarray, n_rot: int, base: float, scale: float,
                factors: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of each position's rotation angles: (T, 1, n_rot // 2) float32."""
    inv = base ** (-np.arange(0, n_rot, 2, dtype=np.float64) / n_rot)
    if factors is not None:
        inv = inv / factors[: n_rot // 2]
    ang = (pos[:, None].astype(np.float64) / scale) * inv[None, :]
    return np.cos(ang)[:, None, :].astype(np.float32), np.sin(ang)[:, None, :].astype(np.float32)


def rope_apply(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, n_rot: int, neox: bool) -> np.ndarray:
    """Rotate the first n_rot dims of each head. x: (T, heads, head_dim)."""
    out = x.copy()
    if neox:
        half = n_rot // 2
        a, b = x[..., :half], x[..., half:n_rot]
        out[..., :half] = a * cos - b * sin
        out[..., half:n_rot] = a * sin + b * cos
    else:
        a, b = x[..., 0:n_rot:2], x[..., 1:n_rot:2]
        out[..., 0:n_rot:2] = a * cos - b * sin
        out[..., 1:n_rot:2] = a * sin + b * cos
    return out


def rope(x: np.ndarray, pos: np.ndarray, n_rot: int, base: float, scale: float, neox: bool,
         factors: np.ndarray | None) -> np.ndarray:
    """Rotate the first n_rot dims of each head. x: (T, heads, head_dim), pos: (T,)."""
    cos, sin = rope_angles(pos, n_rot, base, scale, factors)
    return rope_apply(x, cos, sin, n_rot, neox)


QUERY_BLOCK = 128  # queries per scores matrix: (128 x group) rows x keys stays in cache


def attend(q: np.ndarray, K: np.ndarray, V: np.ndarray, pos: np.ndarray, n_swa: int,
           threads: int | None) -> np.ndarray:
    """softmax(q K^T / sqrt(d)) V under the causal mask (and the sliding window, n_swa > 0).

    q: (T, n_head, d) at positions ``pos``; K, V: (S, n_head_kv, d) for positions 0..S-1. Per KV
    head and block of queries, the query heads that share it go through the native GEMM together,
    over only the keys the block can see; the mask is one added row of 0 / -inf, softmax float32.
    Returns (T, n_head * d) float32.
    """
    T, n_head, d = q.shape
    n_kv = K.shape[1]
    group = n_head // n_kv
    qg = (q / np.float32(np.sqrt(d))).reshape(T, n_kv, group, d)
    out = np.empty((T, n_kv, group, d), np.float32)
    f32 = gguf.GGMLQuantizationType.F32
    for h in range(n_kv):
        k_h = np.ascontiguousarray(K[:, h])
        v_t = np.ascontiguousarray(V[:, h].T)  # (d, S): P @ V is x @ W.T with W = V^T
        for a in range(0, T, QUERY_BLOCK):
            b = min(T, a + QUERY_BLOCK)
            lo, hi = (max(0, int(pos[a]) - n_swa + 1) if n_swa else 0), int(pos[b - 1]) + 1
            rows = np.ascontiguousarray(qg[a:b, h]).reshape((b - a) * group, d)
            s = kernels.matmul(f32, k_h[lo:hi], (hi - lo, d), rows, threads=threads).reshape(b - a, group, hi - lo)
            keys = np.arange(lo, hi)
            mask = keys[None, :] > pos[a:b, None]
            if n_swa:
                mask |= keys[None, :] <= pos[a:b, None] - n_swa
            s += np.where(mask, np.float32(-np.inf), np.float32(0))[:, None, :]
            s -= s.max(-1, keepdims=True)
            np.exp(s, out=s)
            s /= s.sum(-1, keepdims=True)
            v = v_t if lo == 0 and hi == v_t.shape[1] else np.ascontiguousarray(v_t[:, lo:hi])
            y = kernels.matmul(f32, v, (d, hi - lo), s.reshape(-1, hi - lo), threads=threads)
            out[a:b, h] = y.reshape(b - a, group, d)
    return out.reshape(T, n_head * d)


Observer = Callable[[str, np.ndarray], None]


class Engine:
    """``Engine("m.gguf").logits(tokens)``; ``generate`` for text; ``observer`` sees every matmul input.

    ``exact=True`` multiplies by the dequantized float32 weights instead of rounding activations to
    int8 per block as the kernels (and llama.cpp) do: the quantized model's own arithmetic, the
    yardstick for how much that rounding costs. It keeps a float copy of every matrix it has used.
    """

    def __init__(self, path: str | Path, *, n_ctx: int = 2048, threads: int | None = None,
                 observer: Observer | None = None, exact: bool = False):
        self.path = Path(path)
        self.exact = exact
        self._dense: dict[str, np.ndarray] = {}
        self._rope_tables: dict[float, tuple[np.ndarray, np.ndarray]] = {}
        self.file = open_gguf(self.path, values="scalars")
        self.cfg = read_config(self.file)
        self.threads = threads
        self.observer = observer
        self.w: dict[str, Weight] = {}
        for t in self.file.tensors:
            self.w[t.name] = Weight(t.name, t.ggml_type, self.file.data(t), numpy_shape(t.shape))
        self.small = {n: w.dense().astype(np.float32) for n, w in self.w.items() if len(w.shape) == 1}
        if "token_embd.weight" not in self.w:
            raise InputError(f"{self.path}: no token_embd.weight tensor")
        self.n_ctx = n_ctx
        self.reset()

    def reset(self) -> None:
        c = self.cfg
        self.pos = 0
        self.k_cache = np.zeros((c.n_layer, self.n_ctx, c.n_head_kv, c.head_dim), np.float32)
        self.v_cache = np.zeros((c.n_layer, self.n_ctx, c.n_head_kv, c.head_dim), np.float32)

    # -- pieces ------------------------------------------------------------------------------
    def _angles(self, base: float) -> tuple[np.ndarray, np.ndarray]:
        """Rope cos/sin for every position of the context, made once per base (decode reuses them)."""
        table = self._rope_tables.get(base)
        if table is None:
            c = self.cfg
            table = rope_angles(np.arange(self.n_ctx), c.n_rot, base, c.rope_scale, self.small.get("rope_freqs.weight"))
            self._rope_tables[base] = table
        return table

    def linear(self, name: str, x: np.ndarray) -> np.ndarray:
        w = self.w[name]
        if self.observer is not None:
            self.observer(name, x)
        if self.exact:
            dense = self._dense.get(name)
            if dense is None:
                dense = self._dense[name] = w.dense()
            y = x @ dense.T
        else:
            y = kernels.matmul(w.qtype, w.data, w.shape, x, threads=self.threads)
        bias = self.small.get(name.replace(".weight", ".bias"))
        return y + bias if bias is not None else y

    def norm(self, name: str, x: np.ndarray) -> np.ndarray:
        return rms_norm(x, self.small[name], self.cfg.eps)

    def attention(self, i: int, x: np.ndarray, pos: np.ndarray) -> np.ndarray:
        c, p = self.cfg, f"blk.{i}."
        T = x.shape[0]
        if p + "attn_qkv.weight" in self.w:
            qkv = self.linear(p + "attn_qkv.weight", x)
            nq, nk = c.n_head * c.head_dim, c.n_head_kv * c.head_dim
            q, k, v = qkv[:, :nq], qkv[:, nq : nq + nk], qkv[:, nq + nk :]
        else:
            q, k, v = (self.linear(p + f"attn_{n}.weight", x) for n in "qkv")
        q = q.reshape(T, c.n_head, c.head_dim)
        k = k.reshape(T, c.n_head_kv, c.head_dim)
        v = v.reshape(T, c.n_head_kv, c.head_dim)
        if p + "attn_q_norm.weight" in self.small:
            q, k = self.norm(p + "attn_q_norm.weight", q), self.norm(p + "attn_k_norm.weight", k)
        swa = c.swa_layers[i]
        start = int(pos[0])
        cos, sin = self._angles(c.rope_base_swa if swa else c.rope_base)
        cos, sin = cos[start : start + T], sin[start : start + T]
        neox = c.family.neox_rope
        q = rope_apply(q, cos, sin, c.n_rot, neox)
        k = rope_apply(k, cos, sin, c.n_rot, neox)

        self.k_cache[i, start : start + T] = k
        self.v_cache[i, start : start + T] = v
        K, V = self.k_cache[i, : start + T], self.v_cache[i, : start + T]
        out = attend(q, K, V, pos, c.n_swa if swa else 0, self.threads)
        return self.linear(p + "attn_output.weight", out)

    def mlp(self, i: int, x: np.ndarray) -> np.ndarray:
        p = f"blk.{i}."
        act = ACTIVATIONS[self.cfg.family.activation]
        if p + "ffn_gate.weight" in self.w:
            gate, up = self.linear(p + "ffn_gate.weight", x), self.linear(p + "ffn_up.weight", x)
        else:  # phi3: one fused projection, gate first
            gate, up = np.split(self.linear(p + "ffn_up.weight", x), 2, axis=-1)
        return self.linear(p + "ffn_down.weight", np.ascontiguousarray(act(gate) * up, dtype=np.float32))

    # -- the model ---------------------------------------------------------------------------
    def forward(self, tokens: list[int] | np.ndarray) -> np.ndarray:
        """Logits for each new token, continuing from the cached positions."""
        return self.head(self.hidden(tokens))

    def head(self, h: np.ndarray) -> np.ndarray:
        """Logits from final hidden states (the output matrix, or the tied embedding, and any soft cap)."""
        out_name = "output.weight" if "output.weight" in self.w else "token_embd.weight"
        logits = self.linear(out_name, h)
        c = self.cfg
        if c.softcap:
            logits = np.tanh(logits / c.softcap) * c.softcap
        return logits

    def hidden(self, tokens: list[int] | np.ndarray) -> np.ndarray:
        """The final normed hidden state of each new token (what the output matrix multiplies).

        Collecting activation statistics needs only this: it skips the vocabulary-sized matmul.
        """
        c = self.cfg
        ids = np.asarray(tokens, dtype=np.int64)
        if ids.ndim != 1 or ids.size == 0:
            raise InputError("forward needs a non-empty list of token ids")
        if self.pos + ids.size > self.n_ctx:
            raise InputError(f"context full: {self.pos + ids.size} > n_ctx {self.n_ctx}")
        emb = self.w["token_embd.weight"]
        if ids.min() < 0 or ids.max() >= emb.shape[0]:
            raise InputError(f"token id out of range 0..{emb.shape[0] - 1}")
        pos = np.arange(self.pos, self.pos + ids.size)
        x = self.embed(ids)
        for i in range(c.n_layer):
            x = self.block(i, x, pos)
        self.pos += ids.size
        return np.ascontiguousarray(self.norm("output_norm.weight", x), dtype=np.float32)

    def embed(self, ids: np.ndarray) -> np.ndarray:
        """The residual stream entering layer 0: the tokens' embedding rows, scaled where the family scales them."""
        x = self.w["token_embd.weight"].rows(ids).astype(np.float32)
        if self.cfg.family.embed_scale:
            x *= np.float32(np.sqrt(self.cfg.n_embd))
        return x

    def block(self, i: int, x: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """Layer ``i`` on the residual stream ``x`` at positions ``pos``: a caller that keeps the stream entering a
        layer can rerun the model from there (sensitivity probes perturb only the layers after it)."""
        p = f"blk.{i}."
        h = self.attention(i, self.norm(p + "attn_norm.weight", x), pos)
        if p + "post_attention_norm.weight" in self.small:
            h = self.norm(p + "post_attention_norm.weight", h)
        x = x + h
        h = self.mlp(i, self.norm(p + "ffn_norm.weight", x))
        if p + "post_ffw_norm.weight" in self.small:
            h = self.norm(p + "post_ffw_norm.weight", h)
        return x + h

    def logits(self, tokens: list[int]) -> np.ndarray:
        self.reset()
        return self.forward(tokens)

    def generate(self, tokens: list[int], max_tokens: int, *, temperature: float = 0.0, seed: int = 0,
                 stop: set[int] | None = None) -> Iterator[int]:
        rng = np.random.default_rng(seed)
        self.reset()
        logits = self.forward(tokens)[-1]
        for _ in range(max_tokens):
            if temperature <= 0:
                tok = int(np.argmax(logits))
            else:
                p = np.exp((logits - logits.max()) / temperature)
                tok = int(rng.choice(p.size, p=p / p.sum()))
            if stop and tok in stop:
                return
            yield tok
            if self.pos >= self.n_ctx:
                return
            logits = self.forward([tok])[-1]
