"""Quality of a candidate model against a reference, measured on the same text with llama.cpp.

For each chunk of ``ctx`` tokens, the second half of the positions is scored (the first half only
gives context): KL divergence of the next-token distributions, top-1 agreement, and each model's
perplexity on the actual next token. Every quality claim in this project rests on these numbers.
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


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    x -= np.log(np.exp(x).sum(axis=-1, keepdims=True))
    return x


def _load(path: Path, ctx: int, threads: int | None):
    """llama.cpp's model, and whether its tokenizer adds BOS; our reader checks the file first."""
    import llama_cpp

    from gguf_tools.system import check_threads

    f = open_gguf(path, values="scalars")
    try:
        llm = llama_cpp.Llama(
            str(path), n_ctx=ctx, n_batch=ctx, n_threads=check_threads(threads), logits_all=True, verbose=False
        )
    except ValueError as e:
        raise InputError(f"{path}: llama.cpp cannot load this model ({e})") from None
    return llm, adds_bos(f)


def _chunk_logits(llm, chunk: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(chunk)
    return np.array(llm.scores[: len(chunk)], dtype=np.float32)


def evaluate(
    candidate: str | Path,
    reference: str | Path,
    text: str,
    *,
    ctx: int = 512,
    max_chunks: int | None = None,
    threads: int | None = None,
) -> EvalResult:
    ref, add_bos = _load(Path(reference), ctx, threads)
    cand, _ = _load(Path(candidate), ctx, threads)
    if ref.n_vocab() != cand.n_vocab():
        raise InputError(f"vocabularies differ: reference {ref.n_vocab()} tokens, candidate {cand.n_vocab()}")
    tokens = ref.tokenize(text.encode("utf-8"), add_bos=False, special=False)
    n_chunks = len(tokens) // ctx
    if max_chunks is not None:
        n_chunks = min(n_chunks, max_chunks)
    if n_chunks < 1:
        raise InputError(f"text has {len(tokens)} tokens, fewer than one chunk of {ctx}")
    first = ctx // 2
    klds, agree, nll_c, nll_r = [], [], [], []
    for i in range(n_chunks):
        chunk = tokens[i * ctx : (i + 1) * ctx]
        if add_bos:
            chunk = [ref.token_bos()] + chunk[1:]
        lr = _log_softmax(_chunk_logits(ref, chunk)[first : ctx - 1])
        lc = _log_softmax(_chunk_logits(cand, chunk)[first : ctx - 1])
        target = np.asarray(chunk[first + 1 : ctx])
        klds.append((np.exp(lr) * (lr - lc)).sum(axis=-1))
        agree.append(lr.argmax(-1) == lc.argmax(-1))
        rows = np.arange(len(target))
        nll_r.append(-lr[rows, target])
        nll_c.append(-lc[rows, target])
    kld = np.maximum(np.concatenate(klds), 0.0)
    return EvalResult(
        positions=int(kld.size),
        chunks=n_chunks,
        ctx=ctx,
        mean_kld=float(kld.mean()),
        p99_kld=float(np.percentile(kld, 99)),
        max_kld=float(kld.max()),
        top1_agreement=float(np.concatenate(agree).mean()),
        ppl_candidate=float(np.exp(np.concatenate(nll_c).mean())),
        ppl_reference=float(np.exp(np.concatenate(nll_r).mean())),
    )
