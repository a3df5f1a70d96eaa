"""Device profiles: RAM, the budget a model may use, bandwidth, CPU features, file-size limit.

They live in ``devices.toml`` beside this module, each number with its source; users add or
override profiles with a file of the same form named by the GGUF_TOOLS_DEVICES variable.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, UsageError
from ..planner.sizes import parse_size

if sys.version_info >= (3, 11):
    import tomllib
else:   # pragma: no cover
    import tomli as tomllib


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


def _device(name: str, d: dict, where: str) -> Device:
    try:
        limit = d.get("file_size_limit")
        return Device(name, parse_size(d["ram"]), parse_size(d.get("budget", d["ram"])),
                      float(d["bandwidth_gbs"]) * 1e9, str(d.get("cpu", "")), tuple(d.get("cpu_features", ())),
                      None if limit in (None, "none") else parse_size(limit), str(d.get("source", "")))
    except (KeyError, TypeError, ValueError, UsageError) as e:
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
