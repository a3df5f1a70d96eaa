"""Lossless Huffman packing of GGUF files (docs/packed-format.md).

Tensor data is split per block field (scales apart from quants, f16 high bytes apart from low
bytes), each field of each tensor gets its own canonical Huffman code, and the coded data is cut
into independently decodable chunks that the C decoder spreads over threads. The GGUF header is
kept verbatim, so a packed file can be inspected without unpacking it.

The public API is here; the work is in format (the container), encode (packing), decode (reading and
unpacking), memfile (background unpacking for llama.cpp), codes (Huffman code construction) and
reference (a pure-Python decoder that tests and the fuzzer hold the C decoder to).
"""
from __future__ import annotations

from .decode import (
    FieldInfo,
    PackedHeader,
    PackInfo,
    TensorPackInfo,
    is_packed,
    pack_info,
    read_packed_header,
    unpack,
    unpack_to_memory,
)
from .encode import CHUNK_TARGET, MIN_SAVING, PackStats, pack
from .memfile import Unpacking, open_for_llama, open_gguf, unpack_for_llama

SUFFIX = ".ggpk"  # a packed file's name: model.gguf <-> model.ggpk

__all__ = [
    "CHUNK_TARGET",
    "MIN_SAVING",
    "SUFFIX",
    "FieldInfo",
    "PackInfo",
    "PackStats",
    "PackedHeader",
    "TensorPackInfo",
    "Unpacking",
    "is_packed",
    "open_for_llama",
    "open_gguf",
    "pack",
    "pack_info",
    "read_packed_header",
    "unpack",
    "unpack_for_llama",
    "unpack_to_memory",
]
