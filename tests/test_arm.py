"""native/ on arm64 and macOS without the hardware: scripts/test_arm.sh cross-compiles the C test drivers, runs them
under QEMU on cores with and without SDOT, and compiles and links every C file for aarch64 macOS. Skips, naming
what is missing, where the cross tools are not installed (README: "Testing on ARM")."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "test_arm.sh"
ENV = {**os.environ, "PYTHON": sys.executable}


def _missing() -> str:
    r = subprocess.run(["bash", str(SCRIPT), "--check-tools"], capture_output=True, text=True, env=ENV)
    return "" if r.returncode == 0 else r.stdout.strip()


@pytest.mark.slow
def test_native_code_passes_its_drivers_on_arm64_and_compiles_for_macos() -> None:
    missing = _missing()
    if missing:
        pytest.skip(f"ARM cross tools not installed ({missing})")
    r = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=ENV, timeout=1800)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    out = r.stdout
    assert "best neon_dotprod" in out and "best neon\n" in out  # both dispatch outcomes were seen
    assert "SIGILL, as it should" in out
    assert out.count("kernels: all passed") >= 5 and out.count("huffman: all passed") >= 3
    assert out.rstrip().endswith("test_arm: all passed")
