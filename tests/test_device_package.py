"""package / install: a directory a device can take, chosen by fit, written and installed atomically."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import greedy, smollm2_gguf
from plan_fixtures import f16_gguf

from gguf_tools.budgeted import plan_sizes
from gguf_tools.device.devices import device
from gguf_tools.device.fit import fit
from gguf_tools.device.install import install
from gguf_tools.device.package import package, preset_needs
from gguf_tools.device.split import merge
from gguf_tools.device.verify import verify
from gguf_tools.errors import InputError
from gguf_tools.gguf_file.plan_record import read_plan
from gguf_tools.gguf_file.reader import GGUFFile
from gguf_tools.requantize import quantize_gguf

MB, MiB = 10**6, 1 << 20


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "gguf_tools.cli", *args], capture_output=True, text=True, env=env)


def _f16() -> Path:
    return f16_gguf("smollm2")   # built once and cached (plan_fixtures), whichever test asks first


def _profiles(tmp_path, budget_mib: float) -> dict:
    f = tmp_path / "devices.toml"
    f.write_text(f'[tiny]\nram = "1GiB"\nbudget = "{budget_mib}MiB"\nbandwidth_gbs = 10\nsource = "test"\n')
    import os

    return {**os.environ, "GGUF_TOOLS_DEVICES": str(f)}


def test_package_splits_under_the_file_limit_with_a_card_and_a_manifest_that_verifies(tmp_path):
    src = smollm2_gguf()
    out = tmp_path / "pkg"
    r = _cli("package", str(src), "-o", str(out), "--max-file-size", "40MB", "--smoke", "What is the capital of France?")
    assert r.returncode == 0, r.stderr
    shards = sorted(out.glob("*.gguf"))
    assert len(shards) == 3 and all(s.stat().st_size <= 40 * MB for s in shards)
    m = json.loads((out / "manifest.json").read_text())
    assert m["identity"]["general.license"] == "apache-2.0" and m["memory"]["verdict"] == "unknown"
    assert m["smoke"]["answer"].strip() and m["smoke"]["tokens_per_s"] > 0
    card = (out / "README.md").read_text()
    assert card.startswith("---\nbase_model: ") and 'license: "apache-2.0"' in card and "tags: [gguf]" in card
    assert "| 4096 |" in card
    assert verify(out).ok
    merged = merge(shards[0], tmp_path / "merged.gguf")
    assert merged.read_bytes() == src.read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_package_for_a_device_too_small_for_any_preset_exits_6_with_the_smallest_need(tmp_path):
    out = tmp_path / "pkg"
    r = _cli("package", str(_f16()), "-o", str(out), "--device", "tiny", "--ctx", "512", env=_profiles(tmp_path, 50))
    assert r.returncode == 6, r.stderr
    assert "the smallest, Q3_K_S, needs 194 MiB" in r.stderr
    assert not out.exists() and not list(tmp_path.glob(".pkg*"))


@pytest.mark.slow
def test_package_for_a_device_picks_the_best_preset_that_fits_and_its_file_fits(tmp_path, monkeypatch):
    src = _f16()
    needs = preset_needs(src, 512)
    budget = needs["Q4_K_M"].total + MiB     # Q8_0 .. Q5_K_S need more
    env = _profiles(tmp_path, budget / MiB)
    monkeypatch.setenv("GGUF_TOOLS_DEVICES", env["GGUF_TOOLS_DEVICES"])
    r = package(src, tmp_path / "pkg", device=device("tiny"), ctx=512)
    assert r.quant == "Q4_K_M" and r.plan.verdict == "fits"
    (model,) = r.files
    assert fit(model, 512, budget=budget).verdict == "fits"
    assert GGUFFile.open(model).get("general.file_type") == 15   # llama.cpp's MOSTLY_Q4_K_M


def test_install_checks_every_sha256_and_copies_atomically(tmp_path):
    pkg = tmp_path / "pkg"
    package(smollm2_gguf(), pkg, max_file_size=40 * MB)
    files = install(pkg, tmp_path / "dest")
    assert verify(tmp_path / "dest").ok and len(files) == 5
    shard = sorted(pkg.glob("*.gguf"))[2]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1
    shard.write_bytes(bytes(data))
    with pytest.raises(InputError, match=shard.name):
        install(pkg, tmp_path / "dest2")
    assert not (tmp_path / "dest2").exists()


def test_a_packed_package_verifies_and_installs_as_plain_mappable_ggufs(tmp_path):
    src = smollm2_gguf()
    r = package(src, tmp_path / "pkg", pack=True)
    (packed,) = r.files
    assert packed.suffix == ".ggpk" and verify(tmp_path / "pkg").ok
    files = install(tmp_path / "pkg", tmp_path / "dest")
    model = next(f for f in files if f.suffix == ".gguf")
    assert model.read_bytes() == src.read_bytes() and verify(tmp_path / "dest").ok


def test_package_from_a_hugging_face_checkpoint_for_a_device_plans_then_converts_once(tmp_path, monkeypatch):
    from tiny_models import build_tiny_model

    src = build_tiny_model("smollm2", tmp_path / "hf")
    (src / "README.md").write_text("---\nlicense: apache-2.0\nbase_model: HuggingFaceTB/SmolLM2-135M\n"
                                   "tags: [edge, tiny]\n---\n# tiny\n")
    monkeypatch.setenv("GGUF_TOOLS_DEVICES", _profiles(tmp_path, 4096)["GGUF_TOOLS_DEVICES"])
    r = package(src, tmp_path / "pkg", device=device("tiny"), ctx=512)
    assert r.quant == "Q8_0" and r.plan.verdict == "fits"
    assert sorted(p.name for p in (tmp_path / "pkg").iterdir()) == ["README.md", "manifest.json", "smollm2-Q8_0.gguf"]
    assert verify(tmp_path / "pkg").ok
    meta = GGUFFile.open(tmp_path / "pkg" / "smollm2-Q8_0.gguf")   # provenance from the model card
    assert meta.get("general.license") == "apache-2.0" and meta.get("general.tags") == ["edge", "tiny"]
    assert meta.get("general.base_model.0.repo_url") == "https://huggingface.co/HuggingFaceTB/SmolLM2-135M"
    assert meta.get("general.size_label")
    card = (tmp_path / "pkg" / "README.md").read_text()
    assert 'base_model: "HuggingFaceTB/SmolLM2-135M"' in card and 'tags: [gguf, "edge", "tiny"]' in card


# --device with --calibration: the budgeted planner's file for the weights' share of the device's budget

CALIBRATION = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def _between_two_presets(needs: dict) -> tuple[str, int]:
    """A budget halfway between two presets' needs, over the widest such gap: (the larger preset that fits, budget)."""
    by_total = sorted(needs, key=lambda n: needs[n].total)
    lower, upper = max(zip(by_total, by_total[1:]), key=lambda p: needs[p[1]].total - needs[p[0]].total)
    return lower, (needs[lower].total + needs[upper].total) // 2


def test_package_for_a_device_with_calibration_plans_a_file_that_fits_and_uses_the_room(tiny_f16, tmp_path,
                                                                                        monkeypatch):
    needs = preset_needs(tiny_f16, 512)
    best_fitting, budget = _between_two_presets(needs)
    rest = needs[best_fitting].total - needs[best_fitting].weights    # KV cache, compute buffers, overhead
    monkeypatch.setenv("GGUF_TOOLS_DEVICES", _profiles(tmp_path, budget / MiB)["GGUF_TOOLS_DEVICES"])

    r = package(tiny_f16, tmp_path / "pkg", device=device("tiny"), ctx=512, calibration=CALIBRATION)

    (model,) = r.files
    assert r.quant == "planned" and model.name == "tiny.f16-planned.gguf"
    planned = fit(model, 512, budget=budget)
    assert planned.verdict == "fits" and r.plan.verdict == "fits"
    f = GGUFFile.open(model)
    assert planned.weights == model.stat().st_size - f.data_offset <= budget - rest   # fit counts the tensor data
    assert planned.weights > needs[best_fitting].weights     # the room above the best preset is used
    recorded = read_plan(f)
    assert recorded["chosen"] == "plan"
    actual = {t.name: t.ggml_type.name for t in f.tensors}
    assert recorded["types"] == actual
    for p in needs:
        preset = {n: q.name for n, q in quantize_gguf(tiny_f16, None, p, allow_requantize=True).plan.items()}
        assert preset != actual, p
    m = json.loads((tmp_path / "pkg" / "manifest.json").read_text())
    assert m["planned"]["chosen"] == "plan" and m["planned"]["target_size"] == recorded["target_size"]
    assert m["planned"]["predicted_kld"] > 0 and m["memory"]["verdict"] == "fits"
    card = (tmp_path / "pkg" / "README.md").read_text()
    assert "(GGUF, planned)" in card and "Planned: a type per tensor" in card
    assert verify(tmp_path / "pkg").ok
    assert greedy(model, "The capital of France is", n=8)


def test_package_for_a_device_too_small_for_any_plan_exits_6_with_the_smallest_need(tiny_f16, tmp_path):
    need = preset_needs(tiny_f16, 512)["Q8_0"]
    header, lo, _ = plan_sizes(tiny_f16)
    smallest = need.total - need.weights + lo - header
    calib = tmp_path / "calib.txt"
    calib.write_text(CALIBRATION, encoding="utf-8")
    out = tmp_path / "pkg"
    r = _cli("package", str(tiny_f16), "-o", str(out), "--device", "tiny", "--ctx", "512", "--calibration", str(calib),
             env=_profiles(tmp_path, (smallest - MiB) / MiB))
    assert r.returncode == 6, r.stderr
    assert f"no plan fits tiny at ctx 512: the smallest needs {smallest / MiB:.0f} MiB" in r.stderr
    assert not out.exists() and not list(tmp_path.glob(".pkg*"))


def test_package_for_a_device_with_room_for_everything_plans_the_largest_file(tiny_f16, tmp_path, monkeypatch):
    monkeypatch.setenv("GGUF_TOOLS_DEVICES", _profiles(tmp_path, 4096)["GGUF_TOOLS_DEVICES"])
    r = package(tiny_f16, tmp_path / "pkg", device=device("tiny"), ctx=512, calibration=CALIBRATION)
    (model,) = r.files
    _, _, largest = plan_sizes(tiny_f16)
    assert r.plan.verdict == "fits" and largest * 0.99 <= model.stat().st_size <= largest


@pytest.mark.parametrize("extra, message", [((), "--calibration needs --device or --target-size"),
                                            (("--quant", "Q8_0"), "cannot be used with --quant")])
def test_calibration_without_a_budget_or_with_a_quant_is_a_usage_error(tiny_f16, tmp_path, extra, message):
    calib = tmp_path / "calib.txt"
    calib.write_text(CALIBRATION, encoding="utf-8")
    r = _cli("package", str(tiny_f16), "-o", str(tmp_path / "pkg"), "--calibration", str(calib), *extra)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "pkg").exists()
