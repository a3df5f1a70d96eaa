"""Streaming, atomic GGUF writing.

Tensor infos are declared first, so the exact file size is known before any tensor data is
produced: the disk check happens up front, and only one tensor is in memory at a time.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from ..files import atomic_output, check_free_space
from .layout import gguf_shape, tensor_nbytes

Q = gguf.GGMLQuantizationType


@dataclass(frozen=True)
class OutTensor:
    name: str
    shape: tuple[int, ...]  # numpy order: (..., rows, row length)
    qtype: Q

    @property
    def nbytes(self) -> int:
        return tensor_nbytes(gguf_shape(self.shape), self.qtype)


class RawValue(bytes):
    """A metadata value already in GGUF's encoding (type tag and payload): written back verbatim."""


class _Writer(gguf.GGUFWriter):
    """GGUFWriter that writes RawValue metadata as it is (copying a tokenizer costs no re-encoding)."""

    def _pack_val(self, val, vtype, add_vtype, sub_type=None):  # noqa: ANN001 - GGUFWriter's signature
        if isinstance(val, RawValue) and add_vtype:
            return bytes(val)
        return super()._pack_val(val, vtype, add_vtype, sub_type=sub_type)


def _write_head(w: gguf.GGUFWriter, add_metadata: Callable[[gguf.GGUFWriter], None], tensors: list[OutTensor]) -> int:
    """Write the header, metadata and tensor infos; return the offset they end at (before alignment padding)."""
    add_metadata(w)
    for t in tensors:
        w.add_tensor_info(t.name, t.shape, np.dtype(np.float32), t.nbytes, raw_dtype=t.qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    return w.fout[0].tell()


def header_size(arch: str, add_metadata: Callable[[gguf.GGUFWriter], None], tensors: list[OutTensor]) -> int:
    """Bytes before the first tensor's data (header, metadata, tensor infos, alignment padding): written to a scratch
    file by the same writer, so a file's size is known exactly before any tensor is encoded."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="gguf-header-") as tmp:
        w = _Writer(Path(tmp) / "header.gguf", arch)
        try:
            end = _write_head(w, add_metadata, tensors)
        finally:
            w.close()
    return int(gguf.GGUFWriter.ggml_pad(end, w.data_alignment))


def write_gguf(
    dest: Path,
    arch: str,
    add_metadata: Callable[[gguf.GGUFWriter], None],
    tensors: list[OutTensor],
    data: Iterable[np.ndarray],
    *,
    overwrite: bool = True,
) -> int:
    """Write ``tensors`` (their bytes come lazily from ``data``, in order) and return the file size."""
    data_bytes = sum(gguf.GGUFWriter.ggml_pad(t.nbytes, gguf.GGUF_DEFAULT_ALIGNMENT) for t in tensors)
    with atomic_output(dest, overwrite=overwrite, needed=data_bytes) as tmp:
        w = _Writer(tmp, arch)
        try:
            header = _write_head(w, add_metadata, tensors)
            fout = w.fout[0]
            total = gguf.GGUFWriter.ggml_pad(header, w.data_alignment) + sum(
                gguf.GGUFWriter.ggml_pad(t.nbytes, w.data_alignment) for t in tensors
            )
            check_free_space(Path(tmp).parent, total - header)
            count = 0
            for t, arr in zip(tensors, data):
                if arr.nbytes != t.nbytes:
                    raise ValueError(f"{t.name}: produced {arr.nbytes} bytes, declared {t.nbytes}")
                w.write_tensor_data(np.ascontiguousarray(arr))
                count += 1
            if count != len(tensors):
                raise ValueError(f"declared {len(tensors)} tensors but only {count} were produced")
            fout.flush()
            size = fout.tell()
        finally:
            w.close()
    return size
