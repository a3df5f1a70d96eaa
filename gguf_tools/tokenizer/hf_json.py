"""tokenizer.json: byte-level BPE (llama.cpp's ``gpt2`` model), and SentencePiece-style BPE saved
without ``tokenizer.model`` (llama.cpp's ``llama`` model, with merge ranks turned into scores).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from gguf import TokenType

from ..errors import InputError, UnsupportedError
from .inputs import _added_tokens, _looks_special
from .spec import MAX_MERGES, MAX_TOKEN_BYTES, MAX_VOCAB, SPACE_MARK, SPM_PAD_SCORE, TokenizerSpec


def _model_section(tok_json: dict, path: Path) -> dict:
    model = tok_json.get("model")
    if not isinstance(model, dict):
        raise InputError(f"{path}: has no \"model\" object")
    mtype = model.get("type", "BPE" if "merges" in model else None)
    if mtype != "BPE":
        raise UnsupportedError(f"{path}: a {mtype or 'untyped'} tokenizer model; only BPE (and SentencePiece "
                               "tokenizer.model) can be converted")
    return model


def _components(node: Any, depth: int = 0) -> list[dict]:
    """Flatten a (possibly nested) Sequence of normalizers / pre-tokenizers / decoders."""
    if not isinstance(node, dict) or depth > 8:
        return []
    if node.get("type") == "Sequence":
        children = node.get("pretokenizers") or node.get("normalizers") or node.get("decoders") or []
        if not isinstance(children, list):
            return []
        return [c for child in children[:64] for c in _components(child, depth + 1)]
    return [node]


def _is_byte_level(tok_json: dict) -> bool:
    return any(c.get("type") == "ByteLevel" for key in ("pre_tokenizer", "decoder") for c in _components(tok_json.get(key)))


def _is_spm_style(tok_json: dict, model: dict) -> bool:
    if model.get("byte_fallback") is True:
        return True
    for c in _components(tok_json.get("normalizer")):
        if c.get("type") == "Replace" and c.get("content") == SPACE_MARK:
            return True
    return any(c.get("type") == "Metaspace" for c in _components(tok_json.get("pre_tokenizer")))


def _vocab(model: dict, path: Path) -> dict[str, int]:
    vocab = model.get("vocab")
    if not isinstance(vocab, dict):
        raise InputError(f"{path}: model.vocab must be an object of token -> id")
    if len(vocab) > MAX_VOCAB:
        raise InputError(f"{path}: {len(vocab)} vocabulary entries, over the {MAX_VOCAB} limit")
    if len(set(vocab.values())) != len(vocab):
        raise InputError(f"{path}: two vocabulary entries share an id")
    for token, tid in vocab.items():
        if type(tid) is not int or not 0 <= tid < MAX_VOCAB:
            raise InputError(f"{path}: token {token[:40]!r} has id {tid!r} (must be an integer in 0..{MAX_VOCAB - 1})")
        if len(token) > MAX_TOKEN_BYTES:
            raise InputError(f"{path}: token with id {tid} is {len(token)} characters long")
    return vocab


def _merge_pairs(model: dict, path: Path) -> list[tuple[str, str]]:
    raw = model.get("merges", [])
    if not isinstance(raw, list) or len(raw) > MAX_MERGES:
        raise InputError(f"{path}: model.merges must be a list of at most {MAX_MERGES} merges")
    pairs = []
    for i, m in enumerate(raw):
        if isinstance(m, str):
            cut = m.find(" ", 1)
            if cut < 0:
                raise InputError(f"{path}: merge {i} {m[:40]!r} has no space between its two parts")
            pairs.append((m[:cut], m[cut + 1:]))
        elif isinstance(m, list) and len(m) == 2 and all(isinstance(p, str) for p in m):
            pairs.append((m[0], m[1]))
        else:
            raise InputError(f"{path}: merge {i} must be \"a b\" or [\"a\", \"b\"]")
    return pairs


def _token_table(vocab: dict[str, int], added: list[tuple[int, str, bool]], vocab_size: int | None,
                 path: Path) -> tuple[list[str | None], int]:
    top = max([-1] + list(vocab.values()) + [tid for tid, _, _ in added])
    n = top + 1
    if vocab_size is not None:
        if vocab_size < n:
            raise InputError(f"{path}: token id {top} does not fit config.json vocab_size {vocab_size}")
        n = vocab_size
    table: list[str | None] = [None] * n
    for token, tid in vocab.items():
        table[tid] = token
    return table, n


def _spec_from_tokenizer_json(tok_json: dict, path: Path, tok_cfg: dict, vocab_size: int | None) -> TokenizerSpec:
    model = _model_section(tok_json, path)
    vocab = _vocab(model, path)
    pairs = _merge_pairs(model, path)
    added = _added_tokens(tok_json, path)
    table, n = _token_table(vocab, added, vocab_size, path)
    spm_style = _is_spm_style(tok_json, model)
    if not spm_style and not _is_byte_level(tok_json):
        raise UnsupportedError(f"{path}: a BPE tokenizer that is neither byte-level nor SentencePiece-style; "
                               "llama.cpp cannot reproduce it")
    types = [TokenType.NORMAL] * n
    for i, t in enumerate(table):
        if t is None:
            table[i] = f"[PAD{i}]"
            types[i] = TokenType.UNUSED
    for tid, content, special in added:
        if special or _looks_special(content):
            types[tid] = TokenType.CONTROL
        else:
            if spm_style:
                content = content.replace(SPACE_MARK, " ")
            types[tid] = TokenType.USER_DEFINED
        table[tid] = content
    tokens: list[str] = table  # type: ignore[assignment]
    if not spm_style:
        merges = [f"{_space_safe(a)} {_space_safe(b)}" for a, b in pairs]
        spec = TokenizerSpec(model="gpt2", tokens=tokens, token_types=types, merges=merges, source=str(path))
        kinds = [str(c.get("type")) for c in _components(tok_json.get("normalizer"))]
        if any(k not in ("NFC", "NFKC") for k in kinds):  # NFC only matters for unnormalised input
            spec.notes.append(f"{path}: llama.cpp does not apply the normalizer ({', '.join(kinds)}); "
                              "text it changes will tokenize differently")
        return spec
    return _spm_style_spec(tok_json, model, path, tokens, types, pairs, vocab, tok_cfg)


def _space_safe(part: str) -> str:
    # a space inside a merge part would split it wrongly in GGUF's "a b" form; gguf-py's encoding
    return part.replace(" ", chr(ord(" ") + 256))


def _spm_style_spec(tok_json: dict, model: dict, path: Path, tokens: list[str], types: list[int],
                    pairs: list[tuple[str, str]], vocab: dict[str, int], tok_cfg: dict) -> TokenizerSpec:
    """A SentencePiece vocabulary saved as HF BPE: llama.cpp's SPM merges by score, so rank becomes score."""
    scores = [0.0] * len(tokens)
    reached = set()
    for rank, (a, b) in enumerate(pairs):
        tid = vocab.get(a + b)
        if tid is not None and tid not in reached:
            reached.add(tid)
            scores[tid] = -float(rank)
    byte_re = re.compile(r"<0x[0-9A-Fa-f]{2}>")
    for tid, t in enumerate(tokens):
        if types[tid] == TokenType.NORMAL and byte_re.fullmatch(t):
            types[tid] = TokenType.BYTE
        elif types[tid] == TokenType.NORMAL and tid not in reached and len(t) > 1:
            scores[tid] = -1e9  # never built by a merge: make it the last resort
        elif types[tid] in (TokenType.CONTROL, TokenType.USER_DEFINED, TokenType.UNUSED):
            scores[tid] = SPM_PAD_SCORE
    unk = model.get("unk_token")
    spec = TokenizerSpec(model="llama", tokens=tokens, token_types=types, scores=scores, pre="default",
                         source=str(path))
    if isinstance(unk, str) and unk in vocab:
        spec.unk_id = vocab[unk]
        types[spec.unk_id] = TokenType.UNKNOWN
    prefix = False
    for c in _components(tok_json.get("normalizer")):
        if c.get("type") == "Prepend" and c.get("prepend") == SPACE_MARK:
            prefix = True
    for c in _components(tok_json.get("pre_tokenizer")):
        if c.get("type") == "Metaspace":
            scheme = c.get("prepend_scheme")
            prefix = scheme in ("first", "always") if scheme is not None else bool(c.get("add_prefix_space", True))
    spec.add_space_prefix = prefix
    apf = tok_cfg.get("add_prefix_space")
    if isinstance(apf, bool):
        spec.add_space_prefix = apf
    spec.notes.append(f"{path}: SentencePiece-style BPE without tokenizer.model; scores derived from merge ranks")
    return spec

