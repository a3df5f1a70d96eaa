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

import importlib

SUFFIX = ".ggpk"  # a packed file's name: model.gguf <-> model.ggpk

# name -> the module that defines it, imported on first use: encoding needs NumPy, unpacking does not
_LAZY = {
    "FieldInfo": "decode", "PackInfo": "decode", "PackedHeader": "decode", "TensorPackInfo": "decode",
    "is_packed": "decode", "pack_info": "decode", "read_packed_header": "decode", "unpack": "decode",
    "unpack_to_memory": "decode",
    "CHUNK_TARGET": "encode", "MIN_SAVING": "encode", "PackStats": "encode", "pack": "encode",
    "Unpacking": "memfile", "open_for_llama": "memfile", "open_gguf": "memfile", "unpack_for_llama": "memfile",
}

__all__ = sorted([*_LAZY, "SUFFIX"])


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
