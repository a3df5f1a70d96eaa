"""The tokenizer as plain data (``TokenizerSpec``), and the limits every reader applies to hostile input.

Token types are gguf-py's ``TokenType`` (the values llama.cpp reads from ``tokenizer.ggml.token_type``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from gguf import TokenType

TOKEN_TYPES = frozenset(int(t) for t in TokenType)

# Caps: the largest real vocabularies are ~260k tokens and ~30 MB of JSON.
MAX_VOCAB = 1 << 22
MAX_MERGES = 1 << 23
MAX_TOKEN_BYTES = 1 << 16
MAX_SPM_BYTES = 256 << 20
MAX_TEMPLATE_BYTES = 4 << 20
MAX_TEMPLATES = 64

SPACE_MARK = "\u2581"  # SentencePiece's visible space
SPM_PAD_SCORE = -1000.0


@dataclass
class TokenizerSpec:
    """Everything llama.cpp reads from ``tokenizer.*``: plain data, writable by ``add_tokenizer_metadata``."""

    model: str  # "gpt2" (byte-level BPE) or "llama" (SentencePiece)
    tokens: list[str]
    token_types: list[int]
    scores: list[float] | None = None
    merges: list[str] | None = None
    pre: str | None = None
    bos_id: int | None = None
    eos_id: int | None = None
    unk_id: int | None = None
    pad_id: int | None = None
    sep_id: int | None = None
    mask_id: int | None = None
    eot_id: int | None = None
    eom_id: int | None = None
    extra_eos_ids: list[int] = field(default_factory=list)  # further ids that end generation
    add_bos: bool | None = None
    add_eos: bool | None = None
    add_space_prefix: bool | None = None
    remove_extra_whitespaces: bool | None = None
    chat_template: str | None = None
    chat_templates: dict[str, str] = field(default_factory=dict)  # named templates besides the default
    pre_source: str | None = None  # "forced", "hash" or "structure"
    source: str = ""  # the file the vocabulary came from
    notes: list[str] = field(default_factory=list)  # things the user should hear about

