"""Loading llama.cpp while a packed file is still decoding: llama.cpp must read no tensor data
before the source says it is ready, and an error from the source must stop the load."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from plan_fixtures import source_gguf

from gguf_tools.errors import InputError
from gguf_tools.gguf_file.reader import GGUFFile

llama_cpp = pytest.importorskip("llama_cpp")
from gguf_runtime.llama_load import LlamaSource, llama_source, new_llama  # noqa: E402  (only once llama_cpp is known to be installed)

PROMPT = b"The capital of France is"


def real_model(name: str) -> Path:
    try:
        return source_gguf(name)
    except FileNotFoundError as e:
        pytest.skip(str(e))


def greedy(llm, n: int = 6) -> list[int]:
    out = []
    for tok in llm.generate(llm.tokenize(PROMPT), temp=0.0, top_k=1):
        out.append(tok)
        if len(out) == n:
            break
    llm.close()
    return out


def data_offset(path: Path) -> int:
    return GGUFFile.open(path).data_offset


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2", "gemma3"])  # Q4_1; Q4_K_M, whose Q4_K tensors are repacked at load
def test_llama_cpp_reads_no_tensor_data_before_the_source_is_ready(name):
    src = real_model(name)
    start = data_offset(src)
    fd = os.memfd_create("half-written")
    try:
        with open(src, "rb") as fh:
            os.ftruncate(fd, os.fstat(fh.fileno()).st_size)
            os.pwrite(fd, fh.read(start), 0)                    # the header; tensor data all zeros
            calls = []

            def ready() -> None:
                calls.append(len(calls))
                time.sleep(0.5)                                 # long after llama.cpp could have read
                os.pwrite(fd, fh.read(), start)                 # only now the real weights

            got = greedy(new_llama(LlamaSource(f"/proc/self/fd/{fd}", ready), n_ctx=64, n_threads=2,
                                   verbose=False))
        assert calls == [0]
    finally:
        os.close(fd)
    assert got == greedy(llama_cpp.Llama(str(src), n_ctx=64, n_threads=2, verbose=False))


def test_llama_cpp_maps_the_file_only_once_the_source_is_ready():
    # Mapping first would make llama.cpp create the memory file's missing pages itself.
    src = real_model("smollm2")
    fd = os.memfd_create("not-yet-mapped")
    try:
        with open(src, "rb") as fh:
            os.ftruncate(fd, os.fstat(fh.fileno()).st_size)
            os.pwrite(fd, fh.read(), 0)
        mapped_while_waiting = []

        def ready() -> None:
            time.sleep(0.5)
            with open("/proc/self/maps") as maps:
                mapped_while_waiting.append("not-yet-mapped" in maps.read())

        llm = new_llama(LlamaSource(f"/proc/self/fd/{fd}", ready), n_ctx=64, n_threads=2, verbose=False)
        with open("/proc/self/maps") as maps:
            mapped_after = "not-yet-mapped" in maps.read()
        llm.close()
    finally:
        os.close(fd)
    assert mapped_while_waiting == [False]
    assert mapped_after


def test_an_error_from_the_source_stops_the_load_and_is_raised_as_it_is():
    src = real_model("smollm2")

    def ready() -> None:
        raise InputError(f"{src}: corrupt packed data: chunk 3: checksum mismatch")

    with pytest.raises(InputError, match="chunk 3: checksum mismatch"):
        new_llama(LlamaSource(str(src), ready), n_ctx=64, n_threads=2, verbose=False)


def test_a_plain_file_is_its_own_source_and_loads_without_waiting():
    src = real_model("smollm2")
    with llama_source(src) as source:
        assert source == LlamaSource(str(src))
        assert len(greedy(new_llama(source, n_ctx=64, n_threads=2, verbose=False))) == 6


def test_default_parameters_are_restored_after_every_load():
    src = real_model("smollm2")
    import llama_cpp.llama_cpp as lib

    def fail() -> None:
        raise InputError("bad")

    before = lib.llama_model_default_params
    greedy(new_llama(LlamaSource(str(src), lambda: None), n_ctx=64, n_threads=2, verbose=False))
    with pytest.raises(InputError):
        new_llama(LlamaSource(str(src), fail), n_ctx=64, n_threads=2, verbose=False)
    assert lib.llama_model_default_params is before


@pytest.mark.parametrize("name", ["smollm2", "gemma3"])
def test_a_quiet_load_prints_nothing(capfd, name):
    src = real_model(name)
    greedy(new_llama(LlamaSource(str(src), lambda: None), n_ctx=64, n_threads=2, verbose=False))
    assert capfd.readouterr().err == ""


def test_llama_cpps_own_log_callback_is_restored_after_a_quiet_load(capfd):
    src = real_model("smollm2")
    greedy(new_llama(LlamaSource(str(src)), n_ctx=64, n_threads=2, verbose=False))
    greedy(llama_cpp.Llama(str(src), n_ctx=64, n_threads=2, verbose=True))
    assert "llama_model_loader" in capfd.readouterr().err
