"""Measured sensitivity, kept so that planning for another size costs no measurement.

One entry per (source tensors, importance matrix, calibration text, tool version, measurement settings), named by the
sha256 of all of them: change any and the key changes, so a stale entry is never read. An entry is a JSON file (the
numbers) and an .npz beside it (the reference log-probabilities the verification compares against).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .. import __version__
from ..gguf_file.reader import GGUFFile
from ..system import cache_dir

HASH_CHUNK = 64 << 20


def default_dir() -> Path:
    return cache_dir() / "sensitivity"


def source_digest(f: GGUFFile) -> str:
    """sha256 of every tensor's name, type, shape and bytes: the model as the planner sees it."""
    from ..files import release_pages

    h = hashlib.sha256()
    for t in f.tensors:
        h.update(f"{t.name}:{t.ggml_type.name}:{t.shape}\n".encode())
        raw = f.data(t).reshape(-1)
        for i in range(0, raw.size, HASH_CHUNK):
            h.update(memoryview(np.ascontiguousarray(raw[i : i + HASH_CHUNK])))
        release_pages(raw)
    return h.hexdigest()


def entry_key(source: str, imatrix: bytes | None, text: str, settings: dict) -> str:
    h = hashlib.sha256()
    for part in (f"gguf-tools {__version__}", source, json.dumps(settings, sort_keys=True),
                 hashlib.sha256(imatrix).hexdigest() if imatrix is not None else "no imatrix",
                 hashlib.sha256(text.encode("utf-8")).hexdigest()):
        h.update(part.encode() + b"\n")
    return h.hexdigest()


def load(directory: Path, key: str) -> tuple[dict, dict[str, np.ndarray]] | None:
    """The entry's numbers and arrays, or None when absent or unreadable (it is then measured again)."""
    js, arrays = directory / f"{key}.json", directory / f"{key}.npz"
    try:
        data = json.loads(js.read_text(encoding="utf-8"))
        with np.load(arrays, allow_pickle=False) as z:
            return data, {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError):
        return None


def save(directory: Path, key: str, data: dict, arrays: dict[str, np.ndarray]) -> None:
    """Write the entry atomically (arrays first: a JSON file present means a whole entry)."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{key}.{os.getpid()}.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, directory / f"{key}.npz")
    update(directory, key, data)


def update(directory: Path, key: str, data: dict) -> None:
    """Write the numbers of an entry atomically (a new one, or a measured preset KLD added)."""
    tmp = directory / f".{key}.{os.getpid()}.json"
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, directory / f"{key}.json")
