"""Running GGUF models offline: a small API over llama-cpp-python."""
from .model import Model, default_threads

__all__ = ["Model", "default_threads"]
