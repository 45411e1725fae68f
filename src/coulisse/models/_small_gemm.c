/*
 * The int8 GEMM of a few rows (a short request: one sentence of a few to a few dozen tokens), for CPUs with
 * AVX512-VNNI. With so few rows the GEMM is a stream over the weights: 85 MB of int8 codes per forward of
 * a base-size model, which fbgemm and oneDNN read at 11-18 GB/s on a Zen 4 whose cores read ~32 GB/s
 * (docs/benchmarks.md, session 13). Here each weight is read once, in the order it is stored:
 *
 *   packed weights (models/quantize.py, `_small_pack`): blocks of 16 output columns, each K/4 words of
 *   16 x 4 bytes, w[n0 + i][4q .. 4q + 3] at word q, lane i, so that one 64-byte load feeds one vpdpbusd
 *   for every row of activations (codes u8, broadcast four at a time);
 *   out[m][n] = (sum_k x[m][k] w[n][k] - 128 colsum[n]) w_scale[n], with x the u8 codes (signed code + 128):
 *   the int32 sum is exact, so the result is oneDNN's and fbgemm's (sum(x8 w) w_scale, one rounding).
 *
 * Threads take pairs of column blocks in turn; rows go by groups of up to 8 (16 accumulators), so the
 * weights of a block pair (K x 32 bytes) are read from memory once whatever the row count.
 */
#include "_kernels.h"

typedef struct {
    const uint8_t *x; /* (m, k) codes */
    const int32_t *w; /* packed: n/16 blocks of k/4 x 16 words */
    const int32_t *colsum;
    const float *scale;
    float *out; /* (m, n) */
    int64_t m, k, n;
    int64_t next; /* the next block (atomic) */
} SmallGemm;

#if HAVE_X86
#define VNNI __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma,avx512vnni")))

/* Rows m0 .. m0 + R - 1 against blocks b and b + 1 (nb of them, 1 or 2); R a constant where inlined. */
VNNI static inline __attribute__((always_inline)) void tile(const SmallGemm *g, int64_t m0, int64_t b, int nb,
                                                            const int R) {
    const int64_t kw = g->k / 4;
    const int32_t *w0 = g->w + b * kw * 16, *w1 = w0 + kw * 16;
    const int32_t *xr[8];
    for (int r = 0; r < R; r++) xr[r] = (const int32_t *)(g->x + (m0 + r) * g->k);
    __m512i acc[8][2];
    for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = _mm512_setzero_si512();
    if (nb == 2) {
        for (int64_t q = 0; q < kw; q++) {
            const __m512i a = _mm512_loadu_si512(w0 + q * 16), c = _mm512_loadu_si512(w1 + q * 16);
            for (int r = 0; r < R; r++) {
                const __m512i v = _mm512_set1_epi32(xr[r][q]);
                acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], v, a);
                acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], v, c);
            }
        }
    } else {
        for (int64_t q = 0; q < kw; q++) {
            const __m512i a = _mm512_loadu_si512(w0 + q * 16);
            for (int r = 0; r < R; r++) acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], _mm512_set1_epi32(xr[r][q]), a);
        }
    }
    for (int h = 0; h < nb; h++) {
        const int64_t n0 = (b + h) * 16;
        const __m512i comp = _mm512_slli_epi32(_mm512_loadu_si512(g->colsum + n0), 7); /* 128 colsum */
        const __m512 s = _mm512_loadu_ps(g->scale + n0);
        for (int r = 0; r < R; r++)
            _mm512_storeu_ps(g->out + (m0 + r) * g->n + n0,
                             _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r][h], comp)), s));
    }
}

VNNI static void *small_gemm_worker(void *arg) {
    SmallGemm *g = (SmallGemm *)arg;
    const int64_t blocks = g->n / 16;
    for (;;) {
        const int64_t b = __atomic_fetch_add(&g->next, 2, __ATOMIC_RELAXED);
        if (b >= blocks) break;
        const int nb = blocks - b >= 2 ? 2 : 1;
        for (int64_t m0 = 0; m0 < g->m; m0 += 8) {
            switch (g->m - m0 >= 8 ? 8 : (int)(g->m - m0)) {
            case 1: tile(g, m0, b, nb, 1); break;
            case 2: tile(g, m0, b, nb, 2); break;
            case 3: tile(g, m0, b, nb, 3); break;
            case 4: tile(g, m0, b, nb, 4); break;
            case 5: tile(g, m0, b, nb, 5); break;
            case 6: tile(g, m0, b, nb, 6); break;
            case 7: tile(g, m0, b, nb, 7); break;
            default: tile(g, m0, b, nb, 8); break;
            }
        }
    }
    return NULL;
}
#endif

/* Whether this CPU multiplies bytes into int32 lanes (AVX512-VNNI), read once. */
int coulisse_has_int8_dot(void) {
#if HAVE_X86
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = coulisse_isa_level() == ISA_AVX512 && __builtin_cpu_supports("avx512vnni");
    }
    return cached;
#else
    return 0;
#endif
}

PyObject *coulisse_py_has_int8_dot(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    return PyBool_FromLong(coulisse_has_int8_dot());
}

PyObject *coulisse_py_small_gemm(PyObject *self, PyObject *args) {
    Py_ssize_t x, w, colsum, scale, out, m, k, n;
    int threads;
    (void)self;
    if (!PyArg_ParseTuple(args, "nnnnnnnni", &x, &w, &colsum, &scale, &out, &m, &k, &n, &threads)) return NULL;
    if (!coulisse_has_int8_dot() || m < 1 || k < 4 || k % 4 || n < 16 || n % 16) {
        PyErr_Format(PyExc_ValueError, "small_gemm: needs AVX512-VNNI, k a multiple of 4 and n of 16 (m %zd, "
                                       "k %zd, n %zd)", m, k, n);
        return NULL;
    }
#if HAVE_X86
    SmallGemm g = {(const uint8_t *)x, (const int32_t *)w, (const int32_t *)colsum, (const float *)scale,
                   (float *)out, m, k, n, 0};
    const int64_t pairs = (n / 16 + 1) / 2;
    if (threads > pairs) threads = (int)pairs;
    Py_BEGIN_ALLOW_THREADS coulisse_run_workers(small_gemm_worker, &g, threads);
    Py_END_ALLOW_THREADS
#endif
    Py_RETURN_NONE;
}
