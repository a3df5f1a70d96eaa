#!/usr/bin/env bash
# native/ on arm64 without the hardware: cross-compiles it and its C test drivers (tests/native/) for aarch64
# Linux, runs them under user-mode QEMU on a core with SDOT (-cpu max) and one without (-cpu cortex-a72), and
# compiles and links every C file for aarch64 macOS with zig cc.
#   scripts/test_arm.sh                run everything (exit 0: all passed)
#   scripts/test_arm.sh --check-tools  exit 0 if the tools are installed, else 1 and what is missing
# Tools: apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user; pip install ziglang.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
[ -x "$py" ] || py=python3
sysroot=/usr/aarch64-linux-gnu

missing=()
command -v aarch64-linux-gnu-gcc >/dev/null || missing+=("gcc-aarch64-linux-gnu (apt)")
[ -e "$sysroot/lib/libc.so.6" ] || missing+=("libc6-dev-arm64-cross (apt)")
command -v qemu-aarch64 >/dev/null || missing+=("qemu-user (apt)")
"$py" -m ziglang version >/dev/null 2>&1 || missing+=("ziglang (pip)")
if [ "${1:-}" = --check-tools ]; then
    [ ${#missing[@]} -eq 0 ] && exit 0
    echo "missing: ${missing[*]}"
    exit 1
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "test_arm: missing ${missing[*]}" >&2
    exit 1
fi

out=build/arm
mkdir -p "$out/linux" "$out/macos"
cflags=(-O3 -std=c11 -fno-strict-aliasing -ffp-contract=off -Wall -Werror -Wno-unused-function -Wno-psabi -Inative)
pyinc=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
qemu() { qemu-aarch64 -L "$sysroot" -cpu "$@"; }
step() { printf '== %s\n' "$*"; }

# 0. The host runs the same drivers (its own SIMD levels against the goldens).
step "host cc: the drivers"
mkdir -p "$out/host"
for d in kernels huffman kquant; do cc "${cflags[@]}" "tests/native/test_$d.c" -o "$out/host/test_$d" -lm -lpthread; done
"$out/host/test_kernels" tests/native/golden_kernels.bin
"$out/host/test_huffman"
"$out/host/test_kquant" tests/native/golden_kquant.bin

# 1. aarch64 Linux (GCC): the extensions compile; the drivers build as shipped (plain arm64, SDOT and CRC chosen at
#    run time or not at all) and for a v8.2 core (+dotprod+crc: hardware CRC-32C too).
step "aarch64-linux-gnu-gcc: native/*.c"
for f in native/*.c; do aarch64-linux-gnu-gcc "${cflags[@]}" -I"$pyinc" -c "$f" -o "$out/linux/$(basename "$f" .c).o"; done
for d in kernels huffman kquant; do
    aarch64-linux-gnu-gcc "${cflags[@]}" "tests/native/test_$d.c" -o "$out/linux/test_$d" -lm -lpthread
    aarch64-linux-gnu-gcc "${cflags[@]}" -march=armv8.2-a+dotprod+crc "tests/native/test_$d.c" \
        -o "$out/linux/test_${d}_v82" -lm -lpthread
done

golden=tests/native/golden_kernels.bin
step "qemu -cpu max: kernels, dispatch picks neon_dotprod"
qemu max "$out/linux/test_kernels" "$golden" --expect-best neon_dotprod
qemu max "$out/linux/test_kernels_v82" "$golden" --expect-best neon_dotprod
step "qemu -cpu cortex-a72 (no SDOT): kernels, dispatch picks neon"
qemu cortex-a72 "$out/linux/test_kernels" "$golden" --expect-best neon
step "qemu -cpu cortex-a72: the dotprod kernels forced on must die with SIGILL"
set +e
qemu cortex-a72 "$out/linux/test_kernels" "$golden" --force neon_dotprod >/dev/null 2>&1
rc=$?
set -e
if [ "$rc" -ne 132 ]; then
    echo "expected SIGILL (exit 132), got $rc: the dotprod kernels do not use SDOT, or QEMU emulates it" >&2
    exit 1
fi
echo "SIGILL, as it should"
step "qemu: Huffman decoder and CRC-32C"
qemu cortex-a72 "$out/linux/test_huffman"
qemu max "$out/linux/test_huffman_v82"
step "qemu: ggml-mode quantizers against their golden blocks"
qemu cortex-a72 "$out/linux/test_kquant" tests/native/golden_kquant.bin
qemu max "$out/linux/test_kquant_v82" tests/native/golden_kquant.bin

# 2. Clang's spelling of the target attributes: zig cc for a baseline arm64 Linux core, run under QEMU.
zig=("$py" -m ziglang cc)
step "zig cc aarch64-linux-musl (clang): kernels under qemu"
"${zig[@]}" -target aarch64-linux-musl -mcpu=generic "${cflags[@]}" tests/native/test_kernels.c \
    -o "$out/linux/test_kernels_clang"
qemu max "$out/linux/test_kernels_clang" "$golden" --expect-best neon_dotprod
qemu cortex-a72 "$out/linux/test_kernels_clang" "$golden" --expect-best neon

# 3. macOS arm64: every C file compiles and links (extensions as bundles resolved by the interpreter at load).
step "zig cc aarch64-macos: native/*.c and the drivers, -Wall -Werror"
for f in native/*.c; do
    "${zig[@]}" -target aarch64-macos "${cflags[@]}" -I"$pyinc" -shared -undefined dynamic_lookup "$f" \
        -o "$out/macos/$(basename "$f" .c).so"
done
for d in kernels huffman kquant; do
    "${zig[@]}" -target aarch64-macos "${cflags[@]}" "tests/native/test_$d.c" -o "$out/macos/test_$d"
done
echo "test_arm: all passed"
