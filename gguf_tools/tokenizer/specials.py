"""Special tokens (bos, eos, stop ids), whether llama.cpp adds BOS / EOS, and chat templates.

Each comes from several files that can disagree; the order in which they are consulted is the one
transformers uses, and is stated on each function.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InputError
from ..files import read_json
from .inputs import _added_tokens, _bool_or_none, _optional_json
from .spec import MAX_TEMPLATE_BYTES, MAX_TEMPLATES, TokenizerSpec

# Token texts llama.cpp already treats as end-of-generation on its own (src/llama-vocab.cpp).
LLAMA_CPP_EOG_TEXTS = frozenset((
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<\uff5cend\u2581of\u2581sentence\uff5c>", "[e~[",
))


def _token_text(entry: Any, where: str, what: str) -> str | None:
    if entry is None:
        return None
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and isinstance(entry.get("content"), str):
        return entry["content"]
    raise InputError(f"{where}: {what} must be a string or {{\"content\": ...}}")


def _ids(value: Any, where: str, what: str) -> list[int]:
    if value is None:
        return []
    if type(value) is int:
        return [value]
    if isinstance(value, list) and len(value) <= 1024 and all(type(v) is int for v in value):
        return list(value)
    raise InputError(f"{where}: {what} must be an integer or a list of integers")


def _apply_special_ids(spec: TokenizerSpec, root: Path, tok_cfg: dict, tok_json: dict | None, config: dict) -> None:
    """tokenizer_config.json names first (what the chat template uses), then config.json, then
    generation_config.json; an eos list keeps its first id as eos and the rest as extra stop ids."""
    n = len(spec.tokens)
    lookup: dict[str, int] = {}
    for i, t in enumerate(spec.tokens):
        lookup.setdefault(t, i)
    for tid, content, _ in _added_tokens(tok_json, root / "tokenizer.json"):
        if 0 <= tid < n:
            lookup[content] = tid
    cfg_where = f"{root}/tokenizer_config.json"
    found: dict[str, int] = {}
    for kind in ("bos", "eos", "unk", "pad", "sep", "mask", "cls"):
        text = _token_text(tok_cfg.get(f"{kind}_token"), cfg_where, f"{kind}_token")
        if text is None:
            continue
        if text in lookup:
            found[kind] = lookup[text]
        else:
            spec.notes.append(f"{cfg_where}: {kind}_token {text!r} is not in the vocabulary; ignored")
    if "bos" not in found and "cls" in found:
        found["bos"] = found["cls"]
    if "eos" not in found and "sep" in found:
        found["eos"] = found["sep"]
    eos_more: list[int] = []
    gen = _optional_json(root / "generation_config.json", "generation config")
    sources = [(f"{root}/config.json", config)]
    if isinstance(config.get("text_config"), dict):
        sources.append((f"{root}/config.json text_config", config["text_config"]))
    sources.append((f"{root}/generation_config.json", gen))
    for where, src in sources:
        for kind in ("bos", "eos", "pad", "unk", "sep", "mask"):
            ids = _ids(src.get(f"{kind}_token_id"), where, f"{kind}_token_id")
            ids = [i for i in ids if 0 <= i < n] or ([] if not ids else _note_range(spec, where, kind, ids, n))
            if not ids:
                continue
            found.setdefault(kind, ids[0])
            if kind == "eos":
                eos_more += ids
    for kind, attr in (("bos", "bos_id"), ("eos", "eos_id"), ("unk", "unk_id"), ("pad", "pad_id"),
                       ("sep", "sep_id"), ("mask", "mask_id")):
        if kind in found:
            setattr(spec, attr, found[kind])
    spec.extra_eos_ids = sorted({i for i in eos_more if i != spec.eos_id})


def _note_range(spec: TokenizerSpec, where: str, kind: str, ids: list[int], n: int) -> list[int]:
    spec.notes.append(f"{where}: {kind}_token_id {ids} is outside the vocabulary of {n}; ignored")
    return []


def _mark_extra_eos(spec: TokenizerSpec) -> None:
    """Make every extra stop id end generation in llama.cpp: it recognises most by their text; the rest
    go into the eot / eom slots (the only other per-id stop keys GGUF has)."""
    for tid in spec.extra_eos_ids:
        if spec.tokens[tid] in LLAMA_CPP_EOG_TEXTS or tid in (spec.eot_id, spec.eom_id):
            continue
        if spec.eot_id is None:
            spec.eot_id = tid
        elif spec.eom_id is None:
            spec.eom_id = tid
        else:
            spec.notes.append(f"stop token {spec.tokens[tid]!r} (id {tid}) has no GGUF key left; "
                              "llama.cpp will not stop on it")


def _special_in_template(item: Any) -> str | None:
    token = item.get("SpecialToken") if isinstance(item, dict) else None
    return token.get("id") if isinstance(token, dict) and isinstance(token.get("id"), str) else None


def _template_flags(tok_json: dict | None, bos: str | None, eos: str | None,
                    spm: bool) -> tuple[bool | None, bool | None]:
    """add_bos / add_eos as the tokenizer.json post-processor applies them. None when the file does not
    say: SentencePiece model classes then add BOS by default (so does llama.cpp)."""
    if tok_json is None:
        return None, None
    procs = _components_any(tok_json.get("post_processor"))
    if not procs:
        return (None, None) if spm else (False, False)
    add_bos = add_eos = False
    for p in procs:
        kind = p.get("type")
        if kind in ("RobertaProcessing", "BertProcessing"):
            return True, True
        if kind == "TemplateProcessing" and isinstance(p.get("single"), list) and p["single"]:
            single = p["single"]
            first, last = _special_in_template(single[0]), _special_in_template(single[-1])
            add_bos = first is not None and (bos is None or first == bos)
            add_eos = last is not None and len(single) > 1 and (eos is None or last == eos)
    return add_bos, add_eos


def _components_any(node: Any) -> list[dict]:
    if not isinstance(node, dict):
        return []
    if node.get("type") == "Sequence" and isinstance(node.get("processors"), list):
        return [p for p in node["processors"][:64] if isinstance(p, dict)]
    return [node]


def _apply_add_flags(spec: TokenizerSpec, tok_cfg: dict, tok_json: dict | None, json_path: Path) -> None:
    where = str(json_path.parent / "tokenizer_config.json")
    add_bos = _bool_or_none(tok_cfg.get("add_bos_token"), where, "add_bos_token")
    add_eos = _bool_or_none(tok_cfg.get("add_eos_token"), where, "add_eos_token")
    bos = spec.tokens[spec.bos_id] if spec.bos_id is not None else None
    eos = spec.tokens[spec.eos_id] if spec.eos_id is not None else None
    tmpl_bos, tmpl_eos = _template_flags(tok_json, bos, eos, spec.model == "llama")
    spec.add_bos = add_bos if add_bos is not None else tmpl_bos
    spec.add_eos = add_eos if add_eos is not None else tmpl_eos
    if spec.add_bos and spec.bos_id is None:
        spec.notes.append("the tokenizer adds a BOS token but none is defined; add_bos turned off")
        spec.add_bos = False
    if spec.add_eos and spec.eos_id is None:
        spec.add_eos = False


def _read_template(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_TEMPLATE_BYTES:
            raise InputError(f"{path}: chat template is {size} bytes, over the {MAX_TEMPLATE_BYTES}-byte limit")
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: chat template is not UTF-8 (byte {e.start})") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read chat template: {e.strerror}") from None


def _template_name(name: str) -> str:
    return "".join(c if c.isascii() and c.isalnum() else "_" for c in name)


def _templates_from_value(value: Any, where: str) -> tuple[str | None, dict[str, str]]:
    if value is None:
        return None, {}
    if isinstance(value, str):
        if len(value) > MAX_TEMPLATE_BYTES:
            raise InputError(f"{where}: chat_template is over {MAX_TEMPLATE_BYTES} characters")
        return value, {}
    if isinstance(value, list) and len(value) <= MAX_TEMPLATES:
        main, named = None, {}
        for i, item in enumerate(value):
            if not (isinstance(item, dict) and isinstance(item.get("name"), str) and isinstance(item.get("template"), str)):
                raise InputError(f"{where}: chat_template[{i}] must be {{\"name\": str, \"template\": str}}")
            if len(item["template"]) > MAX_TEMPLATE_BYTES:
                raise InputError(f"{where}: chat_template {item['name']!r} is over {MAX_TEMPLATE_BYTES} characters")
            if item["name"] == "default":
                main = item["template"]
            elif _template_name(item["name"]):
                named[_template_name(item["name"])] = item["template"]
        return main, named
    raise InputError(f"{where}: chat_template must be a string or a list of {{name, template}}")


def _chat_templates(root: Path, tok_cfg: dict) -> tuple[str | None, dict[str, str]]:
    """chat_template.jinja (what transformers loads first), then chat_template.json, then
    tokenizer_config.json; extra templates become tokenizer.chat_template.<name>."""
    jinja = root / "chat_template.jinja"
    if jinja.is_file():
        main = _read_template(jinja)
        named = {}
        extra_dir = root / "additional_chat_templates"
        if extra_dir.is_dir():
            for p in sorted(extra_dir.glob("*.jinja"))[:MAX_TEMPLATES]:
                if _template_name(p.stem):
                    named[_template_name(p.stem)] = _read_template(p)
        return main, named
    js = root / "chat_template.json"
    if js.is_file():
        data = read_json(js, "chat template")
        if not isinstance(data, dict):
            raise InputError(f"{js}: expected an object with \"chat_template\"")
        return _templates_from_value(data.get("chat_template"), str(js))
    return _templates_from_value(tok_cfg.get("chat_template"), f"{root}/tokenizer_config.json")

