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

/* GELU(v) = v/2 (1 + erf(v / sqrt 2)), erf by Abramowitz & Stegun 7.1.26: erf(z) = 1 - (A1 t + ... + A5 t^5)
 * e^(-z^2), t = 1 / (1 + P z) for z >= 0 (|error| <= 1.5e-7), the approximation PyTorch's own vectorized erf uses.
 * gelu_avx2 (_int8.c) and gelu_avx512 (below) take these constants in the same order: the same bits. */
#define GELU_RSQRT2 0.70710678118654752f
#define AS_P 0.3275911f
#define AS_A1 0.254829592f
#define AS_A2 -0.284496736f
#define AS_A3 1.421413741f
#define AS_A4 -1.453152027f
#define AS_A5 1.061405429f

#if HAVE_X86
/* exp(x) for x <= 0 (Cephes' expf: 2^n * p(r), relative error ~1e-7), enough for erf's tail. */
__attribute__((target("avx2,fma"))) static inline __m256 exp_avx2(__m256 x) {
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

__attribute__((target("avx2,fma"))) static inline float hsum_avx2(__m256 v) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

#define AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma")))

AVX512 static inline __m512 exp_avx512(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    /* p 2^n in one instruction (exact, as exp_avx2's product with 2^n built from its bits: the same value) */
    return _mm512_scalef_ps(p, n);
}

/* GELU on 16 lanes, as gelu_avx2 (_int8.c) on 8 (the constants above): the same bits. */
AVX512 static inline __m512 gelu_avx512(__m512 v) {
    const __m512 sign = _mm512_set1_ps(-0.0f), one = _mm512_set1_ps(1.0f);
    __m512 z = _mm512_mul_ps(v, _mm512_set1_ps(GELU_RSQRT2));
    __m512 az = _mm512_andnot_ps(sign, z);
    __m512 t = _mm512_div_ps(one, _mm512_fmadd_ps(_mm512_set1_ps(AS_P), az, one));
    __m512 r = _mm512_set1_ps(AS_A5);
    r = _mm512_fmadd_ps(r, t, _mm512_set1_ps(AS_A4));
    r = _mm512_fmadd_ps(r, t, _mm512_set1_ps(AS_A3));
    r = _mm512_fmadd_ps(r, t, _mm512_set1_ps(AS_A2));
    r = _mm512_fmadd_ps(r, t, _mm512_set1_ps(AS_A1));
    r = _mm512_mul_ps(r, t);
    /* -z^2 as one FMA (-(az az) + 0, the product rounded once as before; only 0's sign differs, which exp
     * ignores); erf takes z's sign in one bitwise select (imm 0xCA, "a ? b : c" bit by bit: the sign bit from z,
     * the rest from erf_abs) */
    __m512 erf_abs = _mm512_fnmadd_ps(r, exp_avx512(_mm512_fnmadd_ps(az, az, _mm512_setzero_ps())), one);
    __m512 erf = _mm512_castsi512_ps(_mm512_ternarylogic_epi32(_mm512_castps_si512(sign), _mm512_castps_si512(z),
                                                               _mm512_castps_si512(erf_abs), 0xCA));
    return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), v), _mm512_add_ps(one, erf));
}
#endif

#endif
