"""Native kernels: dequantize is bit-identical to gguf.quants, matmul agrees with dequantize-then-matmul.

Every test that computes runs on every SIMD path this CPU has (scalar, avx2, avx512 / neon), forced
through the ``simd`` argument, so a bug in any one path fails here.

Matmul tolerance, and why. For quantized weight types the kernel rounds the activations to int8 per
block (32 values for Q4_0..Q8_0, 256 for K-quants; scale d_b = max|x_b| / 127) and sums in integers.
  * If x is exactly representable on that grid (integers times a power of two, one +-127 per
    block), the only error left is float32 rounding of per-block scale products and partial sums:
    |y - ref| <= 1e-5 * (|W| @ |x|). Any logic error (wrong nibble, scale or offset) is O(1) of that.
  * For arbitrary x, rounding moves each x_j by at most d_b(j) / 2, so
    |y_i - ref_i| <= sum_j |w_ij| * d_b(j) / 2  (+ the float32 term above); a rigorous per-output bound.
    On top, the rms error over a few thousand outputs must be < 1.2 % of the rms output (8-bit
    rounding of Gaussian x predicts 0.5-0.75 %), which catches errors too small for the worst case.
"""
from __future__ import annotations

import _thread
import threading
import time

import gguf
import numpy as np
import pytest

from gguf_tools import _kernels
from gguf_tools.engine import kernels
from gguf_tools.errors import InputError, UnsupportedError

QT = gguf.GGMLQuantizationType
LEVELS = kernels.available_levels()
TYPES = sorted(kernels.SUPPORTED_TYPES, key=int)
LEGACY = {QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q8_0}
KQUANTS = {QT.Q2_K, QT.Q3_K, QT.Q4_K, QT.Q5_K, QT.Q6_K}
FLOATS = {QT.F32, QT.F16, QT.BF16}

# byte offsets of the f16 scales inside one block (ggml-common.h)
SCALE_OFFSETS = {
    QT.Q4_0: (0,), QT.Q4_1: (0, 2), QT.Q5_0: (0,), QT.Q5_1: (0, 2), QT.Q8_0: (0,),
    QT.Q2_K: (80, 82), QT.Q3_K: (108,), QT.Q4_K: (0, 2), QT.Q5_K: (0, 2), QT.Q6_K: (208,),
}
# f16 scale values that random blocks draw from besides Gaussian ones: zero, negative zero,
# the smallest subnormal, the largest subnormal, the smallest normal, and a large finite value
EDGE_SCALES = np.array([0x0000, 0x8000, 0x0001, 0x03FF, 0x0400, 0x7000, 0xF000], dtype=np.uint16)


def _f16_scales(rng: np.random.Generator, n: int, scale: float) -> np.ndarray:
    s = (rng.standard_normal(n) * scale).astype(np.float16).view(np.uint16)
    pick = rng.random(n) < 0.1
    s[pick] = rng.choice(EDGE_SCALES, size=int(pick.sum()))
    return s


def random_weights(qt: QT, n_rows: int, n_cols: int, rng: np.random.Generator) -> np.ndarray:
    """Valid raw rows (n_rows, row_bytes) of ``qt``, with edge values mixed in."""
    if qt in FLOATS:
        v = rng.standard_normal((n_rows, n_cols)).astype(np.float32)
        v.flat[:: 7] = 0.0
        if qt == QT.F32:
            return v.view(np.uint8)
        if qt == QT.F16:
            return v.astype(np.float16).view(np.uint8)
        return (v.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
    block, size = gguf.GGML_QUANT_SIZES[qt]
    if qt in LEGACY:
        # the real quantizer, on rows with structure: Gaussian, constant, zero, one outlier
        v = rng.standard_normal((n_rows, n_cols)).astype(np.float32)
        v[0] = 0.0
        if n_rows > 1:
            v[1] = 0.75
        if n_rows > 2:
            v[2, ::block] = 40.0
        raw = gguf.quants.quantize(v, qt).reshape(n_rows, -1)
        return np.ascontiguousarray(raw)
    nb = n_cols // block
    raw = rng.integers(0, 256, size=(n_rows, nb, size), dtype=np.uint8)
    raw[0, 0, :] = 0xFF  # every code at its maximum (then the scales are overwritten below)
    if nb > 1:
        raw[0, 1, :] = 0x00
    for off in SCALE_OFFSETS[qt]:
        raw[:, :, off : off + 2] = _f16_scales(rng, n_rows * nb, 0.02).view(np.uint8).reshape(n_rows, nb, 2)
    return raw.reshape(n_rows, nb * size)


def reference(qt: QT, raw: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return gguf.quants.dequantize(raw.reshape(shape[0], -1), qt).reshape(shape)


def act_block(qt: QT) -> int:
    return 256 if qt in KQUANTS else 32


# ------------------------------------------- dequantize -------------------------------------------


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("qt", TYPES, ids=lambda t: t.name)
def test_dequantize_is_bit_identical_to_gguf_quants(qt: QT, level: str) -> None:
    rng = np.random.default_rng(int(qt))
    for n_rows, n_cols in [(1, gguf.GGML_QUANT_SIZES[qt][0]), (9, 768), (3, 4096)]:
        raw = random_weights(qt, n_rows, n_cols, rng)
        got = kernels.dequantize(qt, raw, (n_rows, n_cols), simd=level)
        want = reference(qt, raw, (n_rows, n_cols))
        assert got.dtype == np.float32 and got.shape == (n_rows, n_cols)
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32), err_msg=f"{qt.name} {level}")


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("qt", [QT.F16, QT.BF16], ids=lambda t: t.name)
def test_every_16_bit_pattern_dequantizes_like_numpy_including_nan_payloads(qt: QT, level: str) -> None:
    bits = np.arange(65536, dtype=np.uint16)
    got = kernels.dequantize(qt, bits.view(np.uint8), (65536,), simd=level)
    want = gguf.quants.dequantize(bits.view(np.uint8).reshape(1, -1), qt).reshape(-1)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("level", LEVELS)
def test_dequantize_keeps_nonfinite_scales_nonfinite_where_gguf_does(level: str) -> None:
    rng = np.random.default_rng(5)
    for qt in sorted(LEGACY | KQUANTS, key=int):
        raw = random_weights(qt, 4, 512, rng).reshape(4, -1, gguf.GGML_QUANT_SIZES[qt][1])
        off = SCALE_OFFSETS[qt][0]
        raw[1, :, off : off + 2] = np.array([0x7C00], np.uint16).view(np.uint8)  # +inf
        raw[2, :, off : off + 2] = np.array([0x7E00], np.uint16).view(np.uint8)  # NaN
        raw = raw.reshape(4, -1)
        got = kernels.dequantize(qt, raw, (4, 512), simd=level)
        with np.errstate(invalid="ignore", over="ignore"):
            want = reference(qt, raw, (4, 512))
        np.testing.assert_array_equal(got, want, err_msg=qt.name)


def test_dequantize_accepts_bytes_and_any_leading_shape() -> None:
    rng = np.random.default_rng(1)
    raw = random_weights(QT.Q4_K, 6, 512, rng)
    got = kernels.dequantize(QT.Q4_K, raw.tobytes(), (2, 3, 512))
    np.testing.assert_array_equal(got.reshape(6, 512), reference(QT.Q4_K, raw, (6, 512)))


def test_dequantize_results_do_not_depend_on_threads() -> None:
    rng = np.random.default_rng(2)
    raw = random_weights(QT.Q6_K, 300, 1024, rng)
    one = kernels.dequantize(QT.Q6_K, raw, (300, 1024), threads=1)
    two = kernels.dequantize(QT.Q6_K, raw, (300, 1024), threads=2)
    np.testing.assert_array_equal(one.view(np.uint32), two.view(np.uint32))


# --------------------------------------------- matmul ---------------------------------------------


def representable_x(batch: int, n_in: int, rng: np.random.Generator) -> np.ndarray:
    """x that int8 per-block rounding reproduces exactly: integers in [-127, 127] times a power of
    two per 256 values, with a +-127 in every 32 (so every block's max is 127 * scale)."""
    k = rng.integers(-127, 128, size=(batch, n_in)).astype(np.float32)
    for j in range(0, n_in, 32):
        pos = j + rng.integers(0, min(32, n_in - j), size=batch)
        k[np.arange(batch), pos] = rng.choice([-127.0, 127.0], size=batch)
    scale = np.exp2(rng.integers(-12, 4, size=(batch, (n_in + 255) // 256))).astype(np.float32)
    return k * np.repeat(scale, 256, axis=1)[:, :n_in]


def rounding_bound(qt: QT, w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """sum_j |w_ij| * d_b(j) / 2: the most int8 rounding of x can move each output."""
    if qt in FLOATS:
        return np.zeros((x.shape[0], w.shape[0]))
    blk = act_block(qt)
    amax = np.abs(x.astype(np.float64)).reshape(x.shape[0], -1, blk).max(axis=2)
    half_step = np.repeat(amax / 127.0 / 2.0, blk, axis=1)
    return half_step @ np.abs(w.astype(np.float64)).T


MATMUL_SHAPES = {  # (n_out, n_in): one block; odd n_out; odd block counts (group + remainder paths); 256 * k
    "legacy": [(13, 32), (7, 224), (37, 768), (19, 864)],
    "k": [(13, 256), (37, 768)],
    "float": [(13, 1), (11, 37), (37, 768)],
}


def shapes_for(qt: QT) -> list[tuple[int, int]]:
    return MATMUL_SHAPES["k" if qt in KQUANTS else "legacy" if qt in LEGACY else "float"]


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("qt", TYPES, ids=lambda t: t.name)
def test_matmul_is_exact_up_to_float32_rounding_when_x_is_on_the_int8_grid(qt: QT, level: str) -> None:
    rng = np.random.default_rng(100 + int(qt))
    for n_out, n_in in shapes_for(qt):
        raw = random_weights(qt, n_out, n_in, rng)
        w = reference(qt, raw, (n_out, n_in)).astype(np.float64)
        for batch in (1, 3, 17, 200):
            x = representable_x(batch, n_in, rng)
            want = x.astype(np.float64) @ w.T
            tol = 1e-5 * (np.abs(x.astype(np.float64)) @ np.abs(w).T) + 1e-30
            results = []
            for threads in (1, 2):
                y = kernels.matmul(qt, raw, (n_out, n_in), x, threads=threads, simd=level)
                assert y.shape == (batch, n_out) and y.dtype == np.float32
                err = np.abs(y - want)
                bad = err > tol
                assert not bad.any(), (
                    f"{qt.name} {level} shape={(n_out, n_in)} batch={batch} threads={threads}: "
                    f"{int(bad.sum())} outputs off, worst {float((err / tol).max()):.3g} x tolerance"
                )
                results.append(y)
            # each output is computed by one thread from start to end: identical for any count
            np.testing.assert_array_equal(results[0].view(np.uint32), results[1].view(np.uint32))


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("qt", TYPES, ids=lambda t: t.name)
def test_matmul_error_on_gaussian_x_stays_within_the_int8_rounding_bound(qt: QT, level: str) -> None:
    rng = np.random.default_rng(200 + int(qt))
    n_out, n_in = shapes_for(qt)[-1]
    raw = random_weights(qt, n_out, n_in, rng)
    w = reference(qt, raw, (n_out, n_in)).astype(np.float64)
    errs, wants = [], []
    for batch in (1, 17, 200):
        x = rng.standard_normal((batch, n_in)).astype(np.float32)
        want = x.astype(np.float64) @ w.T
        y = kernels.matmul(qt, raw, (n_out, n_in), x, threads=2, simd=level)
        err = np.abs(y - want)
        bound = rounding_bound(qt, w, x) * (1 + 1e-6) + 1e-5 * (np.abs(x.astype(np.float64)) @ np.abs(w).T)
        assert (err <= bound).all(), f"{qt.name} {level} batch={batch}: worst {float((err / bound).max()):.3g}x bound"
        errs.append(err.ravel())
        wants.append(want.ravel())
    # pooled over all 218 rows of x: a handful of outputs near zero cannot swing the ratio
    rel = np.sqrt(np.mean(np.concatenate(errs) ** 2) / np.mean(np.concatenate(wants) ** 2))
    limit = 0.012 if qt not in FLOATS else 1e-6
    assert rel < limit, f"{qt.name} {level}: rms error {rel:.4f} of rms output"


@pytest.mark.parametrize("level", LEVELS)
def test_matmul_zero_rows_of_x_give_exact_zeros_and_nan_rows_stay_in_their_row(level: str) -> None:
    rng = np.random.default_rng(3)
    for qt in (QT.Q4_K, QT.Q8_0, QT.F16):
        raw = random_weights(qt, 9, 512, rng)
        x = rng.standard_normal((3, 512)).astype(np.float32)
        x[0] = 0.0
        x[2, 5] = np.nan
        y = kernels.matmul(qt, raw, (9, 512), x, simd=level)
        finite_w = np.isfinite(reference(qt, raw, (9, 512))).all(axis=1)
        assert (y[0][finite_w] == 0.0).all()
        assert np.isfinite(y[1][finite_w]).all()
        assert np.isnan(y[2]).all()


def test_matmul_accepts_a_single_vector_and_returns_one() -> None:
    rng = np.random.default_rng(4)
    raw = random_weights(QT.Q6_K, 5, 256, rng)
    x = rng.standard_normal(256).astype(np.float32)
    y = kernels.matmul(QT.Q6_K, raw, (5, 256), x)
    assert y.shape == (5,)
    np.testing.assert_array_equal(y, kernels.matmul(QT.Q6_K, raw, (5, 256), x[None, :])[0])


@pytest.mark.slow  # gguf.GGUFReader needs ~25 s to parse gemma's 262k-token vocabulary
def test_matmul_on_real_model_tensors_matches_dequantize_then_matmul() -> None:
    from conftest import gemma3_gguf, smollm2_gguf

    rng = np.random.default_rng(6)
    seen: set[QT] = set()
    for path in (smollm2_gguf(), gemma3_gguf()):
        if not path.exists():
            pytest.skip(f"{path} is missing")
        for t in gguf.GGUFReader(path).tensors:
            qt = QT(t.tensor_type)
            if qt in seen or qt not in kernels.SUPPORTED_TYPES or len(t.shape) != 2:
                continue
            seen.add(qt)
            n_in, n_out = int(t.shape[0]), min(int(t.shape[1]), 96)
            raw = np.ascontiguousarray(np.asarray(t.data).reshape(int(t.shape[1]), -1)[:n_out])
            w = gguf.quants.dequantize(raw, qt).reshape(n_out, n_in)
            for level in LEVELS:
                np.testing.assert_array_equal(kernels.dequantize(qt, raw, (n_out, n_in), simd=level), w)
                x = rng.standard_normal((3, n_in)).astype(np.float32)
                y = kernels.matmul(qt, raw, (n_out, n_in), x, simd=level)
                want = x.astype(np.float64) @ w.astype(np.float64).T
                bound = rounding_bound(qt, w, x) + 1e-5 * (np.abs(x) @ np.abs(w.astype(np.float64)).T)
                assert (np.abs(y - want) <= bound).all(), f"{t.name} ({qt.name}) on {level}"
    assert {QT.Q4_1, QT.Q4_K, QT.Q6_K, QT.Q5_0, QT.Q8_0} <= seen


def test_ctrl_c_interrupts_a_long_matmul_between_chunks() -> None:
    rng = np.random.default_rng(7)
    raw = random_weights(QT.Q4_K, 2048, 4096, rng)
    x = rng.standard_normal((256, 4096)).astype(np.float32)  # 2 G multiply-adds: seconds on scalar
    timer = threading.Timer(0.2, _thread.interrupt_main)
    start = time.perf_counter()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            kernels.matmul(QT.Q4_K, raw, (2048, 4096), x, threads=1, simd="scalar")
    finally:
        timer.cancel()
    elapsed = time.perf_counter() - start
    assert elapsed < 10.0  # returned at a chunk boundary, not after the whole product


# ----------------------------------------- SIMD selection -----------------------------------------


def test_simd_level_reports_the_best_path_and_the_environment_forces_another(monkeypatch) -> None:
    monkeypatch.delenv(kernels.SIMD_ENV, raising=False)
    assert kernels.simd_level() == LEVELS[-1]
    assert "scalar" in LEVELS
    for level in LEVELS:
        monkeypatch.setenv(kernels.SIMD_ENV, level)
        assert kernels.simd_level() == level


def test_an_unsupported_forced_path_falls_back_to_the_best_with_a_warning(monkeypatch) -> None:
    missing = [name for name in _kernels.level_names() if name not in LEVELS]
    if not missing:
        pytest.skip("this CPU supports every SIMD path")
    monkeypatch.setenv(kernels.SIMD_ENV, missing[0])
    with pytest.warns(RuntimeWarning, match="not supported"):
        assert kernels.simd_level() == LEVELS[-1]
    with pytest.warns(RuntimeWarning, match="not supported"):
        assert kernels.simd_level(missing[0]) == LEVELS[-1]
    monkeypatch.setenv(kernels.SIMD_ENV, "sse9")
    with pytest.warns(RuntimeWarning, match="not a SIMD level"):
        assert kernels.simd_level() == LEVELS[-1]
    with pytest.raises(InputError):
        kernels.simd_level("sse9")


def test_default_threads_is_at_least_one_and_at_most_the_cpus_we_may_use() -> None:
    import os

    from gguf_tools.system import default_threads

    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert 1 <= default_threads() <= allowed


# ------------------------------------------- validation -------------------------------------------


def test_inputs_that_do_not_fit_the_shape_are_rejected_before_any_read() -> None:
    raw = np.zeros((4, 144), np.uint8)
    x = np.zeros((2, 256), np.float32)
    with pytest.raises(InputError, match="bytes"):
        kernels.matmul(QT.Q4_K, raw[:3], (4, 256), x)
    with pytest.raises(InputError, match="multiple"):
        kernels.matmul(QT.Q4_K, raw, (4, 200), x)
    with pytest.raises(InputError, match="columns"):
        kernels.matmul(QT.Q4_K, raw, (4, 256), x[:, :128])
    with pytest.raises(InputError):
        kernels.matmul(QT.Q4_K, raw, (4, 256), x, threads=0)
    with pytest.raises(InputError):
        kernels.matmul(QT.Q4_K, raw, (4, -256), x)
    with pytest.raises(InputError, match="bytes"):
        kernels.dequantize(QT.Q8_0, b"\0" * 33, (32,))
    with pytest.raises(InputError, match="multiple"):
        kernels.dequantize(QT.Q8_0, b"\0" * 34, (33,))
    with pytest.raises(UnsupportedError):
        kernels.dequantize(QT.IQ2_XXS, b"", (0, 256))
    with pytest.raises(UnsupportedError):
        kernels.matmul(9999, raw, (4, 256), x)


def test_the_extension_itself_refuses_buffers_that_disagree_with_the_sizes() -> None:
    level = _kernels.level_names().index("scalar")
    raw = np.zeros(4 * 144, np.uint8)
    x = np.zeros(2 * 256, np.float32)
    out = np.zeros(2 * 4, np.float32)
    with pytest.raises(ValueError):  # one weight row short
        _kernels.matmul(int(QT.Q4_K), raw[:-144], 4, 256, x, 2, out, level, 1)
    with pytest.raises(ValueError):  # activations short
        _kernels.matmul(int(QT.Q4_K), raw, 4, 256, x[:-1], 2, out, level, 1)
    with pytest.raises(ValueError):  # output short
        _kernels.matmul(int(QT.Q4_K), raw, 4, 256, x, 2, out[:-1], level, 1)
    with pytest.raises(ValueError):  # output aliases the activations
        _kernels.matmul(int(QT.F32), x.view(np.uint8)[: 4 * 4 * 16], 4, 16, x[:32], 2, x[:8], level, 1)
    with pytest.raises(ValueError):  # absurd dimensions cannot overflow the size arithmetic
        _kernels.matmul(int(QT.Q4_K), raw, 2**62, 2**62, x, 2, out, level, 1)
    with pytest.raises(ValueError):
        _kernels.dequantize(int(QT.Q4_K), raw, 5, 256, np.zeros(5 * 256, np.float32), level, 1)
    with pytest.raises(ValueError):
        _kernels.matmul(int(QT.Q4_K), raw, 4, 256, x, 2, out, 99, 1)


def test_read_sum_reads_every_word_once_on_any_thread_count() -> None:
    data = np.random.default_rng(8).integers(0, 256, size=128 * 40_001, dtype=np.uint8)
    want = int(data.view(np.uint64).sum(dtype=np.uint64))  # wraps modulo 2**64, like the C loop
    assert kernels.read_sum(data, threads=1) == want
    assert kernels.read_sum(data, threads=2) == want
