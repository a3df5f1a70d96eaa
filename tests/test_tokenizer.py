"""Tokenizers, both directions: Hugging Face directory -> GGUF metadata -> llama.cpp, and GGUF -> HF.

The fixture directories are made from real GGUF vocabularies by ``export_tokenizer``; converting them
back with ``load_tokenizer`` must give a GGUF that llama.cpp tokenizes exactly like transformers does
on the directory, and like the original Hugging Face tokenizers did on llama.cpp's test vectors.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import gguf
import pytest
from conftest import data_file
from tokenizer_fixtures import (
    FIXTURE_NAMES,
    fixture_config,
    tokenizer_dir,
    vocab_gguf,
    vocab_test_vectors,
    write_vocab_gguf,
)

from gguf_tools.errors import InputError, UnsupportedError
from gguf_tools.gguf_file.reader import GGUFFile
from gguf_tools.tokenizer import (
    CHK_TXT,
    PRE_HASHES,
    PRE_NAMES,
    TokenizerSpec,
    add_tokenizer_metadata,
    load_tokenizer,
)

CORPUS = [
    "Hello world",
    " Hello world",
    "Hello, World! How are you today?",
    "   leading and trailing spaces   ",
    "tabs\tand\t\ttabs",
    "new\nlines\n\n\nand\r\nCRLF",
    "\n\n",
    " ",
    "\t",
    "",
    "Numbers: 0 7 42 1234 12345678901234567890 3.14159 1e-10 -273.15 1,000,000",
    "Unicode: caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00c5ngstr\u00f6m fa\u00e7ade co\u00f6perate e\u0301 n\u0303",
    ("CJK: \u6211\u60f3\u5728apple\u5de5\u4f5c \u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3067\u3059 "
     "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8"),
    "Emoji: \U0001f680 \U0001f636\u200d\U0001f32b\ufe0f \U0001f44d\U0001f3fd \U0001f999\U0001f999 \u2705 \u2764\ufe0f",
    ("Scripts: \u041f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440, \u03b3\u03b5\u03b9\u03ac \u03c3\u03bf\u03c5, "
     "\u0645\u0631\u062d\u0628\u0627, \u05e9\u05dc\u05d5\u05dd, \u0928\u092e\u0938\u094d\u0924\u0947"),
    "def f(x):\n    return x ** 2  # square\n\nprint(f(3))",
    'int main(void) { printf("%d\\n", 42); return 0; }',
    "https://example.com/a/b?c=d&e=f /usr/local/bin ~/.cache",
    "I'm, you're, it's, we'll, they'd, CAN'T, Don't, 'quoted'",
    "...!!!???---===*** ((( ))) [[[ ]]]",
    "    indented four\n        indented eight\n\t\ttabbed",
    "zero\u200bwidth non\u00a0breaking ideographic\u3000space",
]
SHARED_TEXT = data_file("eval.txt")


def corpus_with_specials(spec: TokenizerSpec) -> list[str]:
    texts = list(CORPUS)
    if SHARED_TEXT.is_file():
        text = SHARED_TEXT.read_text(encoding="utf-8")[:4000]
        texts += [text[i:i + 1000] for i in range(0, len(text), 1000)]
    inline = [t for t, k in zip(spec.tokens, spec.token_types)
              if k in (gguf.TokenType.CONTROL, gguf.TokenType.USER_DEFINED) and t.strip()][:8]
    for a, b in zip(inline, inline[1:] + inline[:1]):
        texts.append(f"{a}user\nHi there {b} text{a}\n {b} ")
    return texts


@dataclass
class Converted:
    name: str
    src: Path  # the HF tokenizer directory
    spec: TokenizerSpec
    gguf_path: Path
    llm: object  # llama_cpp.Llama, vocab only
    hf: object  # transformers tokenizer

    def llama(self, text: str, add_bos: bool = False) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)


def _needs(name: str) -> None:
    pytest.importorskip("llama_cpp")
    pytest.importorskip("transformers")
    try:
        vocab_gguf(name)
    except (FileNotFoundError, ImportError) as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    cache: dict[str, Converted] = {}

    def get(name: str) -> Converted:
        if name not in cache:
            _needs(name)
            import llama_cpp
            import transformers

            src = tokenizer_dir(name)
            spec = load_tokenizer(src, fixture_config(name))
            path = write_vocab_gguf(spec, name, tmp_path_factory.mktemp("vocab") / f"{name}.gguf")
            llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
            hf = transformers.AutoTokenizer.from_pretrained(src)
            cache[name] = Converted(name, src, spec, path, llm, hf)
        return cache[name]

    return get


def _first_difference(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


# ---------------------------------------------------------------------------------------------
# HF directory -> GGUF -> llama.cpp


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_llama_cpp_on_the_converted_gguf_tokenizes_like_transformers(converted, name):
    c = converted(name)
    for text in corpus_with_specials(c.spec):
        got, want = c.llama(text), c.hf.encode(text, add_special_tokens=False)
        i = _first_difference(got, want)
        assert got == want, (
            f"{name}: {text[:60]!r} differs at token {i}: llama.cpp {[c.spec.tokens[t] for t in got[i:i + 3]]} "
            f"vs transformers {[c.spec.tokens[t] for t in want[i:i + 3]]}"
        )


@pytest.mark.parametrize("name", [n for n in FIXTURE_NAMES if n not in ("smollm2", "gemma3")])
def test_llama_cpp_test_vectors_still_pass_after_the_round_trip(converted, name):
    vectors = vocab_test_vectors(name)
    if not vectors:
        pytest.skip(f"no .inp/.out vectors for {name}")
    c = converted(name)
    failed = [text for text, ids in vectors if c.llama(text) != ids]
    assert not failed, f"{name}: {len(failed)} of {len(vectors)} vectors differ, first {failed[0][:60]!r}"


@pytest.mark.parametrize("name", [n for n in FIXTURE_NAMES if n not in ("smollm2", "gemma3")])
def test_exported_hf_tokenizer_reproduces_the_original_hf_tokenizer_on_the_vectors(converted, name):
    vectors = vocab_test_vectors(name)
    if not vectors:
        pytest.skip(f"no .inp/.out vectors for {name}")
    c = converted(name)
    failed = [text for text, ids in vectors if c.hf.encode(text, add_special_tokens=False) != ids]
    assert not failed, f"{name}: {len(failed)} of {len(vectors)} vectors differ, first {failed[0][:60]!r}"


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_bos_and_eos_are_added_exactly_when_transformers_adds_them(converted, name):
    c = converted(name)
    for text in ("Hello world", " a b", ""):
        assert c.llama(text, add_bos=True) == c.hf.encode(text, add_special_tokens=True), (name, text)


def test_add_bos_follows_the_model_family(converted):
    assert converted("llama-bpe").spec.add_bos is True  # Llama 3's post-processor adds <|begin_of_text|>
    assert converted("smollm2").spec.add_bos is False
    assert converted("qwen2").spec.add_bos is False
    assert converted("gemma3").spec.add_bos is True


@pytest.mark.parametrize("name", ["smollm2", "qwen2", "phi-3"])
def test_chat_template_survives_both_directions(converted, name):
    import llama_cpp

    c = converted(name)
    original = llama_cpp.Llama(str(vocab_gguf(name)), vocab_only=True, verbose=False).metadata["tokenizer.chat_template"]
    assert c.spec.chat_template == original
    assert c.hf.chat_template == original
    assert c.llm.metadata["tokenizer.chat_template"] == original


def test_special_ids_match_the_source_gguf(converted):
    c = converted("gemma3")
    assert (c.spec.bos_id, c.spec.eos_id, c.spec.unk_id, c.spec.pad_id) == (2, 1, 3, 0)
    assert c.spec.tokens[c.spec.bos_id] == "<bos>" and c.spec.add_space_prefix is False
    s = converted("smollm2").spec
    assert (s.tokens[s.bos_id], s.tokens[s.eos_id]) == ("<|im_start|>", "<|im_end|>")


def test_spm_user_defined_whitespace_tokens_are_matched_on_raw_text(converted):
    c = converted("gemma3")
    four = c.spec.tokens.index("    ")
    assert c.spec.token_types[four] == gguf.TokenType.USER_DEFINED
    assert c.llama("a    b").count(four) == 1


# ---------------------------------------------------------------------------------------------
# pre-tokenizer detection


def test_check_text_is_llama_cpps():
    assert hashlib.sha256(CHK_TXT.encode()).hexdigest() == (
        "a36179c1e2b1cfcfbfad1dc779addad2ffc778201e4cf0d538bddeafa2c526da"
    )
    assert PRE_HASHES["0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5"] == "llama-bpe"


@pytest.mark.parametrize("name,pre", [("smollm2", "smollm"), ("llama-bpe", "llama-bpe"), ("qwen2", "qwen2")])
def test_pre_tokenizer_is_recognised_by_hash(converted, name, pre):
    spec = converted(name).spec
    assert (spec.pre, spec.pre_source) == (pre, "hash")


def _copy_without_hash_match(name: str, tmp_path: Path) -> Path:
    """A copy of a fixture whose vocabulary changed (two ids swapped) but whose pre-tokenizer did not."""
    from tokenizers import Tokenizer

    src = tokenizer_dir(name)
    dst = tmp_path / name
    shutil.copytree(src, dst)
    data = json.loads((dst / "tokenizer.json").read_text(encoding="utf-8"))
    ids = Tokenizer.from_file(str(src / "tokenizer.json")).encode(CHK_TXT, add_special_tokens=False).ids
    vocab = data["model"]["vocab"]
    inverse = {v: k for k, v in vocab.items()}
    a, b = [inverse[i] for i in dict.fromkeys(ids)][:2]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (dst / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return dst


@pytest.mark.parametrize("name,pre", [("smollm2", "smollm"), ("qwen2", "qwen2")])
def test_pre_tokenizer_is_recognised_by_structure_when_the_vocabulary_changed(name, pre, tmp_path):
    _needs(name)
    d = _copy_without_hash_match(name, tmp_path)
    spec = load_tokenizer(d, fixture_config(name))
    assert (spec.pre, spec.pre_source) == (pre, "structure")


def test_forced_pre_tokenizer_wins_over_detection(tmp_path):
    _needs("smollm2")
    spec = load_tokenizer(tokenizer_dir("smollm2"), fixture_config("smollm2"), pre="starcoder")
    assert (spec.pre, spec.pre_source) == ("starcoder", "forced")


def test_a_pre_tokenizer_name_llama_cpp_does_not_know_is_refused():
    with pytest.raises(UnsupportedError, match="not one llama.cpp knows"):
        load_tokenizer(Path("."), {}, pre="my-own-regex")


# Small synthetic byte-level tokenizers: fast, and they can have any pre-tokenizer.


def _bytes_to_unicode() -> list[str]:
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return [out[b] for b in range(256)]


def tiny_bpe_dir(root: Path, pre_tokenizer: dict | None, *, ignore_merges: bool = False,
                 tokenizer_config: dict | None = None, extra: dict | None = None) -> Path:
    alphabet = _bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(alphabet)}
    merges = [["\u0120", "t"], ["h", "e"], ["\u0120t", "he"]]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    vocab["<|endoftext|>"] = len(vocab)
    tok = {
        "version": "1.0",
        "added_tokens": [{"id": vocab["<|endoftext|>"], "content": "<|endoftext|>", "special": True,
                          "normalized": False, "lstrip": False, "rstrip": False, "single_word": False}],
        "normalizer": None,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "vocab": vocab, "merges": merges, "ignore_merges": ignore_merges,
                  "byte_fallback": False, "fuse_unk": False, "unk_token": None, "dropout": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None},
    }
    if extra:
        tok.update(extra)
    root.mkdir(parents=True, exist_ok=True)
    (root / "tokenizer.json").write_text(json.dumps(tok), encoding="utf-8")
    cfg = {"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"}
    cfg.update(tokenizer_config or {})
    (root / "tokenizer_config.json").write_text(json.dumps(cfg), encoding="utf-8")
    return root


def _split(regex: str) -> dict:
    return {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}


BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
BYTE_LEVEL_REGEX = dict(BYTE_LEVEL, use_regex=True)
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


@pytest.mark.parametrize("pre_tokenizer,ignore_merges,clean,expected", [
    ({"type": "Sequence", "pretokenizers": [_split(LLAMA3_SPLIT), BYTE_LEVEL]}, True, True, "llama-bpe"),
    ({"type": "Sequence", "pretokenizers": [_split(LLAMA3_SPLIT), BYTE_LEVEL]}, False, True, "dbrx"),
    (BYTE_LEVEL_REGEX, False, True, "gpt-2"),
    ({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, BYTE_LEVEL_REGEX]},
     False, False, "smollm"),
    ({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, BYTE_LEVEL_REGEX]},
     False, True, "starcoder"),
    ({"type": "Sequence", "pretokenizers": [_split(LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")), BYTE_LEVEL]},
     False, False, "qwen2"),
])
def test_structure_names_the_pre_tokenizer_of_an_unhashed_vocabulary(tmp_path, pre_tokenizer, ignore_merges,
                                                                      clean, expected):
    d = tiny_bpe_dir(tmp_path, pre_tokenizer, ignore_merges=ignore_merges,
                     tokenizer_config={"clean_up_tokenization_spaces": clean})
    spec = load_tokenizer(d, {})
    assert (spec.pre, spec.pre_source) == (expected, "structure")


def test_unknown_pre_tokenizer_raises_naming_what_was_seen_and_the_override(tmp_path):
    d = tiny_bpe_dir(tmp_path, {"type": "Sequence", "pretokenizers": [_split(r"\w+|[^\w\s]+"), BYTE_LEVEL]})
    with pytest.raises(UnsupportedError) as info:
        load_tokenizer(d, {})
    message = str(info.value)
    assert "tokenizer.json" in message and "Split" in message and "pre=" in message
    assert load_tokenizer(d, {}, pre="gpt-2").pre == "gpt-2"


def test_a_byte_level_prefix_space_is_not_taken_for_gpt2(tmp_path):
    d = tiny_bpe_dir(tmp_path, dict(BYTE_LEVEL_REGEX, add_prefix_space=True))
    with pytest.raises(UnsupportedError, match="pre-tokenizer"):
        load_tokenizer(d, {})


# ---------------------------------------------------------------------------------------------
# special ids, extra stop tokens, templates, flags


def test_eos_list_keeps_the_first_and_makes_the_rest_stop_in_llama_cpp(tmp_path):
    _needs("smollm2")
    import llama_cpp

    d = tmp_path / "smol"
    shutil.copytree(tokenizer_dir("smollm2"), d)
    (d / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 0, 6, 7]}))
    spec = load_tokenizer(d, fixture_config("smollm2"))
    assert spec.eos_id == 2 and spec.extra_eos_ids == [0, 6, 7]
    assert (spec.eot_id, spec.eom_id) == (6, 7)  # <|endoftext|> (0) llama.cpp already knows by its text
    llm = llama_cpp.Llama(str(write_vocab_gguf(spec, "smollm2", tmp_path / "v.gguf")), vocab_only=True, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    assert all(llama_cpp.llama_vocab_is_eog(vocab, i) for i in (2, 0, 6, 7))
    assert not llama_cpp.llama_vocab_is_eog(vocab, 8)


def test_config_json_ids_fill_what_tokenizer_config_leaves_open(tmp_path):
    d = tiny_bpe_dir(tmp_path, BYTE_LEVEL_REGEX, tokenizer_config={"eos_token": None, "bos_token": None})
    spec = load_tokenizer(d, {"bos_token_id": 5, "eos_token_id": [7, 8], "pad_token_id": 9})
    assert (spec.bos_id, spec.eos_id, spec.pad_id, spec.extra_eos_ids) == (5, 7, 9, [8])


def test_vocabulary_is_padded_to_config_vocab_size(tmp_path):
    d = tiny_bpe_dir(tmp_path, BYTE_LEVEL_REGEX)
    spec = load_tokenizer(d, {"vocab_size": 300})
    assert len(spec.tokens) == 300
    assert spec.tokens[299] == "[PAD299]" and spec.token_types[299] == gguf.TokenType.UNUSED


def test_add_bos_comes_from_the_post_processor_when_tokenizer_config_is_silent(tmp_path):
    eot = "<|endoftext|>"
    template = {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": eot, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [], "special_tokens": {eot: {"id": eot, "ids": [259], "tokens": [eot]}}}
    d = tiny_bpe_dir(tmp_path / "a", BYTE_LEVEL_REGEX, extra={"post_processor": template})
    assert load_tokenizer(d, {}).add_bos is True
    broken = dict(template, special_tokens={})  # the Rust tokenizer panics on this one; we must not
    d = tiny_bpe_dir(tmp_path / "c", BYTE_LEVEL_REGEX, extra={"post_processor": broken})
    assert load_tokenizer(d, {}).add_bos is True
    d = tiny_bpe_dir(tmp_path / "b", BYTE_LEVEL_REGEX, extra={"post_processor": template},
                     tokenizer_config={"add_bos_token": False})
    assert load_tokenizer(d, {}).add_bos is False


def test_named_chat_templates_become_separate_keys(tmp_path):
    d = tiny_bpe_dir(tmp_path, BYTE_LEVEL_REGEX, tokenizer_config={"chat_template": [
        {"name": "default", "template": "{{ messages }}"}, {"name": "tool_use", "template": "{{ tools }}"}]})
    spec = load_tokenizer(d, {})
    assert spec.chat_template == "{{ messages }}" and spec.chat_templates == {"tool_use": "{{ tools }}"}
    path = tmp_path / "t.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    add_tokenizer_metadata(writer, spec)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    fields = gguf.GGUFReader(path).fields
    assert fields["tokenizer.chat_template"].contents() == "{{ messages }}"
    assert fields["tokenizer.chat_template.tool_use"].contents() == "{{ tools }}"
    assert fields["tokenizer.ggml.pre"].contents() == "gpt-2"
    assert fields["tokenizer.ggml.merges"].contents() == ["\u0120 t", "h e", "\u0120t he"]


def test_chat_template_jinja_file_wins_over_tokenizer_config(tmp_path):
    d = tiny_bpe_dir(tmp_path, BYTE_LEVEL_REGEX, tokenizer_config={"chat_template": "old"})
    (d / "chat_template.jinja").write_text("{{ new }}", encoding="utf-8")
    assert load_tokenizer(d, {}).chat_template == "{{ new }}"


def test_spm_style_tokenizer_json_without_tokenizer_model_tokenizes_like_transformers(converted, tmp_path):
    """llama.cpp's own converter gives every token the same score here; ranks make merges exact."""
    import llama_cpp

    c = converted("llama-spm")
    d = tmp_path / "hf-only"
    shutil.copytree(c.src, d)
    (d / "tokenizer.model").unlink()
    spec = load_tokenizer(d, fixture_config("llama-spm"))
    assert spec.model == "llama" and spec.add_space_prefix is True
    llm = llama_cpp.Llama(str(write_vocab_gguf(spec, "llama-spm", tmp_path / "v.gguf")), vocab_only=True, verbose=False)
    for text in corpus_with_specials(spec) + [t for t, _ in vocab_test_vectors("llama-spm") or []]:
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == c.hf.encode(text, add_special_tokens=False), text


def test_exported_sentencepiece_model_loads_and_agrees_with_llama_cpp(converted):
    import sentencepiece

    for name in ("llama-spm", "gemma3"):
        c = converted(name)
        sp = sentencepiece.SentencePieceProcessor(model_file=str(c.src / "tokenizer.model"))
        assert sp.vocab_size() == len(c.spec.tokens)
        assert (sp.bos_id(), sp.eos_id(), sp.unk_id()) == (c.spec.bos_id, c.spec.eos_id, c.spec.unk_id)
        for text in CORPUS[:12]:
            assert sp.encode(text) == c.llm.tokenize(text.encode(), add_bos=False, special=False), (name, text)


# ---------------------------------------------------------------------------------------------
# hostile and broken inputs


def test_missing_tokenizer_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no tokenizer found"):
        load_tokenizer(tmp_path, {})


@pytest.mark.parametrize("content,match", [
    (b"{\"model\": {", "not valid JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b"[1, 2, 3]", "expected a JSON object"),
    (b"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -1}, \"merges\": []}}", "must be an integer in"),
    (b"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 99999999999}, \"merges\": []}}", "must be an integer in"),
    (b"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 0}, \"merges\": []}}", "share an id"),
    (b"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [3]}}", "merge 0"),
    (b"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"added_tokens\": 5}", "added_tokens"),
])
def test_malformed_tokenizer_json_is_one_input_error_naming_the_file(tmp_path, content, match):
    (tmp_path / "tokenizer.json").write_bytes(content)
    with pytest.raises(InputError, match=match) as info:
        load_tokenizer(tmp_path, {})
    assert "tokenizer.json" in str(info.value) and "\n" not in str(info.value)


def test_unsupported_tokenizer_models_are_refused(tmp_path):
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"type": "WordPiece", "vocab": {"a": 0}}}))
    with pytest.raises(UnsupportedError, match="WordPiece"):
        load_tokenizer(tmp_path, {})


@pytest.mark.parametrize("config,tok_cfg,match", [
    ({"eos_token_id": "2"}, {}, "eos_token_id must be an integer"),
    ({"vocab_size": 10}, {}, "does not fit config.json vocab_size"),
    ({"vocab_size": 10**12}, {}, "outside"),
    ({}, {"bos_token": 5}, "bos_token must be a string"),
    ({}, {"add_bos_token": "yes"}, "add_bos_token must be true or false"),
    ({}, {"chat_template": 42}, "chat_template must be a string"),
    ({}, {"chat_template": [{"name": "x"}]}, "chat_template\\[0\\]"),
])
def test_wrong_types_in_configs_are_input_errors(tmp_path, config, tok_cfg, match):
    d = tiny_bpe_dir(tmp_path, BYTE_LEVEL_REGEX, tokenizer_config=tok_cfg)
    with pytest.raises(InputError, match=match):
        load_tokenizer(d, config)


def test_broken_tokenizer_model_is_an_input_error(tmp_path):
    _needs("llama-spm")
    good = (tokenizer_dir("llama-spm") / "tokenizer.model").read_bytes()
    for i, data in enumerate((good[: len(good) // 2], b"\x0a\xff\xff\xff\xff\x0f", b"not a protobuf at all \x07")):
        d = tmp_path / str(i)
        d.mkdir()
        (d / "tokenizer.model").write_bytes(data)
        with pytest.raises(InputError, match="tokenizer.model"):
            load_tokenizer(d, {})


def test_sentencepiece_round_trip_keeps_pieces_scores_and_types(converted):
    """Except the added tokens (<unk>, <s>, </s>), which, as llama.cpp's converter does today, become
    CONTROL with score -1000 (the reference vocabulary is older and keeps the pieces' own)."""
    c = converted("llama-spm")
    fields = gguf.GGUFReader(vocab_gguf("llama-spm")).fields
    added = 3
    assert c.spec.tokens == fields["tokenizer.ggml.tokens"].contents()
    assert c.spec.scores[added:] == fields["tokenizer.ggml.scores"].contents()[added:]
    assert c.spec.token_types[added:] == fields["tokenizer.ggml.token_type"].contents()[added:]
    assert c.spec.scores[:added] == [-1000.0] * added and c.spec.token_types[:added] == [gguf.TokenType.CONTROL] * added
    assert c.spec.token_types[3] == gguf.TokenType.BYTE and c.spec.token_types[500] == gguf.TokenType.NORMAL


def test_nothing_in_the_model_directory_is_executed(tmp_path):
    marker = tmp_path / "executed"
    d = tiny_bpe_dir(tmp_path / "m", BYTE_LEVEL_REGEX, tokenizer_config={
        "auto_map": {"AutoTokenizer": ["evil.EvilTokenizer", None]}, "tokenizer_class": "EvilTokenizer"})
    (d / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    assert load_tokenizer(d, {"auto_map": {"AutoModel": "evil.Model"}}).model == "gpt2"
    assert not marker.exists()


def test_a_tokenizer_model_that_is_not_sentencepiece_yields_to_a_byte_level_tokenizer_json(tmp_path):
    d = tiny_bpe_dir(tmp_path, BYTE_LEVEL_REGEX)
    (d / "tokenizer.model").write_bytes(b"IQ== 0\nIg== 1\n")  # a tiktoken file, as Llama 3 ships one
    spec = load_tokenizer(d, {})
    assert spec.model == "gpt2" and spec.pre == "gpt-2"


# ---------------------------------------------------------------------------------------------
# GGUF -> Hugging Face directory


def test_export_writes_a_directory_transformers_loads_with_the_gguf_specials(converted):
    c = converted("smollm2")
    assert fixture_config("smollm2") == {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2, "vocab_size": 49152}
    names = {p.name for p in c.src.iterdir()}
    assert {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"} <= names
    assert (c.hf.bos_token, c.hf.eos_token, c.hf.pad_token) == ("<|im_start|>", "<|im_end|>", "<|im_end|>")
    assert len(c.hf) == 49152
    assert "tokenizer.model" in {p.name for p in converted("gemma3").src.iterdir()}


def _tiny_gguf(path: Path, **kv) -> GGUFFile:
    writer = gguf.GGUFWriter(str(path), "llama")
    for key, (value, vtype, sub) in kv.items():
        writer.add_key_value(key.replace("__", "."), value, vtype, sub_type=sub)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    return GGUFFile.open(path)


S, A, I32 = gguf.GGUFValueType.STRING, gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.INT32


@pytest.mark.parametrize("kv,error,match", [
    ({}, InputError, "no tokenizer"),
    ({"tokenizer__ggml__model": ("bert", S, None)}, UnsupportedError, "bert"),
    ({"tokenizer__ggml__model": ("gpt2", S, None)}, InputError, "tokens"),
    ({"tokenizer__ggml__model": ("gpt2", S, None), "tokenizer__ggml__tokens": (["a", "b", "a"], A, S)},
     InputError, "duplicate"),
    ({"tokenizer__ggml__model": ("llama", S, None), "tokenizer__ggml__tokens": (["a", "b"], A, S),
      "tokenizer__ggml__token_type": (["x", "y"], A, S)}, InputError, "token_type"),
    ({"tokenizer__ggml__model": ("llama", S, None), "tokenizer__ggml__tokens": (["a", "b"], A, S),
      "tokenizer__ggml__token_type": ([1], A, I32)}, InputError, "do not match"),
    ({"tokenizer__ggml__model": ("gpt2", S, None), "tokenizer__ggml__tokens": (["a", "b"], A, S),
      "tokenizer__ggml__merges": (["a b"], A, S), "tokenizer__ggml__pre": ("no-such-pre", S, None)},
     UnsupportedError, "no-such-pre"),
])
def test_export_refuses_broken_or_unsupported_gguf_metadata(tmp_path, kv, error, match):
    from gguf_tools.export.tokenizer import export_tokenizer

    reader = _tiny_gguf(tmp_path / "t.gguf", **kv)
    with pytest.raises(error, match=match):
        export_tokenizer(reader, tmp_path / "out")
    assert not (tmp_path / "out" / "tokenizer.json").exists()


def test_export_of_a_small_sentencepiece_vocabulary_round_trips(tmp_path):
    """A hand-made SentencePiece vocabulary: pieces, scores, types and flags survive GGUF -> HF -> GGUF,
    except that the special pieces come back as llama.cpp's converter writes added tokens (CONTROL, -1000)."""
    from gguf_tools.export.tokenizer import export_tokenizer

    pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + [
        "\u2581", "a", "b", "\u2581a", "ab", "\u2581ab", "<tool>"]
    types = [2, 3, 3] + [6] * 256 + [1] * 6 + [4]
    scores = [0.0] * 259 + [-1.0, -2.0, -3.0, -4.0, -5.0, -6.0, 0.0]
    reader = _tiny_gguf(
        tmp_path / "s.gguf",
        tokenizer__ggml__model=("llama", S, None), tokenizer__ggml__tokens=(pieces, A, S),
        tokenizer__ggml__scores=(scores, A, gguf.GGUFValueType.FLOAT32),
        tokenizer__ggml__token_type=(types, A, I32),
        tokenizer__ggml__add_space_prefix=(True, gguf.GGUFValueType.BOOL, None),
        tokenizer__chat_template=("{{ x }}", S, None),
    )
    out = tmp_path / "hf"
    assert export_tokenizer(reader, out) == {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": None,
                                             "vocab_size": len(pieces)}
    spec = load_tokenizer(out, {"vocab_size": len(pieces)})
    control, pad = gguf.TokenType.CONTROL, -1000.0
    assert (spec.tokens, spec.token_types) == (pieces, [control] * 3 + types[3:])
    assert spec.scores == [pad] * 3 + scores[3:-1] + [pad]  # <tool> is an added token too
    assert (spec.add_space_prefix, spec.add_bos, spec.chat_template) == (True, True, "{{ x }}")
    transformers = pytest.importorskip("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(out)
    # "▁a" (score -4) merges before "ab" (-5), then "▁a"+"b" -> "▁ab"; bytes for what no piece covers
    assert tok.encode("ab ab<tool>a", add_special_tokens=False) == [264, 264, 265, 262]
    assert tok.encode("c", add_special_tokens=True) == [1, 259, 3 + ord("c")]


OTHER_VOCABS = ["gpt-2", "falcon", "deepseek-llm", "deepseek-coder", "starcoder", "refact", "command-r", "mpt", "qwen35"]


@pytest.mark.slow
@pytest.mark.parametrize("name", OTHER_VOCABS)
def test_every_llama_cpp_test_vocabulary_survives_both_directions(name, tmp_path):
    """Export reproduces the original HF tokenizer on its vectors; conversion back finds the same
    pre-tokenizer by hash and llama.cpp then reproduces the vectors too."""
    _needs(name)
    import llama_cpp
    import transformers

    vectors = vocab_test_vectors(name)
    assert vectors
    src = tokenizer_dir(name)
    hf = transformers.AutoTokenizer.from_pretrained(src)
    assert [t for t, ids in vectors if hf.encode(t, add_special_tokens=False) != ids] == []
    spec = load_tokenizer(src, fixture_config(name))
    original = llama_cpp.Llama(str(vocab_gguf(name)), vocab_only=True, verbose=False)
    # names that split alike may share a hash (mpt/olmo); what must agree is what llama.cpp does with them
    assert PRE_NAMES[spec.pre] == PRE_NAMES[original.metadata["tokenizer.ggml.pre"]]
    llm = llama_cpp.Llama(str(write_vocab_gguf(spec, name, tmp_path / "v.gguf")), vocab_only=True, verbose=False)
    assert [t for t, ids in vectors if llm.tokenize(t.encode(), add_bos=False, special=True) != ids] == []
