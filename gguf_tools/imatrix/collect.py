"""Collect an importance matrix: run the NumPy engine over calibration text, record matmul inputs.

What llama.cpp's ``llama-imatrix`` does, with the reference engine instead of ggml: the text is
tokenized with the model's own vocabulary (llama.cpp, vocab only), cut into chunks of ``ctx``
tokens (the first one of each chunk replaced by BOS when the model adds one), and each chunk is
run from an empty cache. For every weight matrix in a ``blk.*`` layer the sum over tokens of each
input column squared, and the number of tokens, are accumulated. Matrices that share an input
(q/k/v, gate/up) each get their own entry, as in llama.cpp. ``output.weight`` is left out unless
asked for: llama-imatrix skips it by default, and a tied output matrix (``token_embd.weight``) is
never recorded, because its quantization is ruled by its use as an embedding table.

The result is the GGUF imatrix form (``<name>.in_sum2`` / ``<name>.counts``, keys
``imatrix.datasets``, ``imatrix.chunk_count``, ``imatrix.chunk_size``) that ``llama-quantize
--imatrix``, ``gguf-tools convert --imatrix`` and ``gguf-tools quantize --imatrix`` read.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, ResourceError
from ..gguf_file.reader import adds_bos
from ..packed import open_gguf
from .file import write_imatrix_gguf

MIN_CTX = 16  # llama-imatrix ignores matmuls over fewer rows than this


@dataclass
class ImatrixSummary:
    output: Path
    entries: int
    chunks: int
    ctx: int
    tokens: int
    seconds: float
    dataset: str

    def as_dict(self) -> dict:
        d = asdict(self)
        d["output"] = str(self.output)
        return d


class Accumulator:
    """An engine observer: per weight name, float64 sums of squared inputs per column and a row count."""

    def __init__(self, keep: Callable[[str], bool]):
        self.keep = keep
        self.sum2: dict[str, np.ndarray] = {}
        self.count: dict[str, int] = {}

    def __call__(self, name: str, x: np.ndarray) -> None:
        if not self.keep(name):
            return
        x2 = np.asarray(x, dtype=np.float32).reshape(-1, x.shape[-1])
        s = np.einsum("ij,ij->j", x2, x2, dtype=np.float64)
        if name in self.sum2:
            self.sum2[name] += s
            self.count[name] += x2.shape[0]
        else:
            self.sum2[name] = s
            self.count[name] = x2.shape[0]

    def stats(self) -> dict[str, tuple[np.ndarray, int]]:
        return {n: (self.sum2[n], self.count[n]) for n in sorted(self.sum2)}


def recorded(include_output: bool) -> Callable[[str], bool]:
    """Which matmul weights llama-imatrix records: every layer matrix, output.weight on request."""
    return lambda name: name.startswith("blk.") or (include_output and name == "output.weight")


def tokenize(model: Path, text: str) -> tuple[list[int], int | None]:
    """Token ids of ``text`` with the GGUF's own tokenizer, and the BOS id when the model adds one."""
    add_bos = adds_bos(open_gguf(model, values="scalars"))   # checked by our reader before llama.cpp
    try:
        from llama_cpp import Llama
        from llama_cpp._utils import suppress_stdout_stderr
    except ImportError:
        raise ResourceError("llama-cpp-python is needed to tokenize (pip install 'gguf-tools[run]')") from None
    try:
        with suppress_stdout_stderr(disable=False):  # a vocab-only load warns about n_ctx_train
            vocab = Llama(str(model), vocab_only=True, verbose=False)
    except ValueError as e:
        raise InputError(f"{model}: llama.cpp cannot read this model's vocabulary ({e})") from None
    # llama-imatrix: common_tokenize(text, add_special=true, parse_special=false)
    tokens = vocab.tokenize(text.encode("utf-8"), add_bos=add_bos, special=False)
    bos = vocab.token_bos() if add_bos and vocab.token_bos() >= 0 else None
    return tokens, bos


def collect_imatrix(
    model: str | Path,
    text: str,
    out: str | Path,
    *,
    ctx: int = 512,
    chunks: int | None = None,
    threads: int | None = None,
    include_output: bool = False,
    dataset: str = "unspecified",
    progress: Callable[[int, int], None] | None = None,
) -> ImatrixSummary:
    """Run ``model`` over ``text`` in chunks of ``ctx`` tokens and write the imatrix to ``out``.

    ``chunks`` caps how many chunks are run; ``dataset`` is the name recorded in the file (llama.cpp
    records the text file's path); ``progress(done, total)`` is called after each chunk.
    """
    from gguf_tools.engine.transformer import Engine

    start = time.perf_counter()
    model = Path(model)
    if not model.is_file():
        raise InputError(f"{model}: no such model file")
    if isinstance(ctx, bool) or not isinstance(ctx, int) or ctx < MIN_CTX:
        raise InputError(f"ctx must be an integer of at least {MIN_CTX} tokens, got {ctx!r}")
    if chunks is not None and (isinstance(chunks, bool) or not isinstance(chunks, int) or chunks < 1):
        raise InputError(f"chunks must be a positive integer, got {chunks!r}")
    tokens, bos = tokenize(model, text)
    n_chunks = len(tokens) // ctx if chunks is None else min(len(tokens) // ctx, chunks)
    if n_chunks < 1:
        raise InputError(f"the text has {len(tokens)} tokens, fewer than one chunk of {ctx}")
    acc = Accumulator(recorded(include_output))
    engine = Engine(model, n_ctx=ctx, threads=threads, observer=acc)
    for i in range(n_chunks):
        chunk = tokens[i * ctx : (i + 1) * ctx]
        if bos is not None:
            chunk[0] = bos
        engine.reset()
        if include_output:
            engine.forward(chunk)
        else:
            engine.hidden(chunk)
        if progress is not None:
            progress(i + 1, n_chunks)
    stats = acc.stats()
    if not stats:
        raise InputError(f"{model}: no blk.* weight matrices were multiplied; nothing to record")
    for name, (sum2, _count) in stats.items():
        if not np.isfinite(sum2).all():
            raise InputError(f"{model}: activations of {name} overflowed (NaN or infinity); the model is broken")
    out = Path(out)
    write_imatrix_gguf(out, stats, datasets=[dataset], chunk_count=n_chunks, chunk_size=ctx)
    return ImatrixSummary(out, len(stats), n_chunks, ctx, n_chunks * ctx, time.perf_counter() - start, dataset)
