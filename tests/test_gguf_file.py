"""The GGUF layer: one bounded reader and one layout module, and a hostile-GGUF corpus that every
command reading GGUF refuses with exit 3 and one clear line."""
from __future__ import annotations

import io
import struct
from pathlib import Path

import gguf
import numpy as np
import pytest

from gguf_tools.cli import main
from gguf_tools.errors import InputError
from gguf_tools.gguf_file import layout
from gguf_tools.gguf_file.reader import GGUFFile, adds_bos

Q = gguf.GGMLQuantizationType
V = gguf.GGUFValueType


def write_model(path: Path, **extra) -> Path:
    """A small real GGUF: scalars, a string array, nested arrays, an F32 and a Q8_0 tensor."""
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("reader test")
    w.add_block_count(1)
    w.add_token_list(["a", "b", "<s>", "é"])
    w.add_array("test.nested", [[1, 2], [3]])
    for key, value in extra.items():
        w.add_key_value(key, value[0], value[1])
    w.add_tensor("token_embd.weight", np.arange(64, dtype=np.float32).reshape(2, 32))
    q8 = gguf.quants.quantize(np.linspace(-1, 1, 64, dtype=np.float32).reshape(2, 32), Q.Q8_0)
    w.add_tensor("blk.0.attn_q.weight", q8, raw_shape=q8.shape, raw_dtype=Q.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# ---------------------------------------------------------------------------------------------
# the reader's contract


def test_the_reader_agrees_with_gguf_py_on_every_value_tensor_and_byte(tmp_path):
    path = write_model(tmp_path / "m.gguf")
    ref = gguf.GGUFReader(path)
    for values in ("raw", "scalars", "all"):
        f = GGUFFile.open(path, values=values)
        theirs = {k: v.contents() for k, v in ref.fields.items() if not k.startswith("GGUF.")}
        theirs["test.nested"] = [[1, 2], [3]]   # gguf-py flattens nested arrays; the file nests them
        assert {k: f.get(k) for k in f.fields} == theirs
        assert [(t.name, t.shape, t.ggml_type, f.data_offset + t.offset, t.nbytes) for t in f.tensors] == [
            (t.name, tuple(int(d) for d in t.shape), t.tensor_type, t.data_offset, int(t.n_bytes)) for t in ref.tensors]
        for ours, theirs in zip(f.tensors, ref.tensors):
            np.testing.assert_array_equal(f.data(ours), theirs.data)
    assert f.version == 3 and f.architecture == "llama" and f.get("missing", 7) == 7


def test_raw_values_are_the_files_own_bytes_and_the_header_alone_reads_the_same(tmp_path):
    path = write_model(tmp_path / "m.gguf")
    data = path.read_bytes()
    f = GGUFFile.open(path)
    for field in f.fields.values():
        assert field.raw in data and field.raw[:4] == struct.pack("<I", field.types[0])
    assert f.value_type("tokenizer.ggml.tokens") == (V.ARRAY, V.STRING)
    header = GGUFFile.from_header(data[:f.data_offset], what="header", values="all", file_size=len(data))
    assert header.tensors == f.tensors and {k: header.get(k) for k in header.fields} == {k: f.get(k) for k in f.fields}
    with pytest.raises(InputError, match="only the header"):
        header.data(header.tensors[0])


def test_an_array_head_decodes_only_what_is_shown(tmp_path):
    f = GGUFFile.open(write_model(tmp_path / "m.gguf"))
    assert f.fields["tokenizer.ggml.tokens"].head(2) == (4, ["a", "b"])


def test_adds_bos_is_llama_cpps_default_unless_the_file_says_otherwise(tmp_path):
    assert adds_bos(GGUFFile.open(write_model(tmp_path / "a.gguf"))) is True
    off = write_model(tmp_path / "b.gguf", **{gguf.Keys.Tokenizer.ADD_BOS: (False, V.BOOL)})
    assert adds_bos(GGUFFile.open(off)) is False


def test_a_count_of_2_62_is_refused_before_anything_is_allocated(tmp_path):
    path = tmp_path / "big.gguf"
    path.write_bytes(_header(n_kv=1) + _kv(b"k", V.ARRAY, _u32(V.UINT64) + _u64(1 << 62)))
    with pytest.raises(InputError, match="claims 4611686018427387904 elements"):
        GGUFFile.open(path)


def test_layout_sizes_tensors_in_gguf_order():
    assert layout.tensor_nbytes((256, 3), Q.Q4_K) == 3 * 144
    assert layout.tensor_nbytes(layout.gguf_shape((3, 256)), Q.Q4_K) == 3 * 144
    assert layout.numpy_shape((256, 3, 2)) == (2, 3, 256)
    assert layout.row_bytes(Q.Q8_0, 64) == 68 and layout.bits_per_weight(Q.Q4_K) == 4.5
    with pytest.raises(InputError, match="not a multiple of Q4_K's block of 256"):
        layout.tensor_nbytes((3, 256), Q.Q4_K)


# ---------------------------------------------------------------------------------------------
# the hostile corpus: each file is wrong in one way


def _u32(x: int) -> bytes:
    return struct.pack("<I", x)


def _u64(x: int) -> bytes:
    return struct.pack("<Q", x)


def _str(b: bytes) -> bytes:
    return _u64(len(b)) + b


def _kv(key: bytes, vtype: int, payload: bytes) -> bytes:
    return _str(key) + _u32(vtype) + payload


def _header(version: int = 3, n_tensors: int = 0, n_kv: int = 0) -> bytes:
    return b"GGUF" + _u32(version) + _u64(n_tensors) + _u64(n_kv)


def _info(name: bytes, dims: tuple[int, ...], qtype: int, offset: int = 0, n_dims: int | None = None) -> bytes:
    n = len(dims) if n_dims is None else n_dims
    return _str(name) + _u32(n) + b"".join(_u64(d) for d in dims) + _u32(qtype) + _u64(offset)


ARCH = _kv(b"general.architecture", V.STRING, _str(b"llama"))


def _file(kvs: list[bytes], infos: list[bytes], data: bytes = b"", *, version: int = 3, align: int = 32,
          n_tensors: int | None = None, n_kv: int | None = None) -> bytes:
    head = _header(version, len(infos) if n_tensors is None else n_tensors, len(kvs) if n_kv is None else n_kv)
    body = head + b"".join(kvs) + b"".join(infos)
    return body + b"\0" * (-len(body) % align) + data


def _valid() -> bytes:
    return _file([ARCH], [_info(b"token_embd.weight", (32, 2), Q.F32)], bytes(256))


def _nested(depth: int) -> bytes:
    """An array of an array of ... of an empty uint8 array: each level is an element type and a count."""
    inner = _u32(V.UINT8) + _u64(0)
    for _ in range(depth - 1):
        inner = _u32(V.ARRAY) + _u64(1) + inner
    return _kv(b"deep", V.ARRAY, inner)


T32 = (32, 2)
CORPUS: dict[str, bytes] = {
    "zero-bytes": b"",
    "truncated-header": _valid()[:20],
    "bad-magic": b"GGUX" + _valid()[4:],
    "version-0": _file([ARCH], [], version=0),
    "version-1": _file([ARCH], [], version=1),
    "version-9": _file([ARCH], [], version=9),
    "n-tensors-2^64-1": _file([ARCH], [], n_tensors=(1 << 64) - 1),
    "n-kv-2^62": _file([ARCH], [], n_kv=1 << 62),
    "key-length-past-the-end": _file([_u64(1 << 62) + b"general.architecture"], []),
    "empty-key": _file([_kv(b"", V.UINT8, b"\1")], []),
    "string-past-the-end": _file([_kv(b"general.architecture", V.STRING, _u64(1 << 40) + b"llama")], []),
    "unknown-value-type": _file([ARCH, _kv(b"x", 99, b"\0" * 8)], []),
    "unknown-array-element-type": _file([ARCH, _kv(b"x", V.ARRAY, _u32(99) + _u64(1) + bytes(8))], []),
    "array-count-2^62": _file([ARCH, _kv(b"x", V.ARRAY, _u32(V.UINT32) + _u64(1 << 62))], []),
    "arrays-nested-2000-deep": _file([ARCH, _nested(2000)], []),
    "duplicate-key": _file([ARCH, ARCH], []),
    "alignment-13": _file([ARCH, _kv(b"general.alignment", V.UINT32, _u32(13))], []),
    "alignment-of-wrong-type": _file([ARCH, _kv(b"general.alignment", V.INT32, _u32(32))], []),
    "invalid-utf8-key": _file([_kv(b"\xff\xfe", V.UINT8, b"\1")], []),
    "tensor-name-over-63-bytes": _file([ARCH], [_info(b"t" * 80, T32, Q.F32)], bytes(256)),
    "duplicate-tensor-name": _file([ARCH], [_info(b"a", T32, Q.F32), _info(b"a", T32, Q.F32, 256)], bytes(512)),
    "five-dimensions": _file([ARCH], [_info(b"a", (32, 1, 1, 1, 1), Q.F32)], bytes(128)),
    "negative-dimension": _file([ARCH], [_info(b"a", ((1 << 64) - 1,), Q.F32)]),
    "elements-overflow-int64": _file([ARCH], [_info(b"a", (4 * (2**31 - 1), 4 * (2**31 - 1)), Q.F32)]),
    "bytes-wrap-2^64": _file([ARCH], [_info(b"a", (4, 2**30 - 1, 2**30 + 1), Q.F32)]),
    "two-2^63-byte-tensors": _file([ARCH], [_info(b"a", (0x7FFFFFFFFFFFFFC0,), Q.I8),
                                            _info(b"b", (0x7FFFFFFFFFFFFFC0,), Q.I8)], bytes(32)),
    "unknown-tensor-type": _file([ARCH], [_info(b"a", T32, 255)], bytes(256)),
    "row-not-whole-blocks": _file([ARCH], [_info(b"a", (100, 1), Q.Q4_K)], bytes(256)),
    "offset-not-aligned": _file([ARCH], [_info(b"a", T32, Q.F32, 4)], bytes(288)),
    "offset-2^64-1": _file([ARCH], [_info(b"a", T32, Q.F32, (1 << 64) - 32)], bytes(256)),
    "data-one-byte-short": _valid()[:-1],
}

COMMANDS = {
    "inspect": ["inspect", "{f}"],
    "inspect --json": ["inspect", "{f}", "--json"],
    "quantize": ["quantize", "{f}", "{out}.gguf", "-q", "Q8_0", "--no-progress"],
    "eval": ["eval", "{f}", "--ref", "{f}", "--text", "{text}"],
    "imatrix": ["imatrix", "{f}", "--text", "{text}", "-o", "{out}.gguf", "--no-progress"],
    "pack": ["pack", "{f}", "-o", "{out}.ggpk"],
    "run": ["run", "{f}", "-p", "hello"],
    "chat": ["chat", "{f}"],
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gguf_corpus")
    for name, blob in CORPUS.items():
        (root / f"{name}.gguf").write_bytes(blob)
    (root / "text.txt").write_text("hello world " * 50, encoding="utf-8")
    return root


def test_the_valid_base_of_the_corpus_reads():
    f = GGUFFile.from_header(_valid(), what="base", file_size=len(_valid()))
    assert f.architecture == "llama" and f.tensors[0].nbytes == 256


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_the_reader_refuses_each_hostile_file_with_an_input_error_naming_it(corpus, case):
    path = corpus / f"{case}.gguf"
    with pytest.raises(InputError) as e:
        GGUFFile.open(path, values="all")
    assert str(e.value).startswith(str(path))
    with pytest.raises(InputError):
        GGUFFile.from_header(CORPUS[case], what=case, file_size=len(CORPUS[case]))


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_reading_gguf_refuses_the_whole_corpus_with_exit_3_and_one_line(
        corpus, command, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))   # chat, with stdin closed
    for case in sorted(CORPUS):
        out = tmp_path / case
        argv = [a.format(f=corpus / f"{case}.gguf", out=out, text=corpus / "text.txt") for a in COMMANDS[command]]
        code = main(argv)
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 3, (case, err)
        assert len(lines) == 1 and lines[0].startswith("gguf-tools: error: "), (case, err)
        assert "Traceback" not in err and "internal error" not in err, (case, err)
        assert list(tmp_path.iterdir()) == [], (case, list(tmp_path.iterdir()))


def test_export_refuses_the_whole_corpus_and_writes_nothing(corpus, tmp_path):
    from gguf_tools.export.checkpoint import export_checkpoint

    for case in sorted(CORPUS):
        with pytest.raises(InputError):
            export_checkpoint(corpus / f"{case}.gguf", tmp_path / case)
        assert not (tmp_path / case).exists()
