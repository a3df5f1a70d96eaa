"""The eval command is the instrument for every quality claim: check it on cases with known answers."""
from __future__ import annotations

import json

import pytest
from conftest import data_file
from plan_fixtures import f16_gguf, source_gguf

from gguf_runtime.evaluate import evaluate
from gguf_tools.cli import main

TEXT = data_file("eval.txt")


@pytest.fixture(scope="module")
def text() -> str:
    if not TEXT.exists():
        pytest.skip(f"{TEXT} not present")
    return TEXT.read_text(encoding="utf-8")[:20000]


def test_a_model_against_itself_scores_zero(text):
    r = evaluate(source_gguf("smollm2"), source_gguf("smollm2"), text, ctx=256, max_chunks=2)
    assert r.positions == 2 * 127
    assert r.mean_kld < 1e-9 and r.max_kld < 1e-9
    assert r.top1_agreement == 1.0
    assert r.ppl_candidate == pytest.approx(r.ppl_reference, rel=1e-9)


def test_a_quantized_model_diverges_measurably(text):
    r = evaluate(source_gguf("smollm2"), f16_gguf("smollm2"), text, ctx=256, max_chunks=2)
    assert 1e-4 < r.mean_kld < 1.0
    assert r.p99_kld >= r.mean_kld
    assert 0.5 < r.top1_agreement < 1.0
    assert 1.0 < r.ppl_reference < 100


def test_eval_cli_prints_json(tmp_path, capsys, text):
    t = tmp_path / "t.txt"
    t.write_text(text, encoding="utf-8")
    code = main(["eval", str(source_gguf("smollm2")), "--ref", str(source_gguf("smollm2")), "--text", str(t),
                 "--ctx", "128", "--chunks", "1", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["positions"] == 63 and out["top1_agreement"] == 1.0


def test_eval_rejects_text_shorter_than_one_chunk(tmp_path, capsys):
    t = tmp_path / "t.txt"
    t.write_text("too short", encoding="utf-8")
    code = main(["eval", str(source_gguf("smollm2")), "--ref", str(source_gguf("smollm2")), "--text", str(t)])
    assert code == 3 and "fewer than one chunk" in capsys.readouterr().err
