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


def test_the_scores_equal_the_textbook_definitions_in_float64():
    """KLD, top-1 and NLL come from raw float32 logits with float64 sums; they must match log-softmax in float64."""
    import numpy as np

    from gguf_runtime.evaluate import _Reference, _Tally

    rng = np.random.default_rng(0)
    r = (4 * rng.standard_normal((7, 5000))).astype(np.float32)
    c = (r + 0.3 * rng.standard_normal(r.shape)).astype(np.float32)
    target = rng.integers(0, r.shape[1], 7)
    ref = _Reference(r, target, np.empty_like(r))
    tally = _Tally()
    tally.add(ref, c, np.empty_like(r))

    def log_softmax(x):
        x = x.astype(np.float64)
        return x - x.max(-1, keepdims=True) - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True))

    lr, lc = log_softmax(r), log_softmax(c)
    np.testing.assert_allclose(tally.kld[0], (np.exp(lr) * (lr - lc)).sum(-1), rtol=1e-5)
    np.testing.assert_allclose(tally.nll[0], -lc[np.arange(7), target], rtol=1e-6)
    np.testing.assert_allclose(ref.nll, -lr[np.arange(7), target], rtol=1e-6)
    assert (tally.agree[0] == (lr.argmax(-1) == lc.argmax(-1))).all()


def test_scoring_several_candidates_at_once_gives_each_one_its_own_scores(text):
    from gguf_runtime.evaluate import evaluate_many

    ref, cand = f16_gguf("smollm2"), source_gguf("smollm2")
    both = evaluate_many([cand, ref], ref, text, ctx=256, max_chunks=2)
    assert both[0] == evaluate(cand, ref, text, ctx=256, max_chunks=2)
    assert both[1].mean_kld == 0.0 and both[1].top1_agreement == 1.0
