"""Running a GGUF model: the Python API and the run/chat/inspect commands."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from plan_fixtures import source_gguf

from gguf_runtime import Model, default_threads
from gguf_tools.cli import main
from gguf_tools.errors import ResourceError


@pytest.fixture(scope="module")
def model():
    return Model(source_gguf("smollm2"), n_ctx=512)


def test_threads_default_to_physical_cores():
    import psutil

    assert 1 <= default_threads() <= (psutil.cpu_count(logical=False) or 1)


def test_greedy_generation_is_deterministic(model):
    a = model.generate("The capital of France is", max_tokens=8)
    b = model.generate("The capital of France is", max_tokens=8)
    assert a == b and "Paris" in a


def test_chat_uses_the_models_template(model):
    tokens = model.chat_prompt([{"role": "user", "content": "Hi"}])
    text = model._llm.detokenize(tokens, special=True).decode()
    assert text.startswith("<|im_start|>system") and text.rstrip().endswith("<|im_start|>assistant")
    reply = model.chat("What is 2 + 2? Answer with a number.", max_tokens=16)
    assert "4" in reply


def test_a_model_that_cannot_fit_in_memory_is_refused():
    with pytest.raises(ResourceError, match="GiB"):
        Model(source_gguf("smollm2"), n_ctx=50_000_000)


def test_run_command_streams_a_completion(capsys):
    code = main(["run", str(source_gguf("smollm2")), "-p", "The capital of France is", "--max-tokens", "8"])
    assert code == 0 and "Paris" in capsys.readouterr().out


def test_chat_command_answers_each_line_until_eof():
    proc = subprocess.run(
        [sys.executable, "-m", "gguf_tools.cli", "chat", str(source_gguf("smollm2")), "--temp", "0",
         "--max-tokens", "24", "--ctx", "512"],
        input="What is 2 + 2? Answer with a number.\n", capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "4" in proc.stdout


def test_inspect_reports_types_and_bits_per_weight(capsys):
    code = main(["inspect", str(source_gguf("smollm2")), "--json"])
    info = json.loads(capsys.readouterr().out)
    assert code == 0
    assert info["types"] == {"F32": 61, "Q4_1": 210, "Q8_0": 1}
    assert info["metadata"]["general.architecture"] == "llama"
    assert info["metadata"]["tokenizer.ggml.tokens"]["length"] == 49152
    assert 4.5 < info["bits_per_weight"] < 6.5
    code = main(["inspect", str(source_gguf("smollm2"))])
    text = capsys.readouterr().out
    assert "blk.0.attn_q.weight" in text and "Q4_1 x210" in text
