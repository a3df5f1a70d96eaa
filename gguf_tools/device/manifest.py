"""manifest.json: what a release directory holds, to the tensor, and how to check it.

Per file: bytes and a digest (sha256, or xxh64 with ``fast``). Per tensor: a line in llama.cpp's
``llama-gguf-hash`` form (``sha256    <hex>  FILE:TENSOR``), so its ``--check`` users can compare.
Per file, a digest of every metadata key (gguf-hash covers tensor data only, so a changed chat
template would pass it), and one digest of the whole metadata and of the chat template.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import UnsupportedError
from ..files import COPY_CHUNK, atomic_output
from ..gguf_file.constants import GGUFValueType
from ..gguf_file.reader import GGUFFile

SCHEMA = 1
_SPLIT_PREFIX = "split."


def hasher(algo: str) -> Callable[[], Any]:
    """A hashlib-like constructor: sha256 (releases) or xxh64 (seed 0, as llama-gguf-hash)."""
    if algo == "sha256":
        return hashlib.sha256
    if algo == "xxh64":
        try:
            import xxhash
        except ImportError:
            raise UnsupportedError("--fast needs the xxhash package (pip install xxhash)") from None
        return xxhash.xxh64
    raise UnsupportedError(f"unknown hash {algo!r} (sha256 or xxh64)")


def hash_line(algo: str, hexdigest: str, file: str, tensor: str | None = None) -> str:
    """llama-gguf-hash's printf("%-8s  %-s  %s"): the tag padded to 8, two spaces, digest, two spaces, name."""
    return f"{algo:<8}  {hexdigest}  {file if tensor is None else f'{file}:{tensor}'}"


def file_digest(path: Path, algo: str) -> str:
    h = hasher(algo)()
    with open(path, "rb") as fh:
        while chunk := fh.read(COPY_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def tensor_lines(f: GGUFFile, algo: str, name: str) -> list[str]:
    new = hasher(algo)
    return [hash_line(algo, new(f.data(t)).hexdigest(), name, t.name) for t in f.tensors]


def key_digests(f: GGUFFile) -> dict[str, str]:
    """sha256 of each key's type ids and value, as canonical JSON."""
    return {k: hashlib.sha256(json.dumps([[int(t) for t in field.types], f.get(k)], sort_keys=True,
                                         ensure_ascii=False).encode("utf-8")).hexdigest()
            for k, field in f.fields.items()}


def metadata_digest(digests: dict[str, str]) -> str:
    """One digest over every key (split bookkeeping excluded, so a split model keeps its digest)."""
    body = "\n".join(f"{k} {d}" for k, d in sorted(digests.items()) if not k.startswith(_SPLIT_PREFIX))
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def identity(f: GGUFFile) -> dict:
    """The model's general.* scalars: name, license, provenance."""
    return {k: f.get(k) for k, field in f.fields.items()
            if k.startswith("general.") and field.types[0] != GGUFValueType.ARRAY}


def has_xxhash() -> bool:
    try:
        import xxhash  # noqa: F401
    except ImportError:
        return False
    return True


def file_entry(directory: Path, path: Path, algo: str = "sha256") -> dict[str, Any]:
    entry: dict[str, Any] = {"path": path.relative_to(directory).as_posix(), "bytes": path.stat().st_size,
                             algo: file_digest(path, algo)}
    if algo != "xxh64" and has_xxhash():
        entry["xxh64"] = file_digest(path, "xxh64")
    return entry


def build_manifest(directory: Path, files: list[Path], *, algo: str = "sha256", plan: dict | None = None,
                   smoke: dict | None = None) -> dict:
    """The manifest of ``files`` (paths inside ``directory``; GGUF shards in order). Files also get an
    xxh64 digest when the xxhash package is there, for ``verify --fast``."""
    entries, tensors, metadata = [], [], {}
    head: GGUFFile | None = None
    for path in files:
        rel = path.relative_to(directory).as_posix()
        entry = file_entry(directory, path, algo)
        if path.suffix == ".gguf":
            f = GGUFFile.open(path)
            head = head or f
            if "split.no" in f.fields:
                entry["shard"] = int(f.get("split.no")) + 1
                entry["shards"] = int(f.get("split.count", 0))
            tensors += tensor_lines(f, algo, rel)
            metadata[rel] = key_digests(f)
        entries.append(entry)
    template = head.get("tokenizer.chat_template") if head else None
    first = next(iter(metadata.values()), {})
    return {
        "schema": SCHEMA,
        "tool": f"gguf-tools {__version__}",
        "hash": algo,
        "identity": identity(head) if head else {},
        "files": entries,
        "tensors": tensors,
        "metadata_sha256": metadata_digest(first),
        "metadata": metadata,
        "chat_template_sha256": hashlib.sha256(template.encode("utf-8")).hexdigest() if template else None,
        **({"memory": plan} if plan else {}),
        **({"smoke": smoke} if smoke else {}),
    }


def write_manifest(path: Path, manifest: dict) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def gguf_files(directory: str | os.PathLike) -> list[Path]:
    """The GGUF files of a directory, shards in order."""
    return sorted(Path(directory).glob("*.gguf"))
