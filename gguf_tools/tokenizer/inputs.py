"""Checked reads of the small values a model directory supplies: optional JSON files, ints and bools,
config.json's vocab_size, and the added tokens of tokenizer.json and tokenizer_config.json.

Each value is checked for type and range before use, and a bad one is one InputError line.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InputError
from ..files import read_json
from .spec import MAX_TOKEN_BYTES, MAX_VOCAB


def _optional_json(path: Path, what: str) -> dict:
    if not path.is_file():
        return {}
    data = read_json(path, what)
    if not isinstance(data, dict):
        raise InputError(f"{path}: {what} must be a JSON object")
    return data


def _int_or_none(value: Any, where: str, what: str) -> int | None:
    if value is None:
        return None
    if type(value) is not int:
        raise InputError(f"{where}: {what} must be an integer, got {type(value).__name__}")
    return value


def _bool_or_none(value: Any, where: str, what: str) -> bool | None:
    if value is None:
        return None
    if not isinstance(value, bool):
        raise InputError(f"{where}: {what} must be true or false, got {type(value).__name__}")
    return value


def _config_vocab_size(config: dict, root: Path) -> int | None:
    value = config.get("vocab_size")
    if value is None and isinstance(config.get("text_config"), dict):
        value = config["text_config"].get("vocab_size")
    value = _int_or_none(value, f"{root}/config.json", "vocab_size")
    if value is not None and not 0 < value <= MAX_VOCAB:
        raise InputError(f"{root}/config.json: vocab_size {value} is outside 1..{MAX_VOCAB}")
    return value


def _looks_special(text: str) -> bool:
    """Added tokens llama.cpp's converter treats as control even when not flagged special."""
    return (
        text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
        or (text.startswith("<|") and text.endswith("|>"))
        or (text.startswith("<\uff5c") and text.endswith("\uff5c>"))
        or (text.startswith("<unused") and text.endswith(">"))
    )


def _added_tokens(tok_json: dict | None, path: Path) -> list[tuple[int, str, bool]]:
    """``added_tokens`` of tokenizer.json as (id, content, special)."""
    if tok_json is None:
        return []
    raw = tok_json.get("added_tokens") or []
    if not isinstance(raw, list) or len(raw) > MAX_VOCAB:
        raise InputError(f"{path}: added_tokens must be a list of at most {MAX_VOCAB} entries")
    out = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise InputError(f"{path}: added_tokens[{i}] must be an object")
        tid = _int_or_none(entry.get("id"), str(path), f"added_tokens[{i}].id")
        content = entry.get("content")
        if tid is None or not 0 <= tid < MAX_VOCAB or not isinstance(content, str) or len(content) > MAX_TOKEN_BYTES:
            raise InputError(f"{path}: added_tokens[{i}] needs an id in 0..{MAX_VOCAB - 1} and a string content")
        out.append((tid, content, bool(entry.get("special", False))))
    return out


def _added_tokens_decoder(tok_cfg: dict, root: Path) -> list[tuple[int, str, bool]]:
    raw = tok_cfg.get("added_tokens_decoder") or {}
    where = f"{root}/tokenizer_config.json"
    if not isinstance(raw, dict) or len(raw) > MAX_VOCAB:
        raise InputError(f"{where}: added_tokens_decoder must be an object of at most {MAX_VOCAB} entries")
    out = []
    for key, entry in raw.items():
        if not key.isdigit() or len(key) > 9 or not isinstance(entry, dict) or not isinstance(entry.get("content"), str):
            raise InputError(f"{where}: added_tokens_decoder entry {key!r} must map an id to {{content, special}}")
        tid = int(key)
        if tid >= MAX_VOCAB:
            raise InputError(f"{where}: added token id {tid} is over {MAX_VOCAB}")
        out.append((tid, entry["content"], bool(entry.get("special", False))))
    return out

