"""Reading a Hugging Face tokenizer into the GGUF tokenizer metadata that llama.cpp needs.

Two families reach llama.cpp: SentencePiece vocabularies (``tokenizer.ggml.model = "llama"``, from
``tokenizer.model`` or an SPM-style ``tokenizer.json``) and byte-level BPE (``"gpt2"``, from
``tokenizer.json``). For BPE, llama.cpp also needs the *name* of the pre-tokenizer (the regex split
that runs before the merges). llama.cpp's converter finds it by hashing the token ids of a fixed text
and fails with "unknown pre-tokenizer" when a fine-tune changed the vocabulary; here the structure of
``tokenizer.json``'s ``pre_tokenizer`` is a second witness, and ``pre=`` lets a user decide.

Nothing in the model directory is executed: JSON is parsed as data, ``tokenizer.model`` by a small
bounded protobuf reader, and the optional hash check runs the Rust ``tokenizers`` library on the
file (no ``trust_remote_code``, no Python from the model).

This module holds the entry points; the readers live beside it: ``spm`` (tokenizer.model), ``hf_json``
(tokenizer.json), ``specials`` (special ids, add_bos / add_eos, chat templates), ``pretokenizers``
(llama.cpp's pre-tokenizer facts and detection), ``inputs`` (checked reads of small values) and
``spec`` (``TokenizerSpec`` and the limits).
"""
from __future__ import annotations

from pathlib import Path

import gguf

from ..errors import InputError, UnsupportedError
from ..files import read_json
from .hf_json import _is_byte_level, _spec_from_tokenizer_json
from .inputs import _config_vocab_size, _optional_json
from .pretokenizers import CHK_TXT, LLAMA_CPP_PRE_NAMES, PRE_HASHES, PRE_NAMES, _choose_pre, hf_pre_tokenizer
from .spec import MAX_VOCAB, SPACE_MARK, TOKEN_TYPES, TokenizerSpec
from .specials import _apply_add_flags, _apply_special_ids, _chat_templates, _mark_extra_eos
from .spm import _read_spm, _spec_from_spm

__all__ = [
    "CHK_TXT",
    "LLAMA_CPP_PRE_NAMES",
    "PRE_HASHES",
    "PRE_NAMES",
    "SPACE_MARK",
    "TOKEN_TYPES",
    "TokenizerSpec",
    "add_tokenizer_metadata",
    "check_spec",
    "hf_pre_tokenizer",
    "load_tokenizer",
]


def load_tokenizer(model_dir: Path, config: dict, *, pre: str | None = None) -> TokenizerSpec:
    """Read the tokenizer of a Hugging Face model directory (``config`` is its parsed config.json).

    ``pre`` forces the BPE pre-tokenizer name when detection cannot decide (or decides wrongly).
    """
    root = Path(model_dir)
    if not root.is_dir():
        raise InputError(f"{root}: not a directory")
    if not isinstance(config, dict):
        raise InputError(f"{root}/config.json: expected a JSON object")
    if pre is not None and (not isinstance(pre, str) or pre not in LLAMA_CPP_PRE_NAMES):
        raise UnsupportedError(
            f"pre-tokenizer {pre!r} is not one llama.cpp knows; choose one of: {', '.join(sorted(LLAMA_CPP_PRE_NAMES))}"
        )
    tok_cfg = _optional_json(root / "tokenizer_config.json", "tokenizer config")
    vocab_size = _config_vocab_size(config, root)
    json_path, spm_path = root / "tokenizer.json", root / "tokenizer.model"
    tok_json = read_json(json_path, "tokenizer") if json_path.is_file() else None
    if tok_json is not None and not isinstance(tok_json, dict):
        raise InputError(f"{json_path}: expected a JSON object")

    spm = None
    if spm_path.is_file() and not (tok_json is not None and _is_byte_level(tok_json)):
        # llama.cpp reads tokenizer.model for SentencePiece families; a byte-level tokenizer.json
        # beside it means tokenizer.model is something else (tiktoken, or stale) and loses.
        spm = _read_spm(spm_path, strict=tok_json is None)
        spm_note = None if spm is not None else f"{spm_path}: not a SentencePiece model; used tokenizer.json"
    else:
        spm_note = None
    if spm is not None:
        spec = _spec_from_spm(spm, spm_path, root, tok_cfg, tok_json, vocab_size)
    elif tok_json is not None:
        spec = _spec_from_tokenizer_json(tok_json, json_path, tok_cfg, vocab_size)
    else:
        if (root / "vocab.json").is_file() or (root / "tekken.json").is_file():
            raise UnsupportedError(
                f"{root}: only vocab.json/merges.txt or tekken.json found; save the tokenizer with "
                "transformers (tokenizer.save_pretrained) to get a tokenizer.json"
            )
        raise InputError(f"{root}: no tokenizer found (expected tokenizer.json or tokenizer.model)")

    if spm_note:
        spec.notes.append(spm_note)
    _apply_special_ids(spec, root, tok_cfg, tok_json, config)
    _apply_add_flags(spec, tok_cfg, tok_json, json_path)
    if spec.model == "gpt2":
        spec.pre, spec.pre_source = _choose_pre(spec, tok_json, json_path, tok_cfg, pre)
    elif pre is not None:
        spec.notes.append(f"pre={pre!r} ignored: SentencePiece vocabularies have no pre-tokenizer")
    spec.chat_template, spec.chat_templates = _chat_templates(root, tok_cfg)
    _mark_extra_eos(spec)
    check_spec(spec)
    return spec


def add_tokenizer_metadata(writer: gguf.GGUFWriter, spec: TokenizerSpec) -> None:
    """Write every ``tokenizer.*`` key llama.cpp reads."""
    check_spec(spec)
    writer.add_tokenizer_model(spec.model)
    if spec.pre is not None:
        writer.add_tokenizer_pre(spec.pre)
    elif spec.model == "llama":
        writer.add_tokenizer_pre("default")
    writer.add_token_list(spec.tokens)
    if spec.scores is not None:
        writer.add_token_scores(spec.scores)
    writer.add_token_types(spec.token_types)
    if spec.merges:
        writer.add_token_merges(spec.merges)
    for value, add in (
        (spec.bos_id, writer.add_bos_token_id), (spec.eos_id, writer.add_eos_token_id),
        (spec.unk_id, writer.add_unk_token_id), (spec.sep_id, writer.add_sep_token_id),
        (spec.pad_id, writer.add_pad_token_id), (spec.mask_id, writer.add_mask_token_id),
        (spec.eot_id, writer.add_eot_token_id), (spec.eom_id, writer.add_eom_token_id),
    ):
        if value is not None:
            add(value)
    for flag, add in (
        (spec.add_bos, writer.add_add_bos_token), (spec.add_eos, writer.add_add_eos_token),
        (spec.add_space_prefix, writer.add_add_space_prefix),
        (spec.remove_extra_whitespaces, writer.add_remove_extra_whitespaces),
    ):
        if flag is not None:
            add(flag)
    if spec.chat_templates:
        choices = [{"name": name, "template": t} for name, t in sorted(spec.chat_templates.items())]
        if spec.chat_template is not None:
            choices.insert(0, {"name": "default", "template": spec.chat_template})
        writer.add_chat_template(choices)
    elif spec.chat_template is not None:
        writer.add_chat_template(spec.chat_template)


def check_spec(spec: TokenizerSpec) -> None:
    """Refuse a spec llama.cpp would crash on (mismatched arrays, duplicate tokens, bad ids)."""
    n = len(spec.tokens)
    where = spec.source or "tokenizer"
    if spec.model not in ("gpt2", "llama"):
        raise UnsupportedError(f"{where}: tokenizer model {spec.model!r} is not supported (gpt2 or llama)")
    if not 0 < n <= MAX_VOCAB:
        raise InputError(f"{where}: vocabulary of {n} tokens (must be 1..{MAX_VOCAB})")
    if len(spec.token_types) != n or (spec.scores is not None and len(spec.scores) != n):
        raise InputError(f"{where}: token, type and score lists differ in length")
    if spec.model == "llama" and spec.scores is None:
        raise InputError(f"{where}: a SentencePiece vocabulary needs scores")
    if spec.model == "gpt2" and not spec.merges:
        raise InputError(f"{where}: a BPE vocabulary needs merges")
    bad = next((t for t in spec.token_types if t not in TOKEN_TYPES), None)
    if bad is not None:
        raise InputError(f"{where}: token type {bad!r} is not one of {sorted(TOKEN_TYPES)}")
    seen: dict[str, int] = {}
    for i, t in enumerate(spec.tokens):
        if not isinstance(t, str):
            raise InputError(f"{where}: token {i} is not a string")
        if t and seen.setdefault(t, i) != i:
            raise InputError(f"{where}: token {t!r} appears twice (ids {seen[t]} and {i}); llama.cpp needs unique tokens")
    for name in ("bos_id", "eos_id", "unk_id", "pad_id", "sep_id", "mask_id", "eot_id", "eom_id"):
        v = getattr(spec, name)
        if v is not None and (type(v) is not int or not 0 <= v < n):
            raise InputError(f"{where}: {name} {v!r} is outside the vocabulary (0..{n - 1})")
    if spec.pre is not None and spec.pre not in LLAMA_CPP_PRE_NAMES:
        raise UnsupportedError(f"{where}: pre-tokenizer {spec.pre!r} is not one llama.cpp knows")

