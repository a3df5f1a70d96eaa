"""Running GGUF models offline: a small API over llama-cpp-python."""
from gguf_tools.system import default_threads

from .model import Model

__all__ = ["Model", "default_threads"]
