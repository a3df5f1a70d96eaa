"""Packed files from the command line and in the runtime: pack, unpack, inspect, convert --pack,
Model and Engine loading packed files directly, and one clear error for bad input."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from plan_fixtures import source_gguf

from gguf_tools.cli import main
from gguf_tools.packed import is_packed


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def smollm2() -> Path:
    try:
        return source_gguf("smollm2")
    except FileNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> tuple[Path, Path]:
    """The real SmolLM2-135M Q4_1 GGUF and its packed form, made by `gguf-tools pack`."""
    src = smollm2()
    out = tmp_path_factory.mktemp("packed") / "smol.ggpk"
    assert main(["pack", str(src), "-o", str(out), "--threads", "2"]) == 0
    return src, out


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ---------------------------------------------------------------- pack and unpack

def test_pack_then_unpack_gives_back_the_real_file_byte_for_byte(packed, tmp_path, capsys):
    src, ggpk = packed
    assert is_packed(ggpk) and ggpk.stat().st_size < 0.914 * src.stat().st_size   # zstd -19: 91.4%
    code, out, _ = run_cli(capsys, "unpack", ggpk, "-o", tmp_path / "back.gguf", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["sha256"] == sha(src) == sha(tmp_path / "back.gguf")
    assert report["size"] == src.stat().st_size
    assert leftovers(tmp_path) == ["back.gguf"]


def test_smallest_codes_the_quants_too_for_a_smaller_file(packed, tmp_path, capsys):
    src, ggpk = packed
    code, out, _ = run_cli(capsys, "pack", src, "-o", tmp_path / "small.ggpk", "--smallest", "--json")
    assert code == 0
    smallest = tmp_path / "small.ggpk"
    assert json.loads(out)["packed_size"] == smallest.stat().st_size < ggpk.stat().st_size
    assert smallest.stat().st_size < 0.9 * src.stat().st_size
    code, _, _ = run_cli(capsys, "unpack", smallest, "-o", tmp_path / "back.gguf")
    assert code == 0 and sha(tmp_path / "back.gguf") == sha(src)


def test_default_names_swap_gguf_and_ggpk(packed, tmp_path, capsys):
    src, ggpk = packed
    shutil.copy(ggpk, tmp_path / "model.ggpk")
    code, out, _ = run_cli(capsys, "unpack", tmp_path / "model.ggpk")
    assert code == 0 and "model.gguf" in out
    (tmp_path / "model.ggpk").unlink()
    code, out, _ = run_cli(capsys, "pack", tmp_path / "model.gguf", "--json", "--threads", "1")
    assert code == 0
    report = json.loads(out)
    assert report["output"] == str(tmp_path / "model.ggpk")
    assert report["packed_size"] == (tmp_path / "model.ggpk").stat().st_size < report["original_size"]
    assert sha(tmp_path / "model.ggpk") == sha(ggpk)    # packing does not depend on the thread count
    assert leftovers(tmp_path) == ["model.ggpk", "model.gguf"]


# ---------------------------------------------------------------- inspect

def test_inspect_shows_a_packed_file_as_its_gguf_plus_what_packing_saved(packed, capsys):
    src, ggpk = packed
    code, out, _ = run_cli(capsys, "inspect", src, "--json")
    plain = json.loads(out)
    code2, out, _ = run_cli(capsys, "inspect", ggpk, "--json")
    info = json.loads(out)
    assert code == code2 == 0
    assert info["metadata"] == plain["metadata"]
    assert info["types"] == plain["types"] and info["n_params"] == plain["n_params"]
    assert info["bits_per_weight"] == plain["bits_per_weight"]
    keys = ("name", "shape", "type", "bytes", "offset")
    assert [{k: t[k] for k in keys} for t in info["tensors"]] == [{k: t[k] for k in keys} for t in plain["tensors"]]
    p = info["packed"]
    assert p["gguf_size"] == plain["size"] and p["packed_size"] == info["size"] == ggpk.stat().st_size
    assert p["ratio"] == round(ggpk.stat().st_size / src.stat().st_size, 4)
    assert p["sha256"] == sha(src)
    for t in info["tensors"]:
        assert 0 < t["packed_bytes"] and t["ratio"] == round(t["packed_bytes"] / t["bytes"], 4)
    # the coded tensors plus header, index and padding make up the whole file
    assert sum(t["packed_bytes"] for t in info["tensors"]) < info["size"]
    assert min(t["ratio"] for t in info["tensors"]) < 0.9     # 4-bit quants and f16 scales shrink

    code, text, _ = run_cli(capsys, "inspect", ggpk)
    assert code == 0
    assert f"of the GGUF's {plain['size']:,} bytes" in text and "Q4_1 x210" in text
    row = next(line for line in text.splitlines() if "blk.0.attn_q.weight" in line)
    assert row.rstrip().endswith("%")


# ---------------------------------------------------------------- convert --pack

@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    from tiny_models import build_tiny_model

    return build_tiny_model("smollm2", tmp_path_factory.mktemp("tiny"))


def test_convert_pack_writes_the_packed_form_of_what_convert_writes(tiny_checkpoint, tmp_path, capsys):
    plain, ggpk = tmp_path / "plain" / "m.gguf", tmp_path / "packed" / "m.ggpk"
    plain.parent.mkdir()
    ggpk.parent.mkdir()
    assert run_cli(capsys, "convert", tiny_checkpoint, "-o", plain, "-q", "Q8_0", "--no-progress")[0] == 0
    code, out, _ = run_cli(capsys, "convert", tiny_checkpoint, "-o", ggpk, "-q", "Q8_0", "--pack", "--json")
    assert code == 0
    report = json.loads(out)
    assert is_packed(ggpk) and report["packed_size"] == ggpk.stat().st_size < report["size"] == plain.stat().st_size
    assert leftovers(ggpk.parent) == ["m.ggpk"]        # the intermediate GGUF is gone
    assert main(["unpack", str(ggpk), "-o", str(tmp_path / "back.gguf")]) == 0
    assert sha(tmp_path / "back.gguf") == sha(plain)


# ---------------------------------------------------------------- runtime

def test_model_loads_a_packed_file_and_generates_the_same_tokens(packed):
    from gguf_runtime import Model

    src, ggpk = packed
    prompt = "The capital of France is"

    def tokens(path: Path) -> list[int]:
        m = Model(path, n_ctx=128, threads=2)
        return m.tokenize(m.generate(prompt, max_tokens=12))

    from_packed = tokens(ggpk)
    assert from_packed == tokens(src) and len(from_packed) >= 6


def test_run_command_reads_a_packed_file(packed, capsys):
    code, out, _ = run_cli(capsys, "run", packed[1], "-p", "The capital of France is", "--max-tokens", "8")
    assert code == 0 and "Paris" in out


def test_reference_engine_gives_identical_logits_from_a_packed_file(packed):
    from gguf_tools.engine.transformer import Engine

    src, ggpk = packed
    tokens = [1, 504, 3575, 282, 4649, 314]
    want = Engine(src, n_ctx=32, threads=2).logits(tokens)
    got = Engine(ggpk, n_ctx=32, threads=2).logits(tokens)
    assert want.shape[-1] == 49152 and np.array_equal(got, want)


# ---------------------------------------------------------------- bad input

def corrupt(packed: Path, dest: Path, how: str) -> Path:
    raw = bytearray(packed.read_bytes())
    if how == "truncated":
        raw = raw[: len(raw) // 2]
    elif how == "flipped":                   # a bit in the middle of the coded tensor data
        raw[len(raw) // 2] ^= 0x10
    elif how == "not packed":
        raw = bytearray(b"GGUFPACX" + bytes(200))
    dest.write_bytes(bytes(raw))
    return dest


@pytest.mark.parametrize("how", ["truncated", "flipped", "not packed"])
def test_bad_packed_input_is_one_error_line_exit_3_and_no_output(packed, tmp_path, capsys, how):
    bad = corrupt(packed[1], tmp_path / "bad.ggpk", how)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, out, err = run_cli(capsys, "unpack", bad, "-o", out_dir / "x.gguf", "--json")
    assert code == 3
    assert err.count("\n") == 1 and err.startswith("gguf-tools: error: ") and str(bad) in err
    assert json.loads(out) == {"error": err.removeprefix("gguf-tools: error: ").strip(), "exit_code": 3}
    assert leftovers(out_dir) == []
    if how != "flipped":   # the kept header and index are checked up front; data is checked while decoding
        code, _, err = run_cli(capsys, "inspect", bad)
        assert code == 3 and err.count("\n") == 1
    code, _, err = run_cli(capsys, "run", bad, "-p", "Hi", "--max-tokens", "1")
    assert code == 3 and err.count("\n") == 1


def test_packing_what_is_not_a_gguf_or_is_already_packed_is_exit_3(packed, tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("not a model at all, just some words that are long enough to read a header from")
    code, _, err = run_cli(capsys, "pack", text, "-o", tmp_path / "a.ggpk")
    assert code == 3 and "not a GGUF file" in err
    code, _, err = run_cli(capsys, "pack", packed[1], "-o", tmp_path / "b.ggpk")
    assert code == 3 and "already packed" in err
    code, _, err = run_cli(capsys, "unpack", packed[0], "-o", tmp_path / "c.gguf")
    assert code == 3 and err.count("\n") == 1
    assert leftovers(tmp_path) == ["notes.txt"]


def test_output_problems_are_exit_5_and_same_file_is_a_usage_error(packed, tmp_path, capsys):
    code, _, err = run_cli(capsys, "pack", packed[0], "-o", tmp_path / "missing" / "x.ggpk")
    assert code == 5 and "does not exist" in err
    copy = tmp_path / "m.ggpk"
    shutil.copy(packed[1], copy)
    code, _, _ = run_cli(capsys, "unpack", copy, "-o", copy)
    assert code == 2 and sha(copy) == sha(packed[1])
