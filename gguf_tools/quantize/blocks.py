"""ggml block layouts: pack integer levels and scales into bytes, and the values they decode to.

Every quantizer here (the ggml-exact port, our search, the C path) ends in the same handful of
numbers per block: fp16 super-scales, small integer scale codes, integer levels. Packing them
lives in one place so that the bit layouts (ggml-common.h) are written once, and `decoded`
gives the exact float32 values llama.cpp's dequantizers will produce from those numbers, in
the same operation order, so tests can demand bit equality.

Arrays are vectorised over blocks: levels have shape (nblocks, block_len).
"""
from __future__ import annotations

import gguf
import numpy as np

Q = gguf.GGMLQuantizationType
QK_K = 256

# The non-linear 4-bit grid of IQ4_NL (ggml-common.h, kvalues_iq4nl).
IQ4NL_VALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113],
                        dtype=np.int8)
_IQ4NL_FLOATS = IQ4NL_VALUES.astype(np.float32)  # the grid as decoded: one lookup a weight


def f16(x: np.ndarray) -> np.ndarray:
    """Round float32 to the nearest fp16 (ties to even) and back: what a stored scale holds."""
    return np.asarray(x, dtype=np.float32).astype(np.float16).astype(np.float32)


def _f16_bytes(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32).astype("<f2")).view(np.uint8).reshape(-1, 2)


def _nibbles(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return (lo.astype(np.uint8) & 0x0F) | ((hi.astype(np.uint8) & 0x0F) << 4)


def _qh32(L: np.ndarray) -> np.ndarray:
    """Fifth bits of 32 levels as a little-endian uint32: bit j is level j's bit 4."""
    bits = ((L.astype(np.uint32) >> 4) & 1) << np.arange(32, dtype=np.uint32)
    return np.ascontiguousarray(bits.sum(axis=1, dtype=np.uint32).astype("<u4")).view(np.uint8).reshape(-1, 4)


def _pack2bit(L: np.ndarray) -> np.ndarray:
    """256 two-bit levels -> 64 bytes: byte l of each 128-half holds levels l, l+32, l+64, l+96."""
    L = L.astype(np.uint8).reshape(-1, 2, 4, 32)
    out = L[:, :, 0] | (L[:, :, 1] << 2) | (L[:, :, 2] << 4) | (L[:, :, 3] << 6)
    return out.reshape(-1, 64)


def _pack_k4_scales(sc: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Eight 6-bit scales and eight 6-bit mins -> 12 bytes (Q4_K / Q5_K)."""
    sc = sc.astype(np.uint8)
    m = m.astype(np.uint8)
    out = np.zeros((sc.shape[0], 12), dtype=np.uint8)
    out[:, 0:4] = sc[:, 0:4] | ((sc[:, 4:8] >> 4) << 6)
    out[:, 4:8] = m[:, 0:4] | ((m[:, 4:8] >> 4) << 6)
    out[:, 8:12] = (sc[:, 4:8] & 0x0F) | ((m[:, 4:8] & 0x0F) << 4)
    return out


def _pack_q3_scales(codes: np.ndarray) -> np.ndarray:
    """Sixteen 6-bit codes (stored scale + 32) -> 12 bytes (Q3_K)."""
    c = codes.astype(np.uint8)
    out = np.zeros((c.shape[0], 12), dtype=np.uint8)
    out[:, 0:8] = (c[:, 0:8] & 0x0F) | ((c[:, 8:16] & 0x0F) << 4)
    hi = c >> 4
    out[:, 8:12] = hi[:, 0:4] | (hi[:, 4:8] << 2) | (hi[:, 8:12] << 4) | (hi[:, 12:16] << 6)
    return out


def pack(qtype: Q, p: dict[str, np.ndarray]) -> np.ndarray:
    """Bytes of each block, shape (nblocks, block_bytes), from the block parameters `p`.

    Keys per type: d (and m or dmin) as float32 already rounded to fp16, L the unsigned levels,
    sc (and mn) the integer scale codes as stored (Q3_K: 0..63, Q6_K: int8).
    """
    L = p["L"]
    if qtype == Q.Q8_0:
        return np.concatenate([_f16_bytes(p["d"]), L.astype(np.int8).view(np.uint8)], axis=1)
    if qtype in (Q.Q4_0, Q.IQ4_NL):
        return np.concatenate([_f16_bytes(p["d"]), _nibbles(L[:, :16], L[:, 16:])], axis=1)
    if qtype == Q.Q4_1:
        return np.concatenate([_f16_bytes(p["d"]), _f16_bytes(p["m"]), _nibbles(L[:, :16], L[:, 16:])], axis=1)
    if qtype == Q.Q5_0:
        return np.concatenate([_f16_bytes(p["d"]), _qh32(L), _nibbles(L[:, :16], L[:, 16:])], axis=1)
    if qtype == Q.Q5_1:
        return np.concatenate([_f16_bytes(p["d"]), _f16_bytes(p["m"]), _qh32(L),
                               _nibbles(L[:, :16], L[:, 16:])], axis=1)
    if qtype == Q.Q2_K:
        scales = ((p["sc"].astype(np.int64) | (p["mn"].astype(np.int64) << 4)) & 0xFF).astype(np.uint8)
        return np.concatenate([scales, _pack2bit(L), _f16_bytes(p["d"]), _f16_bytes(p["dmin"])], axis=1)
    if qtype == Q.Q3_K:
        L8 = L.astype(np.uint8)
        hbits = (L8 >> 2).reshape(-1, 8, 32)  # bit j of hmask[m] is level 32*j + m's bit 2
        hmask = (hbits << np.arange(8, dtype=np.uint8)[None, :, None]).sum(axis=1, dtype=np.uint8)
        return np.concatenate([hmask, _pack2bit(L8 & 3), _pack_q3_scales(p["sc"]), _f16_bytes(p["d"])], axis=1)
    if qtype in (Q.Q4_K, Q.Q5_K):
        L8 = L.astype(np.uint8).reshape(-1, 4, 2, 32)
        qs = _nibbles(L8[:, :, 0], L8[:, :, 1]).reshape(-1, 128)
        head = [_f16_bytes(p["d"]), _f16_bytes(p["dmin"]), _pack_k4_scales(p["sc"], p["mn"])]
        if qtype == Q.Q4_K:
            return np.concatenate(head + [qs], axis=1)
        hb = (L8 >> 4).reshape(-1, 8, 32)  # bit j of qh[l] is the fifth bit of level 32*j + l
        qh = (hb << np.arange(8, dtype=np.uint8)[None, :, None]).sum(axis=1, dtype=np.uint8)
        return np.concatenate(head + [qh, qs], axis=1)
    if qtype == Q.Q6_K:
        L8 = L.astype(np.uint8).reshape(-1, 2, 4, 32)
        ql = np.concatenate([_nibbles(L8[:, :, 0], L8[:, :, 2]), _nibbles(L8[:, :, 1], L8[:, :, 3])], axis=2)
        qh = (L8[:, :, 0] >> 4) | ((L8[:, :, 1] >> 4) << 2) | ((L8[:, :, 2] >> 4) << 4) | ((L8[:, :, 3] >> 4) << 6)
        return np.concatenate([ql.reshape(-1, 128), qh.reshape(-1, 64), p["sc"].astype(np.int8).view(np.uint8),
                               _f16_bytes(p["d"])], axis=1)
    raise ValueError(f"no layout for {qtype!r}")


def decoded(qtype: Q, p: dict[str, np.ndarray]) -> np.ndarray:
    """The float32 values llama.cpp decodes from these parameters, shape (nblocks, block_len).

    Same operation order as ggml's dequantize_row_* so the result is bit-exact.
    """
    f = np.float32
    if qtype == Q.IQ4_NL:
        return p["d"][:, None] * _IQ4NL_FLOATS[p["L"]]
    L = p["L"].astype(np.int32)
    if qtype == Q.Q8_0:
        return L.astype(f) * p["d"][:, None]
    if qtype == Q.Q4_0:
        return (L - 8).astype(f) * p["d"][:, None]
    if qtype == Q.Q5_0:
        return (L - 16).astype(f) * p["d"][:, None]
    if qtype in (Q.Q4_1, Q.Q5_1):
        return L.astype(f) * p["d"][:, None] + p["m"][:, None]
    if qtype in (Q.Q2_K, Q.Q4_K, Q.Q5_K):
        sub = 16 if qtype == Q.Q2_K else 32
        dl = p["d"][:, None] * p["sc"].astype(f)
        ml = p["dmin"][:, None] * p["mn"].astype(f)
        Ls = L.reshape(L.shape[0], -1, sub).astype(f)
        return (dl[:, :, None] * Ls - ml[:, :, None]).reshape(L.shape)
    if qtype == Q.Q3_K:
        dl = p["d"][:, None] * (p["sc"].astype(np.int32) - 32).astype(f)
        return (dl[:, :, None] * (L - 4).reshape(L.shape[0], 16, 16).astype(f)).reshape(L.shape)
    if qtype == Q.Q6_K:
        dl = p["d"][:, None] * p["sc"].astype(np.int8).astype(f)
        return (dl[:, :, None] * (L - 32).reshape(L.shape[0], 16, 16).astype(f)).reshape(L.shape)
    raise ValueError(f"no layout for {qtype!r}")


def unpack(qtype: Q, raw: np.ndarray) -> dict[str, np.ndarray]:
    """Inverse of `pack`: block parameters from bytes (nblocks, block_bytes). For tests and tools."""
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    nb = raw.shape[0]

    def h(col: int) -> np.ndarray:
        return raw[:, col:col + 2].copy().view("<f2").astype(np.float32).reshape(nb)

    def nib(b: np.ndarray) -> np.ndarray:
        return np.concatenate([b & 0x0F, b >> 4], axis=1)

    def qh32(b: np.ndarray) -> np.ndarray:
        v = b.copy().view("<u4").reshape(nb, 1)
        return ((v >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8)

    def un2bit(b: np.ndarray) -> np.ndarray:
        b = b.reshape(nb, 2, 1, 32)
        return ((b >> (2 * np.arange(4, dtype=np.uint8))[None, None, :, None]) & 3).reshape(nb, 256)

    if qtype == Q.Q8_0:
        return {"d": h(0), "L": raw[:, 2:].view(np.int8).astype(np.int32)}
    if qtype in (Q.Q4_0, Q.IQ4_NL):
        return {"d": h(0), "L": nib(raw[:, 2:])}
    if qtype == Q.Q4_1:
        return {"d": h(0), "m": h(2), "L": nib(raw[:, 4:])}
    if qtype == Q.Q5_0:
        return {"d": h(0), "L": nib(raw[:, 6:]) | (qh32(raw[:, 2:6]) << 4)}
    if qtype == Q.Q5_1:
        return {"d": h(0), "m": h(2), "L": nib(raw[:, 8:]) | (qh32(raw[:, 4:8]) << 4)}
    if qtype == Q.Q2_K:
        return {"sc": raw[:, :16] & 0x0F, "mn": raw[:, :16] >> 4, "L": un2bit(raw[:, 16:80]),
                "d": h(80), "dmin": h(82)}
    if qtype == Q.Q3_K:
        hm = raw[:, :32]
        hbit = ((hm[:, None, :] >> np.arange(8, dtype=np.uint8)[None, :, None]) & 1).reshape(nb, 256)
        s = raw[:, 96:108]
        lo = np.concatenate([s[:, 0:8] & 0x0F, s[:, 0:8] >> 4], axis=1)
        hi = ((s[:, 8:12, None] >> (2 * np.arange(4, dtype=np.uint8))) & 3).transpose(0, 2, 1).reshape(nb, 16)
        return {"L": un2bit(raw[:, 32:96]) | (hbit << 2), "sc": lo | (hi << 4), "d": h(108)}
    if qtype in (Q.Q4_K, Q.Q5_K):
        s = raw[:, 4:16]
        sc = np.concatenate([s[:, 0:4] & 63, (s[:, 8:12] & 0x0F) | ((s[:, 0:4] >> 6) << 4)], axis=1)
        mn = np.concatenate([s[:, 4:8] & 63, (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)], axis=1)
        qs = raw[:, -128:].reshape(nb, 4, 1, 32)
        L = np.concatenate([qs & 0x0F, qs >> 4], axis=2).reshape(nb, 256)
        if qtype == Q.Q5_K:
            qh = raw[:, 16:48]
            L = L | ((((qh[:, None, :] >> np.arange(8, dtype=np.uint8)[None, :, None]) & 1).reshape(nb, 256)) << 4)
        return {"d": h(0), "dmin": h(2), "sc": sc, "mn": mn, "L": L}
    if qtype == Q.Q6_K:
        ql = raw[:, :128].reshape(nb, 2, 2, 32)
        qh = raw[:, 128:192].reshape(nb, 2, 1, 32)
        low = np.stack([ql[:, :, 0] & 0x0F, ql[:, :, 1] & 0x0F, ql[:, :, 0] >> 4, ql[:, :, 1] >> 4], axis=2)
        high = (qh >> (2 * np.arange(4, dtype=np.uint8))[None, None, :, None]) & 3
        return {"L": (low | (high << 4)).reshape(nb, 256), "sc": raw[:, 192:208].view(np.int8).astype(np.int32),
                "d": h(208)}
    raise ValueError(f"no layout for {qtype!r}")


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns, rounding to nearest even (as torch does)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return ((u + (np.uint32(0x7FFF) + ((u >> 16) & 1))) >> 16).astype(np.uint16)
