"""Model: load a GGUF file (plain or packed) with llama.cpp and generate or chat, with sane defaults for laptops."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psutil

from gguf_tools.device.fit import fit
from gguf_tools.errors import InputError, ResourceError
from gguf_tools.gguf_file.reader import GGUFFile, adds_bos
from gguf_tools.packed import is_packed
from gguf_tools.system import check_threads

from .chat_template import FALLBACK, render
from .llama_load import LlamaSource, llama_source, new_llama


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
        self.threads = check_threads(threads)
        # A packed file decodes into memory (a memfd on Linux) while llama.cpp reads its header;
        # llama.cpp's mapping keeps the decoded bytes alive after the block closes our handle.
        with llama_source(self.path, threads=self.threads) as source:
            self._load(source, n_ctx, seed)

    def _load(self, source: LlamaSource, n_ctx: int, seed: int) -> None:
        f = GGUFFile.open(Path(source.path), values="scalars", what=str(self.path))   # checked before llama.cpp reads it
        self._add_bos = adds_bos(f)
        p = fit(self.path, n_ctx)   # f16 KV cache, llama.cpp's full-size SWA cache, from the header
        need, avail = p.total, psutil.virtual_memory().available
        if source.path.startswith("/proc/self/fd/"):  # decoding into a memfd: counted as used once written
            need -= p.weights
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
        tokens = prompt if isinstance(prompt, list) else self.tokenize(prompt, add_bos=self._add_bos)
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
        add_bos = self._add_bos and not (bos and text.startswith(bos))
        return self.tokenize(text, add_bos=add_bos)

    def stream_chat(self, messages: str | list[dict], **kw) -> Iterator[str]:
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        return self.stream(self.chat_prompt(messages), **kw)

    def chat(self, messages: str | list[dict], **kw) -> str:
        return "".join(self.stream_chat(messages, **kw))

    def _token_text(self, key: str) -> str:
        tid = self.metadata.get(key)
        if tid is None:
            return ""
        return self._llm.detokenize([int(tid)], special=True).decode("utf-8", errors="replace")
