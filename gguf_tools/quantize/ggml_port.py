"""NumPy port of ggml's own quantizers, bit for bit ("ggml" mode).

Why: exact tests against llama.cpp, provenance checks ("was this file made by ggml?"), and a
baseline that our better search is measured against. The algorithms are the ones
ggml_quantize_chunk runs (ggml-quants.c): the `quantize_row_*_ref` searches without an
importance matrix and the weighted `quantize_row_*_impl` searches with one.

Bit exactness rests on three things, kept everywhere below:
  * every sum is accumulated sequentially in float32 (`_seq`), in ggml's element order;
  * products are formed in ggml's operand order ((w*x)*l is not w*(x*l) in float32);
  * rounding to integers emulates ggml's magic-number trick (`_nint`), including its
    wrap-around for huge arguments, and C's integer narrowing (`& 0xFF`).
Everything is vectorised across blocks; loops run only over ggml's own iteration counts.
"""
from __future__ import annotations

import gguf
import numpy as np

from .blocks import IQ4NL_VALUES, QK_K, f16, pack

Q = gguf.GGMLQuantizationType
F = np.float32
EPS = F(1e-15)  # ggml's GROUP_MAX_EPS


def _nint(v: np.ndarray) -> np.ndarray:
    """ggml's nearest_int: add 1.5*2**23 in float32 and read the low mantissa bits."""
    bits = (np.asarray(v, dtype=F) + F(12582912.0)).view(np.int32)
    return (bits & 0x007FFFFF) - 0x00400000


def _seq(a: np.ndarray) -> np.ndarray:
    """Sum over the last axis, left to right, in float32 (as a C loop does)."""
    return np.add.accumulate(np.asarray(a, dtype=F), axis=-1, dtype=F)[..., -1] + F(0)


def _i8(v: np.ndarray) -> np.ndarray:
    return ((np.asarray(v, dtype=np.int64) + 128) & 0xFF) - 128


def _u8(v: np.ndarray) -> np.ndarray:
    return np.asarray(v, dtype=np.int64) & 0xFF


def _div(a: np.ndarray, b: np.ndarray, ok: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """a / b where ok, `fill` elsewhere, without warnings from the unused lanes."""
    with np.errstate(all="ignore"):
        return np.where(ok, a / np.where(ok, b, F(1)), F(fill)).astype(F)


def _signed_absmax(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(max |x|, the x holding it) per row: first one on ties, +0 when all are zero (C's loop)."""
    ax = np.abs(x)
    i = np.argmax(ax, axis=-1)
    r = np.arange(x.shape[0])
    return ax[r, i], np.where(ax[r, i] > 0, x[r, i], F(0))


def _first_min(x: np.ndarray) -> np.ndarray:
    """min per row as a C loop finds it (first of equal values, so the sign of a zero is kept)."""
    return x[np.arange(x.shape[0]), np.argmin(x, axis=-1)]


def _first_max(x: np.ndarray) -> np.ndarray:
    return x[np.arange(x.shape[0]), np.argmax(x, axis=-1)]


# ---------------------------------------------------------------------------------------------
# ggml's block searches, each over a batch of blocks (B, n)
# ---------------------------------------------------------------------------------------------

def make_qx_quants(x: np.ndarray, nmax: int, qw: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric levels in [-nmax, nmax-1] (stored +nmax), scale from a 19-point search (rmse_type 1)."""
    amax, mx = _signed_absmax(x)
    zero = amax < EPS
    mx = np.where(zero, F(1), mx)
    w = qw if qw is not None else x * x
    wx = w * x

    def trial(iscale: np.ndarray):
        l = np.clip(_nint(iscale[:, None] * x), -nmax, nmax - 1)
        lf = l.astype(F)
        return l, _seq(wx * lf), _seq(w * lf * lf)

    l, sumlx, suml2 = trial(F(-nmax) / mx)
    L = l + nmax
    scale = _div(sumlx, suml2, suml2 != 0)
    best = scale * sumlx
    for s in range(-9, 10):
        if s == 0:
            continue
        l, sumlx, suml2 = trial(-(F(nmax) + F(0.1) * F(s)) / mx)
        better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
        L = np.where(better[:, None], l + nmax, L)
        scale = np.where(better, _div(sumlx, suml2, better), scale)
        best = np.where(better, scale * sumlx, best)
    L[zero] = 0
    scale[zero] = 0
    return scale, L


def make_q3_quants(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Q3_K's unweighted-by-imatrix search: x^2-weighted levels, then coordinate descent."""
    amax, mx = _signed_absmax(x)
    zero = amax < EPS
    mx = np.where(zero, F(1), mx)
    L = np.clip(_nint((F(-nmax) / mx)[:, None] * x), -nmax, nmax - 1).astype(F)
    w = x * x
    wx = w * x
    sumlx = _seq(wx * L)
    suml2 = _seq(w * L * L)
    for _ in range(5):
        changed = np.zeros(x.shape[0], dtype=bool)
        for i in range(x.shape[1]):
            xi, wi, wxi, Li = x[:, i], w[:, i], wx[:, i], L[:, i]
            slx = sumlx - wxi * Li
            pos = slx > 0
            sl2 = suml2 - wi * Li * Li
            nl = np.clip(_nint(_div(xi * sl2, slx, pos)), -nmax, nmax - 1).astype(F)
            ch = pos & (nl != Li)
            slx = slx + wxi * nl
            sl2 = sl2 + wi * nl * nl
            acc = ch & (sl2 > 0) & (slx * slx * suml2 > sumlx * sumlx * sl2)
            L[:, i] = np.where(acc, nl, Li)
            sumlx = np.where(acc, slx, sumlx)
            suml2 = np.where(acc, sl2, suml2)
            changed |= acc
        if not changed.any():  # a block with no change stays unchanged: same state, same result
            break
    scale = _div(sumlx, suml2, suml2 > 0)
    Lo = L.astype(np.int64) + nmax
    Lo[zero] = 0
    scale[zero] = 0
    return scale, Lo


def make_qkx_quants(x: np.ndarray, w: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int,
                    use_mad: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Affine levels in [0, nmax] with min <= 0: grid of nstep+1 scales, each refit by least squares.

    Returns (scale, the_min = -min >= 0, L). Covers make_qkx2_quants and make_qkx3_quants (with
    weights given they are the same computation).
    """
    mn = _first_min(x)
    mn = np.where(mn > 0, F(0), mn)
    mx = _first_max(x)
    sum_w = _seq(w)
    sum_x = _seq(w * x)
    flat = mx <= mn
    span = np.where(flat, F(1), mx - mn)

    def err(scale: np.ndarray, minv: np.ndarray, Lf: np.ndarray) -> np.ndarray:
        diff = scale[:, None] * Lf + minv[:, None] - x
        return _seq(w * (np.abs(diff) if use_mad else diff * diff))

    iscale = F(nmax) / span
    scale = F(1) / iscale
    Lf = np.clip(_nint(iscale[:, None] * (x - mn[:, None])), 0, nmax).astype(F)
    best = err(scale, mn, Lf)
    minv = mn.copy()
    for s in range(nstep + 1):
        # ggml moves `min` to each accepted fit, so later grid points are taken from it
        span = np.where(flat, F(1), mx - minv)
        iscale = (F(rmin) + F(rdelta) * F(s) + F(nmax)) / span
        la = np.clip(_nint(iscale[:, None] * (x - minv[:, None])), 0, nmax).astype(F)
        wl = w * la
        sum_l = _seq(wl)
        sum_l2 = _seq(wl * la)
        sum_xl = _seq(wl * x)
        D = sum_w * sum_l2 - sum_l * sum_l
        ok = D > 0
        this_scale = _div(sum_w * sum_xl - sum_x * sum_l, D, ok)
        this_min = _div(sum_l2 * sum_x - sum_l * sum_xl, D, ok)
        pos = this_min > 0
        this_min = np.where(pos, F(0), this_min)
        this_scale = np.where(pos, _div(sum_xl, sum_l2, pos & ok), this_scale)
        cur = err(this_scale, this_min, la)
        better = ok & (cur < best)
        Lf = np.where(better[:, None], la, Lf)
        best = np.where(better, cur, best)
        scale = np.where(better, this_scale, scale)
        minv = np.where(better, this_min, minv)
    Lf[flat] = 0
    scale[flat] = 0
    minv[flat] = mn[flat]
    return scale.astype(F), (-minv).astype(F), Lf.astype(np.int64)


def make_qp_quants(x: np.ndarray, nmax: int, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unsigned codes in [0, nmax] for a set of non-negative scales, weighted (uint8 wrap kept)."""
    mx = np.maximum(x.max(axis=1), F(0))
    zero = mx < EPS
    mx = np.where(zero, F(1), mx)
    iscale = F(nmax) / mx
    L = _u8(_nint(iscale[:, None] * x)).astype(F)
    scale = F(1) / iscale
    diff = x - scale[:, None] * L
    best = _seq(w * diff * diff)
    for s in range(-4, 5):
        if s == 0:
            continue
        isc = (F(0.1) * F(s) + F(nmax)) / mx
        sc = F(1) / isc
        l = np.minimum(nmax, _nint(isc[:, None] * x)).astype(F)
        diff = x - sc[:, None] * l
        mse = _seq(w * diff * diff)
        better = mse < best
        best = np.where(better, mse, best)
        iscale = np.where(better, isc, iscale)
    l = np.minimum(nmax, _nint(iscale[:, None] * x))
    L = _u8(l).astype(F)
    lf = l.astype(F)
    wx = w * x
    sumlx = _seq(wx * lf)
    suml2 = _seq(w * lf * lf)
    for _ in range(5):
        changed = np.zeros(x.shape[0], dtype=bool)
        for i in range(x.shape[1]):
            xi, wi, wxi, Li = x[:, i], w[:, i], wx[:, i], L[:, i]
            slx = sumlx - wxi * Li
            sl2 = suml2 - wi * Li * Li
            cond = (slx > 0) & (sl2 > 0)
            nl = np.minimum(nmax, _nint(_div(xi * sl2, slx, cond))).astype(F)
            ch = cond & (nl != Li)
            slx = slx + wxi * nl
            sl2 = sl2 + wi * nl * nl
            acc = ch & (slx * slx * suml2 > sumlx * sumlx * sl2)
            L[:, i] = np.where(acc, _u8(nl.astype(np.int64)).astype(F), Li)
            sumlx = np.where(acc, slx, sumlx)
            suml2 = np.where(acc, sl2, suml2)
            changed |= acc
        if not changed.any():
            break
    scale = _div(sumlx, suml2, suml2 > 0)
    L = L.astype(np.int64)
    L[zero] = 0
    scale[zero] = 0
    return scale, L


def _best_index_iq4nl(v: np.ndarray) -> np.ndarray:
    vals = IQ4NL_VALUES.astype(F)
    mu = np.clip(np.searchsorted(vals, v, side="right"), 1, 15)
    lo = vals[mu - 1]
    hi = vals[mu]
    idx = np.where(v - lo < hi - v, mu - 1, mu)
    idx = np.where(v <= vals[0], 0, idx)
    return np.where(v >= vals[15], 15, idx)


# ---------------------------------------------------------------------------------------------
# per-type drivers: x (nblocks, block_len) float32, qw matching or None -> packed bytes
# ---------------------------------------------------------------------------------------------

def _requant_affine(xs: np.ndarray, L: np.ndarray, dq: np.ndarray, dm: np.ndarray, nmax: int) -> np.ndarray:
    """ggml's last pass: levels re-picked from the stored scales (sub-blocks with d == 0 keep theirs)."""
    ok = dq != 0
    l = np.clip(_nint(_div(xs + dm[..., None], dq[..., None], ok[..., None], 1.0)), 0, nmax)
    return np.where(ok[..., None], l, L)


def _requant_sym(xs: np.ndarray, L: np.ndarray, dq: np.ndarray, nmax: int) -> np.ndarray:
    ok = dq != 0
    l = np.clip(_nint(_div(xs, dq[..., None], ok[..., None], 1.0)), -nmax, nmax - 1) + nmax
    return np.where(ok[..., None], l, L)


def _k4_scale_bytes(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Q4_K/Q5_K 12-byte scale field exactly as ggml fills it from (possibly oversized) codes."""
    ls = _u8(ls)
    lm = _u8(lm)
    out = np.zeros((ls.shape[0], 12), dtype=np.int64)
    out[:, 0:4] = ls[:, 0:4]
    out[:, 4:8] = lm[:, 0:4]
    out[:, 8:12] = (ls[:, 4:8] & 0xF) | ((lm[:, 4:8] & 0xF) << 4)
    out[:, 0:4] |= (ls[:, 4:8] >> 4) << 6
    out[:, 4:8] |= (lm[:, 4:8] >> 4) << 6
    return _u8(out).astype(np.uint8)


def _k4_codes(sb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sb = sb.astype(np.int64)
    sc = np.concatenate([sb[:, 0:4] & 63, (sb[:, 8:12] & 0xF) | ((sb[:, 0:4] >> 6) << 4)], axis=1)
    mn = np.concatenate([sb[:, 4:8] & 63, (sb[:, 8:12] >> 4) | ((sb[:, 4:8] >> 6) << 4)], axis=1)
    return sc, mn


def _q2_k(X: np.ndarray, QW: np.ndarray | None) -> np.ndarray:
    nb = X.shape[0]
    xs = X.reshape(nb * 16, 16)
    if QW is None:
        scales, mins, L = make_qkx_quants(xs, np.abs(xs), 3, -0.5, 0.1, 15, True)
        scales = scales.reshape(nb, 16)
        mins = mins.reshape(nb, 16)
        max_scale = np.maximum(scales.max(axis=1), F(0))
        max_min = np.maximum(mins.max(axis=1), F(0))
        hs, hm = max_scale > 0, max_min > 0
        sc = np.where(hs[:, None], _u8(_nint(_div(F(15), max_scale, hs)[:, None] * scales)), 0)
        d = f16(np.where(hs, _div(max_scale, F(15), hs), F(0)))
        byte = _u8(sc | np.where(hm[:, None], _nint(_div(F(15), max_min, hm)[:, None] * mins) << 4, 0))
        dmin = f16(np.where(hm, _div(max_min, F(15), hm), F(0)))
    else:
        sigma2 = _seq(X * X) / F(QK_K)
        wt = QW * np.sqrt(sigma2[:, None] + X * X)
        ws = wt.reshape(nb * 16, 16)
        sw = _seq(ws).reshape(nb, 16)
        scales, mins, L = make_qkx_quants(xs, ws, 3, -0.9, 0.05, 36, False)
        dm, Ls = make_qp_quants(scales.reshape(nb, 16), 15, sw)
        mm, Lm = make_qp_quants(mins.reshape(nb, 16), 15, sw)
        d, dmin = f16(dm), f16(mm)
        byte = _u8(Ls | (Lm << 4))
    sc, mn = byte & 0xF, byte >> 4
    L = _requant_affine(xs.reshape(nb, 16, 16), L.reshape(nb, 16, 16), d[:, None] * sc.astype(F),
                        dmin[:, None] * mn.astype(F), 3)
    return pack(Q.Q2_K, {"sc": sc, "mn": mn, "L": L.reshape(nb, 256), "d": d, "dmin": dmin})


def _q3_k(X: np.ndarray, QW: np.ndarray | None) -> np.ndarray:
    nb = X.shape[0]
    xs = X.reshape(nb * 16, 16)
    if QW is None:
        scales, L = make_q3_quants(xs, 4)
        scales = scales.reshape(nb, 16)
        _, max_scale = _signed_absmax(scales)
        has = max_scale != 0
        iscale = _div(F(-32), max_scale, has)
        codes = np.where(has[:, None], np.clip(_i8(_nint(iscale[:, None] * scales)), -32, 31) + 32, 0)
        d = f16(np.where(has, _div(F(1), iscale, has), F(0)))
    else:
        sigma2 = F(2) * _seq(X * X) / F(QK_K)
        wt = (QW * np.sqrt(sigma2[:, None] + X * X)).reshape(nb * 16, 16)
        sw = _seq(wt).reshape(nb, 16)
        scales, L = make_qx_quants(xs, 4, wt)
        db, codes = make_qx_quants(scales.reshape(nb, 16), 32, sw)
        d = f16(db)
    dq = d[:, None] * (codes - 32).astype(F)
    L = _requant_sym(xs.reshape(nb, 16, 16), L.reshape(nb, 16, 16), dq, 4)
    return pack(Q.Q3_K, {"sc": codes, "L": L.reshape(nb, 256), "d": d})


def _q45_k(X: np.ndarray, QW: np.ndarray | None, qtype: Q) -> np.ndarray:
    nb = X.shape[0]
    nmax = 15 if qtype == Q.Q4_K else 31
    xs = X.reshape(nb * 8, 32)
    if QW is None:
        av = np.sqrt(_seq(xs * xs) / F(32))
        scales, mins, L = make_qkx_quants(xs, av[:, None] + np.abs(xs), nmax, -1.0 if nmax == 15 else -0.5,
                                          0.1, 20 if nmax == 15 else 15, False)
        scales, mins = scales.reshape(nb, 8), mins.reshape(nb, 8)
        max_scale = np.maximum(scales.max(axis=1), F(0))
        max_min = np.maximum(mins.max(axis=1), F(0))
        inv_s = _div(F(63), max_scale, max_scale > 0)
        inv_m = _div(F(63), max_min, max_min > 0)
        ls = np.minimum(63, _u8(_nint(inv_s[:, None] * scales)))
        lm = np.minimum(63, _u8(_nint(inv_m[:, None] * mins)))
        d, dmin = f16(max_scale / F(63)), f16(max_min / F(63))
    else:
        sigma2 = F(2) * _seq(X * X) / F(QK_K)
        wt = (QW * np.sqrt(sigma2[:, None] + X * X)).reshape(nb * 8, 32)
        sw = _seq(wt).reshape(nb, 8)
        scales, mins, L = make_qkx_quants(xs, wt, nmax, -0.9, 0.05, 36, False)
        db, ls = make_qp_quants(scales.reshape(nb, 8), 63, sw)
        mb, lm = make_qp_quants(mins.reshape(nb, 8), 63, sw)
        if qtype == Q.Q5_K:
            ls, lm = np.minimum(63, ls), np.minimum(63, lm)
        d, dmin = f16(db), f16(mb)
    raw = _k4_scale_bytes(ls, lm)
    sc, mn = _k4_codes(raw)
    L = _requant_affine(xs.reshape(nb, 8, 32), L.reshape(nb, 8, 32), d[:, None] * sc.astype(F),
                        dmin[:, None] * mn.astype(F), nmax).reshape(nb, 256)
    out = pack(qtype, {"sc": sc, "mn": mn, "L": L, "d": d, "dmin": dmin})
    out[:, 4:16] = raw
    return out


def _q6_k(X: np.ndarray, QW: np.ndarray | None) -> np.ndarray:
    nb = X.shape[0]
    xs = X.reshape(nb * 16, 16)
    scales, L = make_qx_quants(xs, 32, None if QW is None else QW.reshape(nb * 16, 16))
    scales = scales.reshape(nb, 16)
    amax, max_scale = _signed_absmax(scales)
    zero = amax < EPS
    iscale = _div(F(-128), max_scale, ~zero)
    d = f16(_div(F(1), iscale, ~zero))
    sc = _i8(np.minimum(127, _nint(iscale[:, None] * scales)))
    dq = d[:, None] * sc.astype(F)
    L = _requant_sym(xs.reshape(nb, 16, 16), L.reshape(nb, 16, 16), dq, 32).reshape(nb, 256)
    L[zero] = 0
    sc[zero] = 0
    return pack(Q.Q6_K, {"L": L, "sc": sc, "d": np.where(zero, F(0), d)})


def _legacy_ref(X: np.ndarray, qtype: Q) -> np.ndarray:
    if qtype == Q.Q8_0:
        amax = np.abs(X).max(axis=1)
        d = amax / F(127)
        idv = _div(F(1), d, d != 0)
        v = (X * idv[:, None]).astype(np.float64)
        q = np.sign(v) * np.floor(np.abs(v) + 0.5)  # roundf: half away from zero
        return pack(qtype, {"d": f16(d), "L": q.astype(np.int64)})
    if qtype in (Q.Q4_0, Q.Q5_0):
        half = 8 if qtype == Q.Q4_0 else 16
        _, mx = _signed_absmax(X)
        d = mx / F(-half)
        idv = _div(F(1), d, d != 0)
        L = np.minimum(2 * half - 1, np.trunc(X * idv[:, None] + F(half + 0.5)).astype(np.int64))
        return pack(qtype, {"d": f16(d), "L": L})
    nmax = 15 if qtype == Q.Q4_1 else 31
    mn, mx = _first_min(X), _first_max(X)
    d = (mx - mn) / F(nmax)
    idv = _div(F(1), d, d != 0)
    L = np.trunc((X - mn[:, None]) * idv[:, None] + F(0.5)).astype(np.int64)
    if qtype == Q.Q4_1:
        L = np.minimum(15, L)
    return pack(qtype, {"d": f16(d), "m": f16(mn), "L": L & 0xFF})


def _legacy_impl(X: np.ndarray, QW: np.ndarray, sigma2: np.ndarray, qtype: Q) -> np.ndarray:
    wt = QW * np.sqrt(sigma2[:, None] + X * X)
    if qtype in (Q.Q4_0, Q.Q5_0):
        d, L = make_qx_quants(X, 8 if qtype == Q.Q4_0 else 16, wt)
        return pack(qtype, {"d": f16(d), "L": L})
    d, the_min, L = make_qkx_quants(X, wt, 15 if qtype == Q.Q4_1 else 31, -0.9, 0.05, 36, False)
    return pack(qtype, {"d": f16(d), "m": f16(-the_min), "L": L})


def _iq4_nl(X: np.ndarray, QW: np.ndarray | None) -> np.ndarray:
    vals = IQ4NL_VALUES.astype(F)
    sigma2 = _seq(X * X) * F(2.0 / 32)
    w = X * X if QW is None else QW * np.sqrt(sigma2[:, None] + X * X)
    amax, mx = _signed_absmax(X)
    zero = amax < EPS
    mx = np.where(zero, F(1), mx)

    def sums(idv: np.ndarray):
        q = vals[_best_index_iq4nl(idv[:, None] * X)]
        wq = w * q
        return _seq(wq * X), _seq(wq * q)

    d0 = -mx / F(-127)
    sumqx, sumq2 = sums(F(1) / d0)
    d = _div(sumqx, sumq2, sumq2 > 0)
    best = d * sumqx
    for t in range(-7, 8):
        sumqx, sumq2 = sums(F(t - 127) / mx)
        better = (sumq2 > 0) & (sumqx * sumqx > best * sumq2)
        d = np.where(better, _div(sumqx, sumq2, better), d)
        best = np.where(better, d * sumqx, best)
    d[zero] = 0
    idv = _div(F(1), d, d != 0)
    L = _best_index_iq4nl(idv[:, None] * X)
    return pack(Q.IQ4_NL, {"d": f16(d), "L": L})


def quantize_ggml(w: np.ndarray, qtype: Q, imatrix: np.ndarray | None) -> np.ndarray:
    """What ggml_quantize_chunk(qtype, w, ..., imatrix) writes, as (rows, row_bytes) uint8."""
    rows, n = w.shape
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    X = np.ascontiguousarray(w, dtype=F).reshape(-1, block)
    QW = None
    if imatrix is not None:
        QW = np.broadcast_to(np.asarray(imatrix, dtype=F).reshape(1, n // block, block),
                             (rows, n // block, block)).reshape(-1, block)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # as in C: IEEE results, no warnings
        out = _dispatch(X, QW, qtype, w, rows, n, block)
    return out.reshape(rows, n // block * size)


def _dispatch(X, QW, qtype, w, rows, n, block):
    if qtype == Q.Q2_K:
        out = _q2_k(X, QW)
    elif qtype == Q.Q3_K:
        out = _q3_k(X, QW)
    elif qtype in (Q.Q4_K, Q.Q5_K):
        out = _q45_k(X, QW, qtype)
    elif qtype == Q.Q6_K:
        out = _q6_k(X, QW)
    elif qtype == Q.IQ4_NL:
        out = _iq4_nl(X, QW)
    elif qtype == Q.Q8_0 or QW is None:
        out = _legacy_ref(X, qtype)
    else:
        sigma2 = _seq(np.asarray(w, dtype=F) * np.asarray(w, dtype=F)) / F(n)
        out = _legacy_impl(X, QW, np.repeat(sigma2, n // block), qtype)
    return out
