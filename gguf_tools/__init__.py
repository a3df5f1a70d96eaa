"""gguf-tools: Hugging Face checkpoints to GGUF, and back to running models.

The package root is the Python API; the `gguf-tools` command is a thin layer over it::

    import gguf_tools
    gguf_tools.convert("./SmolLM2-135M-Instruct", "model.gguf", quant="Q4_K_M")
    gguf_tools.quantize_gguf("model-f16.gguf", "model-q4.gguf", "Q4_K_M", imatrix="imatrix.gguf")
    gguf_tools.quantize_to_budget("model-f16.gguf", "model-95MB.gguf", target_size=95_000_000, calibration=text)
    gguf_tools.pack("model.gguf", "model.ggpk")

Each function is imported on first use: the pipelines pull in NumPy, gguf and the tokenizers (most of a
second), and the command line, which imports this package, must start fast.
"""
from __future__ import annotations

import importlib
import sys
import types

from .errors import GGUFToolsError, InputError, OutputError, ResourceError, UnsupportedError

__version__ = "0.1.0"

# name -> the module that defines it
_LAZY = {
    "convert": "convert",
    "quantize_gguf": "requantize",
    "WriteResult": "pipeline",
    "pack": "packed",
    "unpack": "packed",
    "describe": "inspection",
    "load_imatrix": "imatrix.file",
    "collect_imatrix": "imatrix.collect",
    "quantize_to_budget": "budgeted",
    "convert_to_budget": "budgeted",
}

__all__ = [
    "GGUFToolsError", "InputError", "OutputError", "ResourceError", "UnsupportedError", "WriteResult",
    "__version__", "collect_imatrix", "convert", "convert_to_budget", "describe", "load_imatrix", "pack",
    "quantize_gguf", "quantize_to_budget", "unpack",
]


class _Package(types.ModuleType):
    def __getattr__(self, name: str):
        if name not in _LAZY:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        super().__setattr__(name, value)
        return value

    def __setattr__(self, name: str, value) -> None:
        # Importing the submodule gguf_tools.convert binds it as this package's attribute `convert`, over the
        # function of that name; the API keeps the function (the module stays reachable as gguf_tools.convert
        # in sys.modules and through `from gguf_tools.convert import ...`).
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(__all__))


sys.modules[__name__].__class__ = _Package
