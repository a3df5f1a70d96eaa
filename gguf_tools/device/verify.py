"""verify: check a directory or file against its manifest and name exactly what differs.

Each file is hashed once; only a file that fails is opened further, to name the tensors and
metadata keys that changed (or to say the file is damaged beyond reading: a bad header, or
tensor data cut short).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import GGUFToolsError, InputError
from ..files import read_json
from ..gguf_file.reader import GGUFFile
from .manifest import SCHEMA, file_digest, key_digests, tensor_lines


@dataclass
class Report:
    checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {"ok": self.ok, "files_checked": self.checked, "problems": self.problems}


def verify(target: str | os.PathLike, manifest: str | os.PathLike | None = None, *, fast: bool = False) -> Report:
    """Check every file the manifest lists; ``fast`` compares xxh64 file digests (the manifest must
    have them). Tensor lines, used only to explain a failed file, are in the manifest's algorithm."""
    target = Path(target)
    directory = target if target.is_dir() else target.parent
    mpath = Path(manifest) if manifest else directory / "manifest.json"
    m = read_json(mpath, "manifest")
    if not isinstance(m, dict) or m.get("schema") != SCHEMA or not isinstance(m.get("files"), list):
        raise InputError(f"{mpath}: not a gguf-tools manifest (schema {SCHEMA})")
    algo = m.get("hash", "sha256")
    file_algo = "xxh64" if fast else algo
    report = Report()
    wanted = m["files"] if target.is_dir() else [e for e in m["files"] if e.get("path") == target.name]
    if not wanted:
        raise InputError(f"{mpath}: lists no file named {target.name}")
    for e in wanted:
        path = directory / e["path"]
        where = e["path"] + (f" (shard {e['shard']} of {e['shards']})" if e.get("shard") else "")
        if not path.is_file():
            report.problems.append(f"{where}: missing")
            continue
        report.checked += 1
        size = path.stat().st_size
        if file_algo not in e:
            raise InputError(f"{mpath}: has no {file_algo} digest for {e['path']}")
        if size == e["bytes"] and file_digest(path, file_algo) == e[file_algo]:
            continue
        if size != e["bytes"]:
            report.problems.append(f"{where}: {size} bytes, manifest says {e['bytes']}")
        else:
            report.problems.append(f"{where}: {file_algo} differs")
        if path.suffix == ".gguf":
            report.problems += _explain(path, e["path"], m, algo)
    return report


def _explain(path: Path, rel: str, m: dict, algo: str) -> list[str]:
    try:
        f = GGUFFile.open(path, values="all")
    except GGUFToolsError as err:
        return [f"{rel}: unreadable ({err})"]
    out = []
    want_keys = m.get("metadata", {}).get(rel, {})
    have_keys = key_digests(f)
    for k in sorted(set(want_keys) | set(have_keys)):
        if k not in have_keys:
            out.append(f"{rel}: metadata key {k} removed")
        elif k not in want_keys:
            out.append(f"{rel}: metadata key {k} added")
        elif want_keys[k] != have_keys[k]:
            out.append(f"{rel}: metadata key {k} changed")
    want = {line.rsplit(":", 1)[-1]: line for line in m.get("tensors", []) if line.split("  ")[-1].startswith(rel + ":")}
    for line in tensor_lines(f, algo, rel):
        name = line.rsplit(":", 1)[-1]
        if name not in want:
            out.append(f"{rel}: tensor {name} not in the manifest")
        elif want.pop(name) != line:
            out.append(f"{rel}: tensor {name} differs")
    out += [f"{rel}: tensor {name} missing" for name in want]
    return out
