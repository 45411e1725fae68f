/*
 * Fused per-token quantization kernels for coulisse's int8 linear layers (models/quantize.py), whose
 * dequantize passes also finish the fp32 layers (models/fastpath.py; the name stayed from the first use).
 *
 * The int8 GEMM is oneDNN's or coulisse's own (_int8_gemm.c, which runs these passes itself). Around it,
 * per-token dynamic quantization needs two passes over the activations that PyTorch runs as a chain of
 * separate ops (a row max, a division, a rounding, a shift, a cast; after the GEMM a scale and a bias),
 * each reading and writing the whole tensor. Here each is one pass:
 *
 *   quantize_rows:   q[r, c] = round(x[r, c] / s[r]) + 128   (u8),  s[r] = max(max_c |x[r, c]|, 1e-12) / 127
 *                    (NaN where the row holds a NaN, as in PyTorch: it reaches the row's outputs)
 *   dequantize_rows: y[r, c] = y[r, c] * s[r] + bias[c], then optionally GELU (erf form), in place
 *   add_norm_rows:   v[r, c] = y[r, c] * s[r] + bias[c] + res[r, c];  y[r] = LayerNorm(v[r]) (gamma, beta,
 *                    eps), in place: the `*Output` blocks' dequantize, residual add and LayerNorm in one
 *                    pass over a row that stays in L1 (mean and variance summed in fp32, two passes)
 *
 * The last two also finish the fp32 layers (models/fastpath.py): given no scales (a NULL pointer) they
 * take s[r] = 1, so that y * s + bias is y + bias to the bit, the bias the GEMM was not asked to add.
 * Given an output for codes, they also quantize each finished row while it is still in L1 (the same
 * quantize function, so the codes are quantize_rows' to the bit): the next int8 layer, which reads
 * these rows, then skips its own pass over them (models/quantize.py, "codes").
 *
 * quantize_rows computes exactly what the PyTorch fallback computes (same IEEE division and
 * round-half-to-even), so both paths give the same codes. The functions take raw pointers from
 * `tensor.data_ptr()` (the Python side checks dtypes, shapes and contiguity), release the GIL, and
 * split rows over `threads` threads: PyTorch's OpenMP team where built with OpenMP, else POSIX
 * threads (coulisse_run_rows). AVX-512 or AVX2 code is chosen at run time by what the CPU has (isa_level); a
 * portable scalar loop runs elsewhere. No dependency beyond libc, libm and (optionally) the libgomp
 * PyTorch already loads.
 *
 * The module also exports `attention` (self-attention over packed sequences, _attention.c), and
 * `small_gemm` and `int8_gemm` (coulisse's own int8 GEMMs on AVX512-VNNI, _int8_gemm.c; the second finishes
 * its rows with these passes, `coulisse_row_task`); what the files share (instruction-set level, threads,
 * exp, the row pass) is declared in _kernels.h.
 */
#include "_kernels.h"

#ifdef __linux__
#include <sys/syscall.h>
#include <unistd.h>
#endif

#define ZERO_POINT 128.0f
#define QMAX 127.0f
#define MIN_SCALE_NUMERATOR 1e-12f

/* ---------------------------------------------------------------- GELU (erf form) */

static inline float gelu_scalar(float v) { return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f)); }

/* ---------------------------------------------------------------- scalar kernels */

/* The row's scale from its largest |x|. A NaN anywhere in the row makes the scale NaN, as PyTorch's
 * amax and clamp do in the fallback: the row's outputs then come out NaN, as fp32's would (the server's
 * /predict and the embedding jobs refuse non-finite results), not finite values from a row that lost an
 * element. */
static inline float row_scale(float m, int has_nan) {
    if (has_nan) return NAN;
    return (m > MIN_SCALE_NUMERATOR ? m : MIN_SCALE_NUMERATOR) / QMAX;
}

static void quantize_scalar(const float *x, int64_t cols, uint8_t *q, float *scale) {
    float m = 0.0f;
    int has_nan = 0;
    for (int64_t c = 0; c < cols; c++) {
        float a = fabsf(x[c]);
        m = a > m ? a : m;
        has_nan |= a != a;
    }
    float s = row_scale(m, has_nan);
    *scale = s;
    for (int64_t c = 0; c < cols; c++) q[c] = (uint8_t)(nearbyintf(x[c] / s) + ZERO_POINT);
}

static void dequantize_scalar(float *y, int64_t cols, float s, const float *bias, int gelu) {
    for (int64_t c = 0; c < cols; c++) {
        float v = fmaf(y[c], s, bias ? bias[c] : 0.0f);
        y[c] = gelu ? gelu_scalar(v) : v;
    }
}

/* Row statistics of v in fp32 like torch's layer_norm: mean first, then the mean of squared deviations
 * (two passes: no cancellation). Returns rstd = 1 / sqrt(var + eps); writes the mean. */
static float norm_stats_scalar(const float *v, int64_t cols, float eps, float *mean_out) {
    float sum = 0.0f, sq = 0.0f;
    for (int64_t c = 0; c < cols; c++) sum += v[c];
    const float mean = sum / (float)cols;
    for (int64_t c = 0; c < cols; c++) {
        float d = v[c] - mean;
        sq = fmaf(d, d, sq);
    }
    *mean_out = mean;
    return 1.0f / sqrtf(sq / (float)cols + eps);
}

static void add_norm_scalar(float *y, int64_t cols, float s, const float *bias, const float *res,
                            const float *gamma, const float *beta, float eps) {
    for (int64_t c = 0; c < cols; c++) y[c] = fmaf(y[c], s, bias[c]) + res[c];
    float mean;
    const float rstd = norm_stats_scalar(y, cols, eps, &mean);
    for (int64_t c = 0; c < cols; c++) y[c] = fmaf((y[c] - mean) * rstd, gamma[c], beta[c]);
}

/* ---------------------------------------------------------------- AVX2 kernels */

#if HAVE_X86
__attribute__((target("avx2,fma"))) static void quantize_avx2(const float *x, int64_t cols, uint8_t *q,
                                                              float *scale) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m8 = _mm256_setzero_ps(), nan8 = _mm256_setzero_ps();
    int64_t c = 0;
    for (; c + 8 <= cols; c += 8) {
        __m256 a = _mm256_andnot_ps(sign, _mm256_loadu_ps(x + c));
        m8 = _mm256_max_ps(m8, a);
        nan8 = _mm256_or_ps(nan8, _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, m8);
    float m = 0.0f;
    int has_nan = _mm256_movemask_ps(nan8) != 0;
    for (int i = 0; i < 8; i++) m = lanes[i] > m ? lanes[i] : m;
    for (; c < cols; c++) {
        float a = fabsf(x[c]);
        m = a > m ? a : m;
        has_nan |= a != a;
    }
    const float s = row_scale(m, has_nan);
    *scale = s;
    const __m256 vs = _mm256_set1_ps(s), zp = _mm256_set1_ps(ZERO_POINT);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    c = 0;
    for (; c + 32 <= cols; c += 32) {
        __m256i i[4];
        for (int k = 0; k < 4; k++) {
            __m256 v = _mm256_div_ps(_mm256_loadu_ps(x + c + 8 * k), vs);
            v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            i[k] = _mm256_cvtps_epi32(_mm256_add_ps(v, zp));
        }
        __m256i w01 = _mm256_packs_epi32(i[0], i[1]), w23 = _mm256_packs_epi32(i[2], i[3]);
        __m256i b = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(w01, w23), order);
        _mm256_storeu_si256((__m256i *)(q + c), b);
    }
    for (; c < cols; c++) q[c] = (uint8_t)(nearbyintf(x[c] / s) + ZERO_POINT);
}

/* GELU on 8 lanes (the table in _kernels.h, with gelu_avx512's operations in the same order: the same bits). */
__attribute__((target("avx2,fma"))) static inline __m256 gelu_avx2(__m256 v) {
    const __m256 a = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v), clamped = _mm256_min_ps(a, _mm256_set1_ps(6.0f));
    const __m256i i = _mm256_cvttps_epi32(_mm256_mul_ps(clamped, _mm256_set1_ps(1.25f)));
    const __m256 t = _mm256_sub_ps(clamped, _mm256_permutevar8x32_ps(_mm256_load_ps(GELU_TABLE[0]), i));
    __m256 p = _mm256_permutevar8x32_ps(_mm256_load_ps(GELU_TABLE[7]), i);
    for (int k = 6; k >= 1; k--)
        p = _mm256_fmadd_ps(p, t, _mm256_permutevar8x32_ps(_mm256_load_ps(GELU_TABLE[k]), i));
    return _mm256_fmadd_ps(a, p, _mm256_mul_ps(v, _mm256_set1_ps(0.5f)));
}

__attribute__((target("avx2,fma"))) static void dequantize_avx2(float *y, int64_t cols, float s,
                                                                const float *bias, int gelu) {
    const __m256 vs = _mm256_set1_ps(s);
    int64_t c = 0;
    if (gelu) {
        for (; c + 16 <= cols; c += 16) {
            __m256 b0 = bias ? _mm256_loadu_ps(bias + c) : _mm256_setzero_ps();
            __m256 b1 = bias ? _mm256_loadu_ps(bias + c + 8) : _mm256_setzero_ps();
            __m256 v0 = gelu_avx2(_mm256_fmadd_ps(_mm256_loadu_ps(y + c), vs, b0));
            __m256 v1 = gelu_avx2(_mm256_fmadd_ps(_mm256_loadu_ps(y + c + 8), vs, b1));
            _mm256_storeu_ps(y + c, v0);
            _mm256_storeu_ps(y + c + 8, v1);
        }
    }
    for (; c + 8 <= cols; c += 8) {
        __m256 b = bias ? _mm256_loadu_ps(bias + c) : _mm256_setzero_ps();
        __m256 v = _mm256_fmadd_ps(_mm256_loadu_ps(y + c), vs, b);
        _mm256_storeu_ps(y + c, gelu ? gelu_avx2(v) : v);
    }
    if (c < cols) dequantize_scalar(y + c, cols - c, s, bias ? bias + c : NULL, gelu);
}

__attribute__((target("avx2,fma"))) static void add_norm_avx2(float *y, int64_t cols, float s, const float *bias,
                                                              const float *res, const float *gamma,
                                                              const float *beta, float eps) {
    const __m256 vs = _mm256_set1_ps(s);
    __m256 acc = _mm256_setzero_ps();
    int64_t c = 0;
    for (; c + 8 <= cols; c += 8) {
        __m256 v = _mm256_add_ps(_mm256_fmadd_ps(_mm256_loadu_ps(y + c), vs, _mm256_loadu_ps(bias + c)),
                                 _mm256_loadu_ps(res + c));
        _mm256_storeu_ps(y + c, v);
        acc = _mm256_add_ps(acc, v);
    }
    float sum = hsum_avx2(acc);
    for (int64_t t = c; t < cols; t++) {
        y[t] = fmaf(y[t], s, bias[t]) + res[t];
        sum += y[t];
    }
    const float mean = sum / (float)cols;
    const __m256 vm = _mm256_set1_ps(mean);
    acc = _mm256_setzero_ps();
    for (c = 0; c + 8 <= cols; c += 8) {
        __m256 d = _mm256_sub_ps(_mm256_loadu_ps(y + c), vm);
        acc = _mm256_fmadd_ps(d, d, acc);
    }
    float sq = hsum_avx2(acc);
    for (int64_t t = c; t < cols; t++) sq = fmaf(y[t] - mean, y[t] - mean, sq);
    const float rstd = 1.0f / sqrtf(sq / (float)cols + eps);
    const __m256 vr = _mm256_set1_ps(rstd);
    for (c = 0; c + 8 <= cols; c += 8) {
        __m256 z = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(y + c), vm), vr);
        _mm256_storeu_ps(y + c, _mm256_fmadd_ps(z, _mm256_loadu_ps(gamma + c), _mm256_loadu_ps(beta + c)));
    }
    for (; c < cols; c++) y[c] = fmaf((y[c] - mean) * rstd, gamma[c], beta[c]);
}
#endif

#if HAVE_X86
/* ---------------------------------------------------------------- AVX-512 kernels
 * The same arithmetic on 16 lanes: every op is elementwise IEEE (division, FMA, rounding), so quantize and
 * dequantize (+GELU) give the AVX2 kernels' bits wherever both run vectors (a row's last columns may fall
 * in one side's scalar tail, libm's erff); add_norm sums its row in 16 partial sums instead of 8,
 * which moves the mean and variance by a rounding. Half the instructions per row: on Zen 4 (512-bit ops
 * issued as two 256-bit halves) the gain is in the front end and the GELU's dependency chains. */

/* A row's max |x| kept as the int32 bits of |x|: for non-negative floats the integer order is the float order and
 * a NaN's bits exceed infinity's, so one unsigned max a vector (after clearing the sign) also tells whether the
 * row holds a NaN. The AVX-512 passes that end a row with its codes track it while they write the row
 * (abs_max_update, _kernels.h), as the feed-forward's tiles do (_int8_gemm.c): no pass of its own to find the max;
 * `abs_max_scale` turns it into quantize_rows' scale. With the packed codes below, a row's codes cost 0.10 ns an
 * element instead of 0.19 on the AMX Xeon (session 16). */
#define INF_BITS 0x7f800000u

static inline uint32_t abs_bits(float x) {
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    return b & ABS_BITS;
}

AVX512 static inline float abs_max_scale(__m512i m16, const float *tail, int64_t count) {
    uint32_t m = _mm512_reduce_max_epu32(m16);
    for (int64_t c = 0; c < count; c++) {
        const uint32_t b = abs_bits(tail[c]);
        m = b > m ? b : m;
    }
    float mf;
    memcpy(&mf, &m, sizeof mf);
    return row_scale(mf, m > INF_BITS);
}

/* One vector's codes, 16 bytes: x / s rounded half to even, + 128 (see codes_avx512). */
AVX512 static inline __m512i codes_of_vector(__m512 x, __m512 vs, __m512 vr) {
    /* x / s without a division (vdivps: one per ~10 cycles on Intel cores): q0 = x r with r = RN(1 / s) is
     * within an ulp of x / s, e = x - q0 s is exact (an FMA), and q0 + e r rounds to RN(x / s) itself
     * (Markstein's theorem): the division's bits, checked on 128M quotients around every half-integer
     * (bench/quotient_check.c). */
    const __m512 q0 = _mm512_mul_ps(x, vr);
    const __m512 v = _mm512_fmadd_ps(_mm512_fnmadd_ps(q0, vs, x), vr, q0);
    /* rounded half to even by the conversion itself (not MXCSR's mode: the instruction's own), then + 128 as
     * integers: what rounding, adding 128.0f (exact) and converting gave */
    return _mm512_add_epi32(_mm512_cvt_roundps_epi32(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
                            _mm512_set1_epi32(128));
}

/* The codes of a row whose scale s is known: round(x / s) + 128. Four vectors at a time go to bytes by two
 * signed packs (to words, then to bytes: codes are 1..255 here, nothing saturates) and one dword permutation
 * that undoes the packs' lane interleaving. Non-finite scales (a row with a NaN or an infinity) keep a true
 * division, vector by vector. */
AVX512 static void codes_avx512(const float *x, int64_t cols, float s, uint8_t *q) {
    const float r = 1.0f / s;
    const __m512 vs = _mm512_set1_ps(s), vr = _mm512_set1_ps(r);
    int64_t c = 0;
    if (isfinite(s) && isfinite(r)) {
        const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        for (; c + 64 <= cols; c += 64) {
            const __m512i a = codes_of_vector(_mm512_loadu_ps(x + c), vs, vr);
            const __m512i b = codes_of_vector(_mm512_loadu_ps(x + c + 16), vs, vr);
            const __m512i d = codes_of_vector(_mm512_loadu_ps(x + c + 32), vs, vr);
            const __m512i e = codes_of_vector(_mm512_loadu_ps(x + c + 48), vs, vr);
            const __m512i bytes = _mm512_packus_epi16(_mm512_packs_epi32(a, b), _mm512_packs_epi32(d, e));
            _mm512_storeu_si512(q + c, _mm512_permutexvar_epi32(order, bytes));
        }
        for (; c + 16 <= cols; c += 16)
            _mm_storeu_si128((__m128i *)(q + c),
                             _mm512_cvtusepi32_epi8(codes_of_vector(_mm512_loadu_ps(x + c), vs, vr)));
    } else {
        const __m512 zp = _mm512_set1_ps(ZERO_POINT);
        for (; c + 16 <= cols; c += 16) {
            __m512 v = _mm512_roundscale_ps(_mm512_div_ps(_mm512_loadu_ps(x + c), vs),
                                            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            _mm_storeu_si128((__m128i *)(q + c), _mm512_cvtusepi32_epi8(_mm512_cvtps_epi32(_mm512_add_ps(v, zp))));
        }
    }
    for (; c < cols; c++) q[c] = (uint8_t)(nearbyintf(x[c] / s) + ZERO_POINT);
}

AVX512 void coulisse_codes_with_max(const float *x, int64_t cols, int64_t rows, const uint32_t *max16, uint8_t *q,
                                    float *scale) {
    for (int64_t r = 0; r < rows; r++) {
        scale[r] = abs_max_scale(_mm512_loadu_si512(max16 + 16 * r), NULL, 0);
        codes_avx512(x + r * cols, cols, scale[r], q + r * cols);
    }
}

AVX512 static void quantize_avx512(const float *x, int64_t cols, uint8_t *q, float *scale) {
    __m512i m16 = _mm512_setzero_si512();
    int64_t c = 0;
    for (; c + 16 <= cols; c += 16) {
        /* the row after next asked for as this one is read, for rows that come from L3 or memory (attention's
         * output, which its AMX unit writes around the caches; a feed-forward's GELU output read back for its
         * codes): quantize_rows over 4,096 rows of 768 floats 0.78-0.84x, of 3,072 0.88x on one thread and
         * 0.98x on two; 256 rows as before (AMX Xeon, session 19, the two builds alternating in one process) */
        _mm_prefetch((const char *)(x + 2 * cols + c), _MM_HINT_T0);
        m16 = abs_max_update(m16, _mm512_loadu_ps(x + c));
    }
    const float s = abs_max_scale(m16, x + c, cols - c);
    *scale = s;
    codes_avx512(x, cols, s, q);
}

/* y = y s + bias (then GELU), in place; with `codes`, the row's codes and scale too, its max |y| tracked on the
 * way (the codes pass then reads the row once, from L1). */
AVX512 static void dequantize_avx512(float *y, int64_t cols, float s, const float *bias, int gelu, uint8_t *codes,
                                     float *code_scale) {
    const __m512 vs = _mm512_set1_ps(s);
    __m512i m16 = _mm512_setzero_si512();
    int64_t c = 0;
    if (gelu) {
        for (; c + 32 <= cols; c += 32) {
            __m512 b0 = bias ? _mm512_loadu_ps(bias + c) : _mm512_setzero_ps();
            __m512 b1 = bias ? _mm512_loadu_ps(bias + c + 16) : _mm512_setzero_ps();
            __m512 v0 = gelu_avx512(_mm512_fmadd_ps(_mm512_loadu_ps(y + c), vs, b0));
            __m512 v1 = gelu_avx512(_mm512_fmadd_ps(_mm512_loadu_ps(y + c + 16), vs, b1));
            _mm512_storeu_ps(y + c, v0);
            _mm512_storeu_ps(y + c + 16, v1);
            if (codes) m16 = abs_max_update(abs_max_update(m16, v0), v1);
        }
    }
    for (; c + 16 <= cols; c += 16) {
        __m512 b = bias ? _mm512_loadu_ps(bias + c) : _mm512_setzero_ps();
        __m512 v = _mm512_fmadd_ps(_mm512_loadu_ps(y + c), vs, b);
        if (gelu) v = gelu_avx512(v);
        _mm512_storeu_ps(y + c, v);
        if (codes) m16 = abs_max_update(m16, v);
    }
    if (c < cols) dequantize_scalar(y + c, cols - c, s, bias ? bias + c : NULL, gelu);
    if (codes) {
        *code_scale = abs_max_scale(m16, y + c, cols - c);
        codes_avx512(y, cols, *code_scale, codes);
    }
}

/* y = LayerNorm(y s + bias + res) (gamma, beta) for R consecutive rows (1 or 2; rows `cols` apart in y, res and codes),
 * with each row's codes and scale where `codes`. Each row gets the same operations in the same order whatever R (the
 * same bits): two rows side by side give the core two independent chains where one row leaves it waiting on its
 * sums (an add, then an FMA, 4 cycles after the last, 48 of them a pass for 768 columns). A row in L2 on one thread
 * 271 -> 218 ns; the attention output's 768 -> 768 GEMM with this pass, 12 times at 4,096 rows, 20.9 -> 19.8 ms,
 * the second feed-forward's 54.1 -> 53.2 (AMX Xeon, session 22; medians of 21 alternating rounds). */
AVX512 static inline __attribute__((always_inline)) void add_norm_rows_avx512(const int R, float *y, int64_t cols,
                                                                             const float *s, const float *bias,
                                                                             const float *res, const float *gamma,
                                                                             const float *beta, float eps,
                                                                             uint8_t *codes, float *code_scale) {
    __m512 vs[2], acc[2], vm[2], vr[2];
    float mean[2], rstd[2];
    __m512i m16[2];
    for (int i = 0; i < R; i++) {
        vs[i] = _mm512_set1_ps(s[i]);
        acc[i] = _mm512_setzero_ps();
    }
    int64_t c = 0;
    for (; c + 16 <= cols; c += 16) {
        /* the residual's rows after the next R asked for (the layer's input or the attention block's output, read
         * from L3: 48 GEMMs with their passes at 4,096 rows 0.93x; AMX Xeon, session 19) */
        for (int i = 0; i < R; i++) _mm_prefetch((const char *)(res + (R + 1 + i) * cols + c), _MM_HINT_T0);
        for (int i = 0; i < R; i++) {
            const int64_t at = i * cols + c;
            __m512 v = _mm512_add_ps(_mm512_fmadd_ps(_mm512_loadu_ps(y + at), vs[i], _mm512_loadu_ps(bias + c)),
                                     _mm512_loadu_ps(res + at));
            _mm512_storeu_ps(y + at, v);
            acc[i] = _mm512_add_ps(acc[i], v);
        }
    }
    const int64_t vector = c;
    for (int i = 0; i < R; i++) {
        float sum = _mm512_reduce_add_ps(acc[i]);
        float *yr = y + i * cols;
        const float *rr = res + i * cols;
        for (int64_t t = vector; t < cols; t++) {
            yr[t] = fmaf(yr[t], s[i], bias[t]) + rr[t];
            sum += yr[t];
        }
        mean[i] = sum / (float)cols;
        vm[i] = _mm512_set1_ps(mean[i]);
        acc[i] = _mm512_setzero_ps();
    }
    for (c = 0; c + 16 <= cols; c += 16)
        for (int i = 0; i < R; i++) {
            __m512 d = _mm512_sub_ps(_mm512_loadu_ps(y + i * cols + c), vm[i]);
            acc[i] = _mm512_fmadd_ps(d, d, acc[i]);
        }
    for (int i = 0; i < R; i++) {
        float sq = _mm512_reduce_add_ps(acc[i]);
        const float *yr = y + i * cols;
        for (int64_t t = vector; t < cols; t++) sq = fmaf(yr[t] - mean[i], yr[t] - mean[i], sq);
        rstd[i] = 1.0f / sqrtf(sq / (float)cols + eps);
        vr[i] = _mm512_set1_ps(rstd[i]);
        m16[i] = _mm512_setzero_si512();
    }
    for (c = 0; c + 16 <= cols; c += 16) {
        const __m512 g = _mm512_loadu_ps(gamma + c), b = _mm512_loadu_ps(beta + c);
        for (int i = 0; i < R; i++) {
            __m512 z = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(y + i * cols + c), vm[i]), vr[i]);
            z = _mm512_fmadd_ps(z, g, b);
            _mm512_storeu_ps(y + i * cols + c, z);
            if (codes) m16[i] = abs_max_update(m16[i], z);
        }
    }
    for (int i = 0; i < R; i++) {
        float *yr = y + i * cols;
        for (c = vector; c < cols; c++) yr[c] = fmaf((yr[c] - mean[i]) * rstd[i], gamma[c], beta[c]);
        if (codes) {
            code_scale[i] = abs_max_scale(m16[i], yr + vector, cols - vector);
            codes_avx512(yr, cols, code_scale[i], codes + i * cols);
        }
    }
}

AVX512 static void add_norm_avx512(float *y, int64_t cols, float s, const float *bias, const float *res,
                                   const float *gamma, const float *beta, float eps, uint8_t *codes,
                                   float *code_scale) {
    add_norm_rows_avx512(1, y, cols, &s, bias, res, gamma, beta, eps, codes, code_scale);
}

AVX512 static void add_norm2_avx512(float *y, int64_t cols, const float *s, const float *bias, const float *res,
                                    const float *gamma, const float *beta, float eps, uint8_t *codes,
                                    float *code_scale) {
    add_norm_rows_avx512(2, y, cols, s, bias, res, gamma, beta, eps, codes, code_scale);
}
#endif


/* Which code runs: 2 = AVX-512 (F, DQ, BW, VL), 1 = AVX2 + FMA, 0 = scalar; the best this CPU has, read
 * once. COULISSE_INT8_ISA=avx2|scalar caps it (A/B runs, tests); a level the CPU lacks is never taken. */
static const char *const ISA_NAMES[] = {"scalar", "avx2", "avx512"};

int coulisse_amx_granted(void) {
    static int cached = -1;
    if (cached < 0) {
#ifdef __linux__
        cached = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
#else
        cached = 0;
#endif
    }
    return cached;
}

int coulisse_isa_level(void) {
    static int cached = -1;
    if (cached >= 0) return cached;
    int level = ISA_SCALAR;
#if HAVE_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        level = ISA_AVX2;
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
            __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
            level = ISA_AVX512;
    }
#endif
    const char *cap = getenv("COULISSE_INT8_ISA");
    if (cap) {
        for (int i = ISA_SCALAR; i < level; i++)
            if (strcmp(cap, ISA_NAMES[i]) == 0) level = i;
    }
    cached = level;
    return cached;
}

/* ---------------------------------------------------------------- rows over threads */


static void quantize_row(int isa, const float *x, int64_t cols, uint8_t *q, float *scale) {
#if HAVE_X86
    if (isa == ISA_AVX512) {
        quantize_avx512(x, cols, q, scale);
        return;
    }
    if (isa == ISA_AVX2) {
        quantize_avx2(x, cols, q, scale);
        return;
    }
#endif
    quantize_scalar(x, cols, q, scale);
}

void coulisse_quantize_row(const float *x, int64_t cols, uint8_t *q, float *scale) {
    quantize_row(coulisse_isa_level(), x, cols, q, scale);
}

void *coulisse_row_task(void *arg) {
    RowTask *t = (RowTask *)arg;
    for (int64_t r = t->r0; r < t->r1; r++) {
        if (t->op == 0) { /* scale is its output here */
            quantize_row(t->isa, t->x + r * t->cols, t->cols, t->q + r * t->cols, t->scale + r);
            continue;
        }
        const float s = t->scale ? t->scale[r] : 1.0f; /* no scales: an fp32 GEMM's output, y * 1 + b == y + b */
        float *y = t->y + r * t->cols;
        uint8_t *codes = t->codes ? t->codes + r * t->cols : NULL;
        float *code_scale = t->codes ? t->code_scale + r : NULL;
#if HAVE_X86
        if (t->isa == ISA_AVX512) { /* the codes made in the same call, the row's max tracked on the way */
            if (t->op == 2 && r + 1 < t->r1) { /* two rows at a time, the same bits */
                const float s2[2] = {s, t->scale ? t->scale[r + 1] : 1.0f};
                add_norm2_avx512(y, t->cols, s2, t->bias, t->x + r * t->cols, t->gamma, t->beta, t->eps, codes,
                                 code_scale);
                r++;
                continue;
            }
            if (t->op == 2)
                add_norm_avx512(y, t->cols, s, t->bias, t->x + r * t->cols, t->gamma, t->beta, t->eps, codes,
                                code_scale);
            else
                dequantize_avx512(y, t->cols, s, t->bias, t->gelu, codes, code_scale);
            continue;
        }
#endif
        if (t->op == 2) {
            const float *res = t->x + r * t->cols;
#if HAVE_X86
            if (t->isa == ISA_AVX2)
                add_norm_avx2(y, t->cols, s, t->bias, res, t->gamma, t->beta, t->eps);
            else
#endif
                add_norm_scalar(y, t->cols, s, t->bias, res, t->gamma, t->beta, t->eps);
        } else {
#if HAVE_X86
            if (t->isa == ISA_AVX2)
                dequantize_avx2(y, t->cols, s, t->bias, t->gelu);
            else
#endif
                dequantize_scalar(y, t->cols, s, t->bias, t->gelu);
        }
        if (codes) quantize_row(t->isa, y, t->cols, codes, code_scale);
    }
    return NULL;
}

#define MAX_THREADS 64

/* Which threads split the rows. Built with OpenMP (setup.py tries -fopenmp first), the rows go to the
 * OpenMP team of the calling thread: libgomp is PyTorch's own (torch loads libgomp.so.1 first and the
 * loader reuses it by soname), so the workers that just ran the GEMM take the rows at once. POSIX threads
 * started per call instead have to share the second core with those workers, which libgomp keeps
 * spinning for a while after each region: on 2 cores that made the kernels ~3x slower inside the model
 * than alone. COULISSE_INT8_THREADS=posix picks the POSIX threads in an OpenMP build (A/B, tests). */
static int use_openmp(void) {
#ifdef _OPENMP
    static int cached = -1;
    if (cached < 0) {
        const char *choice = getenv("COULISSE_INT8_THREADS");
        cached = !(choice && strcmp(choice, "posix") == 0);
    }
    return cached;
#else
    return 0;
#endif
}

void coulisse_run_rows(RowTask base, int64_t rows, int threads) {
    /* Small tensors are not worth a thread start (~20 us). */
    int64_t work = rows * base.cols;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads > 1 && work < (int64_t)1 << 15) threads = 1;
    if (threads > rows) threads = (int)rows;
    if (threads < 1) threads = 1;
    RowTask tasks[MAX_THREADS];
    for (int i = 0; i < threads; i++) {
        tasks[i] = base;
        tasks[i].r0 = rows * i / threads;
        tasks[i].r1 = rows * (i + 1) / threads;
    }
    if (threads == 1) {
        coulisse_row_task(&tasks[0]);
        return;
    }
#ifdef _OPENMP
    if (use_openmp()) {
#pragma omp parallel for num_threads(threads) schedule(static, 1)
        for (int i = 0; i < threads; i++) coulisse_row_task(&tasks[i]);
        return;
    }
#endif
    pthread_t ids[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int i = 1; i < threads; i++) started[i] = pthread_create(&ids[i], NULL, coulisse_row_task, &tasks[i]) == 0;
    coulisse_row_task(&tasks[0]);
    for (int i = 1; i < threads; i++) {
        if (started[i])
            pthread_join(ids[i], NULL);
        else
            coulisse_row_task(&tasks[i]); /* could not start a thread: do its share here */
    }
}

int coulisse_run_workers(void *(*fn)(void *), void *arg, int threads) {
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads <= 1) return fn(arg) != NULL;
    int failed = 0;
#ifdef _OPENMP
    if (use_openmp()) {
#pragma omp parallel num_threads(threads) reduction(| : failed)
        failed |= fn(arg) != NULL;
        return failed;
    }
#endif
    pthread_t ids[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int i = 1; i < threads; i++) started[i] = pthread_create(&ids[i], NULL, fn, arg) == 0;
    failed |= fn(arg) != NULL; /* a thread that did not start leaves its share to the others */
    for (int i = 1; i < threads; i++) {
        void *result = NULL;
        if (started[i] && pthread_join(ids[i], &result) == 0) failed |= result != NULL;
    }
    return failed;
}

/* ---------------------------------------------------------------- Python bindings */

static PyObject *py_quantize_rows(PyObject *self, PyObject *args) {
    Py_ssize_t x, rows, cols, q, scale;
    int threads;
    if (!PyArg_ParseTuple(args, "nnnnni", &x, &rows, &cols, &q, &scale, &threads)) return NULL;
    RowTask t = {0, 0, 0, cols, (const float *)x, NULL, (uint8_t *)q, (float *)scale, NULL, 0, coulisse_isa_level(),
                 NULL, NULL, 0.0f, NULL, NULL};
    Py_BEGIN_ALLOW_THREADS coulisse_run_rows(t, rows, threads);
    Py_END_ALLOW_THREADS Py_RETURN_NONE;
}

static PyObject *py_dequantize_rows(PyObject *self, PyObject *args) {
    Py_ssize_t y, rows, cols, scale, bias, codes = 0, code_scale = 0;
    int threads, gelu;
    if (!PyArg_ParseTuple(args, "nnnnnip|nn", &y, &rows, &cols, &scale, &bias, &threads, &gelu, &codes, &code_scale))
        return NULL;
    if ((codes == 0) != (code_scale == 0)) {
        PyErr_SetString(PyExc_ValueError, "dequantize_rows: codes and code_scale go together");
        return NULL;
    }
    RowTask t = {1, 0, 0, cols, NULL, (float *)y, NULL, (float *)scale, (const float *)bias, gelu, coulisse_isa_level(),
                 NULL, NULL, 0.0f, (uint8_t *)codes, (float *)code_scale};
    Py_BEGIN_ALLOW_THREADS coulisse_run_rows(t, rows, threads);
    Py_END_ALLOW_THREADS Py_RETURN_NONE;
}

static PyObject *py_add_norm_rows(PyObject *self, PyObject *args) {
    Py_ssize_t y, rows, cols, scale, bias, res, gamma, beta, codes = 0, code_scale = 0;
    double eps;
    int threads;
    if (!PyArg_ParseTuple(args, "nnnnnnnndi|nn", &y, &rows, &cols, &scale, &bias, &res, &gamma, &beta, &eps, &threads,
                          &codes, &code_scale))
        return NULL;
    if ((codes == 0) != (code_scale == 0)) {
        PyErr_SetString(PyExc_ValueError, "add_norm_rows: codes and code_scale go together");
        return NULL;
    }
    RowTask t = {2, 0, 0, cols, (const float *)res, (float *)y, NULL, (float *)scale, (const float *)bias, 0,
                 coulisse_isa_level(), (const float *)gamma, (const float *)beta, (float)eps, (uint8_t *)codes,
                 (float *)code_scale};
    Py_BEGIN_ALLOW_THREADS coulisse_run_rows(t, rows, threads);
    Py_END_ALLOW_THREADS Py_RETURN_NONE;
}

static PyObject *py_isa(PyObject *self, PyObject *unused) { return PyUnicode_FromString(ISA_NAMES[coulisse_isa_level()]); }

static PyObject *py_threading(PyObject *self, PyObject *unused) {
    return PyUnicode_FromString(use_openmp() ? "openmp" : "posix");
}

static PyMethodDef methods[] = {
    {"quantize_rows", py_quantize_rows, METH_VARARGS,
     "quantize_rows(x_ptr, rows, cols, q_ptr, scale_ptr, threads): fp32 rows -> u8 codes + per-row scales."},
    {"dequantize_rows", py_dequantize_rows, METH_VARARGS,
     "dequantize_rows(y_ptr, rows, cols, scale_ptr, bias_ptr, threads, gelu[, codes_ptr, code_scale_ptr]): "
     "y = y*s[r] + bias, in place (scale_ptr 0: s[r] = 1); with codes, also quantize_rows(y) into them."},
    {"add_norm_rows", py_add_norm_rows, METH_VARARGS,
     "add_norm_rows(y_ptr, rows, cols, scale_ptr, bias_ptr, res_ptr, gamma_ptr, beta_ptr, eps, threads"
     "[, codes_ptr, code_scale_ptr]): y = LayerNorm(y*s[r] + bias + res), in place (scale_ptr 0: s[r] = 1); "
     "with codes, also quantize_rows(y) into them."},
    {"attention", coulisse_py_attention, METH_VARARGS,
     "attention(qkv_ptr, out_ptr, starts_ptr, lengths_ptr, batch, hidden, heads, scale, first_only, threads"
     "[, bf16, bf16_inputs]): "
     "softmax(scale q k^T) v per sequence and head of a packed (T, 3*hidden) fp32 tensor, into (T or batch, "
     "hidden); starts and lengths are int64 arrays of batch entries. A last argument bf16=True multiplies in "
     "bf16 pairs (fp32 sums) where the CPU has AVX512-BF16 and 32 divides the head width; bf16_inputs=True reads a "
     "bf16 qkv tensor (then both are required; the output stays fp32)."},
    {"small_gemm", coulisse_py_small_gemm, METH_VARARGS,
     "small_gemm(x_ptr, w_ptr, colsum_ptr, scale_ptr, out_ptr, m, k, n, threads): out (m, n) fp32 = (sum_k x w - "
     "128 colsum) * scale for u8 codes x (m, k) and weights packed by blocks of 16 columns (_int8_gemm.c); "
     "AVX512-VNNI only (has_int8_dot)."},
    {"int8_gemm", coulisse_py_int8_gemm, METH_VARARGS,
     "int8_gemm(x_ptr, w_ptr, colsum_ptr, scale_ptr, out_ptr, m, k, n, threads, op, x_scale_ptr, bias_ptr, gelu, "
     "res_ptr, gamma_ptr, beta_ptr, eps, codes_ptr, code_scale_ptr[, rows_ptr, bf16]): small_gemm's product for any "
     "row count, by blocks of rows, each block then finished while in cache: op 0 nothing, 1 dequantize_rows, 2 "
     "add_norm_rows (their arguments; codes_ptr 0 for no codes). Given rows_ptr (fp32 rows, m x k; 0: none), each "
     "block first quantizes its rows into x_ptr and x_scale_ptr (quantize_rows' codes). bf16=True: out_ptr takes op "
     "1's result in bf16 (rounded to nearest even), on AMX tiles only (has_amx_int8, k a multiple of 64, "
     "has_bf16_dot; op 1 without codes). AVX512-VNNI only (has_int8_dot)."},
    {"has_int8_dot", coulisse_py_has_int8_dot, METH_NOARGS,
     "Whether this CPU multiplies bytes into int32 lanes (AVX512-VNNI), which small_gemm needs."},
    {"has_amx_int8", coulisse_py_has_amx_int8, METH_NOARGS,
     "Whether int8_gemm runs its blocks on AMX-INT8 tiles here (where k is a multiple of 64): the CPU has them, "
     "Linux granted the tile state, COULISSE_INT8_AMX is not 0."},
    {"has_bf16_dot", coulisse_py_has_bf16_dot, METH_NOARGS,
     "Whether this CPU multiplies bf16 pairs (AVX512-BF16), which attention(..., bf16=True) then uses."},
    {"has_amx_attention", coulisse_py_has_amx_attention, METH_NOARGS,
     "Whether attention's bf16 products run on AMX-BF16 tiles here (the CPU has them, Linux granted the tile state, "
     "COULISSE_ATTENTION_AMX is not 0)."},
    {"isa", py_isa, METH_NOARGS, "Which code path runs on this CPU: 'avx512', 'avx2' or 'scalar'."},
    {"threading", py_threading, METH_NOARGS, "Which threads split the rows: 'openmp' (PyTorch's team) or 'posix'."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_int8", "Fused per-token quantization kernels.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__int8(void) { return PyModule_Create(&module); }
