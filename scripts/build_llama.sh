#!/usr/bin/env bash
# Builds llama-cpp-python once into a wheel cache and installs it into the given venv.
#   scripts/build_llama.sh VENV
#   scripts/build_llama.sh --print-flags SYSTEM MACHINE   (the CMake flags chosen for `uname -s` / `uname -m`)
set -euo pipefail

# CMake flags per platform. x86-64: llama.cpp's native build compiles AMX code that dies with SIGILL on
# some CPUs, so pin a portable AVX2 build (an Intel Mac also skips Metal). arm64 Linux: the native build,
# which turns on what the core has (dotprod, i8mm, SVE). Apple Silicon: the default Metal build, asked for
# explicitly so it does not depend on how CMake guesses.
llama_flags() {
    local system=$1 machine=$2
    local x86="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
    case "$system/$machine" in
        Darwin/arm64 | Darwin/aarch64) echo "-DGGML_METAL=ON" ;;
        Darwin/x86_64) echo "$x86 -DGGML_METAL=OFF" ;;
        */x86_64 | */amd64 | */AMD64) echo "$x86" ;;
        Linux/aarch64 | Linux/arm64) echo "-DGGML_NATIVE=ON" ;;
        *) echo "" ;;
    esac
}

if [ "${1:-}" = --print-flags ]; then
    [ $# -eq 3 ] || { echo "usage: $0 --print-flags SYSTEM MACHINE" >&2; exit 2; }
    llama_flags "$2" "$3"
    exit 0
fi
[ $# -eq 1 ] || { echo "usage: $0 VENV | --print-flags SYSTEM MACHINE" >&2; exit 2; }

venv=$1
version=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
cache=${GGUF_TOOLS_CACHE:-$HOME/.cache/gguf-tools}
flags=$(llama_flags "$(uname -s)" "$(uname -m)")
if command -v sha256sum >/dev/null; then sha="sha256sum"; else sha="shasum -a 256"; fi
tag=$(printf '%s' "$version $flags" | $sha | cut -c1-12)
cores=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)
wheels="$cache/wheels/llama-$tag"
sdist="$cache/sdist"
mkdir -p "$wheels" "$sdist"
if ! ls "$sdist"/llama_cpp_python-"$version".tar.gz >/dev/null 2>&1; then
    "$venv/bin/pip" download -q --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$sdist"
fi
if ! ls "$wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    echo "building llama-cpp-python $version with '$flags' (once, about 6 minutes on 2 cores)" >&2
    CMAKE_ARGS="$flags" CMAKE_BUILD_PARALLEL_LEVEL=$cores \
        "$venv/bin/pip" wheel -q --no-deps -w "$wheels" "$sdist/llama_cpp_python-$version.tar.gz"
fi
"$venv/bin/pip" install -q "$wheels"/llama_cpp_python-*.whl
# The sdist also carries llama.cpp's own converter and test data, used as references in tests/benchmarks.
src="$sdist/llama_cpp_python-$version"
[ -d "$src" ] || tar xzf "$sdist/llama_cpp_python-$version.tar.gz" -C "$sdist"
