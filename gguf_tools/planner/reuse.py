"""Encoded tensors kept for the rest of one budgeted quantize: the same tensor at the same type is encoded once.

The group probes encode whole tensors at the probe type; the plan and the preset it is verified against are written
with the same quantizer, importance and search, so where either holds a tensor at a type already encoded, its bytes
are the ones already made. (A 576-wide layer matrix of a Q3_K_M preset falls back to Q4_0, the probe type: 120 of
SmolLM2's 211 matrices.) The store is bounded: past ``limit`` bytes it keeps nothing more, and a tensor is encoded
again as it would have been without it.
"""
from __future__ import annotations

import threading

import numpy as np

LIMIT = 1 << 30   # bytes kept at most: all of a small model's encodings, a part of a large one's


class Encodings:
    """``{(tensor name, type): encoded bytes}`` up to ``limit`` bytes; a mapping ``requantize.produce`` reads and
    fills, valid for one source, importance matrix and search (the caller's to keep to one)."""

    def __init__(self, limit: int = LIMIT):
        self.limit = limit
        self.nbytes = 0
        self.hits = 0
        self._kept: dict[tuple[str, int], np.ndarray] = {}
        self._lock = threading.Lock()   # the probes fill it from several threads

    @staticmethod
    def _key(key: tuple[str, int]) -> tuple[str, int]:
        return key[0], int(key[1])   # a GGMLQuantizationType and its int are one type

    def __contains__(self, key: tuple[str, int]) -> bool:
        return self._key(key) in self._kept

    def __getitem__(self, key: tuple[str, int]) -> np.ndarray:
        data = self._kept[self._key(key)]
        self.hits += 1
        return data

    def __setitem__(self, key: tuple[str, int], data: np.ndarray) -> None:
        k = self._key(key)
        with self._lock:
            if self.nbytes + data.nbytes <= self.limit and k not in self._kept:
                self._kept[k] = data
                self.nbytes += data.nbytes
