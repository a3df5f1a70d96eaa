"""Metadata parity with llama.cpp: for every family's tiny checkpoint, every key llama.cpp's own
``convert_hf_to_gguf.py`` (from the llama-cpp-python sdist) writes, gguf-tools writes with the same value,
and both files hold the same tensors with the same shapes and types. The exceptions are listed, with the
reason for each, in DELIBERATE.
"""
from __future__ import annotations

import os
import subprocess
import sys

import gguf
import pytest
from conftest import CACHE
from tiny_models import CASES, build_tiny_model

from gguf_tools.convert import convert

LLAMA_CPP = CACHE / "sdist" / "llama_cpp_python-0.3.36" / "vendor" / "llama.cpp"

# key -> why gguf-tools' value (or its absence) differs from llama.cpp's converter on purpose
DELIBERATE: dict[str, str] = {
    "general.quantized_by": "provenance: which gguf-tools version chose the types",
    "gguf_tools.quant.preset": "provenance: the preset asked for",
    "gguf_tools.quant.search": "provenance: the quantization search mode",
    "gguf_tools.quant.imatrix": "provenance: the importance matrix file",
    "tokenizer.ggml.add_sep_token": "llama.cpp's converter writes False from the template's pair rule; "
                                    "False is also llama.cpp's default when the key is absent",
    "tokenizer.ggml.add_space_prefix": "stated for every SentencePiece vocabulary (llama.cpp writes it for "
                                       "Gemma only); the value is llama.cpp's default where it omits it",
    "tokenizer.ggml.remove_extra_whitespaces": "stated for every SentencePiece vocabulary; False is "
                                               "llama.cpp's default when the key is absent",
    "gemma3.attention.sliding_window_pattern": "the config's layer_types, which llama.cpp's converter drops: "
                                               "without it llama.cpp assumes Gemma 3's 5:1 pattern",
}
NOT_COMPARED = ("general.basename", "general.finetune", "general.organization", "general.version")
# ^ llama.cpp splits a Hub id such as SmolLM2-135M-Instruct into these; gguf-tools writes only general.name


def _contents(path) -> tuple[dict, dict]:
    reader = gguf.GGUFReader(path)
    meta = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    tensors = {t.name: (tuple(int(d) for d in t.shape), t.tensor_type.name) for t in reader.tensors}
    return meta, tensors


def _llama_cpp_convert(src, out) -> None:
    script = LLAMA_CPP / "convert_hf_to_gguf.py"
    if not script.is_file():
        pytest.skip(f"{script} is not unpacked")
    env = {**os.environ, "PYTHONPATH": str(LLAMA_CPP / "gguf-py")}
    run = subprocess.run([sys.executable, str(script), str(src), "--outtype", "f32", "--outfile", str(out)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]


def differences(ours: dict, theirs: dict) -> list[str]:
    """Keys whose values differ, excluding the deliberate ones; lists are summarised by first mismatch."""
    out = []
    for key in sorted(set(ours) | set(theirs)):
        if key in DELIBERATE or key in NOT_COMPARED:
            continue
        a, b = ours.get(key, "<absent>"), theirs.get(key, "<absent>")
        if a == b:
            continue
        if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            i = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
            out.append(f"{key}[{i}]: ours {a[i]!r}, llama.cpp {b[i]!r}")
        else:
            out.append(f"{key}: ours {str(a)[:80]!r}, llama.cpp {str(b)[:80]!r}")
    return out


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_key_llama_cpp_writes_is_written_with_the_same_value(case, tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "parity"
    src = build_tiny_model(case, root)
    ours, theirs = root / f"{case}.gguf-tools.gguf", root / f"{case}.llama-cpp.gguf"
    convert(src, ours, quant="F32")
    _llama_cpp_convert(src, theirs)
    (meta_o, tensors_o), (meta_t, tensors_t) = _contents(ours), _contents(theirs)
    assert differences(meta_o, meta_t) == []
    assert tensors_o == tensors_t
