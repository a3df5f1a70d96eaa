"""Running GGUF models offline: a small API over llama-cpp-python (Model), a conversation that reuses the
KV cache (ChatSession), the terminal chat (terminal) and the local server with its page (serve)."""
from gguf_tools.system import default_threads

from .chat import ChatSession, Sampling
from .model import Model

__all__ = ["ChatSession", "Model", "Sampling", "default_threads"]
