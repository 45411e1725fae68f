/*
 * The CPU's ceiling for the int8 and bf16 dot-product instructions the kernels use (not a test):
 * 12 independent accumulators per loop, so that only the instruction's throughput bounds the loop,
 * and a chain of dependent adds for the clock (one add per cycle).
 *
 *   gcc -O2 -o /tmp/dot_ceiling bench/dot_ceiling.c && /tmp/dot_ceiling
 *
 * Needs AVX512-VNNI and AVX512-BF16 (a Zen 4, Cooper Lake, Sapphire Rapids). On the session-14 Zen 4:
 * 3.65 GHz, vpdpbusd zmm 3.63 G/s (one per cycle: 128 int8 operations, so 465 GOP/s a core), vdpbf16ps
 * zmm 3.61 G/s (64 bf16 FLOP, 232 GFLOP/s a core); ymm forms twice as many per second (docs/benchmarks.md,
 * session 14).
 */
#include <stdio.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

#define TWELVE(op, r)                                                                                              \
    op " %%" r "30, %%" r "31, %%" r "0\n\t" op " %%" r "30, %%" r "31, %%" r "1\n\t" op " %%" r "30, %%" r        \
       "31, %%" r "2\n\t" op " %%" r "30, %%" r "31, %%" r "3\n\t" op " %%" r "30, %%" r "31, %%" r "4\n\t" op     \
       " %%" r "30, %%" r "31, %%" r "5\n\t" op " %%" r "30, %%" r "31, %%" r "6\n\t" op " %%" r "30, %%" r "31, %%" \
       r "7\n\t" op " %%" r "30, %%" r "31, %%" r "8\n\t" op " %%" r "30, %%" r "31, %%" r "9\n\t" op " %%" r        \
       "30, %%" r "31, %%" r "10\n\t" op " %%" r "30, %%" r "31, %%" r "11\n\t"

#define RATE(name, op, r)                                                                                          \
    do {                                                                                                           \
        double t = now();                                                                                          \
        __asm__ volatile("mov %0, %%rcx\n1:\n\t" TWELVE(op, r) "dec %%rcx\n\tjnz 1b\n"                              \
                         :                                                                                         \
                         : "r"(loops)                                                                              \
                         : "rcx", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",   \
                           "xmm10", "xmm11");                                                                      \
        printf("%-16s %.2f G/s\n", name, 12.0 * loops / (now() - t) / 1e9);                                        \
    } while (0)

int main(void) {
    const long loops = 100000000;
    long x = 0, one = 1;
    double t = now();
    /* adds of a register, not of an immediate: Golden Cove cores (Sapphire Rapids) fold chains of immediate adds at
     * rename, which made this read 16 GHz there */
    for (long i = 0; i < 4 * loops; i++)
        __asm__ volatile("add %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\tadd %1, %0" : "+r"(x) : "r"(one));
    printf("%-16s %.2f GHz\n", "dependent adds", 16.0 * loops / (now() - t) / 1e9);
    RATE("vpdpbusd zmm", "vpdpbusd", "zmm");
    RATE("vpdpbusd ymm", "vpdpbusd", "ymm");
    RATE("vdpbf16ps zmm", "vdpbf16ps", "zmm");
    RATE("vdpbf16ps ymm", "vdpbf16ps", "ymm");
    return 0;
}
