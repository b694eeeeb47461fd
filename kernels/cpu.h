/*
 * CPU feature detection: which instruction-set level the kernels use.
 *
 * Levels are ordered: C (portable) < AVX2 (AVX2 + FMA + F16C) < AVX-512
 * (F, BW, VL, DQ and VNNI). The choice is made once per process by
 * shoal_cpu_init() from the CPU's features, then lowered (never raised) by
 * the environment variable SHOAL_ISA=c|avx2|avx512, which tests and
 * benchmarks use to exercise the lower levels. AMX is never used: some
 * virtual machines advertise it and fault on it.
 *
 * Results never depend on the level (see kernels/matmul.h); only speed does.
 *
 * THREAD SAFETY: all functions are thread-safe; shoal_cpu_init runs its
 * detection exactly once (pthread_once), and every other function calls it.
 */
#ifndef SHOAL_KERNELS_CPU_H
#define SHOAL_KERNELS_CPU_H

typedef enum shoal_isa {
    SHOAL_ISA_C = 0,
    SHOAL_ISA_AVX2 = 1,
    SHOAL_ISA_AVX512 = 2,
} shoal_isa;

/* Detects the CPU's features and reads SHOAL_ISA; idempotent. */
void shoal_cpu_init(void);

/* The level the kernels dispatch to (after the SHOAL_ISA override). */
shoal_isa shoal_cpu_level(void);

/* The best level this CPU supports, ignoring SHOAL_ISA. */
shoal_isa shoal_cpu_level_max(void);

/* Name of the chosen level: "c", "avx2" or "avx512". */
const char *shoal_cpu_isa(void);

/* Name of a level ("c", "avx2", "avx512"), "?" for anything else. */
const char *shoal_cpu_isa_name(int level);

#endif
