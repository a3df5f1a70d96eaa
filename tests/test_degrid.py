"""bench.degrid: the de-gridded references sit within half a step of the source and off its grid."""
from __future__ import annotations

import gguf
import numpy as np
import pytest

from bench.degrid import degrid, degrid_tensor, local_step
from gguf_tools.gguf_file.layout import numpy_shape
from gguf_tools.gguf_file.reader import GGUFFile

Q = gguf.GGMLQuantizationType
F16_ULP = 2.0 ** -10  # relative spacing of float16: the written reference is rounded to it


def _quantized(qtype: Q, rows: int = 8, cols: int = 512, seed: int = 0) -> np.ndarray:
    """Random weights quantized to ``qtype`` (uint8 rows), by the gguf package or by our encoder for K-quants."""
    w = np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32) * 0.05
    if qtype in (Q.Q4_K, Q.Q5_K, Q.Q6_K, Q.Q2_K):
        from gguf_tools.quantize.encode import encode

        return np.ascontiguousarray(encode(w, qtype, None)).reshape(-1).view(np.uint8).reshape(rows, -1)
    return gguf.quants.quantize(w, qtype)


def _grid_residual(w: np.ndarray, step: np.ndarray, per: int) -> float:
    """Largest distance (in steps) of a weight from its sub-block's grid {w_min + k * step}."""
    w, step = w.reshape(-1, per).astype(np.float64), step.reshape(-1, per)[:, :1].astype(np.float64)
    ok = step[:, 0] > 0
    k = (w[ok] - w[ok].min(axis=1, keepdims=True)) / step[ok]
    return float(np.abs(k - np.round(k)).max())


@pytest.mark.parametrize("qtype,per", [(Q.Q4_0, 32), (Q.Q4_1, 32), (Q.Q5_0, 32), (Q.Q5_1, 32), (Q.Q8_0, 32),
                                       (Q.Q4_K, 32), (Q.Q5_K, 32), (Q.Q6_K, 16), (Q.Q2_K, 16)])
def test_local_step_is_the_grid_spacing(qtype, per):
    rows = _quantized(qtype)
    w = gguf.quants.dequantize(rows, qtype).reshape(rows.shape[0], -1)
    step = local_step(qtype, rows, w.shape[1])
    assert step.shape == w.shape and (step > 0).mean() > 0.9
    assert _grid_residual(w, step, per) < 2e-3
    # a step twice as large would not be the grid: the check can fail
    assert _grid_residual(w, 2 * step, per) > 0.4


@pytest.mark.parametrize("qtype", [Q.Q4_1, Q.Q8_0, Q.Q4_K, Q.Q6_K])
def test_degridded_weights_are_within_half_a_step_and_off_the_grid(qtype):
    rows = _quantized(qtype, seed=1)
    n = 512
    w = gguf.quants.dequantize(rows, qtype).reshape(-1, n)
    step = local_step(qtype, rows, n)
    moved = degrid_tensor("blk.0.ffn_up.weight", qtype, rows, w.shape)
    d = np.abs(moved - w)
    assert (d <= step / 2 * (1 + 1e-6)).all()
    assert d.mean() > 0.2 * step.mean()  # uniform on [-1/2, 1/2] steps: mean distance 1/4 step
    # fixed seed: the same tensor every time, another name another draw
    assert np.array_equal(moved, degrid_tensor("blk.0.ffn_up.weight", qtype, rows, w.shape))
    assert not np.array_equal(moved, degrid_tensor("blk.1.ffn_up.weight", qtype, rows, w.shape))
    if qtype in (Q.Q4_1, Q.Q8_0):   # re-quantized to the source type, the weights no longer come back
        again = gguf.quants.dequantize(gguf.quants.quantize(moved, qtype), qtype).reshape(moved.shape)
        assert np.mean(again == moved) < 0.01
        assert np.mean(gguf.quants.dequantize(gguf.quants.quantize(w, qtype), qtype).reshape(w.shape) == w) > 0.99


def _check_file(src, tmp_path, n_check: int = 6):
    out = degrid(src, tmp_path / "degrid.gguf")
    a, b = GGUFFile.open(src), GGUFFile.open(out)
    assert [t.name for t in a.tensors] == [t.name for t in b.tensors]
    assert b.get(gguf.Keys.General.ARCHITECTURE) == a.architecture
    seen: dict[Q, int] = {}
    for ta, tb in zip(a.tensors, b.tensors):
        if ta.ggml_type in (Q.F32, Q.F16):
            assert np.array_equal(np.asarray(a.data(ta), np.float32), np.asarray(b.data(tb), np.float32))
            continue
        if seen.get(ta.ggml_type, 0) >= n_check:
            continue
        seen[ta.ggml_type] = seen.get(ta.ggml_type, 0) + 1
        shape = numpy_shape(ta.shape)
        raw = a.data(ta)
        w = gguf.quants.dequantize(raw, ta.ggml_type).reshape(-1, shape[-1])
        step = local_step(ta.ggml_type, raw.reshape(w.shape[0], -1), shape[-1])
        per = 16 if ta.ggml_type in (Q.Q6_K, Q.Q2_K) else 32
        assert _grid_residual(w, step, per) < 2e-3, ta.name   # the source is on the grid we decode
        moved = np.asarray(b.data(tb), np.float32).reshape(w.shape)
        tol = step / 2 + F16_ULP * np.maximum(np.abs(w), np.abs(moved)) + 1e-7
        assert (np.abs(moved - w) <= tol).all(), ta.name
        k = (moved - w) / np.where(step > 0, step, 1)
        assert np.mean(np.abs(k) > 0.01) > 0.9, ta.name   # nearly every weight moved off its grid point
    return seen


@pytest.mark.slow
def test_smollm2_degridded_reference(tmp_path):
    from conftest import smollm2_gguf

    seen = _check_file(smollm2_gguf(), tmp_path)
    assert Q.Q4_1 in seen


@pytest.mark.slow
def test_gemma_degridded_reference(tmp_path):
    from conftest import gemma3_gguf

    seen = _check_file(gemma3_gguf(), tmp_path)
    assert {Q.Q4_K, Q.Q6_K} <= set(seen)
