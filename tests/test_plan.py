"""Precision plans give every tensor the type llama.cpp's llama_model_quantize gives it."""
from __future__ import annotations

import functools
import glob
import os
import random
from pathlib import Path

import gguf
import pytest

from gguf_tools.errors import InputError, UnsupportedError
from gguf_tools.gguf_file.reader import GGUFFile
from gguf_tools.plan import (
    PRESETS,
    Plan,
    TensorSpec,
    bits_per_weight,
    explain,
    format_table,
    intended_bits_per_weight,
    plan_gguf,
    plan_types,
    use_more_bits,
)

Q = gguf.GGMLQuantizationType
CACHE = Path(os.environ.get("GGUF_TOOLS_CACHE", Path.home() / ".cache" / "gguf-tools"))


def dense_model(n_layers: int, n_embd: int, n_ff: int, n_head: int, n_head_kv: int, head_dim: int,
                n_vocab: int = 1000, *, tied: bool = False, extra_1d: tuple[str, ...] = ()) -> list[TensorSpec]:
    """A llama-style tensor list in GGUF order (shape[0] is the row length)."""
    q, kv = n_head * head_dim, n_head_kv * head_dim
    t = [TensorSpec("token_embd.weight", (n_embd, n_vocab), Q.F16),
         TensorSpec("output_norm.weight", (n_embd,))]
    if not tied:
        t.append(TensorSpec("output.weight", (n_embd, n_vocab), Q.F16))
    for i in range(n_layers):
        b = f"blk.{i}."
        t += [TensorSpec(b + "attn_norm.weight", (n_embd,)),
              TensorSpec(b + "attn_q.weight", (n_embd, q), Q.F16),
              TensorSpec(b + "attn_k.weight", (n_embd, kv), Q.F16),
              TensorSpec(b + "attn_v.weight", (n_embd, kv), Q.F16),
              TensorSpec(b + "attn_output.weight", (q, n_embd), Q.F16),
              TensorSpec(b + "ffn_norm.weight", (n_embd,)),
              TensorSpec(b + "ffn_gate.weight", (n_embd, n_ff), Q.F16),
              TensorSpec(b + "ffn_up.weight", (n_embd, n_ff), Q.F16),
              TensorSpec(b + "ffn_down.weight", (n_ff, n_embd), Q.F16)]
        t += [TensorSpec(b + name + ".weight", (head_dim,)) for name in extra_1d]
    return t


def plan_llama(tensors, preset, n_layers, n_head=32, n_head_kv=32, **kw) -> Plan:
    return plan_types(tensors, "llama", preset, n_layers=n_layers, n_head=n_head, n_head_kv=n_head_kv, **kw)


LLAMA_7B = dense_model(32, 4096, 11008, 32, 32, 128)


# --- presets and rules -----------------------------------------------------------------------

def test_presets_carry_llama_cpp_file_type_ids_and_base_types():
    assert {"Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0",
            "Q4_0", "Q4_1", "Q5_0", "Q5_1", "F16", "BF16", "F32"} <= set(PRESETS)
    assert int(PRESETS["Q4_K_M"].ftype) == 15 and PRESETS["Q4_K_M"].base == Q.Q4_K
    assert int(PRESETS["Q2_K"].ftype) == 10 and PRESETS["Q2_K"].base == Q.Q2_K
    assert int(PRESETS["Q8_0"].ftype) == 7 and PRESETS["Q8_0"].base == Q.Q8_0
    assert int(PRESETS["F32"].ftype) == 0 and PRESETS["BF16"].base == Q.BF16


def test_use_more_bits_picks_first_and_last_eighth_and_every_third_layer_between():
    assert [i for i in range(32) if use_more_bits(i, 32)] == [
        0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]


def test_q4_k_m_bumps_attn_v_and_ffn_down_to_q6_k_in_use_more_bits_layers_only():
    plan = plan_llama(LLAMA_7B, "Q4_K_M", 32)
    bumped = [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
    for i in range(32):
        want = Q.Q6_K if i in bumped else Q.Q4_K
        assert plan[f"blk.{i}.attn_v.weight"] == want
        assert plan[f"blk.{i}.ffn_down.weight"] == want
        assert plan[f"blk.{i}.attn_q.weight"] == Q.Q4_K
        assert plan[f"blk.{i}.attn_output.weight"] == Q.Q4_K
    assert plan["output.weight"] == Q.Q6_K
    assert plan["token_embd.weight"] == Q.Q4_K


def test_norms_and_one_dimensional_tensors_keep_their_source_type():
    extra = [TensorSpec("rope_freqs.weight", (64,)),
             TensorSpec("blk.0.ffn_gate_inp.weight", (4096, 8), Q.F32),  # MoE router: 2-D but kept
             TensorSpec("position_embd.weight", (4096, 2048), Q.F16),
             TensorSpec("blk.0.bias_like.weight", (4096, 1), Q.F16)]  # trailing 1 makes it 1-D for ggml
    plan = plan_llama(LLAMA_7B + extra, "Q4_K_M", 32)
    assert plan["blk.0.attn_norm.weight"] == Q.F32
    assert plan["rope_freqs.weight"] == Q.F32
    assert plan["blk.0.ffn_gate_inp.weight"] == Q.F32
    assert plan["position_embd.weight"] == Q.F16
    assert plan["blk.0.bias_like.weight"] == Q.F16


def test_q3_k_m_gives_the_first_two_attn_v_q5_k_and_the_rest_q4_k():
    plan = plan_llama(LLAMA_7B, "Q3_K_M", 32)
    assert [plan[f"blk.{i}.attn_v.weight"] for i in range(4)] == [Q.Q5_K, Q.Q5_K, Q.Q4_K, Q.Q4_K]
    assert plan["blk.0.ffn_down.weight"] == Q.Q5_K  # first sixteenth
    assert plan["blk.5.ffn_down.weight"] == Q.Q4_K
    assert plan["blk.5.attn_output.weight"] == Q.Q4_K
    assert plan["blk.5.ffn_up.weight"] == Q.Q3_K


def test_q2_k_attn_v_gets_q4_k_when_four_or_more_query_heads_share_a_kv_head():
    gqa = dense_model(32, 4096, 14336, 32, 8, 128)
    assert plan_llama(gqa, "Q2_K", 32, 32, 8)["blk.7.attn_v.weight"] == Q.Q4_K
    assert plan_llama(LLAMA_7B, "Q2_K", 32)["blk.7.attn_v.weight"] == Q.Q3_K
    assert plan_llama(LLAMA_7B, "Q2_K", 32)["blk.7.attn_output.weight"] == Q.Q3_K


def test_token_embd_is_quantized_like_output_when_the_model_has_no_output_weight():
    tied = dense_model(4, 4096, 11008, 32, 32, 128, tied=True)
    assert plan_llama(tied, "Q4_K_M", 4)["token_embd.weight"] == Q.Q6_K
    assert plan_llama(tied, "Q8_0", 4)["token_embd.weight"] == Q.Q8_0
    assert plan_llama(LLAMA_7B, "Q4_0", 32)["token_embd.weight"] == Q.Q4_0
    assert plan_llama(LLAMA_7B, "Q4_0", 32)["output.weight"] == Q.Q6_K


@pytest.mark.parametrize("preset, fallback", [
    ("Q2_K", Q.Q4_0), ("Q3_K_S", Q.Q4_0), ("Q4_K_S", Q.Q5_0), ("Q5_K_S", Q.Q5_1), ("Q6_K", Q.Q8_0)])
def test_k_quants_fall_back_to_32_blocks_when_rows_are_not_multiples_of_256(preset, fallback):
    small = dense_model(30, 576, 1536, 9, 3, 64)
    plan = plan_llama(small, preset, 30, 9, 3)
    assert plan["blk.3.attn_q.weight"] == fallback  # ne0 576
    assert plan["blk.3.ffn_down.weight"] != fallback  # ne0 1536 = 6 * 256 keeps a K-quant
    assert plan["blk.3.ffn_down.weight"] in (Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K)
    assert plan.decisions["blk.3.attn_q.weight"].fell_back
    assert "576 not divisible by 256" in plan.decisions["blk.3.attn_q.weight"].reason


def test_rows_not_a_multiple_of_32_fall_back_to_f16():
    odd = [TensorSpec("output.weight", (100, 50), Q.F32), TensorSpec("blk.0.attn_q.weight", (100, 64), Q.F32)]
    for preset in ("Q4_K_M", "Q8_0", "Q4_0"):
        plan = plan_llama(odd, preset, 1)
        assert plan["output.weight"] == Q.F16
        assert plan["blk.0.attn_q.weight"] == Q.F16


def test_float_presets_convert_quantizable_tensors_and_keep_the_rest():
    for preset, qtype in (("F16", Q.F16), ("BF16", Q.BF16), ("F32", Q.F32)):
        plan = plan_llama(LLAMA_7B, preset, 32)
        assert plan["blk.0.ffn_down.weight"] == qtype and plan["output.weight"] == qtype
        assert plan["blk.0.attn_norm.weight"] == Q.F32


def test_q4_0_with_an_imatrix_guards_the_first_eighth_of_ffn_down_with_q4_1():
    with_imatrix = plan_llama(LLAMA_7B, "Q4_0", 32, has_imatrix=True)
    assert [with_imatrix[f"blk.{i}.ffn_down.weight"] for i in range(3, 6)] == [Q.Q4_1, Q.Q4_0, Q.Q4_0]
    assert plan_llama(LLAMA_7B, "Q5_0", 32, has_imatrix=True)["blk.0.ffn_down.weight"] == Q.Q5_1
    assert plan_llama(LLAMA_7B, "Q4_0", 32)["blk.0.ffn_down.weight"] == Q.Q4_0


def test_seventy_b_llama_gets_q5_k_attn_v_under_k_quant_mixtures():
    big = dense_model(80, 8192, 28672, 64, 8, 128)
    assert plan_llama(big, "Q4_K_S", 80, 64, 8)["blk.40.attn_v.weight"] == Q.Q5_K
    assert plan_llama(big, "Q3_K_S", 80, 64, 8)["blk.40.attn_v.weight"] == Q.Q5_K
    assert plan_llama(big, "Q6_K", 80, 64, 8)["blk.40.attn_v.weight"] == Q.Q6_K


def test_moe_ffn_down_layer_comes_from_the_tensor_name():
    n = 16
    t = [TensorSpec("output.weight", (2048, 100), Q.F16)]
    # experts and shared experts interleave: name order puts blk.10 before blk.2
    for i in range(n):
        t += [TensorSpec(f"blk.{i}.ffn_down_exps.weight", (1024, 2048, 8), Q.F16),
              TensorSpec(f"blk.{i}.ffn_down_shexp.weight", (1024, 2048), Q.F16)]
    plan = plan_types(t, "qwen3moe", "Q4_K_M", n_layers=n, n_head=32, n_head_kv=4, n_expert=64)
    for i in range(n):
        want = Q.Q6_K if use_more_bits(i, n) else Q.Q4_K
        assert plan[f"blk.{i}.ffn_down_exps.weight"] == want
        assert plan[f"blk.{i}.ffn_down_shexp.weight"] == want


def test_moe_tensor_outside_a_block_or_past_the_last_layer_is_an_input_error():
    with pytest.raises(InputError, match="layer"):
        plan_types([TensorSpec("mtp.ffn_down_exps.weight", (256, 256, 4))], "x", "Q4_K_M",
                   n_layers=2, n_head=8, n_head_kv=8, n_expert=4)
    with pytest.raises(InputError, match="outside"):
        plan_types([TensorSpec("blk.9.ffn_up_exps.weight", (256, 256, 4))], "x", "Q4_K_M",
                   n_layers=2, n_head=8, n_head_kv=8, n_expert=4)


def test_plan_does_not_depend_on_the_order_tensors_are_given_in():
    shuffled = list(LLAMA_7B)
    random.Random(1).shuffle(shuffled)
    for preset in ("Q3_K_M", "Q4_K_M", "Q4_K_S"):
        assert dict(plan_llama(shuffled, preset, 32)) == dict(plan_llama(LLAMA_7B, preset, 32))


def test_bad_inputs_raise_typed_errors():
    with pytest.raises(UnsupportedError, match="IQ9_Z"):
        plan_llama(LLAMA_7B, "IQ9_Z", 32)
    with pytest.raises(InputError, match="twice"):
        plan_llama(LLAMA_7B + LLAMA_7B[:1], "Q4_K_M", 32)
    with pytest.raises(InputError, match="dimension"):
        plan_llama([TensorSpec("blk.0.attn_q.weight", (0, 5))], "Q4_K_M", 1)
    with pytest.raises(InputError, match="shape"):
        plan_llama([TensorSpec("blk.0.attn_q.weight", (1, 1, 1, 1, 1))], "Q4_K_M", 1)
    with pytest.raises(InputError, match="n_layers"):
        plan_llama(LLAMA_7B, "Q4_K_M", 0)
    with pytest.raises(InputError, match="shape"):
        bits_per_weight({"nope": Q.Q8_0}, [])


def test_row_major_shapes_are_reversed_into_gguf_order():
    spec = TensorSpec.from_row_major("blk.0.ffn_down.weight", (4096, 11008))
    assert spec.shape == (11008, 4096) and spec.ne0 == 11008 and spec.n_elements == 4096 * 11008


# --- size and explanation ------------------------------------------------------------------

def test_bits_per_weight_is_total_bytes_over_total_weights():
    t = [TensorSpec("blk.0.attn_q.weight", (256, 4)), TensorSpec("blk.0.attn_norm.weight", (256,))]
    plan = plan_llama(t, "Q4_K_S", 1)  # attn_q Q4_K (144 B per 256), norm F32
    assert plan["blk.0.attn_q.weight"] == Q.Q4_K
    assert bits_per_weight(plan) == pytest.approx(8 * (4 * 144 + 256 * 4) / (5 * 256))
    assert bits_per_weight(dict(plan), t) == bits_per_weight(plan)


def test_fallbacks_cost_bits_only_when_rows_do_not_fit_the_k_quant_blocks():
    plan = plan_llama(LLAMA_7B, "Q4_K_M", 32)
    assert bits_per_weight(plan) == pytest.approx(intended_bits_per_weight(plan))
    small = plan_llama(dense_model(30, 576, 1536, 9, 3, 64, n_vocab=49152, tied=True), "Q4_K_M", 30, 9, 3)
    assert bits_per_weight(small) > intended_bits_per_weight(small) + 0.5
    assert small.decisions["token_embd.weight"].intended == Q.Q6_K
    assert small["token_embd.weight"] == Q.Q8_0


def test_explain_gives_a_row_with_type_bits_and_reason_for_every_tensor():
    small = plan_llama(dense_model(30, 576, 1536, 9, 3, 64), "Q4_K_M", 30, 9, 3)
    rows = {r.name: r for r in explain(small)}
    assert len(rows) == len(small)
    v = rows["blk.2.attn_v.weight"]
    assert v.type == "Q8_0" and v.bits_per_weight == 8.5 and v.shape == (576, 192)
    assert "attn_v bumped to Q6_K" in v.reason and "2 of 30" in v.reason and "-> Q8_0" in v.reason
    assert "ffn_down bumped to Q6_K" in rows["blk.0.ffn_down.weight"].reason
    assert "layer 0 of 30" in rows["blk.0.ffn_down.weight"].reason
    assert rows["blk.4.ffn_down.weight"].type == "Q4_K"
    assert "1-D" in rows["blk.0.attn_norm.weight"].reason
    table = format_table(explain(small))
    assert table.splitlines()[0].split()[:4] == ["tensor", "shape", "type", "bpw"]
    assert len(table.splitlines()) == len(small) + 1


# --- golden data: llama.cpp's snapshots ------------------------------------------------------

def _snapshot_dirs() -> list[Path]:
    pattern = str(CACHE / "sdist" / "llama_cpp_python-*" / "vendor" / "llama.cpp" / "tests" / "snapshots")
    return [Path(p) for p in sorted(glob.glob(pattern))]


SNAPSHOT_FILES = [p for d in _snapshot_dirs()[-1:] for p in sorted(d.glob("*.schema"))]

# Architecture per snapshot model; head_dim and whether output.weight exists for dense models whose
# whole tensor list we rebuild from the header (llama, qwen3, gemma3 families).
SNAPSHOT_ARCH = {
    "qwen3-0.6b": "qwen3", "qwen3-14b": "qwen3", "gemma-3-4b-it": "gemma3",
    "meta-llama-3.1-70b-instruct": "llama", "qwen3-coder-next": "qwen3next",
    "qwen3.5-397b-a17b": "qwen35moe", "qwen3.6-27b": "qwen35", "deepseek-v3.1": "deepseek2",
    "glm-4.6v": "glm4moe", "gpt-oss-120b": "gpt-oss", "nvidia-nemotron-3-nano-30b-a3b": "nemotron_h_moe",
    "step-3.5-flash": "step35",
}
DENSE_LAYOUT = {
    "qwen3-0.6b": {"head_dim": 128, "tied": False, "extra_1d": ("attn_q_norm", "attn_k_norm")},
    "qwen3-14b": {"head_dim": 128, "tied": False, "extra_1d": ("attn_q_norm", "attn_k_norm")},
    "gemma-3-4b-it": {"head_dim": 256, "tied": True,
                      "extra_1d": ("attn_q_norm", "attn_k_norm", "post_attention_norm", "post_ffw_norm")},
    "meta-llama-3.1-70b-instruct": {"head_dim": 128, "tied": False, "extra_1d": ()},
}

_TYPE_BY_NAME = {t.name.lower(): t for t in Q}


def parse_snapshot(path: Path) -> tuple[dict[str, int], dict[str, tuple[Q, dict[str, Q]]]]:
    """Header numbers and, per preset, (default type, {tensor: type} for tensors that differ)."""
    header: dict[str, int] = {}
    sections: dict[str, tuple[Q, dict[str, Q]]] = {}
    current = None
    for line in path.read_text().splitlines():
        if line.startswith("# n_embd="):
            header = {k: int(v) for k, v in (kv.split("=") for kv in line[2:].split(", "))}
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            preset, default = line[1:].split("]")
            current = sections[preset] = (_TYPE_BY_NAME[default.strip().lower()], {})
        else:
            name, qtype = line.rsplit(" ", 1)
            current[1][name] = _TYPE_BY_NAME[qtype.lower()]
    return header, sections


def snapshot_tensors(model: str, header: dict[str, int], sections) -> list[TensorSpec]:
    """The model's tensors: rebuilt from the header for the dense families; otherwise every tensor the
    snapshot names (all tensors that change type or feed the layer counters), with a row length
    that divides by 256 unless the Q6_K section shows a fallback (to Q8_0: 32 divides; to F16: not)."""
    if model in DENSE_LAYOUT:
        lay = DENSE_LAYOUT[model]
        return dense_model(header["n_layer"], header["n_embd"], header["n_ff"], header["n_head"],
                           header["n_head_kv"], lay["head_dim"], header["n_vocab"], tied=lay["tied"],
                           extra_1d=lay["extra_1d"])
    names = sorted({n for _, changed in sections.values() for n in changed})
    q6k = sections["Q6_K"][1]
    ne0 = {None: 512, Q.Q8_0: 288, Q.F16: 48}
    n_expert = header.get("n_expert", 0)
    return [TensorSpec(n, (ne0[q6k.get(n)], 64, n_expert) if "_exps" in n else (ne0[q6k.get(n)], 64), Q.F16)
            for n in names]


@pytest.mark.skipif(not SNAPSHOT_FILES, reason="llama.cpp sources (tests/snapshots) not unpacked")
@pytest.mark.parametrize("path", SNAPSHOT_FILES, ids=lambda p: p.stem)
def test_plan_matches_llama_cpp_snapshot_for_every_tensor_and_supported_preset(path: Path):
    model = path.stem
    if model not in SNAPSHOT_ARCH:
        pytest.skip(f"no architecture known for snapshot {model}")
    header, sections = parse_snapshot(path)
    tensors = snapshot_tensors(model, header, sections)
    names = {t.name for t in tensors}
    compared = 0
    mismatches = []
    for preset, (default, changed) in sections.items():
        if preset not in PRESETS:
            continue  # IQ*, TQ*, MXFP4_MOE, Q2_K_S: not offered
        assert PRESETS[preset].base == default
        assert set(changed) <= names, f"{preset}: snapshot names tensors we did not rebuild"
        plan = plan_types(tensors, SNAPSHOT_ARCH[model], preset, n_layers=header["n_layer"],
                          n_head=header["n_head"], n_head_kv=header["n_head_kv"],
                          n_expert=header.get("n_expert", 0))
        for t in tensors:
            if t.n_dims < 2:
                assert plan[t.name] == t.dtype
                continue
            want = changed.get(t.name, default)
            compared += 1
            if plan[t.name] != want:
                mismatches.append(f"{preset} {t.name}: want {want.name}, got {plan[t.name].name}")
    assert not mismatches, f"{len(mismatches)} of {compared} differ: {mismatches[:10]}"
    assert compared > 1000


# --- llama.cpp's quantizer on real models ------------------------------------------------------

FAST_PRESETS = ("Q4_K_M", "Q3_K_M", "Q2_K")
QUANT_PRESETS = [p for p in PRESETS if p not in ("F32", "F16", "BF16")] + ["F16"]


def _quant_cases():
    for model in ("smollm2", "gemma3"):
        for preset in QUANT_PRESETS:
            marks = () if preset in FAST_PRESETS else (pytest.mark.slow,)
            yield pytest.param(model, preset, id=f"{model}-{preset}", marks=marks)


@pytest.fixture(scope="module")
def llama_cpp_lib():
    return pytest.importorskip("llama_cpp")


def _f16(model: str) -> Path:
    from plan_fixtures import f16_gguf

    try:
        return f16_gguf(model)
    except FileNotFoundError as e:
        pytest.skip(str(e))


@functools.cache
def _reader(model: str) -> GGUFFile:
    return GGUFFile.open(_f16(model))


@pytest.mark.parametrize("model, preset", list(_quant_cases()))
def test_plan_matches_llama_model_quantize_on_real_models(llama_cpp_lib, model, preset):
    from plan_fixtures import llama_quantized_types

    theirs = llama_quantized_types(model, preset)
    ours = plan_gguf(_reader(model), preset)
    assert set(theirs) == set(ours)
    diff = {n: (theirs[n].name, ours[n].name) for n in theirs if theirs[n] != ours[n]}
    assert not diff, f"{len(diff)} tensors differ (llama.cpp, ours): {dict(list(diff.items())[:10])}"


def test_fallbacks_inflate_smollm2_q4_k_m_from_about_5_2_to_6_2_bits_per_weight():
    reader = _reader("smollm2")
    plan = plan_gguf(reader, "Q4_K_M")
    assert bits_per_weight(plan) == pytest.approx(6.165, abs=0.01)
    assert intended_bits_per_weight(plan) == pytest.approx(5.155, abs=0.01)
    f16 = plan_gguf(reader, "F16")
    assert bits_per_weight(f16) * sum(t.n_elements for t in reader.tensors) / 8 == pytest.approx(
        sum(t.nbytes for t in reader.tensors))
