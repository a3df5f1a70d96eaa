"""install: a package directory to a device-ready one, every byte checked against the manifest.

Packed files are unpacked to plain GGUFs (a packed file run directly sits in anonymous memory; a plain one is
mapped), plain files are copied; either way each byte is read once and hashed as it goes. The destination is
built in a temporary directory and renamed into place (files.atomic_directory): a mismatch, a full disk or
Ctrl-C leaves nothing at ``dest``. Imports stay light (no NumPy, no gguf package): this runs on small devices.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..errors import InputError
from ..files import COPY_CHUNK, atomic_directory, check_free_space, read_json
from ..packed.decode import Progress, unpack
from .manifest import write_manifest


def install(directory: str | os.PathLike, dest: str | os.PathLike, *, overwrite: bool = False,
            threads: int | None = None, progress: Progress | None = None) -> list[Path]:
    """Copy a package to ``dest`` atomically, unpacking packed files to plain (mappable) GGUFs.

    A plain file is hashed as it is copied; a packed one is decoded by ``unpack``, which checks the
    original's sha256 (compared here with the manifest's) before the file takes its name. Any mismatch
    names the file and leaves nothing at ``dest``.
    """
    directory, dest = Path(directory), Path(dest)
    m = read_json(directory / "manifest.json", "manifest")
    if not isinstance(m, dict) or not isinstance(m.get("files"), list):
        raise InputError(f"{directory}/manifest.json: not a gguf-tools manifest")
    plain = [e.get("unpacks_to", e) for e in m["files"]]
    check_free_space(dest.parent if str(dest.parent) else Path("."), sum(e["bytes"] for e in plain))
    with atomic_directory(dest, overwrite) as work:
        for e in m["files"]:
            src = directory / e["path"]
            if not src.is_file():
                raise InputError(f"{src}: missing")
            if "unpacks_to" in e:
                want = e["unpacks_to"]
                got = unpack(src, work / want["path"], threads=threads, progress=progress)
                if got.sha256 != want["sha256"] or got.original_size != want["bytes"]:
                    raise InputError(f"{src}: unpacks to sha256 {got.sha256}, the manifest says {want['sha256']}")
            else:
                digest = _copy_hashed(src, work / e["path"])
                if digest != e["sha256"]:
                    raise InputError(f"{src}: sha256 {digest}, the manifest says {e['sha256']}")
        write_manifest(work / "manifest.json", {**m, "files": plain})
    return [dest / e["path"] for e in plain] + [dest / "manifest.json"]


def _copy_hashed(src: Path, dst: Path) -> str:
    h = hashlib.sha256()
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        while chunk := fi.read(COPY_CHUNK):
            h.update(chunk)
            fo.write(chunk)
        fo.flush()
        os.fsync(fo.fileno())
    return h.hexdigest()
