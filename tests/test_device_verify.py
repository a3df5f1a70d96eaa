"""manifest + verify: every file, shard, tensor and metadata key is checked, and a failure names it."""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys

import gguf
import pytest
from conftest import smollm2_gguf

from gguf_tools.device.manifest import build_manifest, gguf_files, write_manifest
from gguf_tools.device.split import split
from gguf_tools.device.verify import verify

MB = 10**6


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    d = tmp_path_factory.mktemp("release")
    split(smollm2_gguf(), 40 * MB, d, "smol")
    write_manifest(d / "manifest.json", build_manifest(d, gguf_files(d)))
    return d


def _copy(release, tmp_path):
    d = tmp_path / "pkg"
    shutil.copytree(release, d)
    return d


def test_hash_lines_are_llama_gguf_hash_lines_for_the_same_tensors(release):
    import json

    m = json.loads((release / "manifest.json").read_text())
    expected = []
    for path in gguf_files(release):
        reader = gguf.GGUFReader(path)   # an independent parser; digests by hashlib over its bytes
        for t in reader.tensors:
            digest = hashlib.sha256(t.data.tobytes()).hexdigest()
            expected.append(f"sha256    {digest}  {path.name}:{t.name}")   # printf("%-8s  %-s  %s")
    assert m["tensors"] == expected


@pytest.mark.parametrize("fast", [False, True])
def test_an_intact_release_verifies(release, fast):
    r = verify(release, fast=fast)
    assert r.ok and r.checked == 3


@pytest.mark.parametrize("fast", [False, True])
def test_a_flipped_byte_in_each_shard_is_named_with_its_tensor(release, tmp_path, fast):
    for i in range(3):
        d = _copy(release, tmp_path / str(i))
        shard = gguf_files(d)[i]
        reader = gguf.GGUFReader(shard)
        last = reader.tensors[-1]
        data = bytearray(shard.read_bytes())
        data[int(last.data_offset) + 5] ^= 0x01
        shard.write_bytes(bytes(data))
        r = verify(d, fast=fast)
        assert r.problems == [f"{shard.name} (shard {i + 1} of 3): {'xxh64' if fast else 'sha256'} differs",
                              f"{shard.name}: tensor {last.name} differs"]


def test_a_changed_metadata_value_is_named_by_its_key(release, tmp_path):
    d = _copy(release, tmp_path)
    first = gguf_files(d)[0]
    data = first.read_bytes()
    at = data.index(b"apache-2.0")     # general.license, same length
    first.write_bytes(data[:at] + b"apache-3.0" + data[at + 10:])
    r = verify(d)
    assert r.problems == [f"{first.name} (shard 1 of 3): sha256 differs", f"{first.name}: metadata key general.license changed"]


def test_a_deleted_shard_is_named_and_the_command_exits_3(release, tmp_path):
    d = _copy(release, tmp_path)
    gone = gguf_files(d)[1]
    gone.unlink()
    assert verify(d).problems == [f"{gone.name} (shard 2 of 3): missing"]
    r = subprocess.run([sys.executable, "-m", "gguf_tools.cli", "verify", str(d)], capture_output=True, text=True)
    assert r.returncode == 3 and f"{gone.name} (shard 2 of 3): missing" in r.stdout
    ok = subprocess.run([sys.executable, "-m", "gguf_tools.cli", "verify", str(release), "--json"], capture_output=True,
                        text=True)
    assert ok.returncode == 0 and '"ok": true' in ok.stdout
