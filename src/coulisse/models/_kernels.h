/*
 * What the C kernels of coulisse.models._int8 share: the instruction-set level chosen at run time, the
 * threads that split work, and the vector helpers (exp, horizontal sums). _int8.c holds the per-row
 * kernels around the GEMMs and the module's Python bindings; _attention.c the packed self-attention;
 * _int8_gemm.c coulisse's own int8 GEMMs (AVX512-VNNI).
 */
#ifndef COULISSE_KERNELS_H
#define COULISSE_KERNELS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HAVE_X86 1
#else
#define HAVE_X86 0
#endif

/* Which code runs: 2 = AVX-512 (F, DQ, BW, VL), 1 = AVX2 + FMA, 0 = scalar (coulisse_isa_level). */
enum { ISA_SCALAR = 0, ISA_AVX2 = 1, ISA_AVX512 = 2 };
int coulisse_isa_level(void);

/* Runs fn(arg) on `threads` threads at once (PyTorch's OpenMP team where built with OpenMP, else POSIX
 * threads) and returns when all are done; nonzero when a call returned non-NULL. */
int coulisse_run_workers(void *(*fn)(void *), void *arg, int threads);

/* One pass over rows r0 .. r1 - 1 of a layer's output (_int8.c, `coulisse_row_task`): quantize them, or
 * finish a GEMM's rows (dequantize + bias [+ GELU], or dequantize + bias + residual + LayerNorm), then
 * optionally quantize each finished row for the next int8 layer. */
typedef struct {
    int op; /* 0: quantize, 1: dequantize, 2: dequantize + residual + LayerNorm */
    int64_t r0, r1, cols;
    const float *x; /* quantize: input rows; add_norm: the residual rows */
    float *y;
    uint8_t *q;
    float *scale;
    const float *bias;
    int gelu, isa;
    const float *gamma, *beta;
    float eps;
    uint8_t *codes;    /* dequantize, add_norm: when not NULL, each finished row's u8 codes ... */
    float *code_scale; /* ... and its scale, as quantize_rows computes them */
} RowTask;
void *coulisse_row_task(void *task);
/* One row's codes and scale, as quantize_rows makes them (the CPU's code path). */
void coulisse_quantize_row(const float *x, int64_t cols, uint8_t *q, float *scale);
/* `base` over rows 0 .. rows - 1, split over `threads` threads (PyTorch's OpenMP team where built with OpenMP). */
void coulisse_run_rows(RowTask base, int64_t rows, int threads);

/* AMX (Sapphire Rapids and later): a tile configuration, palette 1, each tile's rows and bytes per row. */
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} TileConfig;

/* ldtilecfg with the whole configuration as its operand: gcc 12's _tile_loadconfig declares 8 bytes read, so the
 * stores that build a configuration just before could be dropped. */
#if HAVE_X86
static inline void coulisse_load_tiles(const TileConfig *cfg) { __asm__ volatile("ldtilecfg %0" : : "m"(*cfg)); }
#endif

/* Whether Linux granted this process AMX's tile state (arch_prctl ARCH_REQ_XCOMP_PERM, asked once; _int8.c):
 * a tile instruction without it is a fault. 0 off Linux. */
int coulisse_amx_granted(void);

/* A Python function of no arguments that returns `test()` as a bool (False off x86, where `test` is not built). */
#if HAVE_X86
#define PY_CPU_TEST(test) test()
#else
#define PY_CPU_TEST(test) 0
#endif
#define PY_CPU_FLAG(name, test)                                                                                    \
    PyObject *name(PyObject *self, PyObject *unused) {                                                             \
        (void)self;                                                                                                \
        (void)unused;                                                                                              \
        return PyBool_FromLong(PY_CPU_TEST(test));                                                                 \
    }

PyObject *coulisse_py_attention(PyObject *self, PyObject *args);
PyObject *coulisse_py_has_bf16_dot(PyObject *self, PyObject *unused);
PyObject *coulisse_py_has_amx_attention(PyObject *self, PyObject *unused);
PyObject *coulisse_py_has_int8_dot(PyObject *self, PyObject *unused);
PyObject *coulisse_py_has_amx_int8(PyObject *self, PyObject *unused);
PyObject *coulisse_py_small_gemm(PyObject *self, PyObject *args);
PyObject *coulisse_py_int8_gemm(PyObject *self, PyObject *args);
int coulisse_has_int8_dot(void);
int coulisse_has_bf16_dot(void); /* _attention.c, x86 only */

/* GELU(v) = v Phi(v) = v/2 + |v| g(|v|), g(a) = Phi(a) - 1/2 = erf(a / sqrt 2) / 2: g by a polynomial of degree 6 in
 * t = a - c on 7 intervals of 0.8 from 0 to 5.6 (c the interval's center), 1/2 exactly from there (1/2 - g(5.6) =
 * 1.1e-8). Row 0 holds the centers, row i + 1 the coefficients of t^i, entry 7 the saturated interval; an interval's
 * index is trunc(min(a, 6) 1.25), and each row's entry is picked by one permutation (8 entries: one AVX2 register).
 * No division and no exp: 21 instructions for 16 lanes where Abramowitz & Stegun's erf took ~30 and a division, and
 * |g error| <= 4.5e-8 over every fp32 input (|GELU error| <= 8.7e-8 |v|, the rounding included; A&S: 1.5e-7 |v|/2
 * for the formula alone). Made and checked by bench/gelu_table.py. gelu_avx2 (_int8.c) and gelu_avx512 (below) run
 * the same operations in the same order: the same bits. */
static const float GELU_TABLE[8][16] __attribute__((aligned(64))) = {
    {0.4000000059604645f, 1.2000000476837158f, 2.0f, 2.799999952316284f, 3.5999999046325684f, 4.400000095367432f,
     5.199999809265137f, 0.0f},
    {0.15542173385620117f, 0.3849303424358368f, 0.4772498607635498f, 0.49744486808776855f, 0.4998408854007721f,
     0.49999457597732544f, 0.49999991059303284f, 0.5f},
    {0.3682698905467987f, 0.19418641924858093f, 0.0539909191429615f, 0.007915379479527473f, 0.0006119135650806129f,
     2.4948067220975645e-05f, 5.366057393985102e-07f, 0.0f},
    {-0.0736537054181099f, -0.11651166528463364f, -0.053991083055734634f, -0.011081582866609097f,
     -0.0011014178162440658f, -5.48770694877021e-05f, -1.3943929388915421e-06f, 0.0f},
    {-0.05154469609260559f, 0.014222064055502415f, 0.026997899636626244f, 0.009027210995554924f,
     0.0012191401328891516f, 7.604461279697716e-05f, 2.3017198600427946e-06f, 0.0f},
    {0.01742136850953102f, 0.015147441998124123f, -0.0044955899938941f, -0.004471144173294306f,
     -0.0009143586503341794f, -7.469718548236415e-05f, -2.7760765988205094e-06f, 0.0f},
    {0.006174291484057903f, -0.005541677586734295f, -0.0022805212065577507f, 0.0011044638231396675f,
     0.0004826471267733723f, 5.786661495221779e-05f, 2.8636486604227684e-06f, 0.0f},
    {-0.0026452322490513325f, -0.0008748711552470922f, 0.0013131318846717477f, 7.517693302361295e-05f,
     -0.00016151797899510711f, -3.104543066001497e-05f, -2.003941517614294e-06f, 0.0f},
};

#if HAVE_X86
__attribute__((target("avx2,fma"))) static inline float hsum_avx2(__m256 v) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

#define AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma")))

/* GELU on 16 lanes, as gelu_avx2 (_int8.c) on 8 (the table above): the same bits. min(NaN, 6) is 6 (minps returns
 * its second operand), so a NaN input takes the saturated interval and gives NaN. */
AVX512 static inline __m512 gelu_avx512(__m512 v) {
    const __m512 a = _mm512_abs_ps(v), clamped = _mm512_min_ps(a, _mm512_set1_ps(6.0f));
    const __m512i i = _mm512_cvttps_epi32(_mm512_mul_ps(clamped, _mm512_set1_ps(1.25f)));
    const __m512 t = _mm512_sub_ps(clamped, _mm512_permutexvar_ps(i, _mm512_load_ps(GELU_TABLE[0])));
    __m512 p = _mm512_permutexvar_ps(i, _mm512_load_ps(GELU_TABLE[7]));
    for (int k = 6; k >= 1; k--) p = _mm512_fmadd_ps(p, t, _mm512_permutexvar_ps(i, _mm512_load_ps(GELU_TABLE[k])));
    return _mm512_fmadd_ps(a, p, _mm512_mul_ps(v, _mm512_set1_ps(0.5f)));
}

/* A row's max |x| kept as the int32 bits of |x| (_int8.c says why): `m` updated with the 16 lanes of x. */
#define ABS_BITS 0x7fffffffu
AVX512 static inline __m512i abs_max_update(__m512i m, __m512 x) {
    return _mm512_max_epu32(m, _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32((int)ABS_BITS)));
}

/* `rows` rows of x (`cols` floats each, a multiple of 16) to their codes and scales, each row's max |x| known as the
 * 16 lanes of abs_max_update's bits at max16 + 16 r: the codes and scale quantize_rows makes, without its pass to find
 * the max (_int8.c). AVX-512 only. */
void coulisse_codes_with_max(const float *x, int64_t cols, int64_t rows, const uint32_t *max16, uint8_t *q,
                             float *scale);
#endif

#endif
