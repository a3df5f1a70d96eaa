"""Edge packaging: the memory plan (fit), device profiles, llama.cpp-compatible split files, the
manifest and verify, and the package / install pipeline. Every GGUF header here is read through
the one reader, ``gguf_file.reader.GGUFFile``; nothing here imports gguf_runtime (the smoke test is a callback)."""
