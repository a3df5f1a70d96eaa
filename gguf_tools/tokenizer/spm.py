"""SentencePiece: a bounded reader for the few ``tokenizer.model`` (ModelProto) fields llama.cpp needs.

The protobuf is parsed by hand, field by field, with every length checked against the bytes present:
nothing from the model directory is executed and no protobuf library is involved.
"""
from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gguf import TokenType

from ..errors import InputError
from ..files import read_json
from .inputs import _added_tokens, _added_tokens_decoder, _bool_or_none, _looks_special
from .spec import MAX_SPM_BYTES, MAX_TOKEN_BYTES, MAX_VOCAB, SPACE_MARK, SPM_PAD_SCORE, TOKEN_TYPES, TokenizerSpec


@dataclass
class _Spm:
    pieces: list[str]
    scores: list[float]
    types: list[int]
    model_type: int = 1  # 1 unigram, 2 BPE, 3 word, 4 char
    byte_fallback: bool = False
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True
    unk_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    pad_id: int = -1


def _varint(buf: memoryview, i: int, where: str) -> tuple[int, int]:
    result = shift = 0
    for _ in range(10):
        if i >= len(buf):
            raise InputError(f"{where}: truncated protobuf varint")
        byte = buf[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, i
        shift += 7
    raise InputError(f"{where}: protobuf varint longer than 10 bytes")


def _pb_fields(buf: memoryview, where: str) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value): ints for varints, memoryviews for the rest."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i, where)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i, where)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if size > n - i:
                raise InputError(f"{where}: truncated protobuf field {number}")
            value, i = buf[i:i + size], i + size
        elif wire == 2:
            size, i = _varint(buf, i, where)
            if size > n - i:
                raise InputError(f"{where}: protobuf field {number} claims {size} bytes, {n - i} left")
            value, i = buf[i:i + size], i + size
        else:
            raise InputError(f"{where}: unsupported protobuf wire type {wire} (not a SentencePiece model?)")
        yield number, wire, value


def _int32(v: int) -> int:
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >= 1 << 63 else v


def _read_spm(path: Path, strict: bool) -> _Spm | None:
    """Parse tokenizer.model; ``None`` (when not strict) if it is not a SentencePiece model at all."""
    where = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_SPM_BYTES:
            raise InputError(f"{where}: {size} bytes, over the {MAX_SPM_BYTES}-byte limit for tokenizer.model")
        data = memoryview(path.read_bytes())
    except OSError as e:
        raise InputError(f"{where}: cannot read: {e.strerror}") from None
    try:
        return _parse_spm(data, where)
    except InputError:
        if strict:
            raise
        return None


def _parse_spm(data: memoryview, where: str) -> _Spm:
    spm = _Spm([], [], [])
    for number, wire, value in _pb_fields(data, where):
        if number == 1 and wire == 2:
            piece, score, ptype = None, 0.0, TokenType.NORMAL
            for n2, w2, v2 in _pb_fields(value, where):
                if n2 == 1 and w2 == 2:
                    if len(v2) > MAX_TOKEN_BYTES:
                        raise InputError(f"{where}: piece {len(spm.pieces)} is {len(v2)} bytes long")
                    try:
                        piece = bytes(v2).decode("utf-8")
                    except UnicodeDecodeError:
                        raise InputError(f"{where}: piece {len(spm.pieces)} is not UTF-8") from None
                elif n2 == 2 and w2 == 5:
                    score = struct.unpack("<f", v2)[0]
                elif n2 == 3 and w2 == 0:
                    ptype = v2
            if piece is None:
                raise InputError(f"{where}: piece {len(spm.pieces)} has no text")
            if ptype not in TOKEN_TYPES:
                raise InputError(f"{where}: piece {len(spm.pieces)} has unknown type {ptype}")
            if ptype == TokenType.USER_DEFINED:
                piece = piece.replace(SPACE_MARK, " ")  # llama.cpp matches user symbols on raw text
            if not math.isfinite(score):
                raise InputError(f"{where}: piece {len(spm.pieces)} has a non-finite score")
            spm.pieces.append(piece)
            spm.scores.append(score)
            spm.types.append(ptype)
            if len(spm.pieces) > MAX_VOCAB:
                raise InputError(f"{where}: more than {MAX_VOCAB} pieces")
        elif number == 2 and wire == 2:  # TrainerSpec
            for n2, w2, v2 in _pb_fields(value, where):
                if w2 != 0:
                    continue
                if n2 == 3:
                    spm.model_type = v2
                elif n2 == 35:
                    spm.byte_fallback = bool(v2)
                elif n2 in (40, 41, 42, 43):
                    setattr(spm, {40: "unk_id", 41: "bos_id", 42: "eos_id", 43: "pad_id"}[n2], _int32(v2))
        elif number == 3 and wire == 2:  # NormalizerSpec
            for n2, w2, v2 in _pb_fields(value, where):
                if n2 == 3 and w2 == 0:
                    spm.add_dummy_prefix = bool(v2)
                elif n2 == 4 and w2 == 0:
                    spm.remove_extra_whitespaces = bool(v2)
    if not spm.pieces:
        raise InputError(f"{where}: not a SentencePiece model (no pieces)")
    return spm


def _spec_from_spm(spm: _Spm, path: Path, root: Path, tok_cfg: dict, tok_json: dict | None,
                   vocab_size: int | None) -> TokenizerSpec:
    tokens, scores, types = list(spm.pieces), list(spm.scores), list(spm.types)
    notes: list[str] = []
    extra: list[tuple[int, str, bool]] = []
    added_file = root / "added_tokens.json"
    if added_file.is_file():
        raw = read_json(added_file, "added tokens")
        if not isinstance(raw, dict) or not all(isinstance(k, str) and type(v) is int for k, v in raw.items()):
            raise InputError(f"{added_file}: expected an object of token -> id")
        extra += [(v, k, False) for k, v in raw.items()]
    extra += _added_tokens(tok_json, root / "tokenizer.json")
    extra += _added_tokens_decoder(tok_cfg, root)
    n = vocab_size if vocab_size is not None else max([len(tokens)] + [tid + 1 for tid, _, _ in extra])
    if len(tokens) > n:
        notes.append(f"{path}: {len(tokens) - n} pieces beyond config vocab_size {n} were dropped")
        del tokens[n:], scores[n:], types[n:]
    while len(tokens) < n:
        tokens.append(f"[PAD{len(tokens)}]")
        scores.append(SPM_PAD_SCORE)
        types.append(TokenType.UNUSED)
    for tid, content, special in extra:
        if not 0 <= tid < n:
            notes.append(f"added token {content!r} (id {tid}) is outside the vocabulary of {n}; ignored")
            continue
        if not special and not _looks_special(content):
            content = content.replace(SPACE_MARK, " ")  # llama.cpp matches user-defined tokens on raw text
        # As llama.cpp's converter: the added-token entry decides, over the piece's own type (<unk> included)
        types[tid] = TokenType.CONTROL if special or _looks_special(content) else TokenType.USER_DEFINED
        tokens[tid] = content
        scores[tid] = SPM_PAD_SCORE
    if spm.model_type != 2:
        kind = {1: "unigram", 3: "word", 4: "char"}.get(spm.model_type, str(spm.model_type))
        notes.append(f"{path}: a SentencePiece {kind} model; llama.cpp tokenizes it with BPE-style merges "
                     "by score, which can differ from the reference tokenizer")
    spec = TokenizerSpec(model="llama", tokens=tokens, token_types=types, scores=scores, pre="default",
                         source=str(path), notes=notes)
    spec.add_space_prefix = spm.add_dummy_prefix
    apf = _bool_or_none(tok_cfg.get("add_prefix_space"), f"{root}/tokenizer_config.json", "add_prefix_space")
    if apf is not None:
        spec.add_space_prefix = apf
    spec.remove_extra_whitespaces = spm.remove_extra_whitespaces
    if spm.remove_extra_whitespaces:
        notes.append(f"{path}: the model collapses whitespace runs; llama.cpp's SentencePiece tokenizer does not")
    for name in ("unk_id", "bos_id", "eos_id", "pad_id"):
        v = getattr(spm, name)
        if 0 <= v < n:
            setattr(spec, name, v)
    return spec

