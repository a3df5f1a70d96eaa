"""A conversation with a Model: history, KV-cache reuse between turns, context trimming, transcripts.

llama.cpp keeps its KV cache between calls; each turn renders the whole history through the model's
template and evaluates only the tokens past the longest prefix already in the cache, so prompt work
per turn stays the size of the new message instead of growing with the conversation. When the
history no longer fits, whole exchanges are dropped from the front (the system prompt stays), and
the reply is always recorded, even when an answer is cut short by Ctrl-C, so the next turn is valid.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from gguf_tools.errors import InputError, OutputError

from .model import Model

TRANSCRIPT_FORMAT = "gguf-tools chat transcript"
TRANSCRIPT_VERSION = 1
MAX_TRANSCRIPT_BYTES = 16 * 2**20
ROLES = ("system", "user", "assistant")


@dataclass
class Sampling:
    """llama.cpp's usual defaults; a model's ``general.sampling.*`` keys replace them (see ``for_model``)."""

    temp: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    max_tokens: int = 512

    def set(self, name: str, value: str) -> None:
        """Set one field from text (``/set temp 0.2``); InputError names what is wrong."""
        kinds = {f.name: f.type for f in fields(self)}
        if name not in kinds:
            raise InputError(f"unknown setting {name!r}; one of {', '.join(kinds)}")
        try:
            number = int(value) if kinds[name] == "int" else float(value)
        except ValueError:
            raise InputError(f"{name} needs a {kinds[name]}, not {value!r}") from None
        if number < 0 or (name == "max_tokens" and number < 1):
            raise InputError(f"{name} must be positive")
        setattr(self, name, number)


# GGUF keys written by llama.cpp's converter from generation_config.json.
_SAMPLING_KEYS = {
    "temp": "general.sampling.temp",
    "top_k": "general.sampling.top_k",
    "top_p": "general.sampling.top_p",
    "min_p": "general.sampling.min_p",
    "repeat_penalty": "general.sampling.penalty_repeat",
}


def sampling_for(metadata: dict, **overrides) -> Sampling:
    """The model's own sampling settings where it declares them, then the caller's (None = keep)."""
    s = Sampling()
    for name, key in _SAMPLING_KEYS.items():
        if key in metadata:
            try:
                s.set(name, str(metadata[key]))
            except InputError:
                pass   # a malformed key in a model file is ignored, not fatal
    for name, value in overrides.items():
        if value is not None:
            s.set(name, str(value))
    return s


@dataclass
class Turn:
    """What one answer cost, for the stats line and for tests."""

    prompt_tokens: int = 0      # the rendered conversation, in tokens
    evaluated: int = 0          # of which llama.cpp had to evaluate (the rest came from its KV cache)
    generated: int = 0
    prompt_seconds: float = 0.0
    generate_seconds: float = 0.0
    stop: str = ""              # "end", "max_tokens", "context" or "interrupted"
    dropped: list[dict] = field(default_factory=list)   # exchanges dropped to make room


def _common_prefix(a, b) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class ChatSession:
    """A conversation over a loaded Model. ``for piece in session.ask("Hi"): print(piece)``."""

    def __init__(self, model: Model, *, system: str | None = None, sampling: Sampling | None = None,
                 notify: Callable[[str], None] | None = None, verbose: bool = False):
        self.model = model
        self.sampling = sampling or sampling_for(model.metadata)
        self.messages: list[dict] = [{"role": "system", "content": system}] if system else []
        self.last = Turn()
        self._notify = notify or (lambda _line: None)
        self._verbose = verbose
        self._told_no_reuse = False
        self._last_prompt = 0   # prompt length of the last turn, for the prefix-stability check

    # --- the conversation ---------------------------------------------------------------------
    def ask(self, text: str) -> Iterator[str]:
        """Add a user message and stream the answer; the answer joins the history however it ends."""
        self.messages.append({"role": "user", "content": text})
        return self._answer()

    def regen(self) -> Iterator[str]:
        """Answer the last user message again."""
        if not self.messages or self.messages[-1]["role"] != "assistant":
            raise InputError("nothing to regenerate yet")
        self.messages.pop()
        self._last_prompt = 0
        return self._answer()

    def undo(self) -> bool:
        """Forget the last exchange (the last user message and its answer)."""
        if not any(m["role"] == "user" for m in self.messages):
            return False
        while self.messages and self.messages.pop()["role"] != "user":
            pass
        self._last_prompt = 0
        return True

    def clear(self) -> None:
        """Forget everything but the system prompt."""
        self.messages = [m for m in self.messages[:1] if m["role"] == "system"]
        self._last_prompt = 0

    def set_system(self, text: str) -> None:
        if self.messages and self.messages[0]["role"] == "system":
            self.messages.pop(0)
        if text:
            self.messages.insert(0, {"role": "system", "content": text})
        self._last_prompt = 0

    def context(self) -> tuple[int, int]:
        """(tokens the conversation takes, the context size)."""
        rendered = self.model.chat_prompt(self.messages) if self.messages else []
        return len(rendered), self.model.n_ctx

    # --- transcripts ---------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        doc = {"format": TRANSCRIPT_FORMAT, "version": TRANSCRIPT_VERSION, "model": self.model.path.name,
               "sampling": asdict(self.sampling), "messages": self.messages}
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            tmp.replace(path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise OutputError(f"{path}: cannot write the transcript: {e.strerror or e}") from None

    def load(self, path: str | Path) -> None:
        """Replace the history (and sampling) with a saved transcript, checked before anything changes."""
        messages, sampling = read_transcript(path)
        self.messages = messages
        self._last_prompt = 0
        for name, value in sampling.items():
            self.sampling.set(name, str(value))

    # --- generation ----------------------------------------------------------------------------
    def _fit(self) -> list[int]:
        """The prompt tokens, after dropping the oldest exchanges until the prompt leaves room to answer."""
        n_ctx = self.model.n_ctx
        room = min(self.sampling.max_tokens, n_ctx // 4)
        tokens = self.model.chat_prompt(self.messages)
        first = 1 if self.messages[0]["role"] == "system" else 0
        while len(tokens) + room > n_ctx and len(self.messages) - first > 1:
            end = first + 1    # one user message and everything until the next user message
            while end < len(self.messages) - 1 and self.messages[end]["role"] != "user":
                end += 1
            self.last.dropped.extend(self.messages[first:end])
            del self.messages[first:end]
            tokens = self.model.chat_prompt(self.messages)
        if len(tokens) + 1 >= n_ctx:
            raise InputError(f"that message is {len(tokens)} tokens with the template; the context holds {n_ctx}")
        return tokens

    def _answer(self) -> Iterator[str]:
        import llama_cpp

        llm, s = self.model._llm, self.sampling
        self.last = turn = Turn()
        try:
            tokens = self._fit()
        except BaseException:
            if self.messages and self.messages[-1]["role"] == "user":   # Ctrl-C while fitting: no half turn
                self.messages.pop()
            raise
        vocab = llm._model.vocab
        reply: list[int] = []
        text = ""
        start = first_token = time.perf_counter()
        turn.stop = "interrupted"
        gen = None
        try:   # from here on the answer joins the history, however the turn ends
            cached = [int(t) for t in llm.input_ids[: llm.n_tokens]]
            reused = _common_prefix(cached, tokens)
            if reused == len(tokens):   # the last token is evaluated again: its logits start the answer
                reused -= 1
            if reused > 0 and not llm._ctx.kv_cache_seq_rm(-1, reused, -1):   # a cache that cannot be cut
                reused = 0
                if self._verbose and not self._told_no_reuse:
                    self._told_no_reuse = True
                    self._notify("llama.cpp cannot cut this model's KV cache: every turn is evaluated whole")
            llm.n_tokens = reused
            if (self._verbose and not self._told_no_reuse and not turn.dropped
                    and 0 < reused < self._last_prompt <= len(tokens)):
                self._told_no_reuse = True
                self._notify("this model's chat template re-renders earlier turns: the conversation is"
                             " evaluated again from the first difference each turn")
            turn.prompt_tokens, turn.evaluated = len(tokens), len(tokens) - reused
            if turn.dropped:
                users = sum(m["role"] == "user" for m in turn.dropped)
                self._notify(f"context full: dropped the oldest {users} exchange{'s' * (users != 1)}"
                             f" ({len(turn.dropped)} messages) to make room")
            start = first_token = time.perf_counter()
            gen = llm.generate(tokens, reset=True, temp=s.temp, top_k=s.top_k, top_p=s.top_p, min_p=s.min_p,
                               repeat_penalty=s.repeat_penalty)
            for token in gen:
                if not reply:
                    first_token = time.perf_counter()
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    turn.stop = "end"
                    break
                reply.append(token)
                piece = llm.detokenize(reply).decode("utf-8", errors="ignore")[len(text):]
                if piece:   # an incomplete UTF-8 sequence decodes to nothing until it is whole
                    text += piece
                    yield piece
                if len(reply) >= s.max_tokens:
                    turn.stop = "max_tokens"
                    break
                if len(tokens) + len(reply) >= self.model.n_ctx:
                    turn.stop = "context"
                    break
        finally:
            if gen is not None:
                gen.close()
            now = time.perf_counter()
            turn.generated = len(reply)
            turn.prompt_seconds = first_token - start
            turn.generate_seconds = now - first_token
            self._last_prompt = len(tokens)
            full = llm.detokenize(reply).decode("utf-8", errors="replace") if reply else ""
            self.messages.append({"role": "assistant", "content": full})
        rest = full[len(text):]
        if rest:
            yield rest


def read_transcript(path: str | Path) -> tuple[list[dict], dict]:
    """The messages and sampling of a transcript file, checked as hostile input."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_TRANSCRIPT_BYTES:
            raise InputError(f"{path}: larger than {MAX_TRANSCRIPT_BYTES >> 20} MiB; not a transcript")
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror or e}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not a JSON transcript ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != TRANSCRIPT_FORMAT:
        raise InputError(f"{path}: not a gguf-tools chat transcript")
    if doc.get("version") != TRANSCRIPT_VERSION:
        raise InputError(f"{path}: transcript version {doc.get('version')!r}; this version reads {TRANSCRIPT_VERSION}")
    messages = doc.get("messages")
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str) for m in messages
    ):
        raise InputError(f"{path}: messages must be a list of {{role, content}} with roles {', '.join(ROLES)}")
    sampling = doc.get("sampling", {})
    if not isinstance(sampling, dict):
        raise InputError(f"{path}: sampling must be an object")
    probe = Sampling()
    for name, value in sampling.items():
        probe.set(str(name), str(value))
    return [{"role": m["role"], "content": m["content"]} for m in messages], sampling
