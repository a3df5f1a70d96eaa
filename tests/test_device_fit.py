"""fit: the memory plan agrees with llama.cpp's allocations and with the RSS a real load measures."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import pytest
from conftest import gemma3_gguf, smollm2_gguf

from gguf_tools.device.devices import load_devices, parse_size
from gguf_tools.device.fit import fit, kv_bytes, read_shape
from gguf_tools.errors import UsageError

MiB = 1 << 20

# A subprocess: load with llama-cpp-python as Model does, generate one token, report peak RSS (psutil
# for the current RSS, VmHWM for the high-water mark) and llama.cpp's own KV buffer sizes. VmHWM belongs
# to the new interpreter's address space; ru_maxrss would also count the pages of the large test
# process that forked it.
_MEASURE = textwrap.dedent("""
    import json, resource, sys
    import llama_cpp, psutil
    path, ctx, kv = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    t = {"f16": llama_cpp.GGML_TYPE_F16, "q8_0": llama_cpp.GGML_TYPE_Q8_0}[kv]
    llm = llama_cpp.Llama(path, n_ctx=ctx, n_threads=1, type_k=t, type_v=t, flash_attn=kv != "f16", verbose=True)
    tokens = llm.tokenize(b"<|im_start|>user\\nWhat is the capital of France?<|im_end|>\\n", add_bos=True)
    next(iter(llm.generate(tokens, top_k=1, temp=0.0)))
    rss = psutil.Process().memory_info().rss
    try:
        hwm = int([ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:")][0].split()[1]) * 1024
    except OSError:  # no /proc (macOS): the rusage high-water mark, in bytes there
        hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = max(rss, hwm)
    print(json.dumps({"peak": peak}))
""")


def _measure(path, ctx: int, kv: str) -> tuple[int, float]:
    r = subprocess.run([sys.executable, "-c", _MEASURE, str(path), str(ctx), kv], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    kv_mib = sum(float(x) for x in re.findall(r"CPU KV buffer size =\s*([0-9.]+) MiB", r.stderr))
    return json.loads(r.stdout.strip().splitlines()[-1])["peak"], kv_mib


@pytest.mark.slow
@pytest.mark.parametrize("model", ["smollm2", "gemma3"])
def test_fit_predicts_peak_rss_of_a_real_load_and_one_token_within_10_percent_or_64_mib(model):
    path = smollm2_gguf() if model == "smollm2" else gemma3_gguf()
    rows = []
    for ctx in (512, 2048, 4096):
        for kv in ("f16", "q8_0"):
            peak, llama_kv_mib = _measure(path, ctx, kv)
            p = fit(path, ctx, kv)
            rows.append((ctx, kv, p.total / MiB, peak / MiB))
            assert p.kv / MiB == pytest.approx(llama_kv_mib, abs=0.011)   # llama.cpp logs two decimals
            assert abs(p.total - peak) <= max(0.10 * peak, 64 * MiB), rows
    print("\n".join(f"{model} ctx {c} kv {k}: predicted {a:.1f} MiB, measured {b:.1f} MiB" for c, k, a, b in rows))


def test_kv_bytes_equal_the_exact_formula_with_swa_layers_holding_only_their_window():
    gemma = read_shape(gemma3_gguf())
    # Gemma-3-270M: 18 layers, one KV head of 256 (K) + 256 (V); every 6th layer is global, the rest slide
    # over 512 tokens. llama.cpp pads cells to 256; a window cache holds min(ctx, 512 + ubatch 512) cells.
    assert gemma.swa_layers == tuple(il % 6 != 5 for il in range(18))
    for ctx in (100, 512, 2048, 4096):
        cells = -(-ctx // 256) * 256
        full = 18 * cells * 1 * (256 + 256) * 2
        window = 3 * cells * 512 * 2 + 15 * min(cells, 1024) * 512 * 2
        assert kv_bytes(gemma, ctx, "f16") == full
        assert kv_bytes(gemma, ctx, "f16", swa_full=False) == window
        assert kv_bytes(gemma, ctx, "q8_0") == 18 * cells * 512 * 34 // 32
    smol = read_shape(smollm2_gguf())
    # SmolLM2-135M: 30 layers, 3 KV heads of 64
    assert kv_bytes(smol, 4096, "q4_0") == 30 * 4096 * 3 * 128 * 18 // 32


def test_fit_verdicts_follow_the_budget_and_the_largest_context_fits():
    path = smollm2_gguf()
    roomy = fit(path, 2048, budget=parse_size("4GiB"), bandwidth=17.1e9)
    assert roomy.verdict == "fits" and roomy.max_ctx == 8192 and roomy.tokens_per_s > 0
    tight = fit(path, 2048, budget=roomy.total - roomy.weights // 2)
    assert tight.verdict == "pages"        # only the mapped weights overflow: they page from disk
    assert fit(path, 2048, budget=roomy.total - roomy.weights - 1).verdict == "cannot"
    largest = fit(path, "max", budget=fit(path, 3000).total)   # 3000 pads to 3072 cells
    assert largest.ctx == largest.max_ctx == 3072 and largest.verdict == "fits"
    assert fit(path, largest.ctx + 256, budget=largest.budget).verdict != "fits"


def test_every_shipped_device_profile_has_a_source_and_sane_numbers():
    devices = load_devices()
    for name in ("pi4-4g", "pi5-8g", "jetson-orin-nano-8g", "mac-m1-8g", "mac-m2-16g", "phone-6g", "phone-8g",
                 "laptop-8g", "laptop-16g"):
        d = devices[name]
        assert d.source and 0 < d.budget <= d.ram and d.bandwidth > 1e9


def test_sizes_parse_like_gguf_split_and_bad_ones_are_usage_errors():
    assert parse_size("4G") == 4 * 10**9 and parse_size("4GiB") == 4 << 30 and parse_size("100MB") == 10**8
    assert parse_size("fat32") == 2**32 - 1
    with pytest.raises(UsageError):
        parse_size("lots")


def test_fit_of_a_first_shard_counts_the_whole_split_model(tmp_path):
    from gguf_tools.device.split import split

    whole = fit(smollm2_gguf(), 2048)
    first = split(smollm2_gguf(), 40 * 10**6, tmp_path)[0]
    assert fit(first, 2048).weights == whole.weights


def test_fit_of_a_packed_file_plans_like_its_original_and_says_it_is_packed(tmp_path):
    import dataclasses

    from gguf_tools.packed import pack

    pack(smollm2_gguf(), tmp_path / "m.ggpk")
    plain, packed = fit(smollm2_gguf(), 2048), fit(tmp_path / "m.ggpk", 2048)
    assert packed.packed and not plain.packed
    assert dataclasses.replace(packed, packed=False) == plain


def test_model_refuses_a_context_its_fit_plan_says_the_machine_cannot_hold():
    pytest.importorskip("llama_cpp")
    from gguf_runtime import Model
    from gguf_tools.errors import ResourceError

    ctx = 1 << 24
    need = fit(smollm2_gguf(), ctx).total
    with pytest.raises(ResourceError, match=f"needs about {need / 2**30:.1f} GiB of RAM at n_ctx={ctx}"):
        Model(smollm2_gguf(), n_ctx=ctx)
