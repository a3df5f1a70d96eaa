"""Block quantizers: ggml-exact mode, our search, the C and NumPy paths, and what llama.cpp decodes."""
from __future__ import annotations

import concurrent.futures as cf
import functools
import os
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
from conftest import gemma3_gguf, smollm2_gguf

from gguf_tools.errors import InputError, UnsupportedError
from gguf_tools.quantize import (
    SUPPORTED,
    blocks,
    check_finite,
    ggml_lib,
    native_available,
    quantize,
    row_bytes,
    search,
)

Q = gguf.GGMLQuantizationType
K_TYPES = (Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K)

needs_ggml = pytest.mark.skipif(not ggml_lib.available(), reason="llama-cpp-python (libggml-base) not installed")
needs_native = pytest.mark.skipif(not native_available(), reason="gguf_tools._kquant is not built")


def _real_rows(path, name: str, rows: int) -> np.ndarray:
    reader = gguf.GGUFReader(path)
    t = next(t for t in reader.tensors if t.name == name)
    n = int(t.shape[0])
    raw = np.asarray(t.data).reshape(int(t.shape[1]), -1)
    pick = np.linspace(0, raw.shape[0] - 1, rows).astype(np.int64)
    return np.asarray(gguf.quants.dequantize(raw[pick], t.tensor_type), dtype=np.float32).reshape(rows, n)


@functools.cache
def real_tensors() -> dict[str, np.ndarray]:
    """A few real weight matrices: 1536 and 2048 columns (K-quantizable), 576 and 640 (legacy only)."""
    sm, ge = smollm2_gguf(), gemma3_gguf()
    return {
        "smollm2.ffn_down": _real_rows(sm, "blk.3.ffn_down.weight", 24),  # Q4_1 origin
        "smollm2.attn_q": _real_rows(sm, "blk.3.attn_q.weight", 24),
        "gemma3.ffn_down": _real_rows(ge, "blk.4.ffn_down.weight", 24),  # Q6_K or Q4_K origin
        "gemma3.attn_q": _real_rows(ge, "blk.4.attn_q.weight", 24),
    }


def edge_rows(n: int) -> np.ndarray:
    """Rows that stress corner cases: zeros, negative zeros, constants, outliers, tiny and huge scales."""
    rng = np.random.default_rng(7)
    w = (rng.standard_normal((12, n)) * rng.uniform(0.01, 2.0, (12, 1))).astype(np.float32)
    w[0] = 0
    w[1] = -0.0
    w[2] = 0.25
    w[3, :] = -3.0
    w[4, ::7] = 40.0
    w[5] *= 1e-6
    w[6, : n // 2] = 0
    w[7] = np.abs(w[7])
    w[8] = -np.abs(w[8])
    w[9, 5] = 1e4
    return w


def importance(n: int, seed: int = 3) -> np.ndarray:
    """A skewed, imatrix-like importance with a few dead columns."""
    imp = np.exp(1.5 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)
    imp[:3] = 0
    return imp


def weighted_error(w: np.ndarray, raw: np.ndarray, qtype: Q, imp: np.ndarray | None) -> float:
    d = ggml_lib.dequantize(raw, qtype, w.shape[1]).astype(np.float64) - w
    return float(((d * d) * (1.0 if imp is None else imp)).sum())


def _cols(qtype: Q) -> int:
    return 512 if qtype in K_TYPES else 96


# --- ggml mode: byte-identical to ggml_quantize_chunk ------------------------------------------

@needs_ggml
@pytest.mark.parametrize("with_imatrix", [False, True], ids=["plain", "imatrix"])
@pytest.mark.parametrize("qtype", SUPPORTED, ids=lambda t: t.name)
def test_ggml_mode_writes_the_same_bytes_as_ggml_quantize_chunk(qtype, with_imatrix):
    tensors = [edge_rows(_cols(qtype))] + [w for w in real_tensors().values() if w.shape[1] % gguf.GGML_QUANT_SIZES[qtype][0] == 0]
    for w in tensors:
        imp = importance(w.shape[1]) if with_imatrix else None
        want = ggml_lib.quantize_chunk(w, qtype, imp)
        assert np.array_equal(quantize(w, qtype, imp, search="ggml", impl="numpy"), want)
        if native_available():
            assert np.array_equal(quantize(w, qtype, imp, search="ggml", impl="native", threads=2), want)


# --- the C path and the NumPy reference agree -------------------------------------------------

@needs_native
@pytest.mark.parametrize("mode", ["default", "best"])
@pytest.mark.parametrize("qtype", SUPPORTED, ids=lambda t: t.name)
def test_native_and_numpy_searches_write_identical_bytes(qtype, mode):
    n = _cols(qtype)
    w = np.concatenate([edge_rows(n), np.random.default_rng(11).standard_normal((8, n)).astype(np.float32)])
    for imp in (None, importance(n)):
        ref = quantize(w, qtype, imp, search=mode, impl="numpy")
        assert np.array_equal(quantize(w, qtype, imp, search=mode, impl="native", threads=1), ref)
        assert np.array_equal(quantize(w, qtype, imp, search=mode, impl="native", threads=3), ref)


@needs_native
def test_best_mode_is_never_worse_on_the_32_weight_types_and_differs_somewhere():
    w = real_tensors()["smollm2.attn_q"]
    imp = importance(w.shape[1])
    changed = 0
    for qtype in (Q.Q4_0, Q.Q5_0, Q.Q8_0, Q.Q4_1, Q.Q5_1):
        default, best = quantize(w, qtype, imp), quantize(w, qtype, imp, search="best")
        changed += not np.array_equal(default, best)
        assert weighted_error(w, best, qtype, imp) <= weighted_error(w, default, qtype, imp)
    assert changed >= 3


@needs_native
@pytest.mark.parametrize(("qtype", "gain"), [(Q.Q3_K, 0.97), (Q.Q2_K, 0.998)], ids=["Q3_K", "Q2_K"])
def test_best_mode_repicks_low_bit_codes_and_never_loses_a_block(qtype, gain):
    rng = np.random.default_rng(5)
    w = (rng.standard_normal((48, 512)) * rng.gamma(1.0, 1.0, (1, 512))).astype(np.float32)
    imp = np.ones(512, dtype=np.float32)
    imp[rng.choice(512, 6, replace=False)] = 500.0   # a few columns dominate, as real imatrices do
    default, best = quantize(w, qtype, imp), quantize(w, qtype, imp, search="best")
    size = gguf.GGML_QUANT_SIZES[qtype][1]
    for r in range(w.shape[0]):
        for j in range(2):   # every 256-weight block
            x, i = w[r:r + 1, 256 * j:256 * (j + 1)], imp[256 * j:256 * (j + 1)]
            got = weighted_error(x, best[r:r + 1, size * j:size * (j + 1)], qtype, i)
            assert got <= weighted_error(x, default[r:r + 1, size * j:size * (j + 1)], qtype, i) * (1 + 1e-6)
    assert weighted_error(w, best, qtype, imp) < gain * weighted_error(w, default, qtype, imp)


@needs_native
def test_native_search_matches_numpy_on_real_weights():
    for w in real_tensors().values():
        for qtype in (Q.Q4_K, Q.Q6_K, Q.Q5_0, Q.IQ4_NL) if w.shape[1] % 256 == 0 else (Q.Q5_0, Q.Q4_1, Q.IQ4_NL):
            imp = importance(w.shape[1])
            assert np.array_equal(quantize(w, qtype, imp, impl="native"), quantize(w, qtype, imp, impl="numpy"))


@needs_native
def test_results_do_not_depend_on_thread_count_or_concurrent_callers():
    w = np.random.default_rng(5).standard_normal((37, 512)).astype(np.float32)
    one = quantize(w, Q.Q4_K, threads=1)
    assert np.array_equal(quantize(w, Q.Q4_K, threads=8), one)
    with cf.ThreadPoolExecutor(3) as ex:  # the GIL is released: callers run side by side
        outs = list(ex.map(lambda _: quantize(w, Q.Q4_K, threads=2), range(3)))
    assert all(np.array_equal(o, one) for o in outs)


@needs_native
def test_portable_build_of_the_search_writes_the_same_bytes_as_the_simd_one(tmp_path):
    n = 512
    w = np.concatenate([edge_rows(n), np.random.default_rng(9).standard_normal((4, n)).astype(np.float32)])
    imp = importance(n)
    np.save(tmp_path / "w.npy", w)
    np.save(tmp_path / "imp.npy", imp)
    script = (
        "import sys, numpy as np; from gguf_tools import _kquant; from gguf_tools.quantize import SUPPORTED, quantize\n"
        "assert _kquant.simd() == 'scalar'\n"
        f"w = np.load(r'{tmp_path}/w.npy'); imp = np.load(r'{tmp_path}/imp.npy')\n"
        "out = [quantize(w if t.name.endswith('_K') else w[:, :96], t, (imp if t.name.endswith('_K') else imp[:96])"
        " if k else None) for t in SUPPORTED for k in (0, 1)]\n"
        f"np.save(r'{tmp_path}/out.npy', np.concatenate([o.ravel() for o in out]))\n"
    )
    env = dict(os.environ, GGUF_TOOLS_SIMD="scalar")
    subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=Path(__file__).resolve().parents[1])
    here = [quantize(w if t.name.endswith("_K") else w[:, :96], t,
                     (imp if t.name.endswith("_K") else imp[:96]) if k else None) for t in SUPPORTED for k in (0, 1)]
    assert np.array_equal(np.load(tmp_path / "out.npy"), np.concatenate([o.ravel() for o in here]))


# --- llama.cpp and the gguf package decode our blocks to the values we meant --------------------

@needs_ggml
@pytest.mark.parametrize("qtype", SUPPORTED, ids=lambda t: t.name)
def test_llama_cpp_and_gguf_decode_our_blocks_to_the_intended_values(qtype):
    n = _cols(qtype)
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    w = np.concatenate([edge_rows(n), np.random.default_rng(2).standard_normal((6, n)).astype(np.float32)])
    X = w.reshape(-1, block)
    params = search.block_params(X, np.ones_like(X), qtype)
    intended = blocks.decoded(qtype, params).reshape(w.shape)
    raw = blocks.pack(qtype, params).reshape(w.shape[0], -1)
    assert np.array_equal(quantize(w, qtype), raw)  # what quantize() writes is these blocks
    assert np.array_equal(ggml_lib.dequantize(raw, qtype, n), intended)
    by_gguf = np.asarray(gguf.quants.dequantize(raw, qtype), dtype=np.float32).reshape(w.shape)
    assert np.array_equal(by_gguf, intended)
    # and unpacking the bytes gives back the parameters
    again = blocks.unpack(qtype, raw.reshape(X.shape[0], -1))
    assert np.array_equal(blocks.decoded(qtype, again), intended.reshape(X.shape))


# --- quality: never worse than ggml, clearly better at low bits --------------------------------

@needs_ggml
@pytest.mark.parametrize("qtype", SUPPORTED, ids=lambda t: t.name)
def test_default_mode_error_is_no_larger_than_ggmls_on_real_tensors(qtype):
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    checked = 0
    for name, w in real_tensors().items():
        if w.shape[1] % block:
            continue
        for imp in (None, importance(w.shape[1])):
            ours = weighted_error(w, quantize(w, qtype, imp), qtype, imp)
            ref = weighted_error(w, ggml_lib.quantize_chunk(w, qtype, imp), qtype, imp)
            assert ours <= ref * 1.0001 + 1e-12, (name, imp is not None, ours / ref)
            checked += 1
    assert checked >= 2


@needs_ggml
@pytest.mark.parametrize("qtype", [Q.Q2_K, Q.Q3_K, Q.Q4_K], ids=lambda t: t.name)
def test_low_bit_k_quants_beat_ggml_by_at_least_five_percent(qtype):
    w = real_tensors()["gemma3.ffn_down"]  # a grid of another type: no origin advantage for either
    for imp in (None, importance(w.shape[1])):
        ours = weighted_error(w, quantize(w, qtype, imp), qtype, imp)
        ref = weighted_error(w, ggml_lib.quantize_chunk(w, qtype, imp), qtype, imp)
        assert ours < 0.95 * ref, (imp is not None, ours / ref)


@needs_ggml
def test_an_importance_matrix_moves_error_away_from_important_columns():
    w = real_tensors()["gemma3.ffn_down"]
    imp = importance(w.shape[1])
    plain = ggml_lib.dequantize(quantize(w, Q.Q4_K), Q.Q4_K, w.shape[1]) - w
    weighted = ggml_lib.dequantize(quantize(w, Q.Q4_K, imp), Q.Q4_K, w.shape[1]) - w
    assert float(((weighted ** 2) * imp).sum()) < 0.9 * float(((plain ** 2) * imp).sum())


# --- inputs -----------------------------------------------------------------------------------

def test_nan_or_infinity_is_refused_with_the_tensor_name():
    w = np.ones((2, 256), dtype=np.float32)
    w[1, 7] = np.nan
    with pytest.raises(InputError, match="NaN or Inf"):
        quantize(w, Q.Q4_K)
    w[1, 7] = np.inf
    with pytest.raises(InputError, match="'blk.0.attn_q.weight'.*index \\(1, 7\\)"):
        check_finite(w, "blk.0.attn_q.weight")


def test_rows_that_do_not_split_into_blocks_are_unsupported():
    with pytest.raises(UnsupportedError, match="block of 256"):
        quantize(np.zeros((2, 576), dtype=np.float32), Q.Q4_K)
    with pytest.raises(UnsupportedError):
        row_bytes(Q.Q8_0, 40)
    assert row_bytes(Q.Q4_K, 512) == 288 and row_bytes(Q.IQ4_NL, 64) == 36


def test_bad_shapes_types_and_importance_are_refused():
    w = np.zeros((2, 256), dtype=np.float32)
    with pytest.raises(InputError, match="2-D"):
        quantize(np.zeros(256, dtype=np.float32), Q.Q4_K)
    with pytest.raises(UnsupportedError, match="IQ2_XS"):
        quantize(w, Q.IQ2_XS)
    with pytest.raises(InputError, match="shape"):
        quantize(w, Q.Q4_K, np.ones(128, dtype=np.float32))
    with pytest.raises(InputError, match="non-negative"):
        quantize(w, Q.Q4_K, -np.ones(256, dtype=np.float32))
    with pytest.raises(InputError, match="non-negative"):
        quantize(w, Q.Q4_K, np.full(256, np.nan, dtype=np.float32), search="ggml")
    with pytest.raises(ValueError, match="search"):
        quantize(w, Q.Q4_K, search="fastest")


@pytest.mark.parametrize("impl", ["numpy", pytest.param("native", marks=needs_native)])
def test_extreme_but_finite_weights_give_finite_blocks(impl):
    w = np.array([[3e30, -3e30] * 128, [1e-40] * 256], dtype=np.float32)
    for qtype in (Q.Q4_K, Q.Q6_K, Q.Q8_0, Q.Q4_1):
        raw = quantize(w, qtype, impl=impl)
        values = np.asarray(gguf.quants.dequantize(raw, qtype), dtype=np.float32)
        assert np.isfinite(values).all()


def test_empty_matrix_and_float64_input_are_handled():
    assert quantize(np.zeros((0, 256)), Q.Q4_K).shape == (0, 144)
    w = np.random.default_rng(1).standard_normal((3, 256))
    assert np.array_equal(quantize(w, Q.Q6_K), quantize(w.astype(np.float32), Q.Q6_K))


def test_zero_importance_everywhere_falls_back_to_plain_error():
    w = np.random.default_rng(4).standard_normal((4, 256)).astype(np.float32)
    assert np.array_equal(quantize(w, Q.Q4_K, np.zeros(256, dtype=np.float32)), quantize(w, Q.Q4_K))


# --- the pipelines' encode loop ---------------------------------------------------------------

def test_a_tensor_encoded_slice_by_slice_has_the_bytes_of_one_encode(monkeypatch):
    from gguf_tools.quantize import encode as encode_module

    rng = np.random.default_rng(7)
    w = rng.standard_normal((37, 256)).astype(np.float32)
    imp = rng.random(256).astype(np.float32)
    monkeypatch.setattr(encode_module, "CHUNK_BYTES", 5 * 256 * 4)  # slices of 5 rows, the last one short
    reads = []

    def read(r0: int, r1: int) -> np.ndarray:
        reads.append((r0, r1))
        return w[r0:r1]

    for qtype in (Q.Q4_K, Q.Q8_0, Q.F16, Q.BF16):
        reads.clear()
        got = encode_module.encode_tensor(read, w.shape, qtype, "t", imp if qtype == Q.Q4_K else None)
        want = encode_module.encode(w, qtype, imp if qtype == Q.Q4_K else None)
        assert got.dtype == np.uint8 and got.tobytes() == np.ascontiguousarray(want).tobytes()
        assert reads[0] == (0, 5) and reads[-1] == (35, 37) and len(reads) == 8
    one_row = encode_module.encode_tensor(lambda r0, r1: w[0][None], (256,), Q.F32, "norm")
    assert one_row.tobytes() == w[0].tobytes()


def test_a_non_finite_value_in_a_later_slice_is_one_error_naming_the_tensor(monkeypatch):
    from gguf_tools.quantize import encode as encode_module

    w = np.ones((20, 256), np.float32)
    w[17, 3] = np.inf
    monkeypatch.setattr(encode_module, "CHUNK_BYTES", 4 * 256 * 4)
    with pytest.raises(InputError, match=r"'blk.3.ffn_up.weight' contains NaN or Inf values \(first at index \(1, 3\)\)"):
        encode_module.encode_tensor(lambda r0, r1: w[r0:r1], w.shape, Q.Q4_K, "blk.3.ffn_up.weight")


def test_copied_bfloat16_bits_are_checked_by_their_exponent():
    bits = np.array([0x3F80, 0x7F80, 0x0000], np.uint16)  # 1.0, +inf, 0.0
    with pytest.raises(InputError, match="index \\(1,\\)"):
        check_finite(bits, "x", bf16_bits=True)
    check_finite(np.array([0x3F80, 0xFF7F], np.uint16), "x", bf16_bits=True)  # 1.0 and the most negative finite
