"""Device profiles: RAM, the budget a model may use, bandwidth, CPU features, file-size limit.

They live in ``devices.toml`` beside this module, each number with its source; users add or
override profiles with a file of the same form named by the GGUF_TOOLS_DEVICES variable.
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:   # pragma: no cover
    import tomli as tomllib

FAT32_LIMIT = 4_294_967_295
_UNITS = {"": 1, "B": 1, "K": 10**3, "KB": 10**3, "M": 10**6, "MB": 10**6, "G": 10**9, "GB": 10**9,
          "T": 10**12, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
NAMED_SIZES = {"fat32": FAT32_LIMIT, "hf": 50 * 10**9}   # the Hugging Face Hub refuses files over 50 GB


@dataclass(frozen=True)
class Device:
    name: str
    ram: int
    budget: int
    bandwidth: float            # bytes per second
    cpu: str
    cpu_features: tuple[str, ...]
    file_size_limit: int | None
    source: str


def parse_size(text: str | float) -> int:
    """'4GiB', '100MB', '3.5G', 'fat32', 'hf' or a byte count. G is 10^9 as in llama.cpp's gguf-split."""
    if isinstance(text, int | float):
        return int(text)
    named = NAMED_SIZES.get(text.strip().lower())
    if named is not None:
        return named
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).upper() not in _UNITS:
        raise InputError(f"not a size: {text!r} (examples: 4GiB, 100MB, 3.5G, fat32, hf)")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def _device(name: str, d: dict, where: str) -> Device:
    try:
        limit = d.get("file_size_limit")
        return Device(name, parse_size(d["ram"]), parse_size(d.get("budget", d["ram"])),
                      float(d["bandwidth_gbs"]) * 1e9, str(d.get("cpu", "")), tuple(d.get("cpu_features", ())),
                      None if limit in (None, "none") else parse_size(limit), str(d.get("source", "")))
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{where}: device {name!r} is incomplete or malformed ({e})") from None


def load_devices() -> dict[str, Device]:
    """The shipped profiles, then the user's (GGUF_TOOLS_DEVICES) over them."""
    files = [Path(__file__).with_name("devices.toml")]
    if os.environ.get("GGUF_TOOLS_DEVICES"):
        files.append(Path(os.environ["GGUF_TOOLS_DEVICES"]))
    out: dict[str, Device] = {}
    for f in files:
        try:
            data = tomllib.loads(f.read_text(encoding="utf-8"))
        except OSError as e:
            raise InputError(f"{f}: cannot read device profiles: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise InputError(f"{f}: not valid TOML ({e})") from None
        for name, d in data.items():
            if isinstance(d, dict):
                out[name] = _device(name, d, str(f))
    return out


def device(name: str) -> Device:
    devices = load_devices()
    if name not in devices:
        raise InputError(f"unknown device {name!r} (known: {', '.join(sorted(devices))})")
    return devices[name]
