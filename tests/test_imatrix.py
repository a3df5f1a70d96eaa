"""llama.cpp importance matrices: both file forms read, GGUF form written, hostile files refused."""
from __future__ import annotations

import struct

import gguf
import numpy as np
import pytest

from gguf_tools.errors import InputError
from gguf_tools.imatrix.file import load_imatrix, write_imatrix_gguf
from gguf_tools.quantize import ggml_lib, quantize


def legacy_bytes(entries: dict[str, tuple[int, np.ndarray]], trailer: bool = True) -> bytes:
    """A .dat imatrix as llama-imatrix --output-format dat writes it: values are mean * ncall."""
    out = [struct.pack("<i", len(entries))]
    for name, (ncall, values) in entries.items():
        b = name.encode()
        out += [struct.pack("<i", len(b)), b, struct.pack("<ii", ncall, len(values)),
                np.asarray(values, dtype="<f4").tobytes()]
    if trailer:
        ds = b"calibration.txt"
        out += [struct.pack("<i", 10), struct.pack("<i", len(ds)), ds]
    return b"".join(out)


def test_gguf_imatrix_round_trips_as_mean_squared_activation(tmp_path):
    path = tmp_path / "im.gguf"
    sum2 = np.arange(1, 9, dtype=np.float32) * 10
    experts = np.array([[6, 6, 6, 6], [9, 9, 9, 9], [5, 5, 5, 5]], dtype=np.float32)
    write_imatrix_gguf(path, {"blk.0.attn_q.weight": (sum2, 5), "blk.1.ffn_down_exps.weight": (experts, [2, 3, 0])},
                       datasets=["calibration.txt"], chunk_count=7, chunk_size=512)
    got = load_imatrix(path)
    assert np.allclose(got["blk.0.attn_q.weight"], sum2 / 5)
    # per-expert averages; an expert that saw nothing gets importance 1, as llama-quantize does
    assert np.allclose(got["blk.1.ffn_down_exps.weight"], [[3] * 4, [3] * 4, [1] * 4])


def test_gguf_imatrix_has_what_llama_quantize_requires(tmp_path):
    path = tmp_path / "im.gguf"
    write_imatrix_gguf(path, {"blk.0.ffn_up.weight": (np.ones(16, dtype=np.float32), 3)}, chunk_count=2, chunk_size=256)
    r = gguf.GGUFReader(path)
    assert r.fields["general.type"].contents() == "imatrix"
    assert r.fields["imatrix.datasets"].contents() == ["unspecified"]
    assert r.fields["imatrix.chunk_count"].contents() == 2
    assert r.fields["imatrix.chunk_size"].contents() == 256
    shapes = {t.name: ([int(s) for s in t.shape], t.tensor_type) for t in r.tensors}
    assert shapes == {  # ggml ne order, as tools/imatrix writes them
        "blk.0.ffn_up.weight.in_sum2": ([16, 1], gguf.GGMLQuantizationType.F32),
        "blk.0.ffn_up.weight.counts": ([1, 1], gguf.GGMLQuantizationType.F32),
    }


def test_writing_is_atomic_and_rejects_bad_statistics(tmp_path):
    path = tmp_path / "im.gguf"
    with pytest.raises(ValueError, match="non-negative"):
        write_imatrix_gguf(path, {"a.weight": (np.array([1.0, -2.0], dtype=np.float32), 1)})
    with pytest.raises(ValueError, match="one non-negative count"):
        write_imatrix_gguf(path, {"a.weight": (np.ones((2, 4), dtype=np.float32), [1, 2, 3])})
    assert not path.exists() and not list(tmp_path.iterdir())


def test_legacy_dat_imatrix_is_divided_by_its_call_count(tmp_path):
    path = tmp_path / "im.dat"
    q = np.array([2.0, 4.0, 8.0, 16.0], dtype=np.float32)
    path.write_bytes(legacy_bytes({"blk.0.attn_k.weight": (4, q), "output.weight": (0, q)}))
    got = load_imatrix(path)
    assert np.allclose(got["blk.0.attn_k.weight"], q / 4)
    assert np.allclose(got["output.weight"], q)  # ncall 0: taken as is
    path.write_bytes(legacy_bytes({"blk.0.attn_k.weight": (2, q)}, trailer=False))
    assert np.allclose(load_imatrix(path)["blk.0.attn_k.weight"], q / 2)


def test_every_truncation_of_a_legacy_imatrix_is_an_input_error(tmp_path):
    data = legacy_bytes({"blk.0.attn_k.weight": (4, np.ones(8, dtype=np.float32)),
                         "blk.0.attn_v.weight": (4, np.ones(8, dtype=np.float32))}, trailer=False)
    path = tmp_path / "im.dat"
    for cut in range(len(data)):
        path.write_bytes(data[:cut])
        with pytest.raises(InputError):
            load_imatrix(path)


@pytest.mark.parametrize("patch, match", [
    (lambda d: struct.pack("<i", 0) + d[4:], "entry count"),
    (lambda d: struct.pack("<i", 1 << 30) + d[4:], "entry count"),
    (lambda d: d[:4] + struct.pack("<i", -5) + d[8:], "name length"),
    (lambda d: d[:4] + struct.pack("<i", 1 << 28) + d[8:], "name length"),
    (lambda d: d[:31] + struct.pack("<i", 1 << 30) + d[35:], "claims"),  # nval far past the end
    (lambda d: d[:31] + struct.pack("<i", -1) + d[35:], "claims"),
    (lambda d: d[:8] + b"\xff" + d[9:], "UTF-8"),
])
def test_hostile_legacy_headers_are_refused_before_allocating(tmp_path, patch, match):
    data = legacy_bytes({"blk.0.attn_k.weight": (4, np.ones(8, dtype=np.float32))})
    assert data[8:27] == b"blk.0.attn_k.weight"  # the offsets the patches rely on
    path = tmp_path / "im.dat"
    path.write_bytes(patch(data))
    with pytest.raises(InputError, match=match):
        load_imatrix(path)


def test_duplicate_names_and_non_finite_values_are_refused(tmp_path):
    path = tmp_path / "im.dat"
    one = np.ones(4, dtype=np.float32)
    data = legacy_bytes({"a.weight": (1, one)}, trailer=False)
    path.write_bytes(struct.pack("<i", 2) + data[4:] + data[4:])
    with pytest.raises(InputError, match="twice"):
        load_imatrix(path)
    path.write_bytes(legacy_bytes({"a.weight": (1, np.array([1, np.nan, 1, 1], dtype=np.float32))}))
    with pytest.raises(InputError, match="NaN"):
        load_imatrix(path)


def test_malformed_gguf_imatrices_are_input_errors(tmp_path):
    path = tmp_path / "bad.gguf"
    w = gguf.GGUFWriter(path, arch="imatrix")
    w.add_tensor("a.weight.in_sum2", np.ones((1, 6), dtype=np.float32))
    w.add_tensor("a.weight.counts", np.ones((4, 1), dtype=np.float32))  # 6 sums over 4 counts
    w.add_tensor("b.weight.in_sum2", np.ones((1, 6), dtype=np.float32))  # no counts
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(InputError, match="do not split|lacks"):
        load_imatrix(path)
    path.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 40)
    with pytest.raises(InputError):
        load_imatrix(path)
    with pytest.raises(InputError, match="not found"):
        load_imatrix(tmp_path / "missing.gguf")


@pytest.mark.skipif(not ggml_lib.available(), reason="llama-cpp-python not installed")
def test_a_loaded_imatrix_steers_the_quantizer_toward_important_columns(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((32, 512)).astype(np.float32)
    act = np.exp(1.5 * rng.standard_normal((64, 512))).astype(np.float32)  # activations with outlier columns
    path = tmp_path / "im.gguf"
    write_imatrix_gguf(path, {"blk.0.ffn_down.weight": ((act * act).sum(axis=0), act.shape[0])})
    imp = load_imatrix(path)["blk.0.ffn_down.weight"]
    assert np.allclose(imp, (act * act).mean(axis=0), rtol=1e-5)
    err = [float(((ggml_lib.dequantize(quantize(w, gguf.GGMLQuantizationType.Q3_K, m), gguf.GGMLQuantizationType.Q3_K,
                                       512) - w) ** 2 * imp).sum()) for m in (None, imp)]
    assert err[1] < 0.8 * err[0]


def test_every_truncation_of_a_gguf_imatrix_is_an_input_error(tmp_path):
    good = tmp_path / "im.gguf"
    write_imatrix_gguf(good, {"blk.0.attn_q.weight": (np.ones(64, dtype=np.float32), 4)}, chunk_count=1, chunk_size=8)
    data = good.read_bytes()
    last = max(t.data_offset + t.n_bytes for t in gguf.GGUFReader(good).tensors)  # then only alignment padding
    path = tmp_path / "cut.gguf"
    for cut in range(0, last, 5):
        path.write_bytes(data[:cut])
        with pytest.raises(InputError):
            load_imatrix(path)
