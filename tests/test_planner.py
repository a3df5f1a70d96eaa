"""Budgeted planning on a tiny model built here: the size arithmetic, the recorded plan, llama.cpp loading the file,
the cache, the Ray executor against the local one, and threads against one thread."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
from conftest import greedy, load_llama

from gguf_tools.budgeted import quantize_to_budget
from gguf_tools.errors import BudgetError, UsageError
from gguf_tools.gguf_file import plan_record as record
from gguf_tools.gguf_file.reader import GGUFFile
from gguf_tools.planner import allocate, measure
from gguf_tools.planner.sizes import bpw_bytes, parse_size

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sensitivity")


@pytest.fixture(scope="module")
def planned(tiny_f16, cache_dir, tmp_path_factory):
    """Two budgeted files of the tiny model, the second planned from the first one's cached sensitivity."""
    out = tmp_path_factory.mktemp("planned")
    lo, hi = reachable(tiny_f16)
    targets = [int(lo + 0.2 * (hi - lo)), int(lo + 0.3 * (hi - lo))]   # where the embedding leaves steps < 1%
    return [quantize_to_budget(tiny_f16, out / f"plan{i}.gguf", calibration=TEXT, target_size=t, cache_dir=cache_dir)
            for i, t in enumerate(targets)]


def reachable(path: Path) -> tuple[int, int]:
    with pytest.raises(BudgetError) as e:
        quantize_to_budget(path, None, calibration=TEXT, target_size=1)
    lo, hi = (int(x.replace(",", "")) for x in e.value.args[0].split("can be ")[1].split(" bytes")[0].split(" to "))
    return lo, hi


def test_sizes_are_bytes_powers_of_ten_and_of_two_or_bits_per_weight():
    assert parse_size("95MB") == 95 * 10**6 and parse_size("1GiB") == 2**30 and parse_size("123") == 123
    assert parse_size("1.5GB") == 1_500_000_000 and parse_size("2MiB") == 2 * 2**20
    assert bpw_bytes(4.8, 1_000_000) == 600_000
    for bad in ("lots", "-5MB", "0", "12 parsecs"):
        with pytest.raises(UsageError):
            parse_size(bad)
    with pytest.raises(UsageError):
        bpw_bytes(0, 10)


def test_allocation_fits_the_budget_and_prefers_less_damage_per_byte():
    O = allocate.Option
    tensors = {"a": [O("x", 100, 10.0), O("y", 200, 1.0), O("z", 400, 0.5)],
               "b": [O("x", 100, 2.0), O("y", 200, 1.5), O("z", 400, 0.0)]}
    a = allocate.allocate(tensors, 50, 449)
    assert a.total <= 449 and a.types == {"a": "y", "b": "x"}   # 9 units of damage for 100 bytes beat 0.5
    assert allocate.allocate(tensors, 50, 450).types == {"a": "y", "b": "y"}
    assert allocate.allocate(tensors, 50, 850).types == {"a": "z", "b": "z"}
    with pytest.raises(BudgetError, match="250 to 850 bytes"):
        allocate.allocate(tensors, 50, 249)
    # the hull drops a candidate that no price per byte makes the best choice
    assert [o.type for o in allocate.hull([O("x", 100, 10.0), O("y", 200, 9.0), O("z", 300, 0.0)])] == ["x", "z"]


def test_files_land_within_one_percent_below_the_target(planned):
    for r in planned:
        size = r.output.stat().st_size
        assert size == r.size == r.budget.size or r.budget.chosen != "plan"
        assert r.budget.target * 0.99 <= size <= r.budget.target, (size, r.budget.target)


def test_bigger_budget_predicts_less_damage(planned):
    small, big = (r.budget for r in planned)
    assert big.predicted_kld < small.predicted_kld
    assert sum(big.tensor_bytes.values()) > sum(small.tensor_bytes.values())


def test_the_recorded_plan_is_the_files_tensor_types_and_llama_cpp_runs_it(planned):
    for r in planned:
        f = GGUFFile.open(r.output)
        rec = record.read_plan(f)
        assert rec is not None and rec["target_size"] == r.budget.target and rec["chosen"] == r.budget.chosen
        assert rec["types"] == {t.name: t.ggml_type.name for t in f.tensors}
        llm = load_llama(r.output, n_ctx=128, logits_all=True)
        tokens = llm.tokenize(b"The quick brown fox", add_bos=True, special=True)
        llm.eval(tokens)
        assert np.isfinite(np.array(llm.scores[: len(tokens)])).all()
        assert greedy(llm, "Once upon a time", n=8)


def test_a_second_size_reuses_the_measured_sensitivity(planned):
    first, second = (r.sensitivity for r in planned)
    assert first.measured and first.forwards > 1 and first.tensors_measured > 0
    assert not second.measured and second.forwards == 0 and second.tensors_measured == 0
    assert second.errors == first.errors and second.alphas == first.alphas


def test_cache_is_invalidated_when_the_source_or_the_imatrix_changes(tiny_f16, cache_dir, tmp_path, planned):
    import gguf_tools

    assert not measure.measure(tiny_f16, TEXT, cache_dir=cache_dir).measured
    changed = tmp_path / "changed.gguf"
    shutil.copy(tiny_f16, changed)
    f = GGUFFile.open(changed)
    t = next(t for t in f.tensors if t.name == "blk.1.ffn_down.weight")
    with open(changed, "r+b") as fh:          # one weight of one tensor, F16 1.0
        fh.seek(f.data_offset + t.offset)
        fh.write(np.float16(1.0).tobytes())
    assert measure.measure(changed, TEXT, cache_dir=cache_dir).measured
    imatrix = tmp_path / "imatrix.gguf"
    gguf_tools.collect_imatrix(tiny_f16, TEXT, imatrix, ctx=64, chunks=2)
    with_imatrix = measure.measure(tiny_f16, TEXT, imatrix=imatrix, cache_dir=cache_dir)
    assert with_imatrix.measured
    assert not measure.measure(tiny_f16, TEXT, imatrix=imatrix, cache_dir=cache_dir).measured
    assert measure.measure(tiny_f16, TEXT + "\nmore text", cache_dir=cache_dir).measured


def test_ray_and_the_local_pool_make_the_same_plan(tiny_f16):
    ray = pytest.importorskip("ray")
    from gguf_tools.planner.budget import plan_budget

    local = measure.measure(tiny_f16, TEXT, workers=2, use_cache=False)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        remote = measure.measure(tiny_f16, TEXT, cluster="auto", use_cache=False)
    finally:
        ray.shutdown()
    assert remote.errors == local.errors and remote.alphas == local.alphas
    f = GGUFFile.open(tiny_f16)
    total = sum(t.nbytes for t in f.tensors)
    assert plan_budget(f, remote, total // 3, 4096).types == plan_budget(f, local, total // 3, 4096).types


def test_threads_one_or_several_measure_the_same_numbers(tiny_f16):
    """Errors on threads and probes side by side, one engine each: the numbers of a one-thread run, bit for bit."""
    one = measure.measure(tiny_f16, TEXT, workers=1, use_cache=False)
    three = measure.measure(tiny_f16, TEXT, workers=3, use_cache=False)
    assert one.alphas and one.errors == three.errors and one.alphas == three.alphas
    assert np.array_equal(one.ref_logp, three.ref_logp)


def test_iq4_nl_blocks_read_as_ggufs_reader_reads_them():
    from gguf_tools.planner.candidates import dequantize
    from gguf_tools.quantize import quantize

    rng = np.random.default_rng(3)
    w = (rng.standard_normal((40, 96)) * rng.random((40, 1)) * 4).astype(np.float32)
    w[0] = 0
    w[1, 5] = 300.0
    blocks = quantize(w, gguf.GGMLQuantizationType.IQ4_NL, None, threads=1)
    ours = dequantize(gguf.GGMLQuantizationType.IQ4_NL, blocks, w.shape)
    theirs = gguf.quants.dequantize(np.asarray(blocks).reshape(40, -1), gguf.GGMLQuantizationType.IQ4_NL)
    assert ours.dtype == np.float32 and np.array_equal(ours.view(np.uint32), theirs.astype(np.float32).view(np.uint32))
    assert np.abs(ours - w).max() < 0.1 * np.abs(w).max()


def test_targets_out_of_reach_exit_2_with_the_range_and_write_nothing(tiny_f16, tmp_path):
    out = tmp_path / "never.gguf"
    for target in ("1KB", "10GB"):
        proc = subprocess.run([sys.executable, "-m", "gguf_tools.cli", "quantize", str(tiny_f16), str(out),
                               "--target-size", target, "--calibration", str(ROOT / "README.md")],
                              capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert proc.returncode == 2, proc.stderr
        assert "out of reach" in proc.stderr and " to " in proc.stderr and proc.stderr.count("\n") == 1
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_budget_options_need_calibration_text_and_one_budget(tiny_f16, tmp_path):
    base = [sys.executable, "-m", "gguf_tools.cli", "quantize", str(tiny_f16), str(tmp_path / "x.gguf")]
    proc = subprocess.run(base + ["--target-size", "5MB"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--calibration" in proc.stderr
    proc = subprocess.run(base + ["--target-size", "5MB", "--bpw", "4", "--calibration", str(ROOT / "README.md")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "only one" in proc.stderr


def test_plan_json_lists_every_tensor_with_its_damage_share(tiny_f16, cache_dir, planned, tmp_path):
    import json

    proc = subprocess.run([sys.executable, "-m", "gguf_tools.cli", "quantize", str(tiny_f16), "--plan", "--json",
                           "--target-size", str(planned[0].budget.target), "--calibration", str(ROOT / "README.md")],
                          capture_output=True, text=True, timeout=300, env={**__import__("os").environ,
                                                                           "GGUF_TOOLS_CACHE": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)["plan"]
    f = GGUFFile.open(tiny_f16)
    assert [r["name"] for r in plan["tensors"]] == [t.name for t in f.tensors]
    assert abs(sum(r["damage_share"] for r in plan["tensors"]) - 1) < 1e-6
    assert plan["size"] <= plan["target_size"] and plan["predicted_kld"] > 0
    assert {r["type"] for r in plan["tensors"]} <= {q.name for q in gguf.GGMLQuantizationType}
