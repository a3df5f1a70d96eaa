"""gguf-tools: Hugging Face checkpoints to GGUF, and back to running models."""
__version__ = "0.1.0"
