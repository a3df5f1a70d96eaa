"""Our block search ("default" mode), NumPy reference of native/kquant_search.h.

The target is the measured error: sum_i w_i (x_i - q_i)^2, with w the importance (1 without
an imatrix). ggml optimises proxies of it (|x|-weighted, x^2-weighted, mean-absolute error) and
picks each super-block's scales in one greedy pass. We keep ggml's block formats and change
the search:

  A. per sub-block, a grid of scales, each refit by weighted least squares (scale and offset),
     then Lloyd steps (re-round levels, refit) while they help;
  B. the sub-block scales are coded with a super-scale chosen by a weighted refit, where a
     sub-block's weight is how much its reconstruction moves per unit of scale (sum w L^2);
  C. joint refinement on the actual stored numbers: each sub-block tries its neighbouring
     integer scale codes with levels re-rounded, then the fp16 super-scales are refit by least
     squares over the whole super-block; repeated while the exact error falls.

Arithmetic contract with the C path (bit-identical bytes): float32 everywhere; every sum runs
over a block's elements left to right (`lsum`); rounding is ties-to-even; no fused multiply-add;
ties go to the earliest candidate. The C code keeps that order by vectorising across blocks
(one block per SIMD lane), never within a sum. Any change here must be mirrored in
native/kquant_search.h.
"""
from __future__ import annotations

import gguf
import numpy as np

from .blocks import IQ4NL_VALUES, pack

Q = gguf.GGMLQuantizationType
F = np.float32
FP16_MAX = F(65504.0)
INF = F(np.inf)


def lsum(a: np.ndarray) -> np.ndarray:
    """Sum over the last axis, left to right, in float32: the order of the C loops."""
    # "+ 0" makes an all-zero sum +0 as in C, where the accumulator starts at +0
    return np.add.accumulate(np.asarray(a, dtype=F), axis=-1, dtype=F)[..., -1] + F(0)


MAGIC = F(12582912.0)  # 1.5 * 2**23: adding and subtracting it rounds to an integer, ties to even


def _clamp(v: np.ndarray, lo, hi) -> np.ndarray:
    v = np.where(v < F(lo), F(lo), v)
    return np.where(v > F(hi), F(hi), v).astype(F)


def _round_clamp(v: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (_clamp(v, lo, hi) + MAGIC) - MAGIC


def _h(v: np.ndarray) -> np.ndarray:
    """Store as fp16 (saturating at the largest finite value) and read back."""
    return _clamp(np.asarray(v, dtype=F), -FP16_MAX, FP16_MAX).astype(np.float16).astype(F)


def _recip(v: np.ndarray) -> np.ndarray:
    """1/v where v != 0, else 0."""
    with np.errstate(all="ignore"):
        return np.where(v != 0, F(1) / np.where(v != 0, v, F(1)), F(0)).astype(F)


def _div(a: np.ndarray, b: np.ndarray, ok: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.where(ok, a / np.where(ok, b, F(1)), F(0)).astype(F)


# ---------------------------------------------------------------------------------------------
# A. continuous fit of one small block: affine (scale, offset <= 0 or free) or symmetric (scale)
# ---------------------------------------------------------------------------------------------

def _affine_fit(x, w, L, sw, swx, free_offset, exact=False):
    wl = w * L
    sl, sll, sxl = lsum(wl), lsum(wl * L), lsum(wl * x)
    D = sw * sll - sl * sl
    ok = D > 0
    s = _div(sw * sxl - swx * sl, D, ok)
    b = _div(sll * swx - sl * sxl, D, ok)
    if not free_offset:
        pos = b > 0
        b = np.where(pos, F(0), b)
        s = np.where(pos, _div(sxl, sll, pos & ok), s)
    ok = ok & (s > 0)
    if exact:  # the error itself, for types whose error is too small for the gain's float32 precision
        diff = (s[:, None] * L + b[:, None]) - x
        return s, b, -lsum((w * diff) * diff), ok
    return s, b, s * sxl + b * swx, ok  # gain: error = sum w x^2 - gain


def fit_affine(x: np.ndarray, w: np.ndarray, nmax: int, grid: np.ndarray, lloyd: int, free_offset: bool,
               exact: bool = False):
    """Best (scale s > 0, offset b) with levels in [0, nmax] for each row of x: q = s*L + b.

    Candidates are ranked by their gain (sum w x^2 minus the error, from the fit's sums) or, with
    `exact`, by the error summed explicitly: slower, but exact where the error is tiny next to
    sum w x^2 (high-bit types, extreme importance, grids recovered from a requantized file).
    """
    xmax = x.max(axis=1) + F(0)
    lo = x.min(axis=1) + F(0)
    if not free_offset:
        lo = np.where(lo < 0, lo, F(0))
    span = xmax - lo
    flat = span <= 0
    span = np.where(flat, F(1), span)
    sw, swx = lsum(w), lsum(w * x)
    s = span / F(nmax)
    b = lo
    gain = np.full(x.shape[0], -INF, dtype=F)
    xl = x - lo[:, None]
    for r in grid:
        iscale = (F(nmax) + F(r)) / span
        L = _round_clamp(xl * iscale[:, None], 0, nmax)
        s1, b1, g1, ok = _affine_fit(x, w, L, sw, swx, free_offset, exact)
        better = ok & (g1 > gain)
        s, b, gain = np.where(better, s1, s), np.where(better, b1, b), np.where(better, g1, gain)
    for _ in range(lloyd):
        L = _round_clamp((x - b[:, None]) * _recip(s)[:, None], 0, nmax)
        s1, b1, g1, ok = _affine_fit(x, w, L, sw, swx, free_offset, exact)
        better = ok & (g1 > gain)
        s, b, gain = np.where(better, s1, s), np.where(better, b1, b), np.where(better, g1, gain)
    s = np.where(flat, F(0), s)
    b = np.where(flat, lo, b)
    return s, b


def fit_symmetric(x: np.ndarray, w: np.ndarray, nh: int, grid: np.ndarray, lloyd: int, exact: bool = False):
    """Best signed scale s with levels in [-nh, nh-1] for each row of x: q = s*L (ranking as fit_affine)."""
    ax = np.abs(x)
    i = np.argmax(ax, axis=1)
    mx = x[np.arange(x.shape[0]), i]
    flat = ax.max(axis=1) == 0
    mx = np.where(flat, F(1), mx)
    s = mx / F(-nh)
    gain = np.full(x.shape[0], -INF, dtype=F)
    wx = w * x

    def fit(L):
        sxl, sll = lsum(wx * L), lsum((w * L) * L)
        ok = sll > 0
        s1 = _div(sxl, sll, ok)
        if exact:
            diff = s1[:, None] * L - x
            return s1, -lsum((w * diff) * diff), ok & (s1 != 0)
        return s1, s1 * sxl, ok & (s1 != 0)

    for r in grid:
        iscale = -(F(nh) + F(r)) / mx
        L = _round_clamp(x * iscale[:, None], -nh, nh - 1)
        s1, g1, ok = fit(L)
        better = ok & (g1 > gain)
        s, gain = np.where(better, s1, s), np.where(better, g1, gain)
    for _ in range(lloyd):
        L = _round_clamp(x * _recip(s)[:, None], -nh, nh - 1)
        s1, g1, ok = fit(L)
        better = ok & (g1 > gain)
        s, gain = np.where(better, s1, s), np.where(better, g1, gain)
    return np.where(flat, F(0), s)


# ---------------------------------------------------------------------------------------------
# B. code a set of sub-block scales with one fp16 super-scale
# ---------------------------------------------------------------------------------------------

def code_scales(v: np.ndarray, W: np.ndarray, cmin: int, cmax: int, tries: tuple[float, ...]) -> np.ndarray:
    """fp16 super-scale d minimising sum_j W_j (v_j - d*c_j)^2, c_j = round(v_j/d) in [cmin, cmax].

    Unsigned codes map the largest v to cmax; signed codes map the largest |v| to cmin (the
    longer side). Each try shrinks that end by t, then two weighted least-squares refits.
    """
    if cmin < 0:
        ai = np.argmax(np.abs(v), axis=1)
        anchor = v[np.arange(v.shape[0]), ai]
        ends = [F(cmin) + F(t) for t in tries]
    else:
        vmax = v.max(axis=1)
        anchor = np.where(vmax > 0, vmax, F(0))
        ends = [F(cmax) - F(t) for t in tries]
    best_d = np.zeros(v.shape[0], dtype=F)
    best_e = np.full(v.shape[0], INF, dtype=F)
    for end in ends:
        d = anchor / end
        for _ in range(2):
            c = _round_clamp(v * _recip(d)[:, None], cmin, cmax)
            wc = W * c
            den = lsum(wc * c)
            d = np.where(den > 0, _div(lsum(wc * v), den, den > 0), d)
        d = _h(d)
        c = _round_clamp(v * _recip(d)[:, None], cmin, cmax)
        diff = v - d[:, None] * c
        e = lsum((W * diff) * diff)
        better = e < best_e
        best_d, best_e = np.where(better, d, best_d), np.where(better, e, best_e)
    return best_d


# ---------------------------------------------------------------------------------------------
# C. refinement on the stored numbers, per super-block
# ---------------------------------------------------------------------------------------------

# Neighbouring (scale code, min code) steps tried per sub-block; the first is "keep".
STEPS_AFFINE = ((0, 0), (-1, 0), (0, -1), (0, 1), (1, 0), (-2, 0), (-1, -1), (-1, 1), (0, -2), (0, 2),
                (1, -1), (1, 1), (2, 0), (-2, -1), (-2, 1), (-1, -2), (-1, 2), (1, -2), (1, 2), (2, -1),
                (2, 1), (-2, -2), (-2, 2), (2, -2), (2, 2))
STEPS_SYM = (0, -1, 1, -2, 2)
# Q3_K's levels (-4..3) are asymmetric: a sub-block may fit better with its scale's sign flipped,
# which no small step reaches (with a real imatrix: 0.961 vs 0.966 of ggml's error, median tensor)
FLIP_SYM = (0, -1, 1)


def _levels_affine(xs, ws, ds, dm, nmax):
    """Levels and weighted error of every sub-block for sub-block scales ds and offsets dm."""
    L = _round_clamp((xs + dm[..., None]) * _recip(ds)[..., None], 0, nmax)
    diff = (ds[..., None] * L - dm[..., None]) - xs
    return L, lsum((ws * diff) * diff)


def _levels_sym(xs, ws, ds, nh):
    L = _round_clamp(xs * _recip(ds)[..., None], -nh, nh - 1)
    diff = ds[..., None] * L - xs
    return L, lsum((ws * diff) * diff)


def _pick_codes_affine(xs, ws, d, dmin, sc0, mn0, nmax, cmax, nsteps=len(STEPS_AFFINE)):
    best = None
    for a, b in STEPS_AFFINE[:nsteps]:
        sc = _clamp(sc0 + F(a), 0, cmax)
        mn = _clamp(mn0 + F(b), 0, cmax)
        L, e = _levels_affine(xs, ws, d[:, None] * sc, dmin[:, None] * mn, nmax)
        if best is None:
            best = [sc, mn, L, e]
            continue
        t = e < best[3]
        best = [np.where(t, sc, best[0]), np.where(t, mn, best[1]), np.where(t[..., None], L, best[2]),
                np.where(t, e, best[3])]
    return best


def _pick_codes_sym(xs, ws, d, sc0, nh, cmin, cmax, flip=False):
    best = None
    cands = [(F(1), a) for a in STEPS_SYM] + ([(F(-1), a) for a in FLIP_SYM] if flip else [])
    for sign, a in cands:
        sc = _clamp(sign * sc0 + F(a), cmin, cmax)
        L, e = _levels_sym(xs, ws, d[:, None] * sc, nh)
        if best is None:
            best = [sc, L, e]
            continue
        t = e < best[2]
        best = [np.where(t, sc, best[0]), np.where(t[..., None], L, best[1]), np.where(t, e, best[2])]
    return best


def _refit_affine(X, Wt, sc, mn, L, d, dmin):
    """Least-squares fp16 (d, dmin) for fixed codes and levels: x ~ d*(sc*L) - dmin*mn."""
    nb = X.shape[0]
    a = (sc[..., None] * L).reshape(nb, -1)
    bb = np.broadcast_to(mn[..., None], L.shape).reshape(nb, -1)
    wa, wb = Wt * a, Wt * bb
    saa, sab, sbb = lsum(wa * a), lsum(wa * bb), lsum(wb * bb)
    sxa, sxb = lsum(wa * X), lsum(wb * X)
    det = saa * sbb - sab * sab
    ok = det > 0
    nd = _div(sxa * sbb - sab * sxb, det, ok)
    nm = _div(sxa * sab - saa * sxb, det, ok)
    alone = ~ok | (nm < 0)  # no usable min term: scale alone, min kept (or zero if it went negative)
    nd = np.where(alone, _div(sxa, saa, saa > 0), nd)
    nm = np.where(alone, np.where(ok, F(0), dmin), nm)
    good = nd > 0
    return np.where(good, _h(nd), d), np.where(good, _h(nm), dmin)


def _refit_sym(X, Wt, sc, L, d):
    nb = X.shape[0]
    a = (sc[..., None] * L).reshape(nb, -1)
    wa = Wt * a
    saa, sxa = lsum(wa * a), lsum(wa * X)
    nd = _div(sxa, saa, saa > 0)
    return np.where(nd != 0, _h(nd), d)


# ---------------------------------------------------------------------------------------------
# per-type drivers: X, Wt (nblocks, block_len) -> packed bytes
# ---------------------------------------------------------------------------------------------

def _grid(segments: tuple[tuple[float, float, int], ...]) -> list[np.float32]:
    """Grid offsets r0 + dr*k, k < n, for each (r0, dr, n) segment, in float32 as C computes them."""
    return [F(r0) + F(dr) * F(k) for r0, dr, n in segments for k in range(n)]


# Search settings per type: (grid start, grid step, grid points, Lloyd steps, refinement rounds)
# A wide grid matters: with 16-32 weights per sub-block the error is a jagged function of the
# scale, so every extra candidate is another chance at a lucky alignment (and already-quantized
# inputs get their grid back). Negative offsets map the extreme weight to fewer levels, positive
# ones clip it. Measured on SmolLM2 / Gemma-3 weights: see bench/bench_quant_error.py.
# The integer offsets of the last segment map the block onto K = nmax + r levels exactly, so a
# block that came from a coarser grid (a requantized file) is recovered without error.
GRID_4 = ((-1.0, 0.1, 21), (-8.0, 0.5, 14), (1.0, 0.25, 12), (-14.0, 1.0, 6))
GRID_5 = ((-1.0, 0.1, 21), (-16.0, 0.5, 30), (1.0, 0.5, 16), (-30.0, 1.0, 14))
SETTINGS = {  # (grid segments (r0, dr, n), Lloyd steps, refinement rounds)
    Q.Q2_K: (((-2.0, 0.2, 21),), 2, 3),
    Q.Q3_K: (((-3.0, 0.4, 18),), 1, 2),
    Q.Q4_K: (((-1.0, 0.2, 11), (-8.0, 0.5, 14), (1.0, 0.5, 6)), 2, 3),
    Q.Q5_K: (GRID_5, 2, 3),
    Q.Q6_K: (((-1.0, 0.2, 11), (-16.0, 0.5, 30), (1.0, 1.0, 8)), 1, 2),
    Q.Q4_0: (GRID_4, 2, 0),
    Q.Q5_0: (GRID_5, 2, 0),
    Q.Q8_0: (GRID_4, 2, 0),
    Q.Q4_1: (GRID_4, 2, 0),
    Q.Q5_1: (GRID_5, 2, 0),
    Q.IQ4_NL: (((-20.0, 1.0, 41),), 2, 0),
}
# The 32-weight types by default try a narrow grid: on weights that never sat on a coarser grid the
# wide one finds almost nothing more (Q5_0: 0.882 vs 0.881 of ggml's error, median SmolLM2 tensor
# with noise added) at six times the cost; Q8_0 tries five scales (0.90 of ggml's error, 0.75 with
# the wide grid; either is far below the other types' error). "best" mode keeps the wide grids.
GRID_NARROW = ((-1.0, 0.2, 11), (-3.0, 1.0, 2))
SETTINGS_BEST = dict(SETTINGS)
SETTINGS = {**SETTINGS, **{t: (GRID_NARROW, 1, 0) for t in (Q.Q4_0, Q.Q5_0, Q.Q4_1, Q.Q5_1)},
            Q.Q8_0: (((-0.5, 0.25, 5),), 1, 0)}
CODE_TRIES = (0.0, 0.5, 1.0, 2.0)

_K_AFFINE = {Q.Q2_K: (16, 3, 15), Q.Q4_K: (32, 15, 63), Q.Q5_K: (32, 31, 63)}  # sub-block, nmax, cmax
_K_SYM = {Q.Q3_K: (4, -32, 31), Q.Q6_K: (32, -128, 127)}  # half range, code range


def _q2_polish(xs, ws, d, dmin, sc, mn, L):
    """Q2_K only, after C (dmin kept): the super-scales that put the block's costliest weight
    (largest w*x^2) exactly on its level, with its scale code moved -1..1, each with every
    sub-block's codes re-picked one step around their current scale; then, for the best d,
    every scale code per sub-block with the min code kept or moved by one. A candidate
    replaces the block only if strictly better (see _q3_polish)."""
    nb = xs.shape[0]
    s, dm0 = d[:, None] * sc, dmin[:, None] * mn
    diff = (s[..., None] * L - dm0[..., None]) - xs
    e = lsum((ws * diff) * diff)
    total = lsum(e)
    X, Wt, Lf = xs.reshape(nb, 256), ws.reshape(nb, 256), L.reshape(nb, 256)
    v = (Wt * X) * X
    i = np.argmax(np.where(v == v, v, -INF), axis=1)
    r = np.arange(nb)
    xa, ca, ma, la = X[r, i], sc[r, i // 16], mn[r, i // 16], Lf[r, i]
    xm = xa + dmin * ma
    for kc in (-1, 0, 1):
        den = (ca + F(kc)) * la
        with np.errstate(all="ignore"):
            dc = _h(np.where(den != 0, xm / np.where(den != 0, den, F(1)), d).astype(F))
        sc0 = _round_clamp(s * _recip(dc)[:, None], 0, 15)
        sc2, mn2, L2, e2 = _pick_codes_affine(xs, ws, dc, dmin, sc0, mn, 3, 15, 5)
        t2 = lsum(e2)
        k = t2 < total
        d, total = np.where(k, dc, d), np.where(k, t2, total)
        sc, mn, e = np.where(k[:, None], sc2, sc), np.where(k[:, None], mn2, mn), np.where(k[:, None], e2, e)
        L = np.where(k[:, None, None], L2, L)
    mnr = mn
    for a in range(16):
        for b in (-1, 0, 1):
            scc = np.full(sc.shape, F(a), dtype=F)
            mnc = _clamp(mnr + F(b), 0, 15)
            Lc, ec = _levels_affine(xs, ws, d[:, None] * scc, dmin[:, None] * mnc, 3)
            t = ec < e
            e, sc, mn = np.where(t, ec, e), np.where(t, scc, sc), np.where(t, mnc, mn)
            L = np.where(t[..., None], Lc, L)
    return d, sc, mn, L


def _k_affine(X, Wt, qtype, settings):
    n, nmax, cmax = _K_AFFINE[qtype]
    grid, lloyd, rounds = settings[qtype]
    nb = X.shape[0]
    ns = 256 // n
    xs, ws = X.reshape(nb, ns, n), Wt.reshape(nb, ns, n)
    s, b = fit_affine(xs.reshape(-1, n), ws.reshape(-1, n), nmax, _grid(grid), lloyd, False)
    L = _round_clamp((xs.reshape(-1, n) - b[:, None]) * _recip(s)[:, None], 0, nmax)
    Ws = lsum((ws.reshape(-1, n) * L) * L).reshape(nb, ns)
    Wm = lsum(ws.reshape(-1, n)).reshape(nb, ns)
    s, m = s.reshape(nb, ns), (-b).reshape(nb, ns)
    d = code_scales(s, Ws, 0, cmax, CODE_TRIES)
    dmin = code_scales(m, Wm, 0, cmax, CODE_TRIES)
    sc = _round_clamp(s * _recip(d)[:, None], 0, cmax)
    mn = _round_clamp(m * _recip(dmin)[:, None], 0, cmax)
    sc, mn, L, e = _pick_codes_affine(xs, ws, d, dmin, sc, mn, nmax, cmax)
    total = lsum(e)
    for _ in range(rounds):
        d2, dmin2 = _refit_affine(X, Wt, sc, mn, L, d, dmin)
        sc2, mn2, L2, e2 = _pick_codes_affine(xs, ws, d2, dmin2, sc, mn, nmax, cmax)
        t2 = lsum(e2)
        k = t2 < total
        d, dmin, total = np.where(k, d2, d), np.where(k, dmin2, dmin), np.where(k, t2, total)
        sc, mn = np.where(k[:, None], sc2, sc), np.where(k[:, None], mn2, mn)
        L = np.where(k[:, None, None], L2, L)
    if qtype == Q.Q2_K and settings is SETTINGS_BEST:   # 1.5x slower; whole-model gain only with an imatrix
        d, sc, mn, L = _q2_polish(xs, ws, d, dmin, sc, mn, L)
    p = {"d": d, "dmin": dmin, "sc": sc.astype(np.int64), "mn": mn.astype(np.int64),
         "L": L.reshape(nb, 256).astype(np.int64)}
    return p


def _fp16_step(v: np.ndarray, k: int) -> np.ndarray:
    """v (an fp16 value) moved k fp16 steps in magnitude, same sign, within [0, 65504]."""
    bits = _h(v).astype(np.float16).view(np.uint16).astype(np.int32)
    mag = np.clip((bits & 0x7FFF) + k, 0, 0x7BFF)
    return (mag | (bits & 0x8000)).astype(np.uint16).view(np.float16).astype(F)


def _q3_polish(xs, ws, d, sc, L):
    """D. Q3_K only: more fp16 super-scales, then every code of every sub-block.

    After C the super-scale is a least-squares one; with a real imatrix a block's error can be
    dominated by one weight, which the best block the format allows puts (nearly) exactly on a
    level (bench/bench_q3k_bound.py). Candidates: d moved 1-3 fp16 steps, and the super-scales
    that put the block's costliest weight (largest w*x^2) exactly on its level with its code
    moved -2..2 (and their fp16 neighbours); each with every sub-block's code re-picked near its
    current scale. Then, for the best d, every one of the 64 codes per sub-block (the best codes
    for a fixed d, given nearest levels). A candidate replaces the block only if strictly better.
    """
    nh, cmin, cmax = 4, -32, 31
    nb = xs.shape[0]
    s = d[:, None] * sc
    e = lsum((ws * (s[..., None] * L - xs)) * (s[..., None] * L - xs))
    total = lsum(e)
    X, Wt, Lf = xs.reshape(nb, 256), ws.reshape(nb, 256), L.reshape(nb, 256)
    v = (Wt * X) * X
    i = np.argmax(np.where(v == v, v, -INF), axis=1)
    r = np.arange(nb)
    xa, ca, la = X[r, i], sc[r, i // 16], Lf[r, i]
    cands = []
    for k in (1, 2, 3):
        cands += [_fp16_step(d, -k), _fp16_step(d, k)]
    for kc in (-2, -1, 0, 1, 2):
        den = (ca + F(kc)) * la
        with np.errstate(all="ignore"):
            base = _h(np.where(den != 0, xa / np.where(den != 0, den, F(1)), d).astype(F))
        cands += [base, _fp16_step(base, -1), _fp16_step(base, 1)]
    for dc in cands:
        sc0 = _round_clamp(s * _recip(dc)[:, None], cmin, cmax)
        sc2, L2, e2 = _pick_codes_sym(xs, ws, dc, sc0, nh, cmin, cmax)
        t2 = lsum(e2)
        k = t2 < total
        d, total = np.where(k, dc, d), np.where(k, t2, total)
        sc, e = np.where(k[:, None], sc2, sc), np.where(k[:, None], e2, e)
        L = np.where(k[:, None, None], L2, L)
    for c in range(cmin, cmax + 1):
        ds = np.broadcast_to((d * F(c))[:, None], sc.shape)
        Lc, ec = _levels_sym(xs, ws, ds, nh)
        t = ec < e
        e, sc = np.where(t, ec, e), np.where(t, F(c), sc)
        L = np.where(t[..., None], Lc, L)
    return d, sc, L


def _k_sym(X, Wt, qtype, settings):
    nh, cmin, cmax = _K_SYM[qtype]
    grid, lloyd, rounds = settings[qtype]
    nb = X.shape[0]
    xs, ws = X.reshape(nb, 16, 16), Wt.reshape(nb, 16, 16)
    s = fit_symmetric(xs.reshape(-1, 16), ws.reshape(-1, 16), nh, _grid(grid), lloyd, qtype == Q.Q6_K)
    L = _round_clamp(xs.reshape(-1, 16) * _recip(s)[:, None], -nh, nh - 1)
    Ws = lsum((ws.reshape(-1, 16) * L) * L).reshape(nb, 16)
    s = s.reshape(nb, 16)
    d = code_scales(s, Ws, cmin, cmax, CODE_TRIES)
    sc = _round_clamp(s * _recip(d)[:, None], cmin, cmax)
    flip = qtype == Q.Q3_K
    sc, L, e = _pick_codes_sym(xs, ws, d, sc, nh, cmin, cmax, flip)
    total = lsum(e)
    for _ in range(rounds):
        d2 = _refit_sym(X, Wt, sc, L, d)
        sc2, L2, e2 = _pick_codes_sym(xs, ws, d2, sc, nh, cmin, cmax, flip)
        t2 = lsum(e2)
        k = t2 < total
        d, total = np.where(k, d2, d), np.where(k, t2, total)
        sc = np.where(k[:, None], sc2, sc)
        L = np.where(k[:, None, None], L2, L)
    if qtype == Q.Q3_K and settings is SETTINGS_BEST:   # 5x slower
        d, sc, L = _q3_polish(xs, ws, d, sc, L)
    sc = sc.astype(np.int64)
    return {"d": d, "sc": sc - cmin if qtype == Q.Q3_K else sc, "L": L.reshape(nb, 256).astype(np.int64) + nh}


def _fp16_neighbours(v: np.ndarray) -> list[np.ndarray]:
    """fp16(v) and the fp16 values one step below and above it in magnitude (same sign)."""
    h = _h(v)
    bits = h.astype(np.float16).view(np.uint16).astype(np.int32)
    mag, sign = bits & 0x7FFF, bits & 0x8000
    down = np.where(mag > 0, mag - 1, mag) | sign
    up = np.where(mag < 0x7BFF, mag + 1, mag) | sign
    conv = [x.astype(np.uint16).view(np.float16).astype(F) for x in (down, up)]
    return [h, conv[0], conv[1]]


def _legacy_sym(X, Wt, qtype, settings):
    nh = {Q.Q4_0: 8, Q.Q5_0: 16, Q.Q8_0: 128}[qtype]
    grid, lloyd, _ = settings[qtype]
    s = fit_symmetric(X, Wt, nh, _grid(grid), lloyd, True)
    best = None
    for d in _fp16_neighbours(s):
        L, e = _levels_sym(X, Wt, d, nh)
        if best is None:
            best = [d, L, e]
            continue
        t = e < best[2]
        best = [np.where(t, d, best[0]), np.where(t[:, None], L, best[1]), np.where(t, e, best[2])]
    L = best[1].astype(np.int64)
    return {"d": best[0], "L": L if qtype == Q.Q8_0 else L + nh}


def _legacy_affine(X, Wt, qtype, settings):
    nmax = 15 if qtype == Q.Q4_1 else 31
    grid, lloyd, _ = settings[qtype]
    s, b = fit_affine(X, Wt, nmax, _grid(grid), lloyd, True, True)
    # Same fit, lowest level moved to 0: the offset becomes a data value, which fp16 can often hold
    # exactly (a block from a coarser file is then recovered without error).
    low = _round_clamp((X - b[:, None]) * _recip(s)[:, None], 0, nmax).min(axis=1)
    b = b + low * s
    best = None
    for d in _fp16_neighbours(s):
        for m in _fp16_neighbours(b):
            L = _round_clamp((X - m[:, None]) * _recip(d)[:, None], 0, nmax)
            diff = (L * d[:, None] + m[:, None]) - X
            e = lsum((Wt * diff) * diff)
            if best is None:
                best = [d, m, L, e]
                continue
            t = e < best[3]
            best = [np.where(t, d, best[0]), np.where(t, m, best[1]), np.where(t[:, None], L, best[2]),
                    np.where(t, e, best[3])]
    return {"d": best[0], "m": best[1], "L": best[2].astype(np.int64)}


_IQ4_MID = ((IQ4NL_VALUES[:-1].astype(F) + IQ4NL_VALUES[1:].astype(F)) * F(0.5)).astype(F)
_IQ4_VALS = IQ4NL_VALUES.astype(F)


def _iq4_index(v: np.ndarray) -> np.ndarray:
    """Nearest IQ4_NL grid index (ties upward): how many midpoints v reaches."""
    idx = np.zeros(v.shape, dtype=np.int64)
    for mid in _IQ4_MID:
        idx += v >= mid
    return idx


def _iq4_nl(X, Wt, settings):
    grid, lloyd, _ = settings[Q.IQ4_NL]
    ax = np.abs(X)
    i = np.argmax(ax, axis=1)
    mx = X[np.arange(X.shape[0]), i]
    flat = ax.max(axis=1) == 0
    mx = np.where(flat, F(1), mx)
    wx = Wt * X
    d = mx / _IQ4_VALS[15]
    gain = np.full(X.shape[0], -INF, dtype=F)

    def fit(idv):
        q = _IQ4_VALS[_iq4_index(X * idv[:, None])]
        sqx, sqq = lsum(wx * q), lsum((Wt * q) * q)
        ok = sqq > 0
        d1 = _div(sqx, sqq, ok)
        diff = d1[:, None] * q - X
        return d1, -lsum((Wt * diff) * diff), ok & (d1 != 0)

    ends = [_IQ4_VALS[0] + r for r in _grid(grid)] + [_IQ4_VALS[15] - r for r in _grid(grid)]
    for end in ends:
        d1, g1, ok = fit(end / mx)
        better = ok & (g1 > gain)
        d, gain = np.where(better, d1, d), np.where(better, g1, gain)
    for _ in range(lloyd):
        d1, g1, ok = fit(_recip(d))
        better = ok & (g1 > gain)
        d, gain = np.where(better, d1, d), np.where(better, g1, gain)
    d = np.where(flat, F(0), d)
    best = None
    for dh in _fp16_neighbours(d):
        L = _iq4_index(X * _recip(dh)[:, None])
        diff = dh[:, None] * _IQ4_VALS[L] - X
        e = lsum((Wt * diff) * diff)
        if best is None:
            best = [dh, L, e]
            continue
        t = e < best[2]
        best = [np.where(t, dh, best[0]), np.where(t[:, None], L, best[1]), np.where(t, e, best[2])]
    return {"d": best[0], "L": best[1]}


def block_params(X: np.ndarray, Wt: np.ndarray, qtype: Q, best: bool = False) -> dict[str, np.ndarray]:
    """Our block parameters for blocks X (nblocks, block_len) under weights Wt (same shape)."""
    X = np.ascontiguousarray(X, dtype=F)
    Wt = np.ascontiguousarray(Wt, dtype=F)
    settings = SETTINGS_BEST if best else SETTINGS
    if qtype in _K_AFFINE:
        return _k_affine(X, Wt, qtype, settings)
    if qtype in _K_SYM:
        return _k_sym(X, Wt, qtype, settings)
    if qtype in (Q.Q4_0, Q.Q5_0, Q.Q8_0):
        return _legacy_sym(X, Wt, qtype, settings)
    if qtype in (Q.Q4_1, Q.Q5_1):
        return _legacy_affine(X, Wt, qtype, settings)
    if qtype == Q.IQ4_NL:
        return _iq4_nl(X, Wt, settings)
    raise ValueError(f"no search for {qtype!r}")


def quantize_search(w: np.ndarray, qtype: Q, weights: np.ndarray | None, best: bool = False) -> np.ndarray:
    """Our quantization of w (rows, n) with per-column weights (n,) or None: (rows, row_bytes)."""
    rows, n = w.shape
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    X = np.ascontiguousarray(w, dtype=F).reshape(-1, block)
    if weights is None:
        Wt = np.ones_like(X)
    else:
        Wt = np.broadcast_to(np.asarray(weights, dtype=F).reshape(1, n // block, block),
                             (rows, n // block, block)).reshape(-1, block)
    with np.errstate(over="ignore", invalid="ignore"):  # absurd magnitudes overflow as in C; blocks stay finite
        return pack(qtype, block_params(X, Wt, qtype, best)).reshape(rows, n // block * size)
