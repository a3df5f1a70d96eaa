"""Reading a Hugging Face checkpoint: config, weight files, tensors streamed one at a time.

Nothing from the model directory is ever executed: ``auto_map`` and custom code are ignored,
and pickled ``.bin`` weights are read only when the caller opts in, with ``weights_only=True``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError, UnsupportedError
from ..files import read_json, release_pages
from .safetensors import SafetensorsFile


@dataclass
class Checkpoint:
    root: Path
    config: dict
    files: list[SafetensorsFile] = field(default_factory=list)
    where: dict[str, SafetensorsFile] = field(default_factory=dict)  # tensor name -> file
    pickled: dict[str, object] = field(default_factory=dict)  # tensor name -> torch tensor (--allow-pickle)

    def names(self) -> list[str]:
        return list(self.where) + list(self.pickled)

    def shape(self, name: str) -> tuple[int, ...]:
        if name in self.where:
            return self.where[name].entries[name].shape
        return tuple(self.pickled[name].shape)

    def dtype(self, name: str) -> str:
        if name in self.where:
            return self.where[name].entries[name].dtype
        return str(self.pickled[name].dtype).removeprefix("torch.").upper()

    def load(self, name: str, rows: slice | None = None) -> np.ndarray:
        """The tensor (or a range of its rows) as a fresh float32 array; its mapped pages are released."""
        if name in self.pickled:
            import torch

            t = self.pickled[name] if rows is None else self.pickled[name][rows]
            return t.to(torch.float32).numpy()
        if name not in self.where:
            raise InputError(f"{self.root}: tensor {name!r} is missing from the checkpoint")
        f = self.where[name]
        kind = f.entries[name].dtype
        if kind not in ("BF16", "F32", "F16", "F64"):
            raise UnsupportedError(f"{f.path}: tensor {name!r} has dtype {kind}; only float weights can be converted")
        raw = f.raw(name)
        if rows is not None:
            raw = raw[rows]
        if kind == "BF16":
            out = raw.astype(np.uint32)
            out <<= 16
            out = out.view(np.float32)
        else:
            out = raw.astype(np.float32)
        release_pages(raw)
        return out

    def close(self) -> None:
        for f in self.files:
            f.close()

    def __enter__(self) -> Checkpoint:  # noqa: PYI034  (typing.Self needs 3.11)
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def resolve_model_dir(src: str | Path) -> Path:
    """An HF model dir, an HF cache repo dir (``models--org--name``) or ``org/name`` in the HF cache."""
    path = Path(src).expanduser()
    if not path.exists() and "/" in str(src) and not str(src).startswith((".", "/")):
        hub = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", "~/.cache/huggingface")) / "hub")
        candidate = hub.expanduser() / ("models--" + str(src).replace("/", "--"))
        if candidate.exists():
            path = candidate
    if not path.exists():
        raise InputError(f"{src}: no such model directory")
    if not path.is_dir():
        raise InputError(f"{src}: not a directory (expected a Hugging Face model directory)")
    snapshots = path / "snapshots"
    if snapshots.is_dir() and not (path / "config.json").exists():
        ref = path / "refs" / "main"
        if ref.is_file():
            commit = ref.read_text(encoding="utf-8", errors="replace").strip()
            if (snapshots / commit).is_dir():
                return snapshots / commit
        found = sorted((p for p in snapshots.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
        if not found:
            raise InputError(f"{path}: HF cache entry has no snapshots")
        return found[-1]
    return path


def open_checkpoint(src: str | Path, *, allow_pickle: bool = False) -> Checkpoint:
    root = resolve_model_dir(src)
    config_path = root / "config.json"
    if not config_path.exists():
        raise InputError(f"{root}: config.json not found (is this a Hugging Face model directory?)")
    config = read_json(config_path, "config.json")
    if not isinstance(config, dict):
        raise InputError(f"{config_path}: config.json is not a JSON object")
    ckpt = Checkpoint(root, config)
    try:
        _attach_weights(ckpt, allow_pickle)
    except BaseException:
        ckpt.close()
        raise
    return ckpt


def _attach_weights(ckpt: Checkpoint, allow_pickle: bool) -> None:
    root = ckpt.root
    index = root / "model.safetensors.index.json"
    if index.exists():
        doc = read_json(index, "safetensors index")
        weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise InputError(f"{index}: has no weight_map")
        shards = sorted(set(weight_map.values()))
        for shard in shards:
            if not isinstance(shard, str) or Path(shard).name != shard:
                raise InputError(f"{index}: invalid shard file name {shard!r}")
            if not (root / shard).exists():
                raise InputError(f"{index}: shard {shard} is missing")
        files = {s: SafetensorsFile(root / s) for s in shards}
        ckpt.files.extend(files.values())
        for name, shard in weight_map.items():
            if name not in files[shard].entries:
                raise InputError(f"{index}: tensor {name!r} is listed in {shard} but not present there")
            ckpt.where[name] = files[shard]
        return
    singles = sorted(root.glob("*.safetensors"))
    if singles:
        for p in singles:
            f = SafetensorsFile(p)
            ckpt.files.append(f)
            for name in f.entries:
                if name in ckpt.where:
                    raise InputError(f"{p}: tensor {name!r} also appears in {ckpt.where[name].path.name}")
                ckpt.where[name] = f
        return
    bins = sorted(root.glob("pytorch_model*.bin"))
    if bins:
        if not allow_pickle:
            raise InputError(
                f"{root}: only pickled pytorch_model.bin weights found; pass --allow-pickle to read them"
                " (loaded with torch.load(weights_only=True))"
            )
        _attach_pickled(ckpt, bins)
        return
    raise InputError(f"{root}: no weights found (expected model.safetensors or model.safetensors.index.json)")


def _attach_pickled(ckpt: Checkpoint, bins: list[Path]) -> None:
    try:
        import torch
    except ImportError:
        raise UnsupportedError("reading pytorch_model.bin needs torch installed") from None
    for p in bins:
        try:
            state = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:  # noqa: BLE001  (torch raises many types for hostile pickles)
            raise InputError(f"{p}: cannot be loaded safely: {str(e).splitlines()[0][:200]}") from None
        if not isinstance(state, dict):
            raise InputError(f"{p}: does not hold a state dict")
        ckpt.pickled.update(state)
