"""Running GGUF models offline: a small API over llama-cpp-python (Model), a conversation that reuses the
KV cache (ChatSession), the terminal chat (terminal) and the local server with its page (serve)."""
from .chat import ChatSession, Sampling
from .model import Model, default_threads

__all__ = ["ChatSession", "Model", "Sampling", "default_threads"]
