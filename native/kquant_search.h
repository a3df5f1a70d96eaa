/* Our block search ("default" mode): the C twin of gguf_tools/quantize/search.py.
 *
 * Included once per instruction set (kquant.c defines KQ_SFX and the target): the same source
 * gives identical results everywhere because nothing is reassociated or fused. Vectorisation
 * is across blocks: `vf` holds one float of NL blocks (super-blocks) side by side, arrays are
 * [element] of vf, and each lane sums its own elements in order, exactly as the NumPy
 * reference does. Read search.py for the algorithm and the why.
 */
#define KQ_CAT2(a, b) a##b
#define KQ_CAT(a, b) KQ_CAT2(a, b)
#define S(name) KQ_CAT(name, KQ_SFX)
#define KQ_INL static inline __attribute__((always_inline))

#ifndef KQ_SEARCH_ONCE
#define KQ_SEARCH_ONCE
#define NL 8
#define KQ_MAGIC 12582912.0f /* 1.5 * 2^23: adding and subtracting it rounds to an integer, ties to even */

typedef float vf __attribute__((vector_size(4 * NL)));
typedef int32_t vi __attribute__((vector_size(4 * NL)));

typedef struct { float r0, dr; int n; } kq_seg;
typedef struct { kq_seg seg[4]; int nseg, lloyd, rounds; } kq_cfg;

/* mirror of search.SETTINGS (wide: search.SETTINGS_BEST, where it differs) */
#define KQ_GRID4 {{-1.0f, 0.1f, 21}, {-8.0f, 0.5f, 14}, {1.0f, 0.25f, 12}, {-14.0f, 1.0f, 6}}, 4
#define KQ_GRID5 {{-1.0f, 0.1f, 21}, {-16.0f, 0.5f, 30}, {1.0f, 0.5f, 16}, {-30.0f, 1.0f, 14}}, 4
#define KQ_GRID_NARROW {{-1.0f, 0.2f, 11}, {-3.0f, 1.0f, 2}}, 2
static kq_cfg kq_config(int type, int wide) {
    kq_cfg c;
    memset(&c, 0, sizeof c);
    if (!wide && type == GGML_TYPE_Q8_0) {
        c = (kq_cfg){{{-0.5f, 0.25f, 5}}, 1, 1, 0};
        return c;
    }
    if (!wide &&
        (type == GGML_TYPE_Q4_0 || type == GGML_TYPE_Q5_0 || type == GGML_TYPE_Q4_1 || type == GGML_TYPE_Q5_1)) {
        c = (kq_cfg){KQ_GRID_NARROW, 1, 0};
        return c;
    }
    switch (type) {
    case GGML_TYPE_Q2_K: c = (kq_cfg){{{-2.0f, 0.2f, 21}}, 1, 2, 3}; break;
    case GGML_TYPE_Q3_K: c = (kq_cfg){{{-3.0f, 0.4f, 18}}, 1, 1, 2}; break;
    case GGML_TYPE_Q4_K: c = (kq_cfg){{{-1.0f, 0.2f, 11}, {-8.0f, 0.5f, 14}, {1.0f, 0.5f, 6}}, 3, 2, 3}; break;
    case GGML_TYPE_Q5_K: c = (kq_cfg){KQ_GRID5, 2, 3}; break;
    case GGML_TYPE_Q6_K: c = (kq_cfg){{{-1.0f, 0.2f, 11}, {-16.0f, 0.5f, 30}, {1.0f, 1.0f, 8}}, 3, 1, 2}; break;
    case GGML_TYPE_Q4_0: c = (kq_cfg){KQ_GRID4, 2, 0}; break;
    case GGML_TYPE_Q5_0: c = (kq_cfg){KQ_GRID5, 2, 0}; break;
    case GGML_TYPE_Q8_0: c = (kq_cfg){KQ_GRID4, 2, 0}; break;
    case GGML_TYPE_Q4_1: c = (kq_cfg){KQ_GRID4, 2, 0}; break;
    case GGML_TYPE_Q5_1: c = (kq_cfg){KQ_GRID5, 2, 0}; break;
    case GGML_TYPE_IQ4_NL: c = (kq_cfg){{{-20.0f, 1.0f, 41}}, 1, 2, 0}; break;
    default: break;
    }
    return c;
}

#define KQ_MAX_GRID 128
static int kq_grid(const kq_cfg *c, float *g) {
    int n = 0;
    for (int s = 0; s < c->nseg; ++s)
        for (int k = 0; k < c->seg[s].n && n < KQ_MAX_GRID; ++k) g[n++] = c->seg[s].r0 + c->seg[s].dr * (float)k;
    return n;
}

static const float KQ_TRIES[4] = {0.0f, 0.5f, 1.0f, 2.0f};
static const signed char KQ_STEPS_AFF[25][2] = {
    {0, 0}, {-1, 0}, {0, -1}, {0, 1}, {1, 0}, {-2, 0}, {-1, -1}, {-1, 1}, {0, -2}, {0, 2}, {1, -1}, {1, 1}, {2, 0},
    {-2, -1}, {-2, 1}, {-1, -2}, {-1, 2}, {1, -2}, {1, 2}, {2, -1}, {2, 1}, {-2, -2}, {-2, 2}, {2, -2}, {2, 2}};
static const signed char KQ_STEPS_SYM[5] = {0, -1, 1, -2, 2};
static const signed char KQ_FLIP_SYM[3] = {0, -1, 1};

/* Per-lane block parameters a search produces (floats holding integers for codes and levels). */
typedef struct {
    vf d, dmin;
    vf sc[16], mn[16];
    vf L[256];
    int wide; /* input: the wider, slower search (mode "best") */
} kq_params;
#endif

/* ---- lane-wise helpers ---- */

KQ_INL vf S(splat)(float x) { return (vf){x, x, x, x, x, x, x, x}; } /* NL == 8 */
KQ_INL vf S(sel)(vi m, vf a, vf b) { return (vf)((m & (vi)a) | (~m & (vi)b)); }
/* bounds are vectors made once outside the loops (GCC does not always hoist a splat) */
KQ_INL vf S(clampv)(vf v, vf lo, vf hi) {
#if defined(__AVX__) && !defined(__clang__)
    /* max/min give the same values as the selects below (they differ only in the sign of an
       equal zero, which the callers never see: rounding turns -0 into +0, codes are never -0) */
    return __builtin_ia32_minps256(__builtin_ia32_maxps256(v, lo), hi);
#else
    v = S(sel)(v < lo, lo, v);
    return S(sel)(v > hi, hi, v);
#endif
}
KQ_INL vf S(rc)(vf v, vf lo, vf hi) { return (S(clampv)(v, lo, hi) + KQ_MAGIC) - KQ_MAGIC; }
KQ_INL vf S(recip)(vf v) { return S(sel)(v != 0.0f, 1.0f / v, S(splat)(0.0f)); }
KQ_INL vf S(vabs)(vf v) { return (vf)((vi)v & 0x7FFFFFFF); }
/* a / b in lanes where m, else `other` (the quotient in other lanes is computed and dropped) */
KQ_INL vf S(divsel)(vi m, vf a, vf b, vf other) { return S(sel)(m, a / S(sel)(m, b, S(splat)(1.0f)), other); }

KQ_INL vf S(h16)(vf v) {
    v = S(clampv)(v, S(splat)(-65504.0f), S(splat)(65504.0f));
    for (int k = 0; k < NL; ++k) v[k] = fp16_to_fp32(fp32_to_fp16(v[k]));
    return v;
}

/* fp16(v), and the fp16 values one step below and above it in magnitude (same sign) */
static void S(nb16)(const vf *vp, vf out[3]) {
    vf v = *vp;
    v = S(clampv)(v, S(splat)(-65504.0f), S(splat)(65504.0f));
    for (int k = 0; k < NL; ++k) {
        const uint16_t hb = fp32_to_fp16(v[k]);
        const uint16_t mag = hb & 0x7FFF, sign = hb & 0x8000;
        out[0][k] = fp16_to_fp32(hb);
        out[1][k] = fp16_to_fp32((uint16_t)((mag > 0 ? mag - 1 : mag) | sign));
        out[2][k] = fp16_to_fp32((uint16_t)((mag < 0x7BFF ? mag + 1 : mag) | sign));
    }
}

/* ---- A. continuous fits of n-element blocks ---- */

/* exact: rank candidates by their explicitly summed error rather than by the gain (search.py) */
static void S(fit_affine)(const vf *x, const vf *w, int n, int nmax, const float *grid, int ngrid, int lloyd,
                          int free_off, int exact, vf *s_out, vf *b_out) {
    const vf V0 = S(splat)(0.0f), VNMAX = S(splat)((float)nmax);
    vf xmax = x[0], lo = x[0], sw = S(splat)(0.0f), swx = S(splat)(0.0f);
    vf L[32];
    for (int i = 1; i < n; ++i) {
        xmax = S(sel)(x[i] > xmax, x[i], xmax);
        lo = S(sel)(x[i] < lo, x[i], lo);
    }
    for (int i = 0; i < n; ++i) {
        sw += w[i];
        swx += w[i] * x[i];
    }
    xmax = xmax + 0.0f;
    lo = lo + 0.0f;
    if (!free_off) lo = S(sel)(lo < 0.0f, lo, S(splat)(0.0f));
    vf span = xmax - lo;
    const vi flat = span <= 0.0f;
    span = S(sel)(flat, S(splat)(1.0f), span);
    vf s = span / (float)nmax, b = lo, gain = S(splat)(-INFINITY);
    for (int g = 0; g < ngrid + lloyd; ++g) {
        if (g < ngrid) {
            const vf isc = ((float)nmax + grid[g]) / span;
            for (int i = 0; i < n; ++i) L[i] = S(rc)((x[i] - lo) * isc, V0, VNMAX);
        } else {
            const vf isc = S(recip)(s);
            for (int i = 0; i < n; ++i) L[i] = S(rc)((x[i] - b) * isc, V0, VNMAX);
        }
        vf sl = S(splat)(0.0f), sll = sl, sxl = sl;
        for (int i = 0; i < n; ++i) {
            const vf wl = w[i] * L[i];
            sl += wl;
            sll += wl * L[i];
            sxl += wl * x[i];
        }
        const vf D = sw * sll - sl * sl;
        vi ok = D > 0.0f;
        vf s1 = S(divsel)(ok, sw * sxl - swx * sl, D, S(splat)(0.0f));
        vf b1 = S(divsel)(ok, sll * swx - sl * sxl, D, S(splat)(0.0f));
        if (!free_off) {
            const vi pos = b1 > 0.0f;
            b1 = S(sel)(pos, S(splat)(0.0f), b1);
            s1 = S(sel)(pos, S(divsel)(ok, sxl, sll, S(splat)(0.0f)), s1);
        }
        ok = ok & (s1 > 0.0f);
        vf g1;
        if (exact) {
            vf e = S(splat)(0.0f);
            for (int i = 0; i < n; ++i) {
                const vf diff = (s1 * L[i] + b1) - x[i];
                e += (w[i] * diff) * diff;
            }
            g1 = -e;
        } else {
            g1 = s1 * sxl + b1 * swx;
        }
        const vi better = ok & (g1 > gain);
        s = S(sel)(better, s1, s);
        b = S(sel)(better, b1, b);
        gain = S(sel)(better, g1, gain);
    }
    *s_out = S(sel)(flat, S(splat)(0.0f), s);
    *b_out = S(sel)(flat, lo, b);
}

static void S(fit_symmetric)(const vf *x, const vf *w, int n, int nh, const float *grid, int ngrid, int lloyd,
                             int exact, vf *s_out) {
    const vf VLO = S(splat)((float)-nh), VHI = S(splat)((float)(nh - 1));
    vf amax = S(vabs)(x[0]), mx = x[0];
    vf L[32], wx[32];
    for (int i = 1; i < n; ++i) {
        const vf a = S(vabs)(x[i]);
        const vi m = a > amax;
        amax = S(sel)(m, a, amax);
        mx = S(sel)(m, x[i], mx);
    }
    for (int i = 0; i < n; ++i) wx[i] = w[i] * x[i];
    const vi flat = amax == 0.0f;
    mx = S(sel)(flat, S(splat)(1.0f), mx);
    vf s = mx / (float)(-nh), gain = S(splat)(-INFINITY);
    for (int g = 0; g < ngrid + lloyd; ++g) {
        const vf isc = g < ngrid ? -((float)nh + grid[g]) / mx : S(recip)(s);
        vf sxl = S(splat)(0.0f), sll = sxl;
        for (int i = 0; i < n; ++i) {
            L[i] = S(rc)(x[i] * isc, VLO, VHI);
            sxl += wx[i] * L[i];
            sll += (w[i] * L[i]) * L[i];
        }
        vi ok = sll > 0.0f;
        const vf s1 = S(divsel)(ok, sxl, sll, S(splat)(0.0f));
        vf g1 = s1 * sxl;
        if (exact) {
            vf e = S(splat)(0.0f);
            for (int i = 0; i < n; ++i) {
                const vf diff = s1 * L[i] - x[i];
                e += (w[i] * diff) * diff;
            }
            g1 = -e;
        }
        ok = ok & (s1 != 0.0f);
        const vi better = ok & (g1 > gain);
        s = S(sel)(better, s1, s);
        gain = S(sel)(better, g1, gain);
    }
    *s_out = S(sel)(flat, S(splat)(0.0f), s);
}

/* ---- B. fp16 super-scale for nsub sub-block scales v, importance W ---- */

static void S(code_scales)(const vf *v, const vf *W, int nsub, int cmin, int cmax, vf *d_out) {
    const vf VCMIN = S(splat)((float)cmin), VCMAX = S(splat)((float)cmax);
    vf anchor = v[0];
    if (cmin < 0) {
        vf amax = S(vabs)(v[0]);
        for (int j = 1; j < nsub; ++j) {
            const vf a = S(vabs)(v[j]);
            const vi m = a > amax;
            amax = S(sel)(m, a, amax);
            anchor = S(sel)(m, v[j], anchor);
        }
    } else {
        for (int j = 1; j < nsub; ++j) anchor = S(sel)(v[j] > anchor, v[j], anchor);
        anchor = S(sel)(anchor > 0.0f, anchor, S(splat)(0.0f));
    }
    vf best_d = S(splat)(0.0f), best_e = S(splat)(INFINITY);
    for (int t = 0; t < 4; ++t) {
        const float end = cmin < 0 ? (float)cmin + KQ_TRIES[t] : (float)cmax - KQ_TRIES[t];
        vf d = anchor / end;
        for (int it = 0; it < 2; ++it) {
            vf num = S(splat)(0.0f), den = num;
            const vf id = S(recip)(d);
            for (int j = 0; j < nsub; ++j) {
                const vf c = S(rc)(v[j] * id, VCMIN, VCMAX);
                const vf wc = W[j] * c;
                den += wc * c;
                num += wc * v[j];
            }
            d = S(divsel)(den > 0.0f, num, den, d);
        }
        d = S(h16)(d);
        const vf id = S(recip)(d);
        vf e = S(splat)(0.0f);
        for (int j = 0; j < nsub; ++j) {
            const vf c = S(rc)(v[j] * id, VCMIN, VCMAX);
            const vf diff = v[j] - d * c;
            e += (W[j] * diff) * diff;
        }
        const vi better = e < best_e;
        best_d = S(sel)(better, d, best_d);
        best_e = S(sel)(better, e, best_e);
    }
    *d_out = best_d;
}

/* ---- C. refinement on the stored numbers ---- */

/* best neighbouring codes per sub-block; x, w, L have nsub*n elements, sc, mn, e nsub */
static void S(pick_affine)(const vf *x, const vf *w, int n, int nsub, vf d, vf dmin, const vf *sc0, const vf *mn0,
                           int nmax, int cmax, int nsteps, vf *sc, vf *mn, vf *L, vf *e) {
    const vf V0 = S(splat)(0.0f), VNMAX = S(splat)((float)nmax), VCMAX = S(splat)((float)cmax);
    vf Lc[32];
    for (int j = 0; j < nsub; ++j) {
        const vf *xj = x + j * n, *wj = w + j * n;
        vf *Lj = L + j * n;
        for (int t = 0; t < nsteps; ++t) {
            const vf scc = S(clampv)(sc0[j] + (float)KQ_STEPS_AFF[t][0], V0, VCMAX);
            const vf mnc = S(clampv)(mn0[j] + (float)KQ_STEPS_AFF[t][1], V0, VCMAX);
            const vf ds = d * scc, dm = dmin * mnc, ids = S(recip)(ds);
            vf ec = S(splat)(0.0f);
            for (int i = 0; i < n; ++i) {
                const vf l = S(rc)((xj[i] + dm) * ids, V0, VNMAX);
                Lc[i] = l;
                const vf diff = (ds * l - dm) - xj[i];
                ec += (wj[i] * diff) * diff;
            }
            if (t == 0) {
                e[j] = ec;
                sc[j] = scc;
                mn[j] = mnc;
                for (int i = 0; i < n; ++i) Lj[i] = Lc[i];
            } else {
                const vi m = ec < e[j];
                e[j] = S(sel)(m, ec, e[j]);
                sc[j] = S(sel)(m, scc, sc[j]);
                mn[j] = S(sel)(m, mnc, mn[j]);
                for (int i = 0; i < n; ++i) Lj[i] = S(sel)(m, Lc[i], Lj[i]);
            }
        }
    }
}

/* flip: also the codes of opposite sign (search.FLIP_SYM), for levels asymmetric about zero */
static void S(pick_sym)(const vf *x, const vf *w, vf d, const vf *sc0, int nh, int cmin, int cmax, int flip, vf *sc,
                        vf *L, vf *e) {
    const vf VLO = S(splat)((float)-nh), VHI = S(splat)((float)(nh - 1));
    const vf VCMIN = S(splat)((float)cmin), VCMAX = S(splat)((float)cmax);
    const int ncand = flip ? 8 : 5;
    vf Lc[16];
    for (int j = 0; j < 16; ++j) {
        const vf *xj = x + j * 16, *wj = w + j * 16;
        vf *Lj = L + j * 16;
        for (int t = 0; t < ncand; ++t) {
            const vf scc = t < 5 ? S(clampv)(sc0[j] + (float)KQ_STEPS_SYM[t], VCMIN, VCMAX)
                                 : S(clampv)(-sc0[j] + (float)KQ_FLIP_SYM[t - 5], VCMIN, VCMAX);
            const vf ds = d * scc, ids = S(recip)(ds);
            vf ec = S(splat)(0.0f);
            for (int i = 0; i < 16; ++i) {
                const vf l = S(rc)(xj[i] * ids, VLO, VHI);
                Lc[i] = l;
                const vf diff = ds * l - xj[i];
                ec += (wj[i] * diff) * diff;
            }
            if (t == 0) {
                e[j] = ec;
                sc[j] = scc;
                for (int i = 0; i < 16; ++i) Lj[i] = Lc[i];
            } else {
                const vi m = ec < e[j];
                e[j] = S(sel)(m, ec, e[j]);
                sc[j] = S(sel)(m, scc, sc[j]);
                for (int i = 0; i < 16; ++i) Lj[i] = S(sel)(m, Lc[i], Lj[i]);
            }
        }
    }
}

/* Q2_K polish (see search._q2_polish) */
static void S(q2_polish)(const vf *X, const vf *W, vf *dp, vf dmin, vf *sc, vf *mn, vf *L) {
    const vf V0 = S(splat)(0.0f), V3 = S(splat)(3.0f), V15 = S(splat)(15.0f);
    vf d = *dp, e[16], s[16], sc0[16], sc2[16], mn2[16], e2[16], mnr[16], Lc[16];
    vf L2[256];
    vf total = S(splat)(0.0f);
    for (int j = 0; j < 16; ++j) {
        const vf ds = d * sc[j], dm = dmin * mn[j];
        vf ec = S(splat)(0.0f);
        for (int i = 0; i < 16; ++i) {
            const vf diff = (ds * L[16 * j + i] - dm) - X[16 * j + i];
            ec += (W[16 * j + i] * diff) * diff;
        }
        e[j] = ec;
        total += ec;
        s[j] = ds;
    }
    vf top = S(splat)(-INFINITY), xa = X[0], ca = sc[0], ma = mn[0], la = L[0];
    for (int i = 0; i < 256; ++i) {
        const vf v = (W[i] * X[i]) * X[i];
        const vi m = v > top;
        top = S(sel)(m, v, top);
        xa = S(sel)(m, X[i], xa);
        ca = S(sel)(m, sc[i / 16], ca);
        ma = S(sel)(m, mn[i / 16], ma);
        la = S(sel)(m, L[i], la);
    }
    const vf xm = xa + dmin * ma;
    for (int kc = -1; kc <= 1; ++kc) { /* d that puts that weight exactly on its level */
        const vf den = (ca + (float)kc) * la;
        const vf dc = S(h16)(S(divsel)(den != 0.0f, xm, den, d)), idc = S(recip)(dc);
        for (int j = 0; j < 16; ++j) sc0[j] = S(rc)(s[j] * idc, V0, V15);
        S(pick_affine)(X, W, 16, 16, dc, dmin, sc0, mn, 3, 15, 5, sc2, mn2, L2, e2);
        vf t2 = S(splat)(0.0f);
        for (int j = 0; j < 16; ++j) t2 += e2[j];
        const vi k = t2 < total;
        d = S(sel)(k, dc, d);
        total = S(sel)(k, t2, total);
        for (int j = 0; j < 16; ++j) {
            sc[j] = S(sel)(k, sc2[j], sc[j]);
            mn[j] = S(sel)(k, mn2[j], mn[j]);
            e[j] = S(sel)(k, e2[j], e[j]);
        }
        for (int i = 0; i < 256; ++i) L[i] = S(sel)(k, L2[i], L[i]);
    }
    /* every scale code, with the min code kept or moved by one */
    for (int j = 0; j < 16; ++j) mnr[j] = mn[j];
    for (int j = 0; j < 16; ++j) {
        const vf *xj = X + j * 16, *wj = W + j * 16;
        vf *Lj = L + j * 16;
        for (int a = 0; a < 16; ++a)
            for (int b = -1; b <= 1; ++b) {
                const vf scc = S(splat)((float)a), mnc = S(clampv)(mnr[j] + (float)b, V0, V15);
                const vf ds = d * scc, dm = dmin * mnc, ids = S(recip)(ds);
                vf ec = S(splat)(0.0f);
                for (int i = 0; i < 16; ++i) {
                    const vf l = S(rc)((xj[i] + dm) * ids, V0, V3);
                    Lc[i] = l;
                    const vf diff = (ds * l - dm) - xj[i];
                    ec += (wj[i] * diff) * diff;
                }
                const vi m = ec < e[j];
                e[j] = S(sel)(m, ec, e[j]);
                sc[j] = S(sel)(m, scc, sc[j]);
                mn[j] = S(sel)(m, mnc, mn[j]);
                for (int i = 0; i < 16; ++i) Lj[i] = S(sel)(m, Lc[i], Lj[i]);
            }
    }
    *dp = d;
}

static void S(k_affine)(int type, const vf *X, const vf *W, kq_params *p) {
    const int n = type == GGML_TYPE_Q2_K ? 16 : 32;
    const int nmax = type == GGML_TYPE_Q2_K ? 3 : (type == GGML_TYPE_Q4_K ? 15 : 31);
    const int cmax = type == GGML_TYPE_Q2_K ? 15 : 63, nsub = 256 / n;
    const vf V0 = S(splat)(0.0f), VNMAX = S(splat)((float)nmax), VCMAX = S(splat)((float)cmax);
    const kq_cfg cfg = kq_config(type, p->wide);
    float grid[KQ_MAX_GRID];
    const int ngrid = kq_grid(&cfg, grid);
    vf s[16], m[16], Ws[16], Wm[16], sc0[16], mn0[16], e[16], sc2[16], mn2[16], e2[16];
    vf L2[256];
    for (int j = 0; j < nsub; ++j) {
        const vf *xj = X + j * n, *wj = W + j * n;
        vf b;
        S(fit_affine)(xj, wj, n, nmax, grid, ngrid, cfg.lloyd, 0, 0, &s[j], &b);
        const vf is = S(recip)(s[j]);
        vf ws = S(splat)(0.0f), wm = ws;
        for (int i = 0; i < n; ++i) {
            const vf l = S(rc)((xj[i] - b) * is, V0, VNMAX);
            ws += (wj[i] * l) * l;
        }
        for (int i = 0; i < n; ++i) wm += wj[i];
        Ws[j] = ws;
        Wm[j] = wm;
        m[j] = -b;
    }
    vf d, dmin;
    S(code_scales)(s, Ws, nsub, 0, cmax, &d);
    S(code_scales)(m, Wm, nsub, 0, cmax, &dmin);
    const vf id = S(recip)(d), idm = S(recip)(dmin);
    for (int j = 0; j < nsub; ++j) {
        sc0[j] = S(rc)(s[j] * id, V0, VCMAX);
        mn0[j] = S(rc)(m[j] * idm, V0, VCMAX);
    }
    S(pick_affine)(X, W, n, nsub, d, dmin, sc0, mn0, nmax, cmax, 25, p->sc, p->mn, p->L, e);
    vf total = S(splat)(0.0f);
    for (int j = 0; j < nsub; ++j) total += e[j];
    for (int r = 0; r < cfg.rounds; ++r) {
        vf saa = S(splat)(0.0f), sab = saa, sbb = saa, sxa = saa, sxb = saa;
        for (int i = 0; i < 256; ++i) {
            const int j = i / n;
            const vf a = p->sc[j] * p->L[i], bb = p->mn[j];
            const vf wa = W[i] * a, wb = W[i] * bb;
            saa += wa * a;
            sab += wa * bb;
            sbb += wb * bb;
            sxa += wa * X[i];
            sxb += wb * X[i];
        }
        const vf det = saa * sbb - sab * sab;
        const vi ok = det > 0.0f;
        vf nd = S(divsel)(ok, sxa * sbb - sab * sxb, det, S(splat)(0.0f));
        vf nm = S(divsel)(ok, sxa * sab - saa * sxb, det, S(splat)(0.0f));
        const vi alone = ~ok | (nm < 0.0f);
        nd = S(sel)(alone, S(divsel)(saa > 0.0f, sxa, saa, S(splat)(0.0f)), nd);
        nm = S(sel)(alone, S(sel)(ok, S(splat)(0.0f), dmin), nm);
        const vi good = nd > 0.0f;
        const vf d2 = S(sel)(good, S(h16)(nd), d), dmin2 = S(sel)(good, S(h16)(nm), dmin);
        S(pick_affine)(X, W, n, nsub, d2, dmin2, p->sc, p->mn, nmax, cmax, 25, sc2, mn2, L2, e2);
        vf t2 = S(splat)(0.0f);
        for (int j = 0; j < nsub; ++j) t2 += e2[j];
        const vi k = t2 < total;
        d = S(sel)(k, d2, d);
        dmin = S(sel)(k, dmin2, dmin);
        total = S(sel)(k, t2, total);
        for (int j = 0; j < nsub; ++j) {
            p->sc[j] = S(sel)(k, sc2[j], p->sc[j]);
            p->mn[j] = S(sel)(k, mn2[j], p->mn[j]);
        }
        for (int i = 0; i < 256; ++i) p->L[i] = S(sel)(k, L2[i], p->L[i]);
    }
    if (type == GGML_TYPE_Q2_K && p->wide) S(q2_polish)(X, W, &d, dmin, p->sc, p->mn, p->L);  /* best mode only */
    p->d = d;
    p->dmin = dmin;
}

/* ---- D. Q3_K polish: more fp16 super-scales, then every code (see search._q3_polish) ---- */

/* v (an fp16 value) moved k fp16 steps in magnitude, same sign, within [0, 65504] */
KQ_INL vf S(h16step)(vf v, int k) {
    for (int l = 0; l < NL; ++l) {
        const uint16_t hb = fp32_to_fp16(v[l]);
        int mag = (int)(hb & 0x7FFF) + k;
        mag = mag < 0 ? 0 : (mag > 0x7BFF ? 0x7BFF : mag);
        v[l] = fp16_to_fp32((uint16_t)(mag | (hb & 0x8000)));
    }
    return v;
}

static void S(q3_polish)(const vf *X, const vf *W, vf *dp, vf *sc, vf *L) {
    const int nh = 4, cmin = -32, cmax = 31;
    const vf VLO = S(splat)((float)-nh), VHI = S(splat)((float)(nh - 1));
    const vf VCMIN = S(splat)((float)cmin), VCMAX = S(splat)((float)cmax);
    vf d = *dp, e[16], s[16], sc0[16], sc2[16], e2[16], cand[32], Lc[16];
    vf L2[256];
    vf total = S(splat)(0.0f);
    for (int j = 0; j < 16; ++j) {
        const vf ds = d * sc[j];
        vf ec = S(splat)(0.0f);
        for (int i = 0; i < 16; ++i) {
            const vf diff = ds * L[16 * j + i] - X[16 * j + i];
            ec += (W[16 * j + i] * diff) * diff;
        }
        e[j] = ec;
        total += ec;
        s[j] = ds;
    }
    /* the weight that costs most per unit of relative error, its code and level */
    vf top = S(splat)(-INFINITY), xa = X[0], ca = sc[0], la = L[0];
    for (int i = 0; i < 256; ++i) {
        const vf v = (W[i] * X[i]) * X[i];
        const vi m = v > top;
        top = S(sel)(m, v, top);
        xa = S(sel)(m, X[i], xa);
        ca = S(sel)(m, sc[i / 16], ca);
        la = S(sel)(m, L[i], la);
    }
    int nc = 0;
    for (int k = 1; k <= 3; ++k) {
        cand[nc++] = S(h16step)(d, -k);
        cand[nc++] = S(h16step)(d, k);
    }
    for (int kc = -2; kc <= 2; ++kc) { /* super-scales that put that weight exactly on a level */
        const vf den = (ca + (float)kc) * la;
        const vf base = S(h16)(S(divsel)(den != 0.0f, xa, den, d));
        cand[nc++] = base;
        cand[nc++] = S(h16step)(base, -1);
        cand[nc++] = S(h16step)(base, 1);
    }
    for (int c = 0; c < nc; ++c) {
        const vf dc = cand[c], idc = S(recip)(dc);
        for (int j = 0; j < 16; ++j) sc0[j] = S(rc)(s[j] * idc, VCMIN, VCMAX);
        S(pick_sym)(X, W, dc, sc0, nh, cmin, cmax, 0, sc2, L2, e2);
        vf t2 = S(splat)(0.0f);
        for (int j = 0; j < 16; ++j) t2 += e2[j];
        const vi k = t2 < total;
        d = S(sel)(k, dc, d);
        total = S(sel)(k, t2, total);
        for (int j = 0; j < 16; ++j) {
            sc[j] = S(sel)(k, sc2[j], sc[j]);
            e[j] = S(sel)(k, e2[j], e[j]);
        }
        for (int i = 0; i < 256; ++i) L[i] = S(sel)(k, L2[i], L[i]);
    }
    /* every code of every sub-block for the chosen d */
    for (int j = 0; j < 16; ++j) {
        const vf *xj = X + j * 16, *wj = W + j * 16;
        vf *Lj = L + j * 16;
        for (int c = cmin; c <= cmax; ++c) {
            const vf ds = d * (float)c, ids = S(recip)(ds);
            vf ec = S(splat)(0.0f);
            for (int i = 0; i < 16; ++i) {
                const vf l = S(rc)(xj[i] * ids, VLO, VHI);
                Lc[i] = l;
                const vf diff = ds * l - xj[i];
                ec += (wj[i] * diff) * diff;
            }
            const vi m = ec < e[j];
            e[j] = S(sel)(m, ec, e[j]);
            sc[j] = S(sel)(m, S(splat)((float)c), sc[j]);
            for (int i = 0; i < 16; ++i) Lj[i] = S(sel)(m, Lc[i], Lj[i]);
        }
    }
    *dp = d;
}

static void S(k_sym)(int type, const vf *X, const vf *W, kq_params *p) {
    const int q3 = type == GGML_TYPE_Q3_K;
    const int nh = q3 ? 4 : 32, cmin = q3 ? -32 : -128, cmax = q3 ? 31 : 127;
    const vf VLO = S(splat)((float)-nh), VHI = S(splat)((float)(nh - 1));
    const vf VCMIN = S(splat)((float)cmin), VCMAX = S(splat)((float)cmax);
    const kq_cfg cfg = kq_config(type, p->wide);
    float grid[KQ_MAX_GRID];
    const int ngrid = kq_grid(&cfg, grid);
    vf s[16], Ws[16], sc0[16], e[16], sc2[16], e2[16];
    vf L2[256];
    for (int j = 0; j < 16; ++j) {
        const vf *xj = X + j * 16, *wj = W + j * 16;
        S(fit_symmetric)(xj, wj, 16, nh, grid, ngrid, cfg.lloyd, type == GGML_TYPE_Q6_K, &s[j]);
        const vf is = S(recip)(s[j]);
        vf ws = S(splat)(0.0f);
        for (int i = 0; i < 16; ++i) {
            const vf l = S(rc)(xj[i] * is, VLO, VHI);
            ws += (wj[i] * l) * l;
        }
        Ws[j] = ws;
    }
    vf d;
    S(code_scales)(s, Ws, 16, cmin, cmax, &d);
    const vf id = S(recip)(d);
    for (int j = 0; j < 16; ++j) sc0[j] = S(rc)(s[j] * id, VCMIN, VCMAX);
    const int flip = type == GGML_TYPE_Q3_K;
    S(pick_sym)(X, W, d, sc0, nh, cmin, cmax, flip, p->sc, p->L, e);
    vf total = S(splat)(0.0f);
    for (int j = 0; j < 16; ++j) total += e[j];
    for (int r = 0; r < cfg.rounds; ++r) {
        vf saa = S(splat)(0.0f), sxa = saa;
        for (int i = 0; i < 256; ++i) {
            const vf a = p->sc[i / 16] * p->L[i];
            const vf wa = W[i] * a;
            saa += wa * a;
            sxa += wa * X[i];
        }
        const vf nd = S(divsel)(saa > 0.0f, sxa, saa, S(splat)(0.0f));
        const vf d2 = S(sel)(nd != 0.0f, S(h16)(nd), d);
        S(pick_sym)(X, W, d2, p->sc, nh, cmin, cmax, flip, sc2, L2, e2);
        vf t2 = S(splat)(0.0f);
        for (int j = 0; j < 16; ++j) t2 += e2[j];
        const vi k = t2 < total;
        d = S(sel)(k, d2, d);
        total = S(sel)(k, t2, total);
        for (int j = 0; j < 16; ++j) p->sc[j] = S(sel)(k, sc2[j], p->sc[j]);
        for (int i = 0; i < 256; ++i) p->L[i] = S(sel)(k, L2[i], p->L[i]);
    }
    if (type == GGML_TYPE_Q3_K && p->wide) S(q3_polish)(X, W, &d, p->sc, p->L);  /* best mode only */
    p->d = d;
}

static void S(legacy_sym)(int type, const vf *X, const vf *W, kq_params *p) {
    const int nh = type == GGML_TYPE_Q4_0 ? 8 : (type == GGML_TYPE_Q5_0 ? 16 : 128);
    const vf VLO = S(splat)((float)-nh), VHI = S(splat)((float)(nh - 1));
    const kq_cfg cfg = kq_config(type, p->wide);
    float grid[KQ_MAX_GRID];
    const int ngrid = kq_grid(&cfg, grid);
    vf cand[3], best = S(splat)(0.0f), Lc[32];
    vf s;
    S(fit_symmetric)(X, W, 32, nh, grid, ngrid, cfg.lloyd, 1, &s);
    S(nb16)(&s, cand);
    for (int c = 0; c < 3; ++c) {
        const vf ds = cand[c], ids = S(recip)(ds);
        vf e = S(splat)(0.0f);
        for (int i = 0; i < 32; ++i) {
            const vf l = S(rc)(X[i] * ids, VLO, VHI);
            Lc[i] = l;
            const vf diff = ds * l - X[i];
            e += (W[i] * diff) * diff;
        }
        const vi m = c == 0 ? (e == e) : (e < best);
        best = S(sel)(m, e, best);
        p->d = S(sel)(m, ds, p->d);
        for (int i = 0; i < 32; ++i) p->L[i] = S(sel)(m, Lc[i], p->L[i]);
    }
}

static void S(legacy_affine)(int type, const vf *X, const vf *W, kq_params *p) {
    const int nmax = type == GGML_TYPE_Q4_1 ? 15 : 31;
    const vf V0 = S(splat)(0.0f), VNMAX = S(splat)((float)nmax);
    const kq_cfg cfg = kq_config(type, p->wide);
    float grid[KQ_MAX_GRID];
    const int ngrid = kq_grid(&cfg, grid);
    vf s, b, cd[3], cm[3], best = S(splat)(0.0f), Lc[32];
    S(fit_affine)(X, W, 32, nmax, grid, ngrid, cfg.lloyd, 1, 1, &s, &b);
    {   /* same fit with the lowest level at 0 (see search.py) */
        const vf is = S(recip)(s);
        vf low = S(rc)((X[0] - b) * is, V0, VNMAX);
        for (int i = 1; i < 32; ++i) {
            const vf l = S(rc)((X[i] - b) * is, V0, VNMAX);
            low = S(sel)(l < low, l, low);
        }
        b = b + low * s;
    }
    S(nb16)(&s, cd);
    S(nb16)(&b, cm);
    for (int c = 0; c < 9; ++c) {
        const vf dd = cd[c / 3], mm = cm[c % 3], idd = S(recip)(dd);
        vf e = S(splat)(0.0f);
        for (int i = 0; i < 32; ++i) {
            const vf l = S(rc)((X[i] - mm) * idd, V0, VNMAX);
            Lc[i] = l;
            const vf diff = (l * dd + mm) - X[i];
            e += (W[i] * diff) * diff;
        }
        const vi m = c == 0 ? (e == e) : (e < best);
        best = S(sel)(m, e, best);
        p->d = S(sel)(m, dd, p->d);
        p->dmin = S(sel)(m, mm, p->dmin);
        for (int i = 0; i < 32; ++i) p->L[i] = S(sel)(m, Lc[i], p->L[i]);
    }
}

/* nearest IQ4_NL grid entry (ties upward): its index and value, both exact small integers */
KQ_INL void S(iq4_pick)(vf v, const float *mid, const float *step, vf *idx, vf *q) {
    vf i = S(splat)(0.0f), val = S(splat)((float)KQ_IQ4NL[0]);
    for (int m = 0; m < 15; ++m) {
        const vi ge = v >= mid[m];
        i = S(sel)(ge, i + 1.0f, i);
        val = S(sel)(ge, val + step[m], val);
    }
    *idx = i;
    *q = val;
}

/* the value iq4_pick picks, alone: the search's hot loop. With GCC's shuffles (the AVX2 build, KQ_IQ4_SHUFFLE) a
 * binary search over the midpoints, four compares and table lookups; else masked steps added in the same order
 * (adding +0 changes no partial sum, all of them nonzero integers). Both give the grid value of the number of
 * midpoints at or below v, as the pick's scan counts them (NaN: none), so the bytes are the same. */
typedef struct { const float *mid, *step; vf m7, m3, m11, t3, t4, lo, hi; } S(iq4_tables);

KQ_INL vf S(iq4_value)(vf v, const S(iq4_tables) *t) {
#if defined(KQ_IQ4_SHUFFLE) && defined(__GNUC__) && !defined(__clang__)
    const vi g8 = v >= t->m7;
    const vi g4 = v >= S(sel)(g8, t->m11, t->m3);
    vi k = (g8 & 8) | (g4 & 4);
    const vi g2 = v >= __builtin_shuffle(t->t3, k >> 2);
    k |= g2 & 2;
    const vi g1 = v >= __builtin_shuffle(t->t4, k >> 1);
    k |= g1 & 1;
    return S(sel)(g8, __builtin_shuffle(t->hi, k), __builtin_shuffle(t->lo, k));   /* indices taken mod 8 */
#else
    vf val = S(splat)((float)KQ_IQ4NL[0]);
    for (int m = 0; m < 15; ++m) val += (vf)((v >= t->mid[m]) & (vi)S(splat)(t->step[m]));
    return val;
#endif
}

static void S(iq4_nl)(const vf *X, const vf *W, kq_params *p) {
    const kq_cfg cfg = kq_config(GGML_TYPE_IQ4_NL, p->wide);
    float grid[KQ_MAX_GRID], vals[16], mid[15], step[15];
    const int ngrid = kq_grid(&cfg, grid);
    for (int m = 0; m < 16; ++m) vals[m] = (float)KQ_IQ4NL[m];
    for (int m = 0; m < 15; ++m) {
        mid[m] = (vals[m] + vals[m + 1]) * 0.5f;
        step[m] = vals[m + 1] - vals[m];
    }
    const S(iq4_tables) tab = {mid, step, S(splat)(mid[7]), S(splat)(mid[3]), S(splat)(mid[11]),
                               {mid[1], mid[5], mid[9], mid[13], 0.0f, 0.0f, 0.0f, 0.0f},
                               {mid[0], mid[2], mid[4], mid[6], mid[8], mid[10], mid[12], mid[14]},
                               {vals[0], vals[1], vals[2], vals[3], vals[4], vals[5], vals[6], vals[7]},
                               {vals[8], vals[9], vals[10], vals[11], vals[12], vals[13], vals[14], vals[15]}};
    vf amax = S(vabs)(X[0]), mx = X[0], wx[32], Lc[32], cand[3], best = S(splat)(0.0f);
    for (int i = 1; i < 32; ++i) {
        const vf a = S(vabs)(X[i]);
        const vi m = a > amax;
        amax = S(sel)(m, a, amax);
        mx = S(sel)(m, X[i], mx);
    }
    for (int i = 0; i < 32; ++i) wx[i] = W[i] * X[i];
    const vi flat = amax == 0.0f;
    mx = S(sel)(flat, S(splat)(1.0f), mx);
    vf d = mx / vals[15], gain = S(splat)(-INFINITY);
    for (int g = 0; g < 2 * ngrid + cfg.lloyd; ++g) {
        const vf idv = g < ngrid ? (vals[0] + grid[g]) / mx
                     : g < 2 * ngrid ? (vals[15] - grid[g - ngrid]) / mx : S(recip)(d);
        vf sqx = S(splat)(0.0f), sqq = sqx, qv[32], e = sqx;
        for (int i = 0; i < 32; ++i) {
            qv[i] = S(iq4_value)(X[i] * idv, &tab);
            sqx += wx[i] * qv[i];
            sqq += (W[i] * qv[i]) * qv[i];
        }
        vi ok = sqq > 0.0f;
        const vf d1 = S(divsel)(ok, sqx, sqq, S(splat)(0.0f));
        for (int i = 0; i < 32; ++i) {
            const vf diff = d1 * qv[i] - X[i];
            e += (W[i] * diff) * diff;
        }
        const vf g1 = -e;
        ok = ok & (d1 != 0.0f);
        const vi better = ok & (g1 > gain);
        d = S(sel)(better, d1, d);
        gain = S(sel)(better, g1, gain);
    }
    d = S(sel)(flat, S(splat)(0.0f), d);
    S(nb16)(&d, cand);
    for (int c = 0; c < 3; ++c) {
        const vf ids = S(recip)(cand[c]);
        vf e = S(splat)(0.0f);
        for (int i = 0; i < 32; ++i) {
            vf idx, q;
            S(iq4_pick)(X[i] * ids, mid, step, &idx, &q);
            Lc[i] = idx;
            const vf diff = cand[c] * q - X[i];
            e += (W[i] * diff) * diff;
        }
        const vi m = c == 0 ? (e == e) : (e < best);
        best = S(sel)(m, e, best);
        p->d = S(sel)(m, cand[c], p->d);
        for (int i = 0; i < 32; ++i) p->L[i] = S(sel)(m, Lc[i], p->L[i]);
    }
}

/* one group of NL blocks (X, W: block-length arrays of vf) */
static void S(search_group)(int type, const vf *X, const vf *W, kq_params *p) {
    switch (type) {
    case GGML_TYPE_Q2_K:
    case GGML_TYPE_Q4_K:
    case GGML_TYPE_Q5_K: S(k_affine)(type, X, W, p); break;
    case GGML_TYPE_Q3_K:
    case GGML_TYPE_Q6_K: S(k_sym)(type, X, W, p); break;
    case GGML_TYPE_Q4_1:
    case GGML_TYPE_Q5_1: S(legacy_affine)(type, X, W, p); break;
    case GGML_TYPE_IQ4_NL: S(iq4_nl)(X, W, p); break;
    default: S(legacy_sym)(type, X, W, p); break;
    }
}

#undef S
