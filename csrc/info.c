/* What the loader (logitlab._native) asks a built library: the ISA level it was compiled for,
 * the level the running CPU supports, and the digest of the sources it was built from.
 *
 * Levels: 0 generic (the compiler's baseline: SSE2 on x86-64, NEON on aarch64), 1 avx2
 * (x86-64-v3: AVX2, FMA, F16C, BMI1/2, LZCNT, MOVBE), 2 avx512 (x86-64-v4: v3 plus AVX-512 F, BW,
 * CD, DQ, VL). The build passes LOGITLAB_ISA and LOGITLAB_BUILD_ID on the command line.
 */
#include <stdint.h>

#ifndef LOGITLAB_ISA
#define LOGITLAB_ISA 0
#endif
#ifndef LOGITLAB_BUILD_ID
#define LOGITLAB_BUILD_ID "unknown"
#endif

int logitlab_isa(void) { return LOGITLAB_ISA; }

const char *logitlab_build_id(void) { return LOGITLAB_BUILD_ID; }

/* The highest level whose instructions this CPU executes and whose register state the OS saves
 * (libgcc's and compiler-rt's CPU model check XCR0 through xgetbv). GCC 12 names the levels
 * themselves; other compilers get the features they have long known (every CPU with AVX2, FMA
 * and BMI2 also has F16C, LZCNT and MOVBE). */
int logitlab_cpu_level(void) {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
    __builtin_cpu_init();
    return __builtin_cpu_supports("x86-64-v4") ? 2 : (__builtin_cpu_supports("x86-64-v3") ? 1 : 0);
#elif defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    const int v3 = __builtin_cpu_supports("avx") && __builtin_cpu_supports("avx2") &&
                   __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi") &&
                   __builtin_cpu_supports("bmi2");
    const int v4 = v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                   __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq") &&
                   __builtin_cpu_supports("avx512vl");
    return v4 ? 2 : (v3 ? 1 : 0);
#else
    return 0;
#endif
}
