"""Bad input gets one clear error line, a documented exit code, and no output file."""
from __future__ import annotations

import json
import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from tiny_models import build_tiny_model

from gguf_tools.cli import main
from gguf_tools.hf.safetensors import write_safetensors

CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 1,
    "num_attention_heads": 4,
    "vocab_size": 8,
}


def make_checkpoint(root: Path, config: dict | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(config or CONFIG))
    entries = [
        ("model.embed_tokens.weight", "f32", (8, 256), lambda: np.ones((8, 256), np.float32)),
        ("model.norm.weight", "f32", (256,), lambda: np.ones(256, np.float32)),
    ]
    write_safetensors(root / "model.safetensors", entries)
    return root


def write_raw_safetensors(path: Path, header: dict | bytes, data: bytes = b"", declared: int | None = None) -> None:
    blob = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob) if declared is None else declared) + blob + data)


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    err = capsys.readouterr().err
    return code, err


def assert_one_line_error(code: int, err: str, expected_code: int, *words: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == expected_code, err
    assert len(lines) == 1, err
    assert lines[0].startswith("gguf-tools: error: ")
    for w in words:
        assert w in lines[0], lines[0]


def convert_fails(capsys, src: Path, out: Path, expected_code: int, *words: str) -> None:
    code, err = run_cli(capsys, "convert", str(src), "-o", str(out), "--no-progress")
    assert_one_line_error(code, err, expected_code, *words)
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".partial")]


def test_a_missing_directory_is_exit_3_and_leaves_nothing(tmp_path, capsys):
    convert_fails(capsys, tmp_path / "nope", tmp_path / "o.gguf", 3, "no such model directory")


def test_a_directory_without_config_json_is_exit_3_and_leaves_nothing(tmp_path, capsys):
    (tmp_path / "m").mkdir()
    convert_fails(capsys, tmp_path / "m", tmp_path / "o.gguf", 3, "config.json not found")


def test_a_checkpoint_without_weights_is_exit_3_and_leaves_nothing(tmp_path, capsys):
    src = make_checkpoint(tmp_path / "m")
    (src / "model.safetensors").unlink()
    convert_fails(capsys, src, tmp_path / "o.gguf", 3, "no weights found")


def test_pickled_weights_are_exit_3_without_explicit_permission(tmp_path, capsys):
    src = make_checkpoint(tmp_path / "m")
    (src / "model.safetensors").unlink()
    (src / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    convert_fails(capsys, src, tmp_path / "o.gguf", 3, "--allow-pickle")


@pytest.mark.parametrize(
    "case, words",
    [
        ("short", "shorter than"),
        ("oversized", "exceeds"),
        ("past_end", "runs past the end"),
        ("not_json", "not valid JSON"),
        ("not_utf8", "not UTF-8"),
        ("out_of_range", "outside"),
        ("overlap", "overlap"),
        ("size_mismatch", "needs"),
        ("bad_dtype", "unsupported dtype"),
        ("bad_shape", "invalid shape"),
    ],
)
def test_a_hostile_safetensors_header_is_one_error_line_exit_3_and_leaves_nothing(tmp_path, capsys, case, words):
    src = make_checkpoint(tmp_path / "m")
    st = src / "model.safetensors"
    t = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
    if case == "short":
        st.write_bytes(b"\x01\x02")
    elif case == "oversized":
        write_raw_safetensors(st, {}, declared=2**40)
    elif case == "past_end":
        write_raw_safetensors(st, {"a": t}, declared=10_000)
    elif case == "not_json":
        write_raw_safetensors(st, b"{not json")
    elif case == "not_utf8":
        write_raw_safetensors(st, b'{"\xff\xfe": 1}')
    elif case == "out_of_range":
        write_raw_safetensors(st, {"a": {**t, "data_offsets": [0, 16]}}, data=b"\0" * 8)
    elif case == "overlap":
        write_raw_safetensors(st, {"a": t, "b": {**t, "data_offsets": [8, 24]}}, data=b"\0" * 24)
    elif case == "size_mismatch":
        write_raw_safetensors(st, {"a": {**t, "data_offsets": [0, 12]}}, data=b"\0" * 16)
    elif case == "bad_dtype":
        write_raw_safetensors(st, {"a": {**t, "dtype": "F8_E9"}}, data=b"\0" * 16)
    elif case == "bad_shape":
        write_raw_safetensors(st, {"a": {**t, "shape": [-2, 2]}}, data=b"\0" * 16)
    convert_fails(capsys, src, tmp_path / "o.gguf", 3, "model.safetensors", words)


def test_a_tensor_missing_from_its_sharded_index_is_exit_3_naming_it(tmp_path, capsys):
    src = make_checkpoint(tmp_path / "m")
    (src / "model.safetensors").rename(src / "model-00001-of-00001.safetensors")
    index = {"weight_map": {"model.embed_tokens.weight": "model-00001-of-00001.safetensors",
                            "model.layers.0.mlp.down_proj.weight": "model-00001-of-00001.safetensors"}}
    (src / "model.safetensors.index.json").write_text(json.dumps(index))
    convert_fails(capsys, src, tmp_path / "o.gguf", 3, "down_proj", "not present")


def test_a_missing_shard_is_exit_3_and_leaves_nothing(tmp_path, capsys):
    src = make_checkpoint(tmp_path / "m")
    index = {"weight_map": {"model.norm.weight": "model-00002-of-00002.safetensors"}}
    (src / "model.safetensors.index.json").write_text(json.dumps(index))
    convert_fails(capsys, src, tmp_path / "o.gguf", 3, "missing")


@pytest.mark.parametrize("payload, words", [(b"{\"architectures\": [", "not valid JSON"), (b"\xff\xfe{}", "not UTF-8"), (b"[1, 2]", "not a JSON object")])
def test_a_malformed_config_json_is_exit_3_saying_what_is_wrong(tmp_path, capsys, payload, words):
    src = make_checkpoint(tmp_path / "m")
    (src / "config.json").write_bytes(payload)
    convert_fails(capsys, src, tmp_path / "o.gguf", 3, "config.json", words)


def test_an_unsupported_architecture_is_exit_4_naming_the_supported_ones(tmp_path, capsys):
    src = make_checkpoint(tmp_path / "m", {**CONFIG, "architectures": ["GPTBigCodeForCausalLM"]})
    convert_fails(capsys, src, tmp_path / "o.gguf", 4, "GPTBigCodeForCausalLM", "LlamaForCausalLM", "Qwen3ForCausalLM")


@pytest.fixture(scope="module")
def good_model(tmp_path_factory):
    return build_tiny_model("smollm2", tmp_path_factory.mktemp("good"))


def test_an_unwritable_output_directory_is_exit_5_and_leaves_nothing(tmp_path, capsys, good_model):
    if os.geteuid() == 0:
        out_dir = tmp_path / "missing" / "dir"
        convert_fails_at = out_dir / "o.gguf"
        code, err = run_cli(capsys, "convert", str(good_model), "-o", str(convert_fails_at), "--no-progress")
        assert_one_line_error(code, err, 5, "does not exist")
        return
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    convert_fails(capsys, good_model, ro / "o.gguf", 5, "not writable")


def test_an_output_path_that_is_a_directory_is_exit_5(tmp_path, capsys, good_model):
    code, err = run_cli(capsys, "convert", str(good_model), "-o", str(tmp_path), "--no-progress")
    assert_one_line_error(code, err, 5, "is a directory")


def test_a_full_disk_is_exit_5_before_anything_is_written(tmp_path, capsys, good_model):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        convert_fails(capsys, good_model, mnt / "o.gguf", 5, "not enough disk space")
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_an_existing_output_is_kept_when_conversion_fails(tmp_path, capsys):
    src = make_checkpoint(tmp_path / "m", {**CONFIG, "architectures": ["Nope"]})
    out = tmp_path / "o.gguf"
    out.write_bytes(b"precious")
    code, _ = run_cli(capsys, "convert", str(src), "-o", str(out), "--no-progress")
    assert code == 4
    assert out.read_bytes() == b"precious"


def test_with_json_an_error_is_a_json_object_carrying_the_exit_code(tmp_path, capsys):
    code = main(["convert", str(tmp_path / "nope"), "-o", str(tmp_path / "o.gguf"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 3 and out["exit_code"] == 3 and "no such model directory" in out["error"]


def test_inspecting_a_non_gguf_file_is_one_error_line_exit_3(tmp_path, capsys):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"GGUF" + b"\xff" * 20)
    code, err = run_cli(capsys, "inspect", str(bad))
    assert_one_line_error(code, err, 3, "x.gguf")
    bad.write_bytes(b"nope")
    code, err = run_cli(capsys, "inspect", str(bad))
    assert_one_line_error(code, err, 3, "not a GGUF file")


def test_a_checkpoint_missing_a_layer_tensor_is_exit_3_naming_it(tmp_path, capsys, good_model):
    import shutil

    from gguf_tools.hf.safetensors import SafetensorsFile

    src = tmp_path / "m"
    shutil.copytree(good_model, src)
    f = SafetensorsFile(good_model / "model.safetensors")
    keep = [n for n in f.entries if n != "model.layers.1.mlp.down_proj.weight"]
    entries = [(n, "f32", f.entries[n].shape, lambda n=n: f.raw(n)) for n in keep]
    write_safetensors(src / "model.safetensors", entries)
    convert_fails(capsys, src, tmp_path / "o.gguf", 3, "missing tensors", "blk.1.ffn_down.weight")
