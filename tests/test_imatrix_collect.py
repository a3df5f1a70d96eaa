"""Collecting an importance matrix: the sums are the model's real matmul inputs, and llama.cpp reads the file.

A tiny Llama (SentencePiece vocabulary, untied output) converted at F32 keeps this fast. llama.cpp's
side is reached through the libraries llama-cpp-python ships: ggml's own GGUF reader (the one
``common_imatrix_load`` uses) and ``llama_model_quantize`` with the importance data handed over the
way ``tools/quantize`` hands it.
"""
from __future__ import annotations

import ctypes
import importlib.util
import json
from pathlib import Path

import gguf
import numpy as np
import pytest
from conftest import data_file
from tiny_models import LAYERS, build_tiny_model

from gguf_tools.cli import main
from gguf_tools.convert import convert
from gguf_tools.imatrix.collect import collect_imatrix, tokenize
from gguf_tools.imatrix.file import load_imatrix
from gguf_tools.quantize import ggml_lib

CALIBRATION = data_file("calibration.txt")
CTX, CHUNKS = 32, 3
MATRICES = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    out = root / "llama2.f32.gguf"
    convert(build_tiny_model("llama2", root), out, quant="F32")
    return out


@pytest.fixture(scope="module")
def text() -> str:
    if not CALIBRATION.exists():
        pytest.skip(f"{CALIBRATION} not present")
    return CALIBRATION.read_text(encoding="utf-8")[:4000]


@pytest.fixture(scope="module")
def collected(model, text, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("im") / "imatrix.gguf"
    collect_imatrix(model, text, out, ctx=CTX, chunks=CHUNKS, threads=2, dataset="calibration.txt")
    return out


def tensors(path: Path) -> dict[str, np.ndarray]:
    return {t.name: np.asarray(t.data) for t in gguf.GGUFReader(path).tensors}


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    x = x.astype(np.float64)
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def test_layer_0_attention_sums_equal_the_squared_normed_embeddings(model, text, collected):
    """q, k and v see RMSNorm(embedding) * attn_norm: recompute that in NumPy, straight from the file."""
    w = tensors(model)
    eps = float(gguf.GGUFReader(model).fields["llama.attention.layer_norm_rms_epsilon"].contents())
    tokens, bos = tokenize(model, text)
    assert bos is not None and tokens[0] == bos  # SentencePiece Llama adds BOS
    want = np.zeros(w["token_embd.weight"].shape[1])
    for i in range(CHUNKS):
        chunk = tokens[i * CTX : (i + 1) * CTX]
        chunk[0] = bos
        h = rms_norm(w["token_embd.weight"][chunk], w["blk.0.attn_norm.weight"], eps)
        want += (h * h).sum(0)
    got = tensors(collected)
    for m in ("attn_q", "attn_k", "attn_v"):
        np.testing.assert_allclose(got[f"blk.0.{m}.weight.in_sum2"].reshape(-1), want, rtol=1e-5, err_msg=m)
        assert got[f"blk.0.{m}.weight.counts"].reshape(-1).tolist() == [CHUNKS * CTX]


def test_every_layer_matrix_is_recorded_and_output_only_on_request(model, text, collected, tmp_path):
    names = {f"blk.{i}.{m}.weight" for i in range(LAYERS) for m in MATRICES}
    got = load_imatrix(collected)
    assert set(got) == names
    shapes = {t.name: tuple(int(d) for d in reversed(t.shape)) for t in gguf.GGUFReader(model).tensors}
    for name, v in got.items():
        assert v.shape == (shapes[name][1],), name  # one value per input column
        assert (v > 0).all(), name
    out = tmp_path / "with-output.gguf"
    s = collect_imatrix(model, text, out, ctx=CTX, chunks=1, include_output=True)
    assert set(load_imatrix(out)) == names | {"output.weight"} and s.entries == len(names) + 1


class _GGUFInitParams(ctypes.Structure):
    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.POINTER(ctypes.c_void_p))]


class _Tensor(ctypes.Structure):  # struct ggml_tensor, ggml.h
    _fields_ = [("type", ctypes.c_int), ("buffer", ctypes.c_void_p), ("ne", ctypes.c_int64 * 4),
                ("nb", ctypes.c_size_t * 4), ("op", ctypes.c_int), ("op_params", ctypes.c_int32 * 16),
                ("flags", ctypes.c_int32), ("src", ctypes.c_void_p * 10), ("view_src", ctypes.c_void_p),
                ("view_offs", ctypes.c_size_t), ("data", ctypes.c_void_p), ("name", ctypes.c_char * 64),
                ("extra", ctypes.c_void_p), ("padding", ctypes.c_char * 8)]


def ggml_read_imatrix(path: Path) -> tuple[dict, dict[str, tuple[list[int], np.ndarray]]]:
    """What common_imatrix_load takes from the file, read by ggml's own GGUF parser."""
    lib = ggml_lib._lib()
    lib.gguf_init_from_file.restype = ctypes.c_void_p
    lib.gguf_init_from_file.argtypes = [ctypes.c_char_p, _GGUFInitParams]
    for fn, res, args in [("gguf_find_key", ctypes.c_int64, [ctypes.c_char_p]),
                          ("gguf_get_kv_type", ctypes.c_int, [ctypes.c_int64]),
                          ("gguf_get_arr_type", ctypes.c_int, [ctypes.c_int64]),
                          ("gguf_get_arr_n", ctypes.c_size_t, [ctypes.c_int64]),
                          ("gguf_get_arr_str", ctypes.c_char_p, [ctypes.c_int64, ctypes.c_size_t]),
                          ("gguf_get_val_u32", ctypes.c_uint32, [ctypes.c_int64]),
                          ("gguf_get_val_str", ctypes.c_char_p, [ctypes.c_int64]),
                          ("gguf_get_n_tensors", ctypes.c_int64, [])]:
        getattr(lib, fn).restype = res
        getattr(lib, fn).argtypes = [ctypes.c_void_p, *args]
    lib.ggml_get_first_tensor.restype = lib.ggml_get_next_tensor.restype = ctypes.POINTER(_Tensor)
    lib.ggml_get_first_tensor.argtypes = [ctypes.c_void_p]
    lib.ggml_get_next_tensor.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Tensor)]
    lib.gguf_free.argtypes = lib.ggml_free.argtypes = [ctypes.c_void_p]
    gctx = ctypes.c_void_p()
    ctx = lib.gguf_init_from_file(str(path).encode(), _GGUFInitParams(False, ctypes.pointer(gctx)))
    assert ctx, "ggml's GGUF reader refused the file"
    try:
        kv = {}
        key = lib.gguf_find_key(ctx, b"general.type")
        kv["general.type"] = lib.gguf_get_val_str(ctx, key).decode() if key >= 0 else None
        key = lib.gguf_find_key(ctx, b"imatrix.datasets")
        assert key >= 0 and lib.gguf_get_kv_type(ctx, key) == 9 and lib.gguf_get_arr_type(ctx, key) == 8
        kv["imatrix.datasets"] = [lib.gguf_get_arr_str(ctx, key, i).decode() for i in range(lib.gguf_get_arr_n(ctx, key))]
        for name in ("imatrix.chunk_count", "imatrix.chunk_size"):
            key = lib.gguf_find_key(ctx, name.encode())
            assert key >= 0 and lib.gguf_get_kv_type(ctx, key) == 4, name  # GGUF_TYPE_UINT32
            kv[name] = lib.gguf_get_val_u32(ctx, key)
        kv["n_tensors"] = lib.gguf_get_n_tensors(ctx)
        out = {}
        t = lib.ggml_get_first_tensor(gctx)
        while t:
            c, t = t.contents, lib.ggml_get_next_tensor(gctx, t)
            name = c.name.decode()
            if not name.endswith((".in_sum2", ".counts")):
                continue  # ggml's own blob holding the tensor data; common_imatrix_load skips it too
            assert c.type == 0, name  # F32
            n = int(np.prod(list(c.ne)))
            out[name] = ([int(d) for d in c.ne], np.ctypeslib.as_array(
                ctypes.cast(c.data, ctypes.POINTER(ctypes.c_float)), shape=(n,)).copy())
        return kv, out
    finally:
        lib.gguf_free(ctx)
        lib.ggml_free(gctx)


def test_ggml_reads_the_file_field_for_field_as_llama_imatrix_writes_it(collected, model):
    kv, raw = ggml_read_imatrix(collected)
    assert kv == {"general.type": "imatrix", "imatrix.datasets": ["calibration.txt"],
                  "imatrix.chunk_count": CHUNKS, "imatrix.chunk_size": CTX, "n_tensors": len(raw)}
    n_embd = gguf.GGUFReader(model).fields["llama.embedding_length"].contents()
    assert raw["blk.0.ffn_up.weight.in_sum2"][0] == [n_embd, 1, 1, 1]  # ne = {n_per_row, n_mat}
    assert raw["blk.0.ffn_up.weight.counts"][0] == [1, 1, 1, 1]  # ne = {1, n_mat}
    # tools/quantize: importance = in_sum2 / lround(counts) per matrix
    ours = load_imatrix(collected)
    assert len(raw) == 2 * len(ours)
    for name, values in ours.items():
        sums, counts = raw[name + ".in_sum2"][1], raw[name + ".counts"][1]
        assert counts.tolist() == [CHUNKS * CTX]
        np.testing.assert_array_equal(values, sums / np.float32(round(float(counts[0]))))


def llama_quantize(src: Path, dst: Path, ftype: gguf.LlamaFileType, importance: dict[str, np.ndarray] | None) -> None:
    """llama_model_quantize, with the importance data passed as tools/quantize passes it."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(ftype)
    params.nthread = 2
    keep = []
    if importance is not None:
        entries = (llama_cpp.llama_model_imatrix_data * (len(importance) + 1))()
        for i, (name, v) in enumerate(sorted(importance.items())):
            v = np.ascontiguousarray(v, dtype=np.float32)
            keep.append(v)
            entries[i].name = name.encode()
            entries[i].data = v.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            entries[i].size = v.size
        params.imatrix = entries
    assert llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params)) == 0


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")
def test_llama_quantize_uses_the_collected_importance(model, collected, tmp_path):
    """llama.cpp's Q4_K_M with our imatrix has exactly the blocks ggml makes with that importance."""
    importance = load_imatrix(collected)
    llama_quantize(model, tmp_path / "plain.gguf", gguf.LlamaFileType.MOSTLY_Q4_K_M, None)
    llama_quantize(model, tmp_path / "imatrix.gguf", gguf.LlamaFileType.MOSTLY_Q4_K_M, importance)
    src, plain, weighted = tensors(model), gguf.GGUFReader(tmp_path / "plain.gguf"), gguf.GGUFReader(tmp_path / "imatrix.gguf")
    plain_t = {t.name: t for t in plain.tensors}
    for t in weighted.tensors:
        if t.name not in importance:
            continue
        qtype = gguf.GGMLQuantizationType(int(t.tensor_type))
        got = np.asarray(t.data).reshape(t.data.shape[0], -1)
        want = ggml_lib.quantize_chunk(src[t.name], qtype, importance[t.name])
        assert np.array_equal(got, want), t.name
        assert not np.array_equal(got, np.asarray(plain_t[t.name].data).reshape(got.shape)), t.name


def test_cli_writes_the_imatrix_and_a_json_summary(model, text, tmp_path, capsys):
    t = tmp_path / "cal.txt"
    t.write_text(text, encoding="utf-8")
    out = tmp_path / "im.gguf"
    code = main(["imatrix", str(model), "--text", str(t), "-o", str(out), "--ctx", "64", "--chunks", "2", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0
    assert summary["chunks"] == 2 and summary["ctx"] == 64 and summary["tokens"] == 128
    assert summary["entries"] == LAYERS * len(MATRICES) and summary["dataset"] == str(t)
    assert load_imatrix(out)["blk.1.ffn_down.weight"].shape == (512,)


def test_bad_input_is_refused_and_leaves_nothing_behind(model, tmp_path, capsys):
    short = tmp_path / "short.txt"
    short.write_text("too short", encoding="utf-8")
    out = tmp_path / "im.gguf"
    assert main(["imatrix", str(model), "--text", str(short), "-o", str(out)]) == 3
    assert "fewer than one chunk of 512" in capsys.readouterr().err
    assert main(["imatrix", str(tmp_path / "missing.gguf"), "--text", str(short), "-o", str(out)]) == 3
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    assert main(["imatrix", str(model), "--text", str(binary), "-o", str(out)]) == 3
    long = tmp_path / "long.txt"
    long.write_text("word " * 400, encoding="utf-8")
    assert main(["imatrix", str(model), "--text", str(long), "-o", str(tmp_path / "no" / "im.gguf"),
                 "--ctx", "32", "--chunks", "1"]) == 5
    assert "does not exist" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin.txt", "long.txt", "short.txt"]


@pytest.mark.slow
def test_an_imatrix_collected_on_calibration_text_improves_q4_k_m_on_eval_text(tmp_path):
    """End to end on SmolLM2: collect on calibration.txt, quantize, measure KLD on eval.txt."""
    from plan_fixtures import f16_gguf, source_gguf

    from gguf_runtime.evaluate import evaluate
    from gguf_tools.requantize import quantize_gguf

    eval_text = data_file("eval.txt")
    if not CALIBRATION.exists() or not eval_text.exists():
        pytest.skip(f"{CALIBRATION} or {eval_text} not present")
    im = tmp_path / "imatrix.gguf"
    collect_imatrix(source_gguf("smollm2"), CALIBRATION.read_text(encoding="utf-8"), im, chunks=4, threads=2)
    ref = f16_gguf("smollm2")
    plain, weighted = tmp_path / "plain.gguf", tmp_path / "weighted.gguf"
    quantize_gguf(ref, plain, "Q4_K_M")
    quantize_gguf(ref, weighted, "Q4_K_M", imatrix=im)
    text = eval_text.read_text(encoding="utf-8")
    before = evaluate(plain, ref, text, max_chunks=4, threads=2)
    after = evaluate(weighted, ref, text, max_chunks=4, threads=2)
    assert after.mean_kld < 0.8 * before.mean_kld, (before.mean_kld, after.mean_kld)
