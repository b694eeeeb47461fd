/*
 * CPU feature detection with __builtin_cpu_supports (which also checks that
 * the OS saves the wider register state), done once with pthread_once. The
 * chosen level is the only process-wide state of the kernels: it is written
 * once, before any reader can see it, and never changes afterwards.
 */
#include "kernels/cpu.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#endif

static pthread_once_t cpu_once = PTHREAD_ONCE_INIT;
static shoal_isa cpu_max = SHOAL_ISA_C;
static shoal_isa cpu_chosen = SHOAL_ISA_C;

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
/* F16C from CPUID leaf 1 (ECX bit 29): not every compiler's
 * __builtin_cpu_supports knows it. Its registers are AVX's, whose OS
 * support the "avx2" check covers. */
static int has_f16c(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    return (c >> 29) & 1;
}
#endif

static shoal_isa detect(void)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c() &&
          __builtin_cpu_supports("bmi2")))
        return SHOAL_ISA_C;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vnni"))
        return SHOAL_ISA_AVX512;
    return SHOAL_ISA_AVX2;
#else
    return SHOAL_ISA_C;
#endif
}

static void cpu_detect_once(void)
{
    cpu_max = detect();
    cpu_chosen = cpu_max;
    const char *env = getenv("SHOAL_ISA");
    if (env && *env) {
        shoal_isa want = cpu_max;
        if (strcmp(env, "c") == 0)
            want = SHOAL_ISA_C;
        else if (strcmp(env, "avx2") == 0)
            want = SHOAL_ISA_AVX2;
        else if (strcmp(env, "avx512") == 0)
            want = SHOAL_ISA_AVX512;
        if (want < cpu_chosen) /* the override only lowers */
            cpu_chosen = want;
    }
}

void shoal_cpu_init(void)
{
    pthread_once(&cpu_once, cpu_detect_once);
}

shoal_isa shoal_cpu_level(void)
{
    shoal_cpu_init();
    return cpu_chosen;
}

shoal_isa shoal_cpu_level_max(void)
{
    shoal_cpu_init();
    return cpu_max;
}

const char *shoal_cpu_isa_name(int level)
{
    switch (level) {
    case SHOAL_ISA_C: return "c";
    case SHOAL_ISA_AVX2: return "avx2";
    case SHOAL_ISA_AVX512: return "avx512";
    default: return "?";
    }
}

const char *shoal_cpu_isa(void)
{
    return shoal_cpu_isa_name(shoal_cpu_level());
}
