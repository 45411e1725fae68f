/*
 * The tile work of the AMX attention unit alone (not a test): Q K^T and P V for 32 queries of one head (d = 64)
 * against n keys, as `_attention.c` lays them out (K^T and V in bf16 pairs, S in fp32 rows of np = n rounded up
 * to 32), in cycles per score at the clock of a chain of dependent adds (bench/dot_ceiling.c's), best of 3:
 *
 *   gcc -O2 -o /tmp/amx_attention_tiles bench/amx_attention_tiles.c && /tmp/amx_attention_tiles 64 128 256 448
 *
 * QK 1x4 is the kernel's order (per 32 dims: one Q tile, then four K^T tiles, each multiplied once); QK 2x2 two
 * blocks of 16 queries against two key tiles (each loaded tile feeds two products); "S in L1" is 1x4 storing its
 * scores into one 8 kB block instead of the 16 x np rows the softmax reads next, which bounds what keeping S in
 * L1 (keys in chunks, an online softmax) could buy; PV 1x4 / 2x2 likewise for P V. Needs AMX-BF16 and Linux.
 * docs/benchmarks.md, "Intel Xeon with AMX: session 24", has this machine's figures.
 */
#define _GNU_SOURCE
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define AMX __attribute__((target("avx512f,avx512bw,amx-tile,amx-bf16")))

typedef struct {
    uint8_t palette, start;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} TileConfig;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* Scores of 16 queries (rows qs bytes apart) against keys j .. j + 63, four tiles a row; into s (rows `ss` bytes
 * apart, from column j, or column j % 128 where `fixed`: one 8 kB block). */
AMX static void qk_1x4(const char *q, int64_t qs, const uint32_t *kt2, int64_t np, float *s, int64_t ss, int fixed) {
    for (int64_t j = 0; j < np; j += 64) {
        _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
        for (int64_t w = 0; w < 32; w += 16) {
            const char *b = (const char *)(kt2 + w * np + j);
            _tile_loadd(4, q + 4 * w, qs);
            _tile_loadd(6, b, np * 4); _tile_dpbf16ps(0, 4, 6);
            _tile_loadd(7, b + 64, np * 4); _tile_dpbf16ps(1, 4, 7);
            _tile_loadd(6, b + 128, np * 4); _tile_dpbf16ps(2, 4, 6);
            _tile_loadd(7, b + 192, np * 4); _tile_dpbf16ps(3, 4, 7);
        }
        float *c = s + (fixed ? j % 128 : j);
        _tile_stored(0, c, ss); _tile_stored(1, c + 16, ss); _tile_stored(2, c + 32, ss); _tile_stored(3, c + 48, ss);
    }
}

/* 32 queries against keys j .. j + 31: 2 x 2 tiles. */
AMX static void qk_2x2(const char *q, int64_t qs, const uint32_t *kt2, int64_t np, float *s) {
    for (int64_t j = 0; j < np; j += 32) {
        _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
        for (int64_t w = 0; w < 32; w += 16) {
            const char *b = (const char *)(kt2 + w * np + j);
            _tile_loadd(4, q + 4 * w, qs);
            _tile_loadd(6, b, np * 4); _tile_dpbf16ps(0, 4, 6);
            _tile_loadd(7, b + 64, np * 4); _tile_dpbf16ps(1, 4, 7);
            _tile_loadd(5, q + 16 * qs + 4 * w, qs);
            _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);
        }
        _tile_stored(0, s + j, np * 4); _tile_stored(1, s + j + 16, np * 4);
        _tile_stored(2, s + 16 * np + j, np * 4); _tile_stored(3, s + 16 * np + j + 16, np * 4);
    }
}

/* O (16 queries x 64 columns) = P V: per 32 keys one P tile, four V tiles. */
AMX static void pv_1x4(const uint32_t *p2, const uint32_t *v2, int64_t nw, float *o) {
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    for (int64_t w = 0; w < nw; w += 16) {
        const char *b = (const char *)(v2 + w * 64);
        _tile_loadd(4, p2 + w, nw * 4);
        _tile_loadd(6, b, 256); _tile_dpbf16ps(0, 4, 6);
        _tile_loadd(7, b + 64, 256); _tile_dpbf16ps(1, 4, 7);
        _tile_loadd(6, b + 128, 256); _tile_dpbf16ps(2, 4, 6);
        _tile_loadd(7, b + 192, 256); _tile_dpbf16ps(3, 4, 7);
    }
    _tile_stored(0, o, 256); _tile_stored(1, o + 16, 256); _tile_stored(2, o + 32, 256); _tile_stored(3, o + 48, 256);
}

/* O (32 queries x 64 columns) by halves of 32 columns on 2 x 2 tiles. */
AMX static void pv_2x2(const uint32_t *p2, const uint32_t *v2, int64_t nw, float *o) {
    for (int64_t c = 0; c < 64; c += 32) {
        _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
        for (int64_t w = 0; w < nw; w += 16) {
            const char *b = (const char *)(v2 + w * 64 + c);
            _tile_loadd(4, p2 + w, nw * 4);
            _tile_loadd(6, b, 256); _tile_dpbf16ps(0, 4, 6);
            _tile_loadd(7, b + 64, 256); _tile_dpbf16ps(1, 4, 7);
            _tile_loadd(5, p2 + 16 * nw + w, nw * 4);
            _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);
        }
        _tile_stored(0, o + c, 256); _tile_stored(1, o + c + 16, 256);
        _tile_stored(2, o + 16 * 64 + c, 256); _tile_stored(3, o + 16 * 64 + c + 16, 256);
    }
}

AMX int main(int argc, char **argv) {
    if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */)) {
        puts("no AMX tile state granted");
        return 1;
    }
    TileConfig cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) cfg.rows[t] = 16, cfg.colsb[t] = 64;
    _tile_loadconfig(&cfg);
    long x = 0, one = 1;
    double t0 = now();
    for (long i = 0; i < 100000000; i++)
        __asm__ volatile("add %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\tadd %1, %0" : "+r"(x) : "r"(one));
    const double hz = 4e8 / (now() - t0);
    printf("clock (dependent adds) %.2f GHz; cycles per score, best of 3:\n", hz / 1e9);
    for (int a = 1; a < argc; a++) {
        const int64_t n = atol(argv[a]), np = (n + 31) & ~31L, nw = np / 2;
        uint16_t *q = aligned_alloc(64, 32 * 64 * 2);
        uint32_t *kt2 = aligned_alloc(64, 32 * np * 4), *v2 = aligned_alloc(64, nw * 64 * 4),
                 *p2 = aligned_alloc(64, 32 * nw * 4);
        float *s = aligned_alloc(64, 32 * np * 4), *o = aligned_alloc(64, 32 * 64 * 4);
        for (int i = 0; i < 32 * 64; i++) q[i] = 0x3c00; /* 2^-7: finite sums */
        for (int64_t i = 0; i < 32 * np; i++) kt2[i] = 0x3c003c00;
        for (int64_t i = 0; i < nw * 64; i++) v2[i] = 0x3c003c00;
        for (int64_t i = 0; i < 32 * nw; i++) p2[i] = 0x3c003c00;
        const long reps = 40000000 / (np * 32) + 1;
        double best[5] = {1e9, 1e9, 1e9, 1e9, 1e9};
        for (int round = 0; round < 3; round++)
            for (int k = 0; k < 5; k++) {
                double t = now();
                for (long r = 0; r < reps; r++) {
                    if (k == 0 || k == 2)
                        for (int h = 0; h < 2; h++)
                            qk_1x4((const char *)(q + 16 * 64 * h), 128, kt2, np, k == 2 ? s : s + 16 * np * h,
                                   k == 2 ? 512 : np * 4, k == 2);
                    else if (k == 1)
                        qk_2x2((const char *)q, 128, kt2, np, s);
                    else if (k == 3)
                        pv_1x4(p2, v2, nw, o), pv_1x4(p2 + 16 * nw, v2, nw, o + 16 * 64);
                    else
                        pv_2x2(p2, v2, nw, o);
                }
                t = (now() - t) * hz / ((double)reps * 32 * np);
                best[k] = t < best[k] ? t : best[k];
            }
        printf("n = %4ld  QK 1x4 %.3f  QK 2x2 %.3f  QK 1x4, S in L1 %.3f  |  PV 1x4 %.3f  PV 2x2 %.3f\n", (long)n,
               best[0], best[1], best[2], best[3], best[4]);
        free(q), free(kt2), free(v2), free(p2), free(s), free(o);
    }
    return 0;
}
