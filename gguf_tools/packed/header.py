"""The packed file's fixed header: what it declares, and the checks that come before the index.

Split from format.py (the index and the block layouts) because opening a packed file to unpack it needs only
this, the kept GGUF header's reader and the C decoder: no NumPy, so the command starts fast.
"""
from __future__ import annotations

import struct
from typing import NamedTuple

from ..errors import InputError
from ..gguf_file.reader import GGUFFile

MAGIC = b"GGUFPACK"
VERSION = 1
HEADER_SIZE = 96
_HEADER = struct.Struct("<8sIIQQQQ32sIII")  # 92 bytes, then the header's own CRC-32C
assert _HEADER.size == HEADER_SIZE - 4

MAX_RATIO = 8            # a coded byte costs at least one bit
RATIO_SLACK = 64
MAX_PREFIX = 1 << 30     # GGUF header + metadata + tensor infos


class FixedHeader(NamedTuple):
    version: int
    flags: int
    original_size: int
    prefix_size: int
    index_offset: int
    index_size: int
    sha256: bytes
    index_crc: int
    prefix_crc: int          # CRC-32C of the kept GGUF header
    chunk_target: int

    @property
    def data_start(self) -> int:
        """Where the first chunk starts in the packed file."""
        return HEADER_SIZE + self.prefix_size


def crc32c(data: bytes | memoryview, seed: int = 0) -> int:
    from .. import _huffman

    return _huffman.crc32c(data, seed)


def encode_header(h: FixedHeader) -> bytes:
    body = _HEADER.pack(MAGIC, h.version, h.flags, h.original_size, h.prefix_size, h.index_offset,
                        h.index_size, h.sha256, h.index_crc, h.prefix_crc, h.chunk_target)
    return body + struct.pack("<I", crc32c(body))


def parse_header(raw: bytes, file_size: int, what: str) -> FixedHeader:
    if len(raw) < HEADER_SIZE:
        raise InputError(f"{what}: packed file truncated ({len(raw)} bytes, header needs {HEADER_SIZE})")
    (magic, version, flags, original_size, prefix_size, index_offset, index_size, sha, index_crc, prefix_crc,
     chunk_target) = _HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise InputError(f"{what}: not a packed GGUF file (magic {magic!r})")
    if version != VERSION:
        raise InputError(f"{what}: unsupported packed-file version {version} (this reader knows {VERSION})")
    (crc,) = struct.unpack_from("<I", raw, HEADER_SIZE - 4)
    if crc != crc32c(raw[:HEADER_SIZE - 4]):
        raise InputError(f"{what}: packed-file header checksum mismatch")
    if flags != 0:
        raise InputError(f"{what}: unknown packed-file flags {flags:#x}")
    if prefix_size > MAX_PREFIX or HEADER_SIZE + prefix_size > file_size:
        raise InputError(f"{what}: GGUF header size {prefix_size} does not fit in the packed file")
    if index_offset < HEADER_SIZE + prefix_size or index_offset > file_size or index_size != file_size - index_offset:
        raise InputError(f"{what}: index at {index_offset}+{index_size} does not end the {file_size}-byte file")
    data_bytes = index_offset - HEADER_SIZE - prefix_size
    if original_size < prefix_size or original_size - prefix_size > MAX_RATIO * data_bytes + RATIO_SLACK:
        raise InputError(f"{what}: original size {original_size} is implausible for {data_bytes} bytes of packed data")
    return FixedHeader(version, flags, original_size, prefix_size, index_offset, index_size, sha, index_crc,
                       prefix_crc, chunk_target)


def read_view(prefix: bytes | memoryview, header: FixedHeader, what: str, keep_values: bool) -> GGUFFile:
    """Parse the kept GGUF header (its CRC already checked) and check it agrees with where the
    packed data starts."""
    view = GGUFFile.from_header(prefix, what=what, values="all" if keep_values else "raw",
                                file_size=header.original_size)
    if header.original_size > header.prefix_size and view.data_offset != header.prefix_size:
        raise InputError(f"{what}: GGUF tensor data starts at {view.data_offset}, the packed file says "
                         f"{header.prefix_size}")
    if header.original_size == header.prefix_size and view.data_offset < header.prefix_size:
        raise InputError(f"{what}: kept GGUF header is longer than the GGUF header it holds")
    return view
