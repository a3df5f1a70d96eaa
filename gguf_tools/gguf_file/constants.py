"""The gguf package's constants (value types, tensor types, block sizes, key names) without the package.

``import gguf`` runs its ``__init__``, which loads NumPy and every reader and writer (0.3-0.9 s); reading a
GGUF header needs only ``gguf/constants.py``, which imports nothing but the standard library. So the
header reader takes its names from here, and commands that never touch tensor values (unpack, install)
start in a fraction of the time. Once gguf itself is imported, its own module is used, so both agree.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def _load() -> ModuleType:
    if "gguf" in sys.modules:
        import gguf.constants

        return gguf.constants
    spec = importlib.util.find_spec("gguf")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the gguf package is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "constants.py"
    mod_spec = importlib.util.spec_from_file_location("gguf.constants", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module


constants = _load()
GGUFValueType = constants.GGUFValueType
GGMLQuantizationType = constants.GGMLQuantizationType
GGML_QUANT_SIZES = constants.GGML_QUANT_SIZES
GGUF_DEFAULT_ALIGNMENT = constants.GGUF_DEFAULT_ALIGNMENT
Keys = constants.Keys
