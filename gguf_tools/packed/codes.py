"""Huffman code construction for the encoder: length-limited code lengths from a histogram, and the
size they give. (The decoder's side of canonical codes is in C, and in reference.py for tests.)
"""
from __future__ import annotations

import heapq

import numpy as np

from .format import (
    MAX_BITS,
)


def _plain_lengths(weights: list[int]) -> list[int]:
    """Unlimited Huffman code lengths for positive weights (at least two)."""
    heap = [(w, i, (i,)) for i, w in enumerate(weights)]
    heapq.heapify(heap)
    depth = [0] * len(weights)
    tie = len(weights)
    while len(heap) > 1:
        w1, _, a = heapq.heappop(heap)
        w2, _, b = heapq.heappop(heap)
        for s in a + b:
            depth[s] += 1
        heapq.heappush(heap, (w1 + w2, tie, a + b))
        tie += 1
    return depth


def _package_merge(weights: list[int], limit: int) -> list[int]:
    """Optimal code lengths no longer than ``limit`` (package-merge, Larmore and Hirschberg)."""
    n = len(weights)
    order = sorted(range(n), key=lambda i: weights[i])
    leaf_w = np.array([weights[i] for i in order], dtype=np.float64)
    leaf_c = np.eye(n, dtype=np.int32)
    items_w, items_c = leaf_w, leaf_c
    for _ in range(limit - 1):
        m = len(items_w) // 2 * 2
        pack_w = items_w[0:m:2] + items_w[1:m:2]
        pack_c = items_c[0:m:2] + items_c[1:m:2]
        all_w = np.concatenate([leaf_w, pack_w])
        all_c = np.concatenate([leaf_c, pack_c])
        idx = np.argsort(all_w, kind="stable")
        items_w, items_c = all_w[idx], all_c[idx]
    counts = items_c[: 2 * n - 2].sum(axis=0)
    out = [0] * n
    for k, i in enumerate(order):
        out[i] = int(counts[k])
    return out


def code_lengths(hist: np.ndarray, limit: int = MAX_BITS) -> np.ndarray:
    """Code lengths (uint8[256]) minimising the coded size of ``hist`` with codes <= ``limit`` bits.

    Absent symbols get 0; a lone symbol gets length 1 (the format's one incomplete code)."""
    hist = np.asarray(hist, dtype=np.int64)
    out = np.zeros(256, dtype=np.uint8)
    syms = np.flatnonzero(hist)
    if syms.size == 0:
        return out
    if syms.size == 1:
        out[syms[0]] = 1
        return out
    weights = [int(hist[s]) for s in syms]
    lengths = _plain_lengths(weights)
    if max(lengths) > limit:
        lengths = _package_merge(weights, limit)
    out[syms] = lengths
    return out


def coded_bits(hist: np.ndarray, lengths: np.ndarray) -> int:
    return int((np.asarray(hist, dtype=np.int64) * lengths.astype(np.int64)).sum())
