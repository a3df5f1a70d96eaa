"""Presets from the command line: `convert --quant --plan`, what a quantized file records, and refusals."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
from tiny_models import build_tiny_model

from gguf_tools.cli import main
from gguf_tools.hf.safetensors import SafetensorsFile, write_safetensors

Q = gguf.GGMLQuantizationType


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A tiny Llama-architecture checkpoint with a real tokenizer (2 layers, hidden 256)."""
    return build_tiny_model("llama2", tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def tiny_f16(tiny, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("f16") / "tiny-f16.gguf"
    assert main(["convert", str(tiny), "-o", str(out), "--quant", "F16", "--no-progress"]) == 0
    return out


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("gguf-tools: error: "), lines[0]
    return lines[0]


def nothing_written(directory: Path, keep: set[str]) -> bool:
    return {p.name for p in directory.iterdir()} <= keep


def plan_json(capsys, *args: str) -> dict[str, str]:
    code, out, err = run(capsys, *args, "--plan", "--json")
    assert code == 0, err
    return {t["name"]: t["type"] for t in json.loads(out)["tensors"]}


def file_types(path: Path) -> dict[str, str]:
    return {t.name: Q(t.tensor_type).name for t in gguf.GGUFReader(path).tensors}


def test_plan_prints_every_tensor_with_its_type_and_writes_nothing(tmp_path, capsys, tiny):
    code, out, err = run(capsys, "convert", str(tiny), "--quant", "Q3_K_M", "--plan")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["tensor", "shape", "type"]
    rows = {ln.split()[0]: ln.split()[2] for ln in lines[1:] if ln.strip() and not ln[0].isdigit()}
    n_tensors = int(next(ln for ln in lines if "tensors," in ln).split()[0])
    assert len(rows) == n_tensors == 2 * 9 + 3  # 9 per layer, token_embd, output_norm, output
    # Q3_K_M: the first two attn_v get Q5_K, ffn_down Q4_K in the layers llama.cpp picks, norms stay F32
    assert rows["blk.0.attn_v.weight"] == "Q5_K"
    assert rows["blk.0.attn_q.weight"] == "Q3_K"
    assert rows["blk.0.attn_norm.weight"] == "F32"
    assert rows["output.weight"] == "Q6_K"
    assert "bits per weight" in lines[-1]
    assert list(tmp_path.iterdir()) == []
    assert nothing_written(tiny, {p.name for p in tiny.iterdir()})


def test_plan_needs_no_output_but_a_write_does(capsys, tiny):
    code, _, err = run(capsys, "convert", str(tiny), "--quant", "Q4_K_M")
    assert code == 2 and "--output" in err


@pytest.mark.parametrize("preset", ["Q3_K_M", "Q4_K_S"])
def test_written_file_has_the_planned_type_for_every_tensor_and_records_the_preset(tmp_path, capsys, tiny, preset):
    planned = plan_json(capsys, "convert", str(tiny), "--quant", preset)
    out = tmp_path / "m.gguf"
    code, stdout, err = run(capsys, "convert", str(tiny), "-o", str(out), "--quant", preset, "--no-progress")
    assert code == 0, err
    assert file_types(out) == planned
    assert len(set(planned.values())) >= 3  # a real mixture, not one type everywhere
    fields = gguf.GGUFReader(out).fields
    assert fields["gguf_tools.quant.preset"].contents() == preset
    assert fields["gguf_tools.quant.search"].contents() == "default"
    assert fields["general.file_type"].contents() == int(gguf.LlamaFileType[f"MOSTLY_{preset}"])
    assert "gguf_tools.quant.imatrix" not in fields
    assert f"wrote {out}" in stdout


def test_quantize_gives_the_same_types_as_convert_and_records_the_search(tmp_path, capsys, tiny, tiny_f16):
    planned = plan_json(capsys, "convert", str(tiny), "--quant", "Q4_K_M")
    assert plan_json(capsys, "quantize", str(tiny_f16), "--quant", "Q4_K_M") == planned
    out = tmp_path / "q.gguf"
    code, _, err = run(capsys, "quantize", str(tiny_f16), str(out), "--quant", "Q4_K_M", "--search", "ggml",
                       "--no-progress")
    assert code == 0, err
    assert file_types(out) == planned
    fields = gguf.GGUFReader(out).fields
    assert fields["gguf_tools.quant.preset"].contents() == "Q4_K_M"
    assert fields["gguf_tools.quant.search"].contents() == "ggml"


def test_quantize_refuses_a_quantized_input_unless_allowed(tmp_path, capsys, tiny_f16):
    q8 = tmp_path / "q8.gguf"
    assert main(["quantize", str(tiny_f16), str(q8), "--quant", "Q8_0", "--no-progress"]) == 0
    capsys.readouterr()
    out = tmp_path / "q4.gguf"
    code, _, err = run(capsys, "quantize", str(q8), str(out), "--quant", "Q4_K_M", "--no-progress")
    assert code == 4
    line = one_error_line(err)
    assert "already quantized (Q8_0)" in line and "--allow-requantize" in line
    assert nothing_written(tmp_path, {"q8.gguf"})

    code, _, err = run(capsys, "quantize", str(q8), str(out), "--quant", "Q4_K_M", "--allow-requantize",
                       "--no-progress")
    assert code == 0, err
    assert Q.Q4_K.name in set(file_types(out).values())


def _checkpoint_with(tmp_path: Path, tiny: Path, name: str, value: float) -> Path:
    """A copy of the tiny checkpoint with one value of tensor `name` replaced."""
    src = tmp_path / "bad-model"
    shutil.copytree(tiny, src)
    f = SafetensorsFile(tiny / "model.safetensors")

    def load(n: str) -> np.ndarray:
        a = np.array(f.raw(n), dtype=np.float32)
        if n == name:
            a.reshape(-1)[a.size // 2] = value
        return a

    entries = [(n, "f32", f.entries[n].shape, lambda n=n: load(n)) for n in f.entries]
    write_safetensors(src / "model.safetensors", entries)
    return src


@pytest.mark.parametrize(("tensor", "value", "preset"), [
    ("model.layers.1.mlp.down_proj.weight", np.nan, "Q4_K_M"),
    ("model.layers.0.self_attn.q_proj.weight", np.inf, "F16"),
    ("model.layers.0.input_layernorm.weight", -np.inf, "Q3_K_S"),
])
def test_non_finite_weights_in_a_checkpoint_are_one_error_naming_the_tensor(tmp_path, capsys, tiny, tensor, value,
                                                                            preset):
    src = _checkpoint_with(tmp_path, tiny, tensor, value)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, _, err = run(capsys, "convert", str(src), "-o", str(out_dir / "m.gguf"), "--quant", preset, "--no-progress")
    assert code == 3
    line = one_error_line(err)
    assert tensor in line and "NaN or Inf" in line
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize(("tensor", "preset"), [("blk.1.ffn_down.weight", "Q4_K_M"),
                                                ("output_norm.weight", "Q6_K")])
def test_non_finite_weights_in_a_gguf_are_one_error_naming_the_tensor(tmp_path, capsys, tiny_f16, tensor, preset):
    bad = tmp_path / "bad.gguf"
    shutil.copy(tiny_f16, bad)
    t = next(t for t in gguf.GGUFReader(bad).tensors if t.name == tensor)
    nan = np.array([np.nan], dtype=np.float16 if t.tensor_type == Q.F16 else np.float32).tobytes()
    with open(bad, "r+b") as fh:
        fh.seek(int(t.data_offset) + 8 * len(nan))
        fh.write(nan)
    out = tmp_path / "q.gguf"
    code, _, err = run(capsys, "quantize", str(bad), str(out), "--quant", preset, "--no-progress")
    assert code == 3
    line = one_error_line(err)
    assert tensor in line and "NaN or Inf" in line
    assert nothing_written(tmp_path, {"bad.gguf"})


def test_an_unknown_search_is_a_usage_error_and_best_is_recorded(tmp_path, capsys, tiny_f16):
    out = tmp_path / "q.gguf"
    code, _, err = run(capsys, "quantize", str(tiny_f16), str(out), "--quant", "Q5_0", "--search", "fastest")
    assert code == 2 and "Invalid value for '--search': must be one of default, best, ggml" in err
    assert not out.exists()
    code, _, err = run(capsys, "quantize", str(tiny_f16), str(out), "--quant", "Q5_0", "--search", "best",
                       "--no-progress")
    assert code == 0, err
    assert gguf.GGUFReader(out).fields["gguf_tools.quant.search"].contents() == "best"


def test_the_api_reports_progress_in_bytes_through_a_callback_and_draws_nothing(tmp_path, capsys, tiny, tiny_f16):
    from gguf_tools import convert, quantize_gguf

    for run_it in (lambda progress: convert(tiny, tmp_path / "c.gguf", quant="Q8_0", search="ggml", progress=progress),
                   lambda progress: quantize_gguf(tiny_f16, tmp_path / "q.gguf", "Q4_K_M", progress=progress)):
        calls: list[tuple[int, int]] = []
        result = run_it(lambda done, total, calls=calls: calls.append((done, total)))
        total = calls[0][1]
        assert calls[0] == (0, total) and calls[-1] == (total, total)
        assert [d for d, _ in calls] == sorted(d for d, _ in calls)
        assert total < result.size <= total + 2**20  # tensor data plus header and padding
        assert result.notes is not None and result.packed_size is None
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err == ""
    assert gguf.GGUFReader(tmp_path / "c.gguf").fields["gguf_tools.quant.search"].contents() == "ggml"
