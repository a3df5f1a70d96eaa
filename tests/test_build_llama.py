"""scripts/build_llama.sh picks llama.cpp's CMake flags by platform: the AVX2 pin only on x86-64, the native
build on arm64 Linux, Metal on Apple Silicon."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "build_llama.sh"
X86 = "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"


def flags(system: str, machine: str) -> str:
    out = subprocess.run(["bash", str(SCRIPT), "--print-flags", system, machine],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.mark.parametrize(("system", "machine", "want"), [
    ("Linux", "x86_64", X86),
    ("Linux", "aarch64", "-DGGML_NATIVE=ON"),
    ("Darwin", "arm64", "-DGGML_METAL=ON"),
    ("Darwin", "x86_64", X86 + " -DGGML_METAL=OFF"),
])
def test_flags_follow_the_platform(system: str, machine: str, want: str) -> None:
    assert flags(system, machine) == want


def test_only_x86_gets_avx_and_only_macos_decides_metal() -> None:
    for system, machine in [("Linux", "aarch64"), ("Darwin", "arm64"), ("Linux", "riscv64")]:
        assert "AVX" not in flags(system, machine)
    assert "METAL" not in flags("Linux", "x86_64") + flags("Linux", "aarch64")


def test_a_wrong_call_is_a_usage_error() -> None:
    r = subprocess.run(["bash", str(SCRIPT), "--print-flags", "Linux"], capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr
