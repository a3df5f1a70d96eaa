"""Edge packaging: how much memory a model needs on a device (fit), the device profiles, and
llama.cpp-compatible split files. Everything here reads GGUF through ``gguf.read_gguf`` alone."""
