"""Peak memory at scale: quantizing a big BF16 model to Q4_K_M, three ways, on a Qwen2-7B-shaped checkpoint.

The benchmark makes a random-weight checkpoint of Qwen2-7B's real shape (hidden 3584, intermediate
18944, 28 layers, 28 heads / 4 KV heads, vocab 152064, untied output: 7.6B parameters) as BF16
safetensors (with config.json and a byte-level tokenizer the converter accepts), then the same
weights as a BF16 GGUF (`gguf-tools convert --quant BF16`). Both are written tensor by tensor, a
slice of rows at a time, so the benchmark itself stays small. It then measures the wall time and peak
RSS (each in its own process, launched by bench.measure) of:

- `gguf-tools quantize --quant Q4_K_M` on the GGUF,
- llama.cpp's quantizer (`llama_model_quantize` through llama-cpp-python) on the same GGUF,
- `gguf-tools convert --quant Q4_K_M` from the safetensors,

plus the BF16 convert that made the GGUF. The weights are random, so only memory and time mean
anything here, not quality. Every tool runs on all cores (os.cpu_count() threads).

Full scale (the numbers for BENCHMARKS.md): `python -m bench memory`, or
`python -m bench.bench_memory --dir /big/disk/qwen2-7b-shape` to keep the 2 x 15.2 GB inputs for a rerun
(each output is deleted once measured: allow about 36 GB of disk; a machine with less RAM than
the 15.2 GB source shows the difference best). A quick run: `python -m bench.bench_memory --layers 2 --vocab 32768` (BENCH_MEMORY_LAYERS
and BENCH_MEMORY_VOCAB set the same for `python -m bench memory`).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from bench.measure import measure

HIDDEN, FFN, LAYERS, HEADS, KV_HEADS, VOCAB = 3584, 18944, 28, 28, 4, 152064
ROWS_BYTES = 64 * 2**20  # bytes of random weights made at a time
EOS = "<|endoftext|>"

LLAMA_QUANTIZE = """
import ctypes, os, sys
import llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
params.nthread = os.cpu_count()  # as gguf-tools quantize
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(params)))
"""


def hf_tensors(layers: int = LAYERS, vocab: int = VOCAB) -> list[tuple[str, tuple[int, ...]]]:
    """Name and shape of every tensor of a Qwen2-7B-shaped checkpoint, in Hugging Face naming."""
    kv = HIDDEN // HEADS * KV_HEADS
    out: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (vocab, HIDDEN))]
    for i in range(layers):
        p = f"model.layers.{i}."
        out += [
            (p + "input_layernorm.weight", (HIDDEN,)),
            (p + "self_attn.q_proj.weight", (HIDDEN, HIDDEN)),
            (p + "self_attn.q_proj.bias", (HIDDEN,)),
            (p + "self_attn.k_proj.weight", (kv, HIDDEN)),
            (p + "self_attn.k_proj.bias", (kv,)),
            (p + "self_attn.v_proj.weight", (kv, HIDDEN)),
            (p + "self_attn.v_proj.bias", (kv,)),
            (p + "self_attn.o_proj.weight", (HIDDEN, HIDDEN)),
            (p + "post_attention_layernorm.weight", (HIDDEN,)),
            (p + "mlp.gate_proj.weight", (FFN, HIDDEN)),
            (p + "mlp.up_proj.weight", (FFN, HIDDEN)),
            (p + "mlp.down_proj.weight", (HIDDEN, FFN)),
        ]
    return out + [("model.norm.weight", (HIDDEN,)), ("lm_head.weight", (vocab, HIDDEN))]


def _random_bf16(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> Iterator[np.ndarray]:
    """The tensor's BF16 bit patterns, a slice of rows at a time (norms 1.0, everything else small)."""
    if "norm" in name:
        yield np.full(shape, 0x3F80, dtype="<u2")
        return
    row = int(np.prod(shape[1:], dtype=np.int64))
    step = max(1, ROWS_BYTES // (2 * row))
    for r0 in range(0, shape[0], step):
        n = min(step, shape[0] - r0) * row
        # random sign and mantissa, exponent 2^-7..2^-4: finite values of a weight's size
        yield (rng.integers(0, 1 << 16, size=n, dtype=np.uint16) & 0x81FF) | 0x3C00


def write_checkpoint(root: Path, layers: int = LAYERS, vocab: int = VOCAB, seed: int = 7) -> Path:
    """A random BF16 Qwen2 checkpoint under ``root``: model.safetensors, config.json, tokenizer.json."""
    from gguf_tools.tokenizer import hf_pre_tokenizer

    root.mkdir(parents=True, exist_ok=True)
    tensors = hf_tensors(layers, vocab)
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in tensors:
        n = int(np.prod(shape, dtype=np.int64)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    rng = np.random.default_rng(seed)
    tmp = root / "model.safetensors.partial"
    with open(tmp, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)) + blob)
        for name, shape in tensors:
            for part in _random_bf16(name, shape, rng):
                fh.write(part.tobytes())
    tmp.replace(root / "model.safetensors")

    config = {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": HIDDEN,
        "intermediate_size": FFN, "num_hidden_layers": layers, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "vocab_size": vocab, "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "bos_token_id": None, "eos_token_id": 256, "hidden_act": "silu",
    }
    (root / "config.json").write_text(json.dumps(config, indent=1))
    # byte-level BPE: the 256 byte symbols and a few merges; config.json's vocab_size pads the rest
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]  # GPT-2's byte -> symbol map
    others = [b for b in range(256) if b not in printable]
    symbol = {b: chr(b) for b in printable} | {b: chr(256 + i) for i, b in enumerate(others)}
    vocab_map = {symbol[b]: b for b in range(256)}
    merges = [(symbol[32], "t"), ("t", "h"), ("h", "e"), ("i", "n"), (symbol[32], "a"), ("e", "r")]
    for i, (a, b) in enumerate(merges):
        vocab_map[a + b] = 257 + i
    tok = {
        "version": "1.0",
        "added_tokens": [{"id": 256, "content": EOS, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True}],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": hf_pre_tokenizer("qwen2")},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": {"type": "BPE", "vocab": vocab_map, "merges": [f"{a} {b}" for a, b in merges], "byte_fallback": False},
    }
    (root / "tokenizer.json").write_text(json.dumps(tok))
    (root / "tokenizer_config.json").write_text(json.dumps({"eos_token": EOS, "bos_token": None}))
    return root


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "gguf_tools.cli", *args, "--no-progress"]


def run(layers: int | None = None, vocab: int | None = None, work: Path | None = None) -> str:
    layers = layers or int(os.environ.get("BENCH_MEMORY_LAYERS", LAYERS))
    vocab = vocab or int(os.environ.get("BENCH_MEMORY_VOCAB", VOCAB))
    keep = work is not None
    work = Path(work) if keep else Path(tempfile.mkdtemp(prefix="bench-memory-"))
    ckpt, source = work / "checkpoint", work / "bf16.gguf"
    try:
        if not (ckpt / "model.safetensors").exists():
            write_checkpoint(ckpt, layers, vocab)
        n_params = sum(int(np.prod(s, dtype=np.int64)) for _, s in hf_tensors(layers, vocab))
        rows = []
        if not source.exists():
            rows.append(("gguf-tools convert --quant BF16 (makes the GGUF)",
                         *measure(_cli("convert", str(ckpt), "-o", str(source), "--quant", "BF16")),
                         source.stat().st_size))
        runs = [
            ("gguf-tools quantize --quant Q4_K_M", lambda out: _cli("quantize", str(source), str(out), "--quant",
                                                                    "Q4_K_M")),
            ("llama.cpp llama_model_quantize Q4_K_M", lambda out: [sys.executable, "-c", LLAMA_QUANTIZE, str(source),
                                                                   str(out)]),
            ("gguf-tools convert --quant Q4_K_M (safetensors)", lambda out: _cli("convert", str(ckpt), "-o", str(out),
                                                                                 "--quant", "Q4_K_M")),
        ]
        for label, cmd in runs:
            out = work / "out.gguf"
            wall, rss = measure(cmd(out))
            rows.append((label, wall, rss, out.stat().st_size))
            out.unlink()
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    gb = 1e9
    lines = [
        f"Random-weight Qwen2-7B-shaped checkpoint: {layers} layers, vocab {vocab}, {n_params / 1e9:.2f}B parameters;"
        f" BF16 GGUF {n_params * 2 / gb:.1f} GB",
        "",
        "| run | wall s | peak RSS GB | output GB |",
        "|---|---:|---:|---:|",
        *(f"| {label} | {wall:.1f} | {rss / gb:.2f} | {size / gb:.2f} |" for label, wall, rss, size in rows),
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=None, help=f"transformer blocks (default {LAYERS})")
    ap.add_argument("--vocab", type=int, default=None, help=f"vocabulary rows (default {VOCAB})")
    ap.add_argument("--dir", type=Path, default=None, help="keep (and reuse) the inputs here")
    args = ap.parse_args()
    print(run(args.layers, args.vocab, args.dir))


if __name__ == "__main__":
    main()
