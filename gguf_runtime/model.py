"""Model: load a GGUF file (plain or packed) with llama.cpp and generate or chat, with sane defaults for laptops."""
from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Iterator
from pathlib import Path

import psutil

from gguf_tools.errors import InputError, ResourceError
from gguf_tools.gguf_file.header import parse_gguf_header
from gguf_tools.packed import is_packed

from .chat_template import FALLBACK, render
from .llama_load import LlamaSource, llama_source, new_llama


def default_threads() -> int:
    """Physical cores: hyper-threads slow llama.cpp's matmuls down rather than up."""
    physical = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:
        available = physical
    return max(1, min(physical, available))


def memory_needed(path: Path, n_ctx: int, meta: dict) -> int:
    """Weights (mapped) + KV cache (f16) + a fixed allowance for compute buffers."""
    arch = meta.get("general.architecture", "")
    n_layer = int(meta.get(f"{arch}.block_count", 0) or 0)
    n_embd = int(meta.get(f"{arch}.embedding_length", 0) or 0)
    n_head = int(meta.get(f"{arch}.attention.head_count", 1) or 1)
    n_head_kv = int(meta.get(f"{arch}.attention.head_count_kv", n_head) or n_head)
    head_dim = int(meta.get(f"{arch}.attention.key_length", n_embd // max(n_head, 1)) or 0)
    kv = 2 * n_layer * n_ctx * n_head_kv * head_dim * 2
    return path.stat().st_size + kv + 64 * 2**20


def _scalar_metadata(path: Path, what: str) -> dict[str, object]:
    """The header's non-array values, read in milliseconds: enough to size the load before
    llama.cpp spends time on the vocabulary."""
    with open(path, "rb") as fh:
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        return parse_gguf_header(mm, what=what, keep_values=False, keep_scalars=True).metadata
    finally:
        with contextlib.suppress(BufferError):   # a parse error's traceback may still hold views of it
            mm.close()


class Model:
    """A GGUF model ready to generate. ``Model("m.gguf").chat("Hello")`` is the whole API."""

    def __init__(self, path: str | os.PathLike, *, n_ctx: int = 2048, threads: int | None = None, seed: int = 0):
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            raise ResourceError("llama-cpp-python is not installed (pip install 'gguf-tools[run]')") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"{self.path}: no such model file")
        with open(self.path, "rb") as fh:
            if fh.read(4) != b"GGUF" and not is_packed(self.path):
                raise InputError(f"{self.path}: not a GGUF file")
        self.threads = threads or default_threads()
        # A packed file decodes into memory (a memfd on Linux) while llama.cpp reads its header;
        # llama.cpp's mapping keeps the decoded bytes alive after the block closes our handle.
        with llama_source(self.path, threads=self.threads) as source:
            self._load(source, n_ctx, seed)

    def _load(self, source: LlamaSource, n_ctx: int, seed: int) -> None:
        load_path = Path(source.path)
        meta = _scalar_metadata(load_path, str(self.path))
        need, avail = memory_needed(load_path, n_ctx, meta), psutil.virtual_memory().available
        if source.path.startswith("/proc/self/fd/"):  # decoding into a memfd: counted as used once written
            need -= load_path.stat().st_size
        if need > avail:
            raise ResourceError(
                f"{self.path.name} needs about {need / 2**30:.1f} GiB of RAM at n_ctx={n_ctx};"
                f" {avail / 2**30:.1f} GiB is available (try a smaller --ctx or a smaller quant)"
            )
        try:
            self._llm = new_llama(source, n_ctx=n_ctx, n_threads=self.threads, n_threads_batch=self.threads,
                                  seed=seed, verbose=False)
        except ValueError as e:
            raise InputError(f"{self.path}: llama.cpp cannot load this model ({e})") from None
        self.metadata = dict(self._llm.metadata)
        self.n_ctx = n_ctx

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = True) -> list[int]:
        return self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)

    def stream(
        self, prompt: str | list[int], *, max_tokens: int = 128, temperature: float = 0.0, seed: int | None = None
    ) -> Iterator[str]:
        """Yield text pieces as they are generated (greedy when temperature is 0)."""
        tokens = prompt if isinstance(prompt, list) else self.tokenize(prompt, add_bos=self._adds_bos())
        room = self.n_ctx - len(tokens)
        if room <= 0:
            raise InputError(f"prompt is {len(tokens)} tokens, longer than the context of {self.n_ctx}")
        if seed is not None:
            self._llm.set_seed(seed)
        self._llm.reset()
        out = self._llm.create_completion(
            tokens, max_tokens=min(max_tokens, room), temperature=temperature, top_k=40 if temperature else 1,
            stream=True,
        )
        for chunk in out:
            yield chunk["choices"][0]["text"]

    def generate(self, prompt: str | list[int], **kw) -> str:
        return "".join(self.stream(prompt, **kw))

    def chat_prompt(self, messages: list[dict]) -> list[int]:
        template = self.metadata.get("tokenizer.chat_template") or FALLBACK
        bos = self._token_text("tokenizer.ggml.bos_token_id")
        eos = self._token_text("tokenizer.ggml.eos_token_id")
        text = render(template, messages, bos_token=bos, eos_token=eos)
        add_bos = self._adds_bos() and not (bos and text.startswith(bos))
        return self.tokenize(text, add_bos=add_bos)

    def stream_chat(self, messages: str | list[dict], **kw) -> Iterator[str]:
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        return self.stream(self.chat_prompt(messages), **kw)

    def chat(self, messages: str | list[dict], **kw) -> str:
        return "".join(self.stream_chat(messages, **kw))

    def _adds_bos(self) -> bool:
        return self.metadata.get("tokenizer.ggml.add_bos_token", "true").lower() != "false"

    def _token_text(self, key: str) -> str:
        tid = self.metadata.get(key)
        if tid is None:
            return ""
        return self._llm.detokenize([int(tid)], special=True).decode("utf-8", errors="replace")
