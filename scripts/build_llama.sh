#!/usr/bin/env bash
# Builds llama-cpp-python once into a wheel cache and installs it into the given venv.
# Default flags compile AMX code that dies with SIGILL on some CPUs: pin a portable AVX2 build.
set -euo pipefail
venv=$1
version=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
cache=${GGUF_TOOLS_CACHE:-$HOME/.cache/gguf-tools}
flags="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
tag=$(printf '%s' "$version $flags" | sha256sum | cut -c1-12)
wheels="$cache/wheels/llama-$tag"
sdist="$cache/sdist"
mkdir -p "$wheels" "$sdist"
if ! ls "$sdist"/llama_cpp_python-"$version".tar.gz >/dev/null 2>&1; then
    "$venv/bin/pip" download -q --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$sdist"
fi
if ! ls "$wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    echo "building llama-cpp-python $version (once, about 6 minutes on 2 cores)" >&2
    CMAKE_ARGS="$flags" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
        "$venv/bin/pip" wheel -q --no-deps -w "$wheels" "$sdist/llama_cpp_python-$version.tar.gz"
fi
"$venv/bin/pip" install -q "$wheels"/llama_cpp_python-*.whl
# The sdist also carries llama.cpp's own converter and test data, used as references in tests/benchmarks.
src="$sdist/llama_cpp_python-$version"
[ -d "$src" ] || tar xzf "$sdist/llama_cpp_python-$version.tar.gz" -C "$sdist"
