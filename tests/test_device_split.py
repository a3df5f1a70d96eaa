"""split / merge: llama.cpp's shard format both ways, byte-identical merges, errors that name the cause."""
from __future__ import annotations

import hashlib
import struct
import subprocess
import sys

import pytest
from conftest import gemma3_gguf, smollm2_gguf

from gguf_tools.device.split import merge, split
from gguf_tools.errors import InputError
from gguf_tools.gguf_file.reader import GGUFFile

MB = 10**6


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_split_writes_llama_cpp_shards_that_llama_cpp_python_loads_from_the_first(tmp_path):
    names = split(smollm2_gguf(), 40 * MB, tmp_path, "smol")
    assert [n.name for n in names] == [f"smol-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    total = sum(len(GGUFFile.open(n).tensors) for n in names)
    for i, n in enumerate(names):
        assert n.stat().st_size <= 40 * MB
        meta = GGUFFile.open(n)
        assert (meta.get("split.no"), meta.get("split.count"), meta.get("split.tensors.count")) == (i, 3, total)
    import llama_cpp

    llm = llama_cpp.Llama(str(names[0]), n_ctx=256, n_threads=2, verbose=False)
    answer = llm.create_completion("The capital of France is", max_tokens=4, temperature=0)["choices"][0]["text"]
    assert "Paris" in answer


@pytest.mark.parametrize("model", ["smollm2", "gemma3"])
def test_merge_gives_back_the_original_bytes(tmp_path, model):
    src, limit = (smollm2_gguf(), 40 * MB) if model == "smollm2" else (gemma3_gguf(), 200 * MB)
    names = split(src, limit, tmp_path)
    assert len(names) > 1
    out = merge(names[0], tmp_path / "merged.gguf")
    assert _sha(out) == _sha(src)


def test_a_tensor_larger_than_the_limit_is_an_error_naming_it_and_nothing_is_written(tmp_path):
    with pytest.raises(InputError, match="token_embd.weight"):
        split(smollm2_gguf(), 30 * MB, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_merge_names_a_missing_shard_and_refuses_changed_bytes_leaving_nothing(tmp_path):
    names = split(smollm2_gguf(), 40 * MB, tmp_path, "smol")
    data = bytearray(names[1].read_bytes())
    data[-100] ^= 0xFF
    names[1].write_bytes(bytes(data))
    with pytest.raises(InputError, match="sha256"):
        merge(names[0], tmp_path / "merged.gguf")
    assert not (tmp_path / "merged.gguf").exists() and not list(tmp_path.glob(".*partial"))
    names[2].unlink()
    with pytest.raises(InputError, match="shard 3 of 3 is missing"):
        merge(names[0], tmp_path / "merged.gguf")


def test_merge_checks_the_split_counts(tmp_path):
    names = split(smollm2_gguf(), 40 * MB, tmp_path, "smol")
    data = names[1].read_bytes()
    at = data.index(b"split.no") + len(b"split.no") + 4   # key, then the u16's type tag
    names[1].write_bytes(data[:at] + struct.pack("<H", 7) + data[at + 2:])
    with pytest.raises(InputError, match="expected 1/3"):
        merge(names[0], tmp_path / "merged.gguf")


def test_split_and_merge_commands_exit_3_on_an_oversize_tensor_and_round_trip_otherwise(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "gguf_tools.cli", *args], capture_output=True, text=True)

    src = smollm2_gguf()
    r = run("split", str(src), "--max-size", "30MB", "-o", str(tmp_path))
    assert r.returncode == 3 and "token_embd.weight" in r.stderr
    assert run("split", str(src), "--max-size", "40MB", "-o", str(tmp_path)).returncode == 0
    first = tmp_path / f"{src.stem}-00001-of-00003.gguf"
    assert run("merge", str(first), "-o", str(tmp_path / "m.gguf")).returncode == 0
    assert _sha(tmp_path / "m.gguf") == _sha(src)
