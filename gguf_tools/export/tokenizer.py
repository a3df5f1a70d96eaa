"""Writing a Hugging Face tokenizer from a GGUF file's ``tokenizer.*`` metadata.

The inverse of ``tokenizer.load_tokenizer``, used to make Hugging Face checkpoints out of real GGUF
files. The goal is that ``transformers.AutoTokenizer`` on the result tokenizes exactly as llama.cpp
does on the GGUF, so the files spell out llama.cpp's behaviour rather than a model class's:

- ``tokenizer.json`` is loaded verbatim (``tokenizer_class`` is the generic fast tokenizer);
- every token llama.cpp matches whole in text (control, user-defined, unknown) is an added token;
- byte-level BPE gets the pre-tokenizer of its ``tokenizer.ggml.pre`` and llama.cpp's ``ignore_merges``;
- SentencePiece becomes BPE whose merges follow the scores, as llama.cpp merges highest score first,
  with the space prefix added to every text segment (llama.cpp adds it after each special token too).

A ``tokenizer.model`` is written as well for SentencePiece vocabularies, so the directory converts
back through the SentencePiece path.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import struct
from pathlib import Path
from typing import Any

import gguf
from gguf import TokenType

from ..errors import InputError, OutputError, UnsupportedError
from ..files import atomic_output
from ..gguf_file.reader import GGUFFile
from ..tokenizer import PRE_NAMES, SPACE_MARK, TOKEN_TYPES, hf_pre_tokenizer

_BYTE_PIECE = re.compile(r"<0x[0-9A-F]{2}>")


def export_tokenizer(reader: GGUFFile, out_dir: Path) -> dict:
    """Write tokenizer.json (+ tokenizer.model for SentencePiece), tokenizer_config.json and
    special_tokens_map.json into ``out_dir``; return the ids config.json needs."""
    meta = _read_metadata(reader)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{out}: cannot create directory: {e.strerror}") from None
    if meta["model"] == "gpt2":
        tok_json = _byte_level_json(meta)
    else:
        tok_json = _sentencepiece_json(meta)
        _write_bytes(out / "tokenizer.model", sentencepiece_model(meta))
    _write_json(out / "tokenizer.json", tok_json)
    _write_json(out / "tokenizer_config.json", _tokenizer_config(meta))
    _write_json(out / "special_tokens_map.json", _special_tokens_map(meta))
    return {
        "bos_token_id": meta["bos"],
        "eos_token_id": meta["eos"],
        "pad_token_id": meta["pad"],
        "vocab_size": len(meta["tokens"]),
    }


# ---------------------------------------------------------------------------------------------
# reading the GGUF metadata (the file may be hostile: check every type)


def _field(reader: GGUFFile, key: str) -> Any:
    return reader.fields.get(key)


def _scalar(reader: GGUFFile, key: str, kinds: tuple[type, ...]) -> Any:
    f = _field(reader, key)
    if f is None:
        return None
    if f.types and f.types[0] == gguf.GGUFValueType.ARRAY:
        raise InputError(f"GGUF key {key} is an array, expected a single value")
    try:
        value = f.contents()
    except (UnicodeDecodeError, ValueError, IndexError):
        raise InputError(f"GGUF key {key} cannot be read") from None
    if isinstance(value, bool) and bool not in kinds:
        raise InputError(f"GGUF key {key} has type bool")
    if not isinstance(value, kinds):
        raise InputError(f"GGUF key {key} has type {type(value).__name__}, expected {kinds[0].__name__}")
    return value


def _array(reader: GGUFFile, key: str, sub: tuple[gguf.GGUFValueType, ...]) -> list | None:
    f = _field(reader, key)
    if f is None:
        return None
    if len(f.types) < 2 or f.types[0] != gguf.GGUFValueType.ARRAY or f.types[-1] not in sub:
        raise InputError(f"GGUF key {key} must be an array of {sub[0].name.lower()}")
    try:
        return f.contents()
    except UnicodeDecodeError:
        raise InputError(f"GGUF key {key} holds a string that is not UTF-8") from None


_INTS = (gguf.GGUFValueType.INT32, gguf.GGUFValueType.UINT32, gguf.GGUFValueType.INT64,
         gguf.GGUFValueType.UINT64, gguf.GGUFValueType.INT16, gguf.GGUFValueType.UINT16,
         gguf.GGUFValueType.INT8, gguf.GGUFValueType.UINT8)


def _read_metadata(reader: GGUFFile) -> dict:
    K = gguf.Keys.Tokenizer
    model = _scalar(reader, K.MODEL, (str,))
    if model is None:
        raise InputError("GGUF file has no tokenizer (tokenizer.ggml.model is missing)")
    if model not in ("gpt2", "llama"):
        raise UnsupportedError(f"GGUF tokenizer model {model!r} cannot be exported (gpt2 or llama only)")
    tokens = _array(reader, K.LIST, (gguf.GGUFValueType.STRING,))
    if not tokens:
        raise InputError("GGUF file has no tokenizer.ggml.tokens")
    n = len(tokens)
    tokens = [t if t else f"[EMPTY_{i}]" for i, t in enumerate(tokens)]  # as llama.cpp names them
    types = _array(reader, K.TOKEN_TYPE, _INTS) or [TokenType.NORMAL] * n
    scores = _array(reader, K.SCORES, (gguf.GGUFValueType.FLOAT32, gguf.GGUFValueType.INT32))
    if len(types) != n or (scores is not None and len(scores) != n):
        raise InputError(f"GGUF token types/scores do not match the {n} tokens")
    types = [int(t) if int(t) in TOKEN_TYPES else TokenType.NORMAL for t in types]
    if len(set(tokens)) != n:
        raise InputError("GGUF vocabulary has duplicate tokens")
    meta: dict[str, Any] = {"model": model, "tokens": tokens, "types": types,
                            "scores": [float(s) for s in scores] if scores is not None else [0.0] * n}
    meta["merges"] = _array(reader, K.MERGES, (gguf.GGUFValueType.STRING,)) or []
    if model == "gpt2" and not meta["merges"]:
        raise InputError("GGUF BPE tokenizer has no tokenizer.ggml.merges")
    meta["pre"] = _scalar(reader, K.PRE, (str,)) or "default"
    ints = (int,)
    for name, key in (("bos", K.BOS_ID), ("eos", K.EOS_ID), ("unk", K.UNK_ID), ("pad", K.PAD_ID),
                      ("sep", K.SEP_ID), ("mask", K.MASK_ID), ("eot", K.EOT_ID), ("eom", K.EOM_ID)):
        v = _scalar(reader, key, ints)
        meta[name] = v if v is not None and 0 <= v < n else None
    if model == "llama":  # llama.cpp's defaults for SentencePiece files without the keys
        for name, default in (("bos", 1), ("eos", 2), ("unk", 0)):
            if meta[name] is None and _field(reader, getattr(K, f"{name.upper()}_ID")) is None and default < n:
                meta[name] = default
    add_bos = _scalar(reader, K.ADD_BOS, (bool,))
    add_eos = _scalar(reader, K.ADD_EOS, (bool,))
    if model == "llama":
        default_bos = True
        clean = False
    else:
        if meta["pre"] not in PRE_NAMES:
            raise UnsupportedError(f"GGUF pre-tokenizer {meta['pre']!r} has no Hugging Face equivalent here")
        group, ignore_merges, default_bos, clean = PRE_NAMES[meta["pre"]]
        meta["group"], meta["ignore_merges"] = group, ignore_merges
    meta["clean_spaces"] = clean
    meta["add_bos"] = (add_bos if add_bos is not None else default_bos) and meta["bos"] is not None
    meta["add_eos"] = bool(add_eos) and meta["eos"] is not None
    prefix = _scalar(reader, K.ADD_PREFIX, (bool,))
    meta["add_space_prefix"] = True if prefix is None else prefix
    meta["remove_extra_ws"] = bool(_scalar(reader, K.REMOVE_EXTRA_WS, (bool,)))
    meta["chat_template"] = _scalar(reader, K.CHAT_TEMPLATE, (str,))
    named = {}
    for name in _array(reader, K.CHAT_TEMPLATES, (gguf.GGUFValueType.STRING,)) or []:
        t = _scalar(reader, K.CHAT_TEMPLATE_N.format(name=name), (str,))
        if t is not None:
            named[name] = t
    meta["chat_templates"] = named
    meta["name"] = _scalar(reader, gguf.Keys.General.NAME, (str,)) or ""
    arch = _scalar(reader, gguf.Keys.General.ARCHITECTURE, (str,)) or ""
    meta["context_length"] = _scalar(reader, gguf.Keys.LLM.CONTEXT_LENGTH.format(arch=arch), ints) if arch else None
    return meta


# ---------------------------------------------------------------------------------------------
# tokenizer.json


def _rstrip_ids(meta: dict) -> set[int]:
    """llama.cpp strips whitespace after Phi-3's special tokens (chosen by general.name there)."""
    name = meta["name"].lower()
    if "phi-3" not in name and "phi3" not in name:
        return set()
    keep = {"<unk>", "<s>", "<|endoftext|>"}
    return {i for i, (t, k) in enumerate(zip(meta["tokens"], meta["types"]))
            if (k in (TokenType.CONTROL, TokenType.USER_DEFINED, TokenType.UNKNOWN) or t == "</s>") and t not in keep}


def _added_tokens(meta: dict) -> list[dict]:
    """Tokens llama.cpp cuts out of the text before tokenizing (with special parsing on)."""
    rstrip = _rstrip_ids(meta)
    return [
        {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": i in rstrip,
         "normalized": False, "special": k != TokenType.USER_DEFINED}
        for i, (t, k) in enumerate(zip(meta["tokens"], meta["types"]))
        if k in (TokenType.CONTROL, TokenType.USER_DEFINED, TokenType.UNKNOWN)
    ]


def _post_processor(meta: dict) -> dict | None:
    if not (meta["add_bos"] or meta["add_eos"]):
        return None
    tokens = meta["tokens"]
    single: list[dict] = []
    pair: list[dict] = []
    specials: dict[str, dict] = {}
    for which, seq in ((single, ("A",)), (pair, ("A", "B"))):
        for type_id, name in enumerate(seq):
            if meta["add_bos"]:
                which.append({"SpecialToken": {"id": tokens[meta["bos"]], "type_id": type_id}})
            which.append({"Sequence": {"id": name, "type_id": type_id}})
            if meta["add_eos"]:
                which.append({"SpecialToken": {"id": tokens[meta["eos"]], "type_id": type_id}})
    for flag, key in (("add_bos", "bos"), ("add_eos", "eos")):
        if meta[flag]:
            text = tokens[meta[key]]
            specials[text] = {"id": text, "ids": [meta[key]], "tokens": [text]}
    return {"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials}


def _byte_level_json(meta: dict) -> dict:
    tokens = meta["tokens"]
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = []
    for m in meta["merges"]:
        cut = m.find(" ", 1)
        if cut < 0:
            continue
        a, b = m[:cut], m[cut + 1:]
        if a in vocab and b in vocab and a + b in vocab:  # Hugging Face refuses merges outside the vocab
            merges.append([a, b])
    post = _post_processor(meta)
    byte_post = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": _added_tokens(meta),
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": hf_pre_tokenizer(meta["group"])},
        "post_processor": {"type": "Sequence", "processors": [byte_post, post]} if post else byte_post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
            "ignore_merges": meta["ignore_merges"], "vocab": vocab, "merges": merges,
        },
    }


def sentencepiece_merges(tokens: list[str], scores: list[float], types: list[int]) -> list[list[str]]:
    """BPE merges equivalent to llama.cpp's SentencePiece loop: every way to build a token from two
    tokens, best score first. Tokens matched whole in the text (control, user-defined) take no part."""
    mergeable = {t: i for i, (t, k) in enumerate(zip(tokens, types)) if k in (TokenType.NORMAL, TokenType.UNUSED)}
    found = []
    for t, i in mergeable.items():
        for cut in range(1, len(t)):
            a, b = t[:cut], t[cut:]
            if a in mergeable and b in mergeable:
                found.append((-scores[i], i, cut, a, b))
    found.sort()
    return [[a, b] for _, _, _, a, b in found]


def _sentencepiece_json(meta: dict) -> dict:
    tokens, types = meta["tokens"], meta["types"]
    byte_fallback = sum(1 for t, k in zip(tokens, types) if k == TokenType.BYTE and _BYTE_PIECE.fullmatch(t)) == 256
    replace_space = {"type": "Replace", "pattern": {"String": " "}, "content": SPACE_MARK}
    if meta["add_space_prefix"]:
        normalizer = {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": SPACE_MARK}, replace_space]}
    else:
        normalizer = replace_space
    decoders: list[dict] = [{"type": "Replace", "pattern": {"String": SPACE_MARK}, "content": " "}]
    if byte_fallback:
        decoders.append({"type": "ByteFallback"})
    decoders.append({"type": "Fuse"})
    if meta["add_space_prefix"]:
        decoders.append({"type": "Strip", "content": " ", "start": 1, "stop": 0})
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": _added_tokens(meta),
        "normalizer": normalizer,
        "pre_tokenizer": None,
        "post_processor": _post_processor(meta),
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {
            "type": "BPE", "dropout": None,
            "unk_token": tokens[meta["unk"]] if meta["unk"] is not None else None,
            "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": True,
            "byte_fallback": byte_fallback, "ignore_merges": False,
            "vocab": {t: i for i, t in enumerate(tokens)},
            "merges": sentencepiece_merges(tokens, meta["scores"], types),
        },
    }


# ---------------------------------------------------------------------------------------------
# tokenizer.model: a SentencePiece ModelProto, written field by field


def _pb_varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _pb_int(number: int, value: int) -> bytes:
    return _pb_varint(number << 3) + _pb_varint(value)


def _pb_bytes(number: int, data: bytes) -> bytes:
    return _pb_varint(number << 3 | 2) + _pb_varint(len(data)) + data


def _pb_float(number: int, value: float) -> bytes:
    return _pb_varint(number << 3 | 5) + struct.pack("<f", value)


def sentencepiece_model(meta: dict) -> bytes:
    """A BPE ModelProto with the GGUF's pieces, scores and types (SentencePiece allows one unknown
    piece: other unknown-typed tokens become control tokens, which llama.cpp treats alike)."""
    tokens, types, scores = meta["tokens"], meta["types"], meta["scores"]
    unk = meta["unk"] if meta["unk"] is not None else 0
    pieces = bytearray()
    n_bytes = 0
    for i, (t, k, s) in enumerate(zip(tokens, types, scores)):
        if i == unk:
            k = TokenType.UNKNOWN
        elif k == TokenType.UNKNOWN:
            k = TokenType.CONTROL
        elif k == TokenType.BYTE:
            if _BYTE_PIECE.fullmatch(t):
                n_bytes += 1
            else:
                k = TokenType.NORMAL
        elif k == TokenType.USER_DEFINED:
            t = t.replace(" ", SPACE_MARK)  # SentencePiece matches user symbols on escaped text
        pieces += _pb_bytes(1, _pb_bytes(1, t.encode("utf-8")) + _pb_float(2, s) + _pb_int(3, k))
    trainer = _pb_int(3, 2) + _pb_int(4, len(tokens))
    if n_bytes == 256:
        trainer += _pb_int(35, 1)
    trainer += _pb_int(40, unk) + _pb_bytes(45, tokens[unk].encode("utf-8"))
    for number, piece_number, key in ((41, 46, "bos"), (42, 47, "eos"), (43, 48, "pad")):
        v = meta[key]
        if v is not None and types[v] in (TokenType.CONTROL, TokenType.UNKNOWN) and v != unk:
            trainer += _pb_int(number, v) + _pb_bytes(piece_number, tokens[v].encode("utf-8"))
        else:
            trainer += _pb_int(number, -1)
    normalizer = (_pb_bytes(1, b"identity") + _pb_int(3, int(meta["add_space_prefix"]))
                  + _pb_int(4, int(meta["remove_extra_ws"])) + _pb_int(5, 1))
    return bytes(pieces) + _pb_bytes(2, trainer) + _pb_bytes(3, normalizer)


# ---------------------------------------------------------------------------------------------
# tokenizer_config.json, special_tokens_map.json


def _special_texts(meta: dict) -> dict[str, str]:
    return {f"{k}_token": meta["tokens"][meta[k]] for k in ("bos", "eos", "unk", "pad", "sep", "mask")
            if meta[k] is not None}


def _tokenizer_config(meta: dict) -> dict:
    cfg: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": meta["add_bos"],
        "add_eos_token": meta["add_eos"],
        "clean_up_tokenization_spaces": meta["clean_spaces"],
        **_special_texts(meta),
        "added_tokens_decoder": {
            str(a["id"]): {k: a[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}
            for a in _added_tokens(meta)
        },
    }
    if isinstance(meta["context_length"], int) and meta["context_length"] > 0:
        cfg["model_max_length"] = meta["context_length"]
    if meta["chat_templates"]:
        choices = [{"name": n, "template": t} for n, t in sorted(meta["chat_templates"].items())]
        if meta["chat_template"] is not None:
            choices.insert(0, {"name": "default", "template": meta["chat_template"]})
        cfg["chat_template"] = choices
    elif meta["chat_template"] is not None:
        cfg["chat_template"] = meta["chat_template"]
    return cfg


def _special_tokens_map(meta: dict) -> dict:
    return {k: {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
            for k, t in _special_texts(meta).items()}


def _write_json(path: Path, data: dict) -> None:
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, ensure_ascii=False, indent=None, separators=(",", ":"))
    _readable(path)


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_output(path, needed=len(data)) as tmp:
        tmp.write_bytes(data)
    _readable(path)


def _readable(path: Path) -> None:
    # the temporary file was created private; a tokenizer is meant to be shared
    with contextlib.suppress(OSError):
        os.chmod(path, 0o644)
