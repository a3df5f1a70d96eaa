"""`gguf-tools unpack` as a process: memory bounded by its windows, not the file; a write that fails half-way
and Ctrl-C both exit with their documented codes and leave nothing; the launcher's fast path agrees with
the full command line."""
from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from pack_fixtures import T, make_gguf, random_blocks

from gguf_tools.errors import EXIT_INTERRUPTED, InputError, OutputError
from gguf_tools.launch import parse
from gguf_tools.packed import pack

ROOT = Path(__file__).resolve().parents[1]
MiB = 1 << 20


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> tuple[Path, Path]:
    """A 40 MiB GGUF of K-quant blocks (many 1 MiB chunks) and its packed form."""
    rng = np.random.default_rng(7)
    d = tmp_path_factory.mktemp("big")
    tensors = {f"blk.{i}.weight": (random_blocks(rng, T.Q4_K, 1024, 2560), T.Q4_K) for i in range(28)}
    src = make_gguf(d / "big.gguf", tensors)
    assert src.stat().st_size > 38 * MiB
    out = d / "big.ggpk"
    pack(src, out, threads=2)
    return src, out


def _script(argv: list[str], *, window: int | None = None, slow_writes: float = 0.0) -> str:
    """A child that runs the command through the launcher (as the console script does), optionally with a
    smaller window or a slowed writer (so that a signal lands mid-stream)."""
    lines = ["import sys, time", "import gguf_tools.packed.decode as d"]
    if window:
        lines.append(f"d.WINDOW = {window}")
    if slow_writes:
        lines += ["_w = d._pwrite_all", f"d._pwrite_all = lambda *a: (time.sleep({slow_writes}), _w(*a))"]
    lines += ["from gguf_tools.launch import main", f"sys.exit(main({argv!r}))"]
    return "\n".join(lines)


def _peak_rss(code: str) -> int:
    """Peak RSS (bytes) of a child running ``code``, read by a fresh parent that has no other children."""
    probe = ("import resource, subprocess, sys\n"
             f"r = subprocess.run([sys.executable, '-c', {code!r}], stdout=subprocess.DEVNULL)\n"
             "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    rc, kib = out.split()
    assert rc == "0", out
    return int(kib) * 1024


def test_unpack_memory_is_bounded_by_its_windows_not_the_file(big, tmp_path):
    src, ggpk = big
    out = tmp_path / "back.gguf"
    base = _peak_rss("import gguf_tools.device.install, gguf_tools.launch, gguf_tools.packed.decode")
    peak = _peak_rss(_script(["unpack", str(ggpk), "-o", str(out), "--threads", "2"], window=MiB))
    assert sha(out) == sha(src)
    # two 1 MiB windows, the decoder's scratch per thread (about 4 chunks each) and the packed pages in
    # flight; the whole 40 MiB output, or the whole packed input, would be far over
    assert peak - base < 16 * MiB, (peak / MiB, base / MiB)


def test_unpack_default_window_memory_stays_far_below_the_file(big, tmp_path):
    src, ggpk = big
    peak = _peak_rss(_script(["unpack", str(ggpk), "-o", str(tmp_path / "b.gguf")]))
    assert sha(tmp_path / "b.gguf") == sha(src)
    assert peak < 80 * MiB


def _no_sigxfsz() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (8 * MiB, 8 * MiB))


def test_a_write_that_fails_half_way_exits_5_and_leaves_nothing(big, tmp_path):
    _, ggpk = big
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = subprocess.run([sys.executable, "-c", _script(["unpack", str(ggpk), "-o", str(out_dir / "x.gguf")])],
                          cwd=ROOT, capture_output=True, text=True, preexec_fn=_no_sigxfsz, timeout=120)
    assert proc.returncode == OutputError.exit_code, proc.stderr
    assert proc.stderr.startswith("gguf-tools: error: ") and proc.stderr.count("\n") == 1
    assert "write failed" in proc.stderr
    assert list(out_dir.iterdir()) == []


def test_unpack_into_a_read_only_directory_exits_5_and_writes_nothing(big, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    _, ggpk = big
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        proc = subprocess.run([sys.executable, "-m", "gguf_tools.launch", "unpack", str(ggpk), "-o", str(ro / "x.gguf")],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == OutputError.exit_code and "not writable" in proc.stderr
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_ctrl_c_during_unpack_exits_130_and_leaves_nothing(big, tmp_path):
    _, ggpk = big
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code = _script(["unpack", str(ggpk), "-o", str(out_dir / "x.gguf")], window=MiB, slow_writes=0.05)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(p.name.endswith(".partial") for p in out_dir.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, "unpack ended before it could be interrupted"
        time.sleep(0.01)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "interrupted; no output was left behind" in err and "Traceback" not in err
    assert list(out_dir.iterdir()) == []


def test_a_corrupt_packed_file_is_one_error_line_exit_3_and_no_output(big, tmp_path):
    _, ggpk = big
    bad = tmp_path / "bad.ggpk"
    data = bytearray(ggpk.read_bytes())
    data[len(data) // 2] ^= 0x40  # inside some chunk's coded data
    bad.write_bytes(bytes(data))
    proc = subprocess.run([sys.executable, "-m", "gguf_tools.launch", "unpack", str(bad), "-o", str(tmp_path / "x.gguf"),
                           "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == InputError.exit_code
    assert proc.stderr.count("\n") == 1 and "corrupt packed data" in proc.stderr
    assert json.loads(proc.stdout)["exit_code"] == InputError.exit_code
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.ggpk"]


def test_the_launcher_and_the_full_command_line_print_the_same(big, tmp_path):
    src, ggpk = big
    outs = []
    for module, name in (("gguf_tools.launch", "a.gguf"), ("gguf_tools.cli", "b.gguf")):
        proc = subprocess.run([sys.executable, "-m", module, "unpack", str(ggpk), f"--output={tmp_path / name}",
                               "--threads=1", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        outs.append(json.loads(proc.stdout))
        assert sha(tmp_path / name) == sha(src)
    assert outs[0].pop("output").endswith("a.gguf") and outs[1].pop("output").endswith("b.gguf")
    assert outs[0] == outs[1]


def test_the_launcher_takes_only_well_formed_unpack_and_install_lines():
    assert parse(["unpack", "m.ggpk"]) == ("unpack", ["m.ggpk"], {})
    assert parse(["unpack", "m.ggpk", "-o", "x", "--threads", "3", "--json"]) == (
        "unpack", ["m.ggpk"], {"output": "x", "threads": 3, "as_json": True})
    assert parse(["install", "pkg", "--to=dest", "--force"]) == ("install", ["pkg"], {"to": "dest", "force": True})
    for argv in (["unpack"], ["unpack", "--help"], ["unpack", "a", "b"], ["unpack", "a", "--threads", "0"],
                 ["unpack", "a", "--threads", "x"], ["unpack", "a", "-o"], ["unpack", "a", "--bogus"],
                 ["install", "pkg"], ["pack", "m.gguf"], [], ["unpack", "a", "-o", "x", "-o", "y"]):
        assert parse(argv) is None, argv


def test_usage_errors_still_come_from_the_full_command_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "gguf_tools.launch", "unpack", "--threads", "0", "x.ggpk"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--threads" in proc.stderr


def test_unpack_and_install_run_without_numpy_typer_or_the_gguf_package(big, tmp_path):
    """What keeps their start-up short; a later import of any of the first five would cost 0.1-0.9 s, of
    dataclasses (with inspect) or json a few milliseconds each."""
    _, ggpk = big
    code = ("import sys\nfrom gguf_tools.launch import main\n"
            f"assert main(['unpack', {str(ggpk)!r}, '-o', {str(tmp_path / 'x.gguf')!r}]) == 0\n"
            "print(sorted(m for m in ('numpy', 'typer', 'click', 'gguf', 'psutil', 'dataclasses', 'inspect', 'json')\n"
            "             if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def _write_windows(path: Path, data: bytes, cuts: list[int], misalign: int = 0) -> bool:
    """Write ``data`` through decode._Output window by window (windows between ``cuts``), each from a
    page-aligned buffer at its offset's alignment, as _stream lays them out (``misalign`` shifts the memory
    by that many bytes). Returns whether the direct descriptor was still open at the end."""
    import mmap

    from gguf_tools.packed import decode as d

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    out = d._Output(fd, path)
    try:
        buf = mmap.mmap(-1, max(b - a for a, b in zip(cuts, cuts[1:])) + 2 * d._ALIGN)
        for a, b in zip(cuts, cuts[1:]):
            pad = a % d._ALIGN + misalign
            buf[pad:pad + b - a] = data[a:b]
            with memoryview(buf) as whole, whole[pad:pad + b - a] as view:
                out.write(view, a)
        still_direct = out.direct is not None
    finally:
        out.close()
    return still_direct


def test_unpack_output_writes_any_window_boundaries_byte_for_byte(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.integers(0, 256, 3 * MiB + 12345, dtype=np.uint8).tobytes()
    # windows starting and ending off page boundaries, one inside a single page, one exactly aligned
    cuts = [0, 777, 4096, 4096 + 100, 4096 + 200, 70000, MiB, 2 * MiB + 5, len(data)]
    path = tmp_path / "w.bin"
    _write_windows(path, data, cuts)
    assert path.read_bytes() == data


def test_unpack_output_falls_back_to_the_page_cache_when_direct_writes_are_refused(tmp_path):
    from gguf_tools.packed import decode as d

    if not hasattr(os, "O_DIRECT"):
        pytest.skip("no O_DIRECT on this system")
    rng = np.random.default_rng(4)
    data = rng.integers(0, 256, MiB + 999, dtype=np.uint8).tobytes()
    path = tmp_path / "m.bin"
    probe = d._Output(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644), path)
    direct = probe.direct is not None
    probe.close()
    # buffers one byte off their pages: a direct write from them fails with EINVAL, the rest goes buffered
    still_direct = _write_windows(path, data, [0, 5000, 600000, len(data)], misalign=1)
    assert path.read_bytes() == data
    assert not still_direct or not direct
