"""Memory stays bounded: a mapped input's pages are released once used, so RSS does not grow with the model."""
from __future__ import annotations

import mmap
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import psutil
import pytest

from gguf_tools.files import release_pages
from gguf_tools.gguf_file.writer import OutTensor, write_gguf

Q = gguf.GGMLQuantizationType
MiB = 2**20

needs_proc = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
needs_madvise = pytest.mark.skipif(not hasattr(mmap, "MADV_DONTNEED"), reason="no madvise(MADV_DONTNEED) here")

# A small Qwen2 (about 200M parameters, 400 MB as BF16): every matrix row a multiple of 256.
VOCAB, HIDDEN, FFN, LAYERS, HEADS, KV_HEADS = 32768, 1024, 2816, 12, 16, 4


def _qwen2_tensors() -> list[OutTensor]:
    kv = HIDDEN // HEADS * KV_HEADS
    out = [OutTensor("token_embd.weight", (VOCAB, HIDDEN), Q.BF16)]
    for i in range(LAYERS):
        p = f"blk.{i}."
        out += [
            OutTensor(p + "attn_norm.weight", (HIDDEN,), Q.F32),
            OutTensor(p + "attn_q.weight", (HIDDEN, HIDDEN), Q.BF16),
            OutTensor(p + "attn_q.bias", (HIDDEN,), Q.F32),
            OutTensor(p + "attn_k.weight", (kv, HIDDEN), Q.BF16),
            OutTensor(p + "attn_k.bias", (kv,), Q.F32),
            OutTensor(p + "attn_v.weight", (kv, HIDDEN), Q.BF16),
            OutTensor(p + "attn_v.bias", (kv,), Q.F32),
            OutTensor(p + "attn_output.weight", (HIDDEN, HIDDEN), Q.BF16),
            OutTensor(p + "ffn_norm.weight", (HIDDEN,), Q.F32),
            OutTensor(p + "ffn_gate.weight", (FFN, HIDDEN), Q.BF16),
            OutTensor(p + "ffn_up.weight", (FFN, HIDDEN), Q.BF16),
            OutTensor(p + "ffn_down.weight", (HIDDEN, FFN), Q.BF16),
        ]
    return out + [OutTensor("output_norm.weight", (HIDDEN,), Q.F32), OutTensor("output.weight", (VOCAB, HIDDEN), Q.BF16)]


def _random(t: OutTensor, rng: np.random.Generator) -> np.ndarray:
    n = int(np.prod(t.shape))
    if t.qtype == Q.F32:
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)
    # BF16 bit patterns of random sign, exponent 2^-7..2^-4 and mantissa: finite, weight-sized values
    return (rng.integers(0, 1 << 16, size=n, dtype=np.uint16) & 0x81FF) | 0x3C00


@pytest.fixture(scope="module")
def qwen2_bf16(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("memory") / "qwen2-200m-bf16.gguf"
    tensors = _qwen2_tensors()
    rng = np.random.default_rng(16)

    def metadata(w: gguf.GGUFWriter) -> None:
        w.add_block_count(LAYERS)
        w.add_context_length(4096)
        w.add_embedding_length(HIDDEN)
        w.add_feed_forward_length(FFN)
        w.add_head_count(HEADS)
        w.add_head_count_kv(KV_HEADS)
        w.add_layer_norm_rms_eps(1e-6)
        w.add_rope_freq_base(1e6)
        w.add_file_type(gguf.LlamaFileType.MOSTLY_BF16)

    write_gguf(path, "qwen2", metadata, tensors, (_random(t, rng) for t in tensors))
    return path


def _peak_rss(args: list[str]) -> int:
    """Peak RSS (bytes) of `gguf-tools ARGS` run in a fresh interpreter.

    VmHWM belongs to the interpreter's own address space, so unlike ru_maxrss it does not count
    the pages of the (large) test process that forked it.
    """
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['gguf-tools', *{args!r}]\n"
        "try:\n"
        "    runpy.run_module('gguf_tools.cli', run_name='__main__')\n"
        "finally:\n"
        "    hwm = [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM:')][0]\n"
        "    sys.stderr.write('\\n' + hwm)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("VmHWM:"), proc.stderr[-2000:]
    return int(line.split()[1]) * 1024


@pytest.mark.slow  # about 10 s of CPU; 40 s of wall time on a busy 2-core machine
@needs_proc
@needs_madvise
def test_quantize_holds_well_under_half_of_a_400_mb_source_at_its_peak(tmp_path, qwen2_bf16):
    source = qwen2_bf16.stat().st_size
    out = tmp_path / "q4.gguf"
    peak = _peak_rss(["quantize", str(qwen2_bf16), str(out), "--quant", "Q4_K_M", "--no-progress"])
    assert out.stat().st_size < source / 3
    assert peak < source / 2, f"peak RSS {peak / MiB:.0f} MiB for a {source / MiB:.0f} MiB source"


@needs_madvise
def test_released_pages_of_a_mapped_array_leave_this_process_and_read_back_unchanged(tmp_path):
    path = tmp_path / "data.bin"
    data = np.arange(16 * MiB, dtype=np.uint32)  # 64 MiB
    data.tofile(path)
    proc = psutil.Process()
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        view = np.frombuffer(mm, dtype=np.uint32)[4096 + 3:]  # not page aligned
        total = int(view.sum(dtype=np.uint64))
        touched = proc.memory_info().rss
        release_pages(view)
        assert proc.memory_info().rss < touched - 48 * MiB
        assert int(view.sum(dtype=np.uint64)) == total
        del view


def test_releasing_a_heap_array_keeps_its_data():
    a = np.arange(4 * MiB, dtype=np.uint32)
    release_pages(a[1000:])
    assert int(a.sum(dtype=np.uint64)) == (4 * MiB - 1) * 4 * MiB // 2
