"""`gguf-tools doctor` reports what this installation really runs on."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json

import numpy as np

from gguf_tools.cli import main
from gguf_tools.engine import kernels
from gguf_tools.system import default_threads


def test_json_report_matches_the_running_installation(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("GGUF_TOOLS_CACHE", str(tmp_path / "cache"))
    assert main(["doctor", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["simd"]["in_use"] == kernels.simd_level() and d["simd"]["in_use"] in d["simd"]["available"]
    assert d["simd"]["available"][0] == "scalar" and d["simd"]["forced_by_env"] is None
    assert d["threads_default"] == default_threads() >= 1
    assert d["versions"]["numpy"] == np.__version__
    assert d["versions"]["gguf"] == importlib.metadata.version("gguf")
    assert d["llama_cpp"]["loads"] == (importlib.util.find_spec("llama_cpp") is not None)
    if d["llama_cpp"]["loads"]:
        assert "AVX" in d["llama_cpp"]["system_info"] or "NEON" in d["llama_cpp"]["system_info"]
    assert d["cache_dir"] == str(tmp_path / "cache") and d["cache_dir_exists"] is False


def test_text_report_names_a_forced_simd_path(capsys, monkeypatch):
    monkeypatch.setenv(kernels.SIMD_ENV, "scalar")
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "SIMD in use       scalar (forced by 'scalar')" in out
    assert f"threads (default) {default_threads()}" in out
    assert "llama-cpp-python" in out and "cache dir" in out
