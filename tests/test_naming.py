"""general.name and general.size_label come out as llama.cpp's converter writes them."""
from __future__ import annotations

from pathlib import Path

import pytest

from gguf_tools.hf.naming import model_name, size_label


@pytest.mark.parametrize(("n", "label"), [
    (999, "1.0K"), (18_100_000, "18M"), (67_600_000, "68M"), (134_515_008, "135M"), (268_098_176, "268M"),
    (1_711_376_384, "1.7B"), (7_241_732_096, "7.2B"), (70_553_706_496, "71B"),
])
def test_size_label_rounds_the_parameter_count_to_two_significant_digits_or_more(n, label):
    assert size_label(n) == label


def test_the_name_is_the_title_cased_hub_id_else_the_directory(tmp_path):
    assert model_name({"_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct"}, tmp_path) == "SmolLM2 135M Instruct"
    assert model_name({"_name_or_path": "/home/me/models/x"}, Path("/m/qwen2-0.5b")) == "Qwen2 0.5b"
    snap = Path("/c/models--google--gemma-3-270m-it/snapshots/abc")
    assert model_name({}, snap) == "Gemma 3 270m It"
