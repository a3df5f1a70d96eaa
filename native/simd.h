/* The one CPU-feature probe and the one SIMD vocabulary of every extension.
 *
 * Levels, slowest first: scalar, avx2, avx512, neon, neon_dotprod. GGUF_TOOLS_SIMD names one of
 * them (or auto/best); gguf_tools/engine/kernels.py reads the same names from
 * _kernels.level_names(). SIMD code is compiled per function with target attributes (no -march),
 * so a level is used only after the probe says the CPU and the OS support it. cpuid traps to the
 * hypervisor on virtual machines (microseconds): the probe runs once, at import (simd_init).
 * NEON is the arm64 baseline; its dot-product instructions (SDOT, ARMv8.2 FEAT_DotProd: every
 * Apple M chip, Cortex-A76 and later, not Cortex-A72) are asked of the kernel: the auxiliary
 * vector on Linux, sysctl on macOS.
 */
#ifndef GGUF_SIMD_H
#define GGUF_SIMD_H

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#if defined(__x86_64__) || defined(_M_X64)
#define SIMD_ON_X86 1
#include <cpuid.h>
#elif defined(__aarch64__) && defined(__ARM_NEON)
#define SIMD_ON_NEON 1
#if defined(__linux__)
#include <sys/auxv.h>
#elif defined(__APPLE__)
#include <sys/sysctl.h>
#endif
#endif

#define SIMD_ENV "GGUF_TOOLS_SIMD"

enum { SIMD_SCALAR = 0, SIMD_AVX2 = 1, SIMD_AVX512 = 2, SIMD_NEON = 3, SIMD_NEON_DOTPROD = 4, SIMD_N_LEVELS = 5 };
static const char *const SIMD_LEVEL_NAMES[SIMD_N_LEVELS] = {"scalar", "avx2", "avx512", "neon", "neon_dotprod"};

/* Features single routines use beyond the levels (x86: always saved by the OS, no XCR0 check). */
enum { CPU_SSSE3 = 1, CPU_SSE42 = 2, CPU_BMI2 = 4 };

static struct {
    int level_ok[SIMD_N_LEVELS];
    unsigned features; /* CPU_* */
} simd_cpu;

#if defined(SIMD_ON_X86)
static unsigned long long simd_xgetbv0(void) {
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}
#endif

#if defined(SIMD_ON_NEON)
static int simd_arm_dotprod(void) {
#if defined(__linux__)
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1UL << 20)
#endif
    return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#elif defined(__APPLE__)
    int v = 0;
    size_t len = sizeof v;
    return sysctlbyname("hw.optional.arm.FEAT_DotProd", &v, &len, NULL, 0) == 0 && v != 0;
#else
    return 0; /* no way to ask: the plain NEON kernels run everywhere */
#endif
}
#endif

static void simd_init(void) {
    memset(&simd_cpu, 0, sizeof simd_cpu);
    simd_cpu.level_ok[SIMD_SCALAR] = 1;
#if defined(SIMD_ON_X86)
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    const int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1, f16c = (c >> 29) & 1;
    simd_cpu.features |= ((c >> 9) & 1) ? CPU_SSSE3 : 0;
    simd_cpu.features |= ((c >> 20) & 1) ? CPU_SSE42 : 0;
    unsigned b7 = 0, c7 = 0;
    if (__get_cpuid_count(7, 0, &a, &b7, &c7, &d)) simd_cpu.features |= ((b7 >> 8) & 1) ? CPU_BMI2 : 0;
    if (!(osxsave && avx && fma && f16c)) return;
    const unsigned long long xcr0 = simd_xgetbv0();
    if ((xcr0 & 0x6) != 0x6) return; /* the OS saves XMM and YMM state */
    const int avx2 = (b7 >> 5) & 1, avx512f = (b7 >> 16) & 1, avx512bw = (b7 >> 30) & 1, vnni = (c7 >> 11) & 1;
    simd_cpu.level_ok[SIMD_AVX2] = avx2;
    /* and the OS saves opmask and ZMM state */
    simd_cpu.level_ok[SIMD_AVX512] = avx2 && avx512f && avx512bw && vnni && (xcr0 & 0xe6) == 0xe6;
#elif defined(SIMD_ON_NEON)
    simd_cpu.level_ok[SIMD_NEON] = 1;
    simd_cpu.level_ok[SIMD_NEON_DOTPROD] = simd_arm_dotprod();
#endif
}

static int simd_supported(int level) { return level >= 0 && level < SIMD_N_LEVELS && simd_cpu.level_ok[level]; }

static int simd_has(unsigned feature) { return (simd_cpu.features & feature) != 0; }

static int simd_best(void) {
    for (int l = SIMD_N_LEVELS - 1; l > 0; l--)
        if (simd_supported(l)) return l;
    return SIMD_SCALAR;
}

/* The level GGUF_TOOLS_SIMD asks for, if this CPU has it; else the best one. (The Python side
 * reads the variable itself for the kernels, and warns about names it does not know.) */
static int simd_env_level(void) {
    const char *name = getenv(SIMD_ENV);
    if (name)
        for (int l = 0; l < SIMD_N_LEVELS; l++)
            if (strcasecmp(name, SIMD_LEVEL_NAMES[l]) == 0 && simd_supported(l)) return l;
    return simd_best();
}

#endif
