"""C extensions. Each kernel family is its own module so it builds and fails alone.

No -march=native: SIMD paths are compiled per function with target attributes and chosen at
run time, so one wheel runs on every x86-64 / arm64 machine.
"""
from pathlib import Path

import numpy
from setuptools import Extension, setup

CFLAGS = [
    "-O3", "-std=c11", "-fno-strict-aliasing", "-ffp-contract=off",
    "-Wall", "-Wno-unused-function", "-Wno-psabi",
]


def ext(name: str, *sources: str) -> Extension:
    return Extension(
        name,
        sources=[f"native/{s}" for s in sources],
        depends=sorted(str(p) for p in Path("native").glob("*.h")),
        include_dirs=["native", numpy.get_include()],
        extra_compile_args=CFLAGS,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )


setup(
    ext_modules=[
        ext("gguf_tools._kernels", "kernels.c"),
        ext("gguf_tools._kquant", "kquant.c"),
        ext("gguf_tools._huffman", "huffman.c"),
        ext("gguf_runtime._llama_log", "llama_log.c"),
    ]
)
