"""Quality of candidate models against a reference, measured on the same text with llama.cpp.

For each chunk of ``ctx`` tokens, the second half of the positions is scored (the first half only
gives context): KL divergence of the next-token distributions, top-1 agreement, and each model's
perplexity on the actual next token. Every quality claim in this project rests on these numbers.

Only the scored positions ask llama.cpp for logits (on a 262k vocabulary the output matrix is most
of a small model's compute), and the scores are taken from the raw float32 logits with float64 sums:
KLD = sum_j p_j (r_j - c_j) + lse(c) - lse(r), which needs no log-softmax of either side.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gguf_tools.errors import InputError
from gguf_tools.gguf_file.reader import adds_bos
from gguf_tools.packed import open_gguf


@dataclass
class EvalResult:
    positions: int
    chunks: int
    ctx: int
    mean_kld: float
    p99_kld: float
    max_kld: float
    top1_agreement: float
    ppl_candidate: float
    ppl_reference: float

    def as_dict(self) -> dict:
        return asdict(self)


def _load(path: Path, ctx: int, threads: int | None):
    """llama.cpp's model, and whether its tokenizer adds BOS; our reader checks the file first."""
    import llama_cpp

    from gguf_tools.system import check_threads

    f = open_gguf(path, values="scalars")
    try:
        llm = llama_cpp.Llama(str(path), n_ctx=ctx, n_batch=ctx, n_threads=check_threads(threads), verbose=False)
    except ValueError as e:
        raise InputError(f"{path}: llama.cpp cannot load this model ({e})") from None
    return llm, adds_bos(f)


class _Decoder:
    """One llama.cpp context that decodes a chunk from position 0 and returns the logits of chosen positions."""

    def __init__(self, path: Path, ctx: int, threads: int | None):
        import llama_cpp

        self.llm, self.add_bos = _load(path, ctx, threads)
        self._batch = llama_cpp.llama_batch_init(ctx, 0, 1)

    def __del__(self):
        import llama_cpp

        if getattr(self, "_batch", None) is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None

    def logits(self, chunk: list[int], first: int, last: int) -> np.ndarray:
        """float32 logits predicting tokens first+1 .. last+1, shape (last - first + 1, n_vocab).

        The array is llama.cpp's own output buffer: valid until this decoder's next call.
        """
        import llama_cpp

        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.llm.ctx), True)
        b = self._batch
        b.n_tokens = len(chunk)
        for i, t in enumerate(chunk):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = t, i, 1, first <= i <= last
            b.seq_id[i][0] = 0
        if llama_cpp.llama_decode(self.llm.ctx, b) != 0:
            raise RuntimeError("llama_decode failed")
        rows = last - first + 1
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits(self.llm.ctx), shape=(rows, self.llm.n_vocab()))


def _lse(x: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows' log-sum-exp and sum of ``out`` in float64; ``out`` receives exp(x - rowmax).

    ``out`` is reused across calls: large fresh arrays cost page faults.
    """
    m = x.max(axis=-1, keepdims=True)
    np.exp(np.subtract(x, m, out=out), out=out)
    mass = out.sum(axis=-1, dtype=np.float64)
    return m[:, 0].astype(np.float64) + np.log(mass), mass


class _Reference:
    """What every candidate is compared with at one chunk: the reference's logits, softmax weights and log-sum-exp."""

    def __init__(self, logits: np.ndarray, target: np.ndarray, weights: np.ndarray):
        self.logits, self.weights = logits, weights
        self.lse, self.mass = _lse(logits, weights)
        self.top = logits.argmax(-1)
        self.rows, self.target = np.arange(len(target)), target
        self.nll = self.lse - logits[self.rows, target]


class _Tally:
    """Per-position scores of one candidate, accumulated over chunks."""

    def __init__(self):
        self.kld: list[np.ndarray] = []
        self.agree: list[np.ndarray] = []
        self.nll: list[np.ndarray] = []

    def add(self, ref: _Reference, logits: np.ndarray, scratch: np.ndarray) -> None:
        """KLD(ref || cand) = sum_j p_j (r_j - c_j) + lse(c) - lse(r), with p the reference's softmax."""
        lse, _ = _lse(logits, scratch)
        np.subtract(ref.logits, logits, out=scratch)
        scratch *= ref.weights
        cross = scratch.sum(axis=-1, dtype=np.float64) / ref.mass
        self.kld.append(cross + lse - ref.lse)
        self.agree.append(logits.argmax(-1) == ref.top)
        self.nll.append(lse - logits[ref.rows, ref.target])


def evaluate_many(
    candidates: list[str | Path],
    reference: str | Path,
    text: str,
    *,
    ctx: int = 512,
    max_chunks: int | None = None,
    threads: int | None = None,
) -> list[EvalResult]:
    """evaluate() for several candidates, with the reference's logits computed once per chunk."""
    ref = _Decoder(Path(reference), ctx, threads)
    cands = [_Decoder(Path(c), ctx, threads) for c in candidates]
    for c, path in zip(cands, candidates):
        if c.llm.n_vocab() != ref.llm.n_vocab():
            raise InputError(f"vocabularies differ: reference {ref.llm.n_vocab()} tokens, {path} {c.llm.n_vocab()}")
    tokens = ref.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
    n_chunks = len(tokens) // ctx
    if max_chunks is not None:
        n_chunks = min(n_chunks, max_chunks)
    if n_chunks < 1:
        raise InputError(f"text has {len(tokens)} tokens, fewer than one chunk of {ctx}")
    first, last = ctx // 2, ctx - 2
    tallies = [_Tally() for _ in cands]
    nll_ref = []
    weights = np.empty((last - first + 1, ref.llm.n_vocab()), np.float32)
    scratch = np.empty_like(weights)
    for i in range(n_chunks):
        chunk = tokens[i * ctx : (i + 1) * ctx]
        if ref.add_bos:
            chunk = [ref.llm.token_bos()] + chunk[1:]
        scored = _Reference(ref.logits(chunk, first, last), np.asarray(chunk[first + 1 :]), weights)
        nll_ref.append(scored.nll)
        for c, t in zip(cands, tallies):
            t.add(scored, c.logits(chunk, first, last), scratch)
    ppl_ref = float(np.exp(np.concatenate(nll_ref).mean()))
    out = []
    for t in tallies:
        kld = np.maximum(np.concatenate(t.kld), 0.0)
        out.append(EvalResult(
            positions=int(kld.size),
            chunks=n_chunks,
            ctx=ctx,
            mean_kld=float(kld.mean()),
            p99_kld=float(np.percentile(kld, 99)),
            max_kld=float(kld.max()),
            top1_agreement=float(np.concatenate(t.agree).mean()),
            ppl_candidate=float(np.exp(np.concatenate(t.nll).mean())),
            ppl_reference=ppl_ref,
        ))
    return out


def evaluate(
    candidate: str | Path,
    reference: str | Path,
    text: str,
    *,
    ctx: int = 512,
    max_chunks: int | None = None,
    threads: int | None = None,
) -> EvalResult:
    """KL divergence, top-1 agreement and perplexity of ``candidate`` against ``reference`` on ``text``."""
    return evaluate_many([candidate], reference, text, ctx=ctx, max_chunks=max_chunks, threads=threads)[0]
