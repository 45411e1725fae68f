/*
 * Self-attention over packed sequences, for the fp32 encoders on the CPU (models/bert.py).
 *
 * The linear layers see every token of a batch as one (T, 3H) query/key/value tensor without padding.
 * Attention must not mix sequences: PyTorch's SDPA then runs once per sequence (one call per sequence
 * and layer, each with its own dispatch and thread fork) or on a padded copy. Here one call does the
 * whole batch: every (sequence, head) pair, or a range of its queries, is a unit of work that threads
 * take in turn, longest sequences first, reading the sequence's rows in place.
 *
 * Per unit, for a head h of width d and a sequence of n tokens:
 *   K^T is copied once into a (d, n') block (n' = n rounded up to 16, zeros after n), by register
 *   transposes of 16 x 16 (8 x 8) blocks;
 *   for each block of 8 (AVX2: 6) queries, S = Q_blk K^T (8 x n'), on 8 x 2 vector accumulators, the
 *   scores multiplied by scale * log2(e) as they are stored;
 *   each row of S becomes p_j = 2^(s_j - max_j s_j) for j < n, with their sum l; the output rows are
 *   (sum_j p_j v_j) / l, accumulated over the keys for 4 (AVX2: 6) queries at a time in registers.
 * With a bias that is -inf at some offsets (a local layer's window), a block of queries reads only the keys its
 * window can reach (key_range): a local layer's cost grows as n, not n^2, to the same bits. From LONG_KEYS tokens
 * on, the fp32 units read V from a copy and take their queries by superblocks, their keys by chunks, so that long
 * sequences stay in L2 (unit_vector), to the same bits.
 * This is the arithmetic of softmax(scale Q K^T) V; it differs from SDPA's by the order of the fp32
 * sums and by exp's rounding (2^r by its degree-6 Taylor polynomial, relative error ~1.3e-7), within
 * the fp32 error bound of the exact result (tests/models/test_attention_kernel.py). A row whose scores
 * hold a NaN, a +inf, or only -inf has NaN outputs, as SDPA gives; never a finite value (the scores of the keys
 * its block reads: a NaN key outside every window of the block is not read).
 *
 * AVX-512 (16 lanes) or AVX2 (8 lanes) where the head width is a multiple of the vector width, else
 * scalar C; chosen per call by the same level as the other kernels (coulisse_isa_level).
 *
 * Where the caller asks for codes (the attention block's int8 GEMM reads its input as u8 codes and a scale per
 * row: models/bert.py, Attention), the output rows become those codes, quantize_rows' to the bit. A row's codes need
 * its max over every head, so the units are then whole sequences (every head, in turn, on one thread), whose rows
 * go to a buffer of the thread's, which quantizes them while they are in its L2: no fp32 rows written out and read
 * back (3 kB a token). Where one sequence would take more than a thread's share of the work (~n^2 a head, the
 * longest's n^2 times the threads above the batch's sum), the units stay heads and one pass quantizes the rows
 * written out. Attention with its codes over a batch of 27 reviews' lengths (3,484 tokens): 3.29 -> 2.78 ms; the
 * --fast pipeline over 160 reviews in the plan's batches of 4,096 tokens 0.94-0.95x, 2,048 0.94-0.95x, 1,024
 * 0.95-0.98x (AMX Xeon, session 20; the same hidden states, the two ways alternating in one process).
 */
#include "_kernels.h"


#define MQ 8  /* queries per block of S, AVX-512 and scalar */
#define QB2 6 /* AVX2: 12 accumulators of its 16 registers */
#define LONG_KEYS 512 /* the fp32 vector units (unit_vector): from this length on, queries go by superblocks of */
#define SUPER_Q 64    /* SUPER_Q, keys by chunks of KEY_CHUNK */
#define KEY_CHUNK 512

typedef struct {
    int64_t seq, q0, q1;
    int head;
} Unit;

typedef struct {
    const float *qkv;
    const uint16_t *qkv16; /* bf16 inputs instead (bf16 pipelines), for the bf16-product unit only */
    float *out;
    const int64_t *starts, *lengths;
    int64_t row;     /* floats between two tokens' rows in qkv: 3H */
    int64_t hidden;  /* H: also the floats between two rows of out */
    int d;
    float scale;
    int first_only, isa;
    int bf16;      /* products in bf16 (vdpbf16ps) where the CPU has AVX512-BF16 and 32 divides d */
    int amx;       /* with bf16: the products on AMX-BF16 tiles (16 queries per block) where the CPU has them */
    int64_t width; /* n' of the longest sequence */
    const Unit *units;
    int64_t n_units;
    int64_t next; /* the next unit to take (atomic) */
    int stream_out; /* the AMX unit writes out with non-temporal stores (out starts on a cache line, so its rows'
                     * head slices do) */
    /* codes asked for (the attention block's int8 GEMM reads them, not the fp32 rows): each finished row's u8 codes
     * and scale, as quantize_rows makes them; `whole`: the units are whole sequences, all heads (head -1), whose
     * rows are quantized by the thread that made them, from its L2 */
    uint8_t *codes;
    float *code_scale;
    int whole;
    /* an additive bias on the scores by the key's offset from the query (MPNet's relative positions, a local
     * window's -inf outside it), or NULL: score(i, j) += rel[head * rel_head + rel_mid + j - i], in natural units
     * (before the base-2 scaling); rel_head is 0 where every head shares one row */
    const float *rel;
    int64_t rel_head, rel_mid;
    int64_t rel_lo, rel_hi; /* the offsets j - i at which some head's bias is finite: keys outside weigh nothing */
} Job;

/* The relative bias that query i's scores over keys j = 0 .. n - 1 add: b[j], contiguous in j. */
static inline const float *rel_row(const Job *job, int head, int64_t i) {
    return job->rel + (int64_t)head * job->rel_head + job->rel_mid - i;
}

/* The keys [*lo, *hi) that queries i0 .. i0 + m - 1 of a sequence of n tokens can weigh: every key without a bias,
 * else those at an offset where the bias has a finite value (a local layer's window), lo rounded down to a multiple of
 * `align` and hi up to one (or to n). Any other key's score is -inf and its weight exactly 0 (2^x is 0 below -126),
 * which adds nothing to its row's sum or to P V: a unit that skips those keys computes the bits it computed over all
 * of them, where its vectors' lanes keep their keys (lo a multiple of their width; hi one too, unless it is n). A
 * local layer's queries then cost O(window) each, not O(n): 4,096 tokens, a window of 129, ~30x less work. */
static inline void key_range(const Job *job, int64_t i0, int64_t m, int64_t n, int64_t align, int64_t *lo,
                             int64_t *hi) {
    int64_t a = 0, b = n;
    if (job->rel) {
        a = i0 + job->rel_lo;
        b = i0 + m + job->rel_hi; /* past the last query's last key */
        a = a < 0 ? 0 : a > n ? n : a;
        b = b < 0 ? 0 : b > n ? n : b;
        a -= a % align;
        b += (align - b % align) % align;
        b = b > n ? n : b < a ? a : b;
    }
    *lo = a;
    *hi = b;
}

/* s_j += mul * b_j for j < n: the bias in the units of the scores it joins (mul: log2(e) where they are in base 2,
 * 1 / scale where they are raw products still to be scaled). One add per score against the product's d; a zero bias
 * leaves every score's bits as they were (a local layer's window over a sequence it covers: the global path's). */
static void add_rel(float *s, const float *b, int64_t n, float mul) {
    for (int64_t j = 0; j < n; j++) s[j] += b[j] * mul;
}

#define LOG2E 1.44269504088896341f

/* Where P V reads a head's values, `*row` floats apart: in place, or, from COPY_VALUES_MIN tokens on, copied into
 * vt, n rows of d floats side by side. In place, the rows are 3H floats apart (9 kB at H = 768): at that stride they
 * fall in a 16th of L2's sets (2 MB, 16 ways: 512 kB of them; Zen 3's 512 kB, 8 ways: 128 kB) and evict each other
 * once a sequence is long enough, while P V reads them all again for every block of queries; copied, they take every
 * set. The rows 16 ahead are asked for first (the hardware prefetchers do not follow the stride). Either way the
 * same products in the same order: the same bits. One head's attention over 2,048 tokens 225 -> 101 ms, 4,096 1,069
 * -> 528 ms (AVX-512; AVX2 unit 323 -> 156 and 1,630 -> 987 ms), one thread, AMX Xeon, session 35; at reviews'
 * lengths the copy measured 0-5 % slower, hence the threshold. */
#define COPY_VALUES_MIN 256
static const float *values_of(const float *v, int64_t row, int64_t n, int64_t d, float *vt, int64_t *stride) {
    *stride = row;
    if (n < COPY_VALUES_MIN) return v;
    *stride = d;
    for (int64_t j = 0; j < n; j++) {
        if (j + 16 < n)
            for (int64_t c = 0; c < d; c += 16) __builtin_prefetch(v + (j + 16) * row + c, 0, 3);
        memcpy(vt + j * d, v + j * row, sizeof(float) * (size_t)d);
    }
    return vt;
}

/* ---------------------------------------------------------------- scalar */

/* K^T of one head into kt (d rows of np floats, zeros from n on): each key row is read once, in order
 * (reading a column at a time would touch a new cache line per element, and n key rows of a head span
 * more lines than L1 holds from n ~ 128 on). */
static void transpose_keys(const float *k, int64_t row, int64_t n, int64_t np, int64_t d, float *kt) {
    for (int64_t j = 0; j < n; j++)
        for (int64_t c = 0; c < d; c++) kt[c * np + j] = k[j * row + c];
    for (int64_t c = 0; c < d; c++)
        for (int64_t j = n; j < np; j++) kt[c * np + j] = 0.0f;
}

static void unit_scalar(const Job *job, const Unit *u, float *kt, float *s) {
    const int64_t n = job->lengths[u->seq], np = job->width, d = job->d;
    const float *base = job->qkv + job->starts[u->seq] * job->row + (int64_t)u->head * d;
    transpose_keys(base + job->hidden, job->row, n, np, d, kt);
    for (int64_t i = u->q0; i < u->q1; i++) {
        const float *q = base + i * job->row;
        /* a bias joins the raw products divided by the scale they are multiplied by next (a zero bias: the bits of
         * none) */
        const float *b = job->rel ? rel_row(job, u->head, i) : NULL, unscale = 1.0f / job->scale;
        int64_t lo, hi;
        key_range(job, i, 1, n, 1, &lo, &hi);
        float m = -INFINITY;
        int bad = 0;
        for (int64_t j = lo; j < hi; j++) {
            float acc = 0.0f;
            for (int64_t c = 0; c < d; c++) acc = fmaf(q[c], kt[c * np + j], acc);
            if (b) acc += b[j] * unscale;
            s[j] = acc;
            bad |= acc != acc;
            m = acc > m ? acc : m;
        }
        float l = 0.0f;
        for (int64_t j = lo; j < hi; j++) {
            s[j] = expf((s[j] - m) * job->scale);
            l += s[j];
        }
        const float inv = (bad || !isfinite(m)) ? NAN : 1.0f / l;
        float *o = job->out + (job->first_only ? u->seq : job->starts[u->seq] + i) * job->hidden +
                   (int64_t)u->head * d;
        for (int64_t c = 0; c < d; c++) {
            float acc = 0.0f;
            for (int64_t j = lo; j < hi; j++) acc = fmaf(s[j], base[j * job->row + 2 * job->hidden + c], acc);
            o[c] = acc * inv;
        }
    }
}

#if HAVE_X86
/* ---------------------------------------------------------------- AVX2 (8 lanes) */

/* K^T by 8 x 8 blocks transposed in registers (rows past n read as zeros: the padding). */
__attribute__((target("avx2,fma"))) static void transpose_keys_avx2(const float *k, int64_t row, int64_t n,
                                                                    int64_t np, int64_t d, float *kt) {
    for (int64_t j = 0; j < np; j += 8) {
        for (int64_t c = 0; c < d; c += 8) {
            __m256 r[8], t[8];
            for (int i = 0; i < 8; i++) r[i] = j + i < n ? _mm256_loadu_ps(k + (j + i) * row + c) : _mm256_setzero_ps();
            for (int i = 0; i < 8; i += 2) {
                t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
                t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
            }
            for (int i = 0; i < 8; i += 4) {
                r[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
                r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
                r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
                r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
            }
            for (int i = 0; i < 4; i++) {
                t[i] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x20);
                t[i + 4] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x31);
            }
            for (int i = 0; i < 8; i++) _mm256_storeu_ps(kt + (c + i) * np + j, t[i]);
        }
    }
}

/* A row of outputs: o (d floats) times inv, into out. */
__attribute__((target("avx2,fma"))) static void store_avx2(float *out, const float *o, float inv, int64_t d) {
    const __m256 sc = _mm256_set1_ps(inv);
    for (int64_t c = 0; c < d; c += 8) _mm256_storeu_ps(out + c, _mm256_mul_ps(_mm256_loadu_ps(o + c), sc));
}

/* 2^x for x <= 0, as exp2_avx512: 2^n * p(x - n), the exponent built in the integer lanes; 0 below -126. */
__attribute__((target("avx2,fma"))) static inline __m256 exp2_avx2(__m256 x) {
    const __m256 under = _mm256_cmp_ps(x, _mm256_set1_ps(-126.0f), _CMP_LT_OQ);
    x = _mm256_max_ps(x, _mm256_set1_ps(-126.0f));
    __m256 n = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_sub_ps(x, n);
    __m256 p = _mm256_set1_ps(1.5403530393381606e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3333558146428443e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(9.618129107628477e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.550410866482158e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(2.402265069591007e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(6.931471805599453e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(under, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

/* softmax_row_avx512 on 8 lanes: scores in base 2, returns 1 / sum or NaN. */
__attribute__((target("avx2,fma"))) static float softmax_row_avx2(float *s, int64_t n) {
    __m256 m8 = _mm256_set1_ps(-INFINITY), bad8 = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 v = _mm256_loadu_ps(s + j);
        m8 = _mm256_max_ps(m8, v);
        bad8 = _mm256_or_ps(bad8, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, m8);
    float m = -INFINITY;
    int bad = _mm256_movemask_ps(bad8) != 0;
    for (int i = 0; i < 8; i++) m = lanes[i] > m ? lanes[i] : m;
    for (; j < n; j++) {
        m = s[j] > m ? s[j] : m;
        bad |= s[j] != s[j];
    }
    if (bad || !isfinite(m)) return NAN; /* +inf: exp(inf - inf); all -inf: 0 / 0, as SDPA */
    const __m256 vm = _mm256_set1_ps(m);
    __m256 acc = _mm256_setzero_ps();
    for (j = 0; j + 8 <= n; j += 8) {
        __m256 e = exp2_avx2(_mm256_sub_ps(_mm256_loadu_ps(s + j), vm));
        _mm256_storeu_ps(s + j, e);
        acc = _mm256_add_ps(acc, e);
    }
    float l = hsum_avx2(acc);
    for (; j < n; j++) {
        s[j] = exp2f(s[j] - m);
        l += s[j];
    }
    return 1.0f / l;
}

/* S = Q K^T for one block of 6 queries (rows qr) and keys j .. e - 1 (multiples of 16), into its rows of s (np
 * apart), multiplied by c: 6 queries x 16 keys per step (12 accumulators of the 16 registers). */
__attribute__((target("avx2,fma"))) static void scores_avx2(const float *kt, int64_t np, int64_t d,
                                                            const float *const *qr, int64_t j, int64_t e, float c,
                                                            float *s) {
    const __m256 vc = _mm256_set1_ps(c);
    for (; j < e; j += 16) {
        __m256 a[QB2][2];
        for (int r = 0; r < QB2; r++) a[r][0] = a[r][1] = _mm256_setzero_ps();
        for (int64_t k = 0; k < d; k++) {
            __m256 k0 = _mm256_loadu_ps(kt + k * np + j), k1 = _mm256_loadu_ps(kt + k * np + j + 8);
            for (int r = 0; r < QB2; r++) {
                __m256 b = _mm256_broadcast_ss(qr[r] + k);
                a[r][0] = _mm256_fmadd_ps(b, k0, a[r][0]);
                a[r][1] = _mm256_fmadd_ps(b, k1, a[r][1]);
            }
        }
        for (int r = 0; r < QB2; r++) {
            _mm256_storeu_ps(s + r * np + j, _mm256_mul_ps(a[r][0], vc));
            _mm256_storeu_ps(s + r * np + j + 8, _mm256_mul_ps(a[r][1], vc));
        }
    }
}

/* values_cols_avx512 for 6 query rows and W vectors of 8 columns (2: 12 accumulators of the 16 registers). */
__attribute__((target("avx2,fma"))) static inline __attribute__((always_inline)) void values_cols_avx2(
    const int W, const float *const *p, const float *vbase, int64_t row, int64_t j, int64_t e, int64_t d, int64_t c,
    int init, float *o, float *const *out, const float *inv) {
    __m256 acc[QB2][2];
    for (int r = 0; r < QB2; r++)
        for (int k = 0; k < W; k++) acc[r][k] = init ? _mm256_setzero_ps() : _mm256_loadu_ps(o + r * d + c + 8 * k);
    for (int64_t i = j; i < e; i++) {
        const float *v = vbase + i * row + c;
        __m256 vk[2];
        for (int k = 0; k < W; k++) vk[k] = _mm256_loadu_ps(v + 8 * k);
        for (int r = 0; r < QB2; r++) {
            const __m256 b = _mm256_broadcast_ss(p[r] + i);
            for (int k = 0; k < W; k++) acc[r][k] = _mm256_fmadd_ps(b, vk[k], acc[r][k]);
        }
    }
    for (int r = 0; r < QB2; r++) {
        if (out && !out[r]) continue;
        const __m256 sc = _mm256_set1_ps(out ? inv[r] : 1.0f);
        float *to = out ? out[r] + c : o + r * d + c;
        for (int k = 0; k < W; k++) _mm256_storeu_ps(to + 8 * k, out ? _mm256_mul_ps(acc[r][k], sc) : acc[r][k]);
    }
}

/* values_cols_avx2 over every column: 16 at a time, a last 8 apart. */
__attribute__((target("avx2,fma"))) static void values_avx2(const float *const *p, const float *vbase, int64_t row,
                                                            int64_t j, int64_t e, int64_t d, int init, float *o,
                                                            float *const *out, const float *inv) {
    int64_t c = 0;
    for (; d - c >= 16; c += 16) values_cols_avx2(2, p, vbase, row, j, e, d, c, init, o, out, inv);
    if (d - c >= 8) values_cols_avx2(1, p, vbase, row, j, e, d, c, init, o, out, inv);
}

/* ---------------------------------------------------------------- AVX-512 (16 lanes) */

/* 16 x 16 transpose of 32-bit lanes, in place: unpacks of pairs, of quads, then 128-bit lane shuffles. */
AVX512 static inline void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
    }
    for (int h = 0; h < 16; h += 8)
        for (int i = 0; i < 4; i++) {
            t[h + i] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0x88);
            t[h + i + 4] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0xdd);
        }
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
    }
}

/* K^T by 16 x 16 blocks transposed in registers (rows past n read as zeros: the padding). */
AVX512 static void transpose_keys_avx512(const float *k, int64_t row, int64_t n, int64_t np, int64_t d, float *kt) {
    for (int64_t j = 0; j < np; j += 16) {
        for (int64_t c = 0; c < d; c += 16) {
            __m512 r[16];
            for (int i = 0; i < 16; i++) r[i] = j + i < n ? _mm512_loadu_ps(k + (j + i) * row + c) : _mm512_setzero_ps();
            transpose16(r);
            for (int i = 0; i < 16; i++) _mm512_storeu_ps(kt + (c + i) * np + j, r[i]);
        }
    }
}

/* 2^x for x <= 0: 2^n * p(x - n), n = round(x), p the degree-6 Taylor polynomial of 2^r on |r| <= 1/2
 * (truncation error <= 1.3e-7 relative); below -126, 0 (a -inf score: a key a bias leaves out). Not 2^-126: a
 * weight that small makes every product of P V with a value below 1 subnormal, which Intel cores compute ~100x
 * slower (a local layer's band over 120-token reviews made ModernBERT's exact forward 1.5x slower). */
AVX512 static inline __m512 exp2_avx512(__m512 x) {
    const __mmask16 under = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-126.0f), _CMP_LT_OQ);
    x = _mm512_max_ps(x, _mm512_set1_ps(-126.0f));
    __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_sub_ps(x, n);
    __m512 p = _mm512_set1_ps(1.5403530393381606e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3333558146428443e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(9.618129107628477e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.550410866482158e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(2.402265069591007e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(6.931471805599453e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_maskz_scalef_ps(~under, p, n);
}

/* A row of scores already multiplied by scale * log2(e): s_j -> 2^(s_j - max) for j < n; returns 1 / sum
 * (NaN when the row holds a NaN or +inf). */
AVX512 static float softmax_row_avx512(float *s, int64_t n) {
    __m512 m16 = _mm512_set1_ps(-INFINITY);
    __mmask16 bad16 = 0;
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        __m512 v = _mm512_loadu_ps(s + j);
        m16 = _mm512_max_ps(m16, v);
        bad16 |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    }
    if (j < n) {
        __mmask16 tail = (__mmask16)((1u << (n - j)) - 1);
        __m512 v = _mm512_maskz_loadu_ps(tail, s + j);
        m16 = _mm512_mask_max_ps(m16, tail, m16, v);
        bad16 |= _mm512_mask_cmp_ps_mask(tail, v, v, _CMP_UNORD_Q);
    }
    const float m = _mm512_reduce_max_ps(m16);
    if (bad16 || !isfinite(m)) return NAN; /* +inf: exp(inf - inf); all -inf: 0 / 0, as SDPA */
    const __m512 vm = _mm512_set1_ps(m);
    __m512 acc = _mm512_setzero_ps();
    for (j = 0; j + 16 <= n; j += 16) {
        __m512 e = exp2_avx512(_mm512_sub_ps(_mm512_loadu_ps(s + j), vm));
        _mm512_storeu_ps(s + j, e);
        acc = _mm512_add_ps(acc, e);
    }
    if (j < n) {
        __mmask16 tail = (__mmask16)((1u << (n - j)) - 1);
        __m512 e = exp2_avx512(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, s + j), vm));
        _mm512_mask_storeu_ps(s + j, tail, e);
        acc = _mm512_mask_add_ps(acc, tail, acc, e);
    }
    return 1.0f / _mm512_reduce_add_ps(acc);
}

/* A row of outputs: o (d floats) times inv, into out. */
AVX512 static void store_avx512(float *out, const float *o, float inv, int64_t d) {
    const __m512 sc = _mm512_set1_ps(inv);
    for (int64_t c = 0; c < d; c += 16) _mm512_storeu_ps(out + c, _mm512_mul_ps(_mm512_loadu_ps(o + c), sc));
}

/* S = Q K^T for one block of 8 queries (rows qr) and keys j .. e - 1 (multiples of 16), into its rows of s (np
 * apart): 8 queries x 32 keys per step (16 accumulators), then 8 x 16 for a last 16 keys. Each score is its own
 * d-term sum: the keys' grouping changes no bit. */
AVX512 static void scores_avx512(const float *kt, int64_t np, int64_t d, const float *const *qr, int64_t j, int64_t e,
                                 float c, float *s) {
    const __m512 vc = _mm512_set1_ps(c);
    for (; j + 32 <= e; j += 32) {
        __m512 a[MQ][2];
        for (int r = 0; r < MQ; r++) a[r][0] = a[r][1] = _mm512_setzero_ps();
        for (int64_t c = 0; c < d; c++) {
            __m512 k0 = _mm512_loadu_ps(kt + c * np + j), k1 = _mm512_loadu_ps(kt + c * np + j + 16);
            for (int r = 0; r < MQ; r++) {
                __m512 b = _mm512_set1_ps(qr[r][c]);
                a[r][0] = _mm512_fmadd_ps(b, k0, a[r][0]);
                a[r][1] = _mm512_fmadd_ps(b, k1, a[r][1]);
            }
        }
        for (int r = 0; r < MQ; r++) {
            _mm512_storeu_ps(s + r * np + j, _mm512_mul_ps(a[r][0], vc));
            _mm512_storeu_ps(s + r * np + j + 16, _mm512_mul_ps(a[r][1], vc));
        }
    }
    if (j < e) {
        __m512 a[MQ];
        for (int r = 0; r < MQ; r++) a[r] = _mm512_setzero_ps();
        for (int64_t c = 0; c < d; c++) {
            __m512 k0 = _mm512_loadu_ps(kt + c * np + j);
            for (int r = 0; r < MQ; r++) a[r] = _mm512_fmadd_ps(_mm512_set1_ps(qr[r][c]), k0, a[r]);
        }
        for (int r = 0; r < MQ; r++) _mm512_storeu_ps(s + r * np + j, _mm512_mul_ps(a[r], vc));
    }
}

/* o += P V for 4 query rows (their weights p[r][j]) over keys j .. e - 1, for the W vectors of 16 columns from column
 * c (W a constant where inlined: 4 x W accumulators with constant indices, which stay in registers), read from o (rows
 * d apart; zeros with `init`) and written back; each output sums its products in key order, so a range of keys cut in
 * chunks sums them as the whole range would (an fp32 store and load are exact). With `out`, the keys' last chunk:
 * each row r times inv[r] goes to out[r] instead (none where out[r] is NULL). */
AVX512 static inline __attribute__((always_inline)) void values_cols_avx512(const int W, const float *const *p,
                                                                           const float *vbase, int64_t row, int64_t j,
                                                                           int64_t e, int64_t d, int64_t c, int init,
                                                                           float *o, float *const *out,
                                                                           const float *inv) {
    __m512 acc[4][4];
    for (int r = 0; r < 4; r++)
        for (int k = 0; k < W; k++) acc[r][k] = init ? _mm512_setzero_ps() : _mm512_loadu_ps(o + r * d + c + 16 * k);
    for (int64_t i = j; i < e; i++) {
        const float *v = vbase + i * row + c;
        __m512 vk[4];
        for (int k = 0; k < W; k++) vk[k] = _mm512_loadu_ps(v + 16 * k);
        for (int r = 0; r < 4; r++) {
            const __m512 b = _mm512_set1_ps(p[r][i]);
            for (int k = 0; k < W; k++) acc[r][k] = _mm512_fmadd_ps(b, vk[k], acc[r][k]);
        }
    }
    for (int r = 0; r < 4; r++) {
        if (out && !out[r]) continue;
        const __m512 sc = _mm512_set1_ps(out ? inv[r] : 1.0f);
        float *to = out ? out[r] + c : o + r * d + c;
        for (int k = 0; k < W; k++) _mm512_storeu_ps(to + 16 * k, out ? _mm512_mul_ps(acc[r][k], sc) : acc[r][k]);
    }
}

/* values_cols_avx512 over every column: 64 at a time (16 accumulators), then 32 (a head width of 32: MiniLM's), then
 * 16. */
AVX512 static void values_avx512(const float *const *p, const float *vbase, int64_t row, int64_t j, int64_t e,
                                 int64_t d, int init, float *o, float *const *out, const float *inv) {
    int64_t c = 0;
    for (; d - c >= 64; c += 64) values_cols_avx512(4, p, vbase, row, j, e, d, c, init, o, out, inv);
    if (d - c >= 32) {
        values_cols_avx512(2, p, vbase, row, j, e, d, c, init, o, out, inv);
        c += 32;
    }
    if (d - c >= 16) values_cols_avx512(1, p, vbase, row, j, e, d, c, init, o, out, inv);
}

/* ---------------------------------------------------------------- the fp32 vector units
 * AVX-512 and AVX2 share their loops: blocks of `rows` queries (8 / 6: the registers their products take), 4 / 6 of
 * them at a time in P V. The queries go by superblocks: one block in sequences under LONG_KEYS tokens, else as many
 * blocks as SUPER_Q holds (64 / 60 queries), whose scores, softmax and P V run a chunk of KEY_CHUNK keys at a time for
 * every block in turn: each chunk of K^T and V is read from L2 once for 64 queries, not once (K) or twice (V) for
 * every 8. Past ~2,000 tokens a head's K^T and V (n d floats each) outgrow L2 (2 MB here; Zen 3: 512 kB, ~500
 * tokens), and reading them whole for every block made the unit memory-bound. Every score, row sum and output is
 * computed as with one block at a time (the same bits). One head's attention over 4,096 tokens (one thread, AMX Xeon,
 * session 35): 1,069 ms (AVX-512, before the values were copied) -> 528 (copied) -> 439 (superblocks); SDPA 450. */
typedef struct {
    int rows, value_rows;
    void (*transpose)(const float *k, int64_t row, int64_t n, int64_t np, int64_t d, float *kt);
    void (*scores)(const float *kt, int64_t np, int64_t d, const float *const *qr, int64_t j, int64_t e, float c,
                   float *s);
    float (*softmax)(float *s, int64_t n);
    void (*values)(const float *const *p, const float *vbase, int64_t row, int64_t j, int64_t e, int64_t d, int init,
                   float *o, float *const *out, const float *inv);
    void (*store)(float *out, const float *o, float inv, int64_t d);
} VectorUnit;

static inline __attribute__((always_inline)) void unit_vector(const Job *job, const Unit *u, const VectorUnit *f,
                                                             float *kt, float *s, float *vt, float *ob) {
    const int64_t n = job->lengths[u->seq], np = (n + 15) & ~(int64_t)15, d = job->d, rows = f->rows;
    const float *base = job->qkv + job->starts[u->seq] * job->row + (int64_t)u->head * d;
    int64_t row;
    const float *vbase = values_of(base + 2 * job->hidden, job->row, n, d, vt, &row);
    f->transpose(base + job->hidden, job->row, n, np, d, kt);
    const float c = job->scale * LOG2E; /* scores in base 2 */
    const int64_t qs = n >= LONG_KEYS ? SUPER_Q / rows * rows : rows;
    float inv[SUPER_Q];
    int64_t lo[SUPER_Q], hi[SUPER_Q];
    for (int64_t s0 = u->q0; s0 < u->q1; s0 += qs) {
        const int64_t sm = u->q1 - s0 < qs ? u->q1 - s0 : qs, blocks = (sm + rows - 1) / rows;
        int64_t first = n, last = 0; /* the keys any block reads: first .. last - 1 */
        for (int64_t b = 0; b < blocks; b++) {
            const int64_t m = sm - b * rows < rows ? sm - b * rows : rows;
            key_range(job, s0 + b * rows, m, n, 16, &lo[b], &hi[b]);
            first = lo[b] < first ? lo[b] : first;
            last = hi[b] > last ? hi[b] : last;
        }
        /* S = Q K^T */
        for (int64_t jc = first; jc < last; jc += KEY_CHUNK) {
            for (int64_t b = 0; b < blocks; b++) {
                const int64_t i0 = s0 + b * rows, m = sm - b * rows < rows ? sm - b * rows : rows;
                const int64_t j = jc > lo[b] ? jc : lo[b], hp = (hi[b] + 15) & ~(int64_t)15,
                              e = jc + KEY_CHUNK < hp ? jc + KEY_CHUNK : hp;
                if (j >= e) continue;
                const float *qr[MQ];
                for (int r = 0; r < rows; r++) qr[r] = base + (i0 + (r < m ? r : m - 1)) * job->row;
                f->scores(kt, np, d, qr, j, e, c, s + b * rows * np);
            }
        }
        /* softmax, each row over its block's keys */
        for (int64_t r = 0; r < sm; r++) {
            float *sr = s + r * np;
            const int64_t b = r / rows;
            if (job->rel) add_rel(sr + lo[b], rel_row(job, u->head, s0 + r) + lo[b], hi[b] - lo[b], LOG2E);
            inv[r] = f->softmax(sr + lo[b], hi[b] - lo[b]);
        }
        /* O = P V: a group of rows sums from zeros at its first key, in ob between chunks (rows of d), and its last
         * chunk writes its rows out, times 1 / sum; a group without keys (NaN rows: inv is) writes its zeros times
         * that */
        const int64_t vr = f->value_rows;
        float *outs[MQ];
        for (int64_t jc = first; jc < last; jc += KEY_CHUNK) {
            for (int64_t r0 = 0; r0 < sm; r0 += vr) {
                const int64_t b = r0 / rows, j = jc > lo[b] ? jc : lo[b];
                const int64_t e = jc + KEY_CHUNK < hi[b] ? jc + KEY_CHUNK : hi[b];
                if (j >= e) continue;
                const float *p[MQ];
                for (int r = 0; r < vr; r++) {
                    p[r] = s + (r0 + r < sm ? r0 + r : r0) * np;
                    const int64_t ti = job->first_only ? u->seq : job->starts[u->seq] + s0 + r0 + r;
                    outs[r] = r0 + r < sm ? job->out + ti * job->hidden + (int64_t)u->head * d : NULL;
                }
                f->values(p, vbase, row, j, e, d, j == lo[b], ob + r0 * d, e == hi[b] ? outs : NULL, inv + r0);
            }
        }
        for (int64_t r = 0; r < sm; r++) {
            if (lo[r / rows] < hi[r / rows]) continue;
            const int64_t ti = job->first_only ? u->seq : job->starts[u->seq] + s0 + r;
            memset(ob, 0, sizeof(float) * (size_t)d);
            f->store(job->out + ti * job->hidden + (int64_t)u->head * d, ob, inv[r], d);
        }
    }
}

static const VectorUnit avx512_unit = {MQ, 4, transpose_keys_avx512, scores_avx512, softmax_row_avx512,
                                       values_avx512, store_avx512};
static const VectorUnit avx2_unit = {QB2, QB2, transpose_keys_avx2, scores_avx2, softmax_row_avx2, values_avx2,
                                     store_avx2};

/* Each unit_vector compiled for its instruction set, its steps inlined (calls through the table cost 15 % at
 * reviews' lengths). */
AVX512 static void unit_avx512(const Job *job, const Unit *u, float *kt, float *s, float *vt, float *ob) {
    unit_vector(job, u, &avx512_unit, kt, s, vt, ob);
}

__attribute__((target("avx2,fma"))) static void unit_avx2(const Job *job, const Unit *u, float *kt, float *s, float *vt,
                                                          float *ob) {
    unit_vector(job, u, &avx2_unit, kt, s, vt, ob);
}
#endif

#if HAVE_X86
/* ---------------------------------------------------------------- AVX-512 with bf16 products
 * For the int8 pipelines on CPUs with AVX512-BF16: the same unit, with Q K^T and P V as vdpbf16ps,
 * which multiplies pairs of bf16 and adds both products to an fp32 lane: half the instructions of the
 * fp32 FMAs, and twice the products per cycle where the CPU has the unit (Zen 4, Cooper Lake, Sapphire
 * Rapids). q, k, p and v are rounded to bf16 (to nearest even; relative error <= 2^-9 each); sums, the
 * softmax and its normalization stay fp32. Layouts, with a "word" a pair of bf16 in 32 bits:
 *   K: kt2[w][j] = (k_j[2w], k_j[2w+1]), d/2 rows of np2 words (np2: n rounded up to 32, zero keys after n)
 *   Q: q2[r][w] = (q_r[2w], q_r[2w+1]), broadcast one word at a time
 *   V: v2[w][c] = (v_2w[c], v_2w+1[c]), np2/2 rows of d words; P likewise in pairs of keys.
 * The error this adds is bounded in tests/models/test_attention_kernel.py; what it does to the int8
 * pipelines' quality is in docs/benchmarks.md ("Session 11"). */

#define BF16_TARGET __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma,avx512bf16")))

/* 32 floats -> 16 words of bf16 pairs, in order. */
BF16_TARGET static inline __m512i pairs_bf16(const float *x) {
    return (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + 16), _mm512_loadu_ps(x));
}

/* The 32 inputs from element `at` of the qkv tensor as 16 words: converted from fp32, or read as they are
 * from bf16 inputs (the conversion of a bf16 value is exact: both give the same words). */
BF16_TARGET static inline __m512i input_pairs(const Job *job, int64_t at) {
    return job->qkv16 ? _mm512_loadu_si512(job->qkv16 + at) : pairs_bf16(job->qkv + at);
}

/* Asks for the cache lines of one head's row of the qkv tensor from element `at` (fp32 or bf16 inputs). */
BF16_TARGET static inline void prefetch_input_row(const Job *job, int64_t at) {
    const char *line = job->qkv16 ? (const char *)(job->qkv16 + at) : (const char *)(job->qkv + at);
    for (int64_t b = 0; b < job->d * (job->qkv16 ? 2 : 4); b += 64) __builtin_prefetch(line + b, 0, 3);
}

/* 2^x for x <= 0 where the result is rounded to bf16 next (P's pairs): 2^n * p(x - n), n = round(x), p of degree 3
 * fitted to 2^r on |r| <= 1/2 for the least relative error (7.5e-5 evaluated in fp32, near-minimax), a 26th of that
 * rounding's 2^-9; exp2_avx512's degree 6 (1.3e-7) bought nothing here and cost three FMAs a vector. */
BF16_TARGET static inline __m512 exp2_bf16(__m512 x) {
    const __mmask16 under = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-126.0f), _CMP_LT_OQ); /* 0 there, as exp2_avx512 */
    x = _mm512_max_ps(_mm512_set1_ps(-126.0f), x); /* maxps returns its second operand where one is NaN: a NaN stays */
    const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 r = _mm512_sub_ps(x, n);
    __m512 p = _mm512_set1_ps(0.0551716685295105f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.2426111400127411f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.6932609677314758f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.9999280571937561f));
    return _mm512_maskz_scalef_ps(~under, p, n);
}

BF16_TARGET static float softmax_pairs(float *sr, int64_t n, int64_t np, const float *scale, uint32_t *pr);

/* R rows of scores (row i at sr + i stride; base 2; the AMX unit passes `scale` to multiply them by, as the AVX512-BF16
 * unit did when it stored them) to P's rows of bf16 pairs (at pr + i stride / 2): 2^(s_j - max) for j < n, zero
 * after, up to np (a multiple of 32); 1 / sum in inv[i], or NaN as softmax_row_avx512 (a NaN or +inf score, or only -inf ones).
 * Two passes: the max of the raw scores (a positive scale rounds monotonically, so scale times the raw max is the max
 * of the scaled scores), then each score times the scale less that max (one FMA: within half an ulp of the max of the
 * scaled row's own difference; 2^x of it is in [1, 1 + 2^-24] at the max) to 2^x by exp2_bf16, summed in fp32 and
 * written as pairs. A NaN score is not looked for in the first pass: exp2_bf16 keeps it, so the sum and 1 / sum are
 * NaN (a max taken past it may be too small: what overflows then is summed with the NaN), and the row's outputs are
 * NaN. Rows side by side (R up to SOFTMAX_ROWS, a constant where inlined) each get the operations of a row alone in
 * its order (the same bits): one row's chains (its max, its sum, their reductions and the division, ~8 vectors each
 * for a review's length) left the core waiting where four rows' chains interleave; four rows of which one has a max
 * that is not finite go through softmax_pairs one by one. Attention with its codes over 27 reviews' lengths (3,484
 * tokens) 2.51 -> 2.20 ms with four rows, 2.30 with two (medians of 31 alternating rounds; AMX Xeon, session 22). */
#define SOFTMAX_ROWS 4
BF16_TARGET static inline __attribute__((always_inline)) void softmax_of_rows(const int R, float *sr, int64_t n,
                                                                              int64_t np, int64_t stride,
                                                                              const float *scale, uint32_t *pr,
                                                                              float *inv) {
    __m512 m16[SOFTMAX_ROWS], vm[SOFTMAX_ROWS], acc[SOFTMAX_ROWS];
    for (int i = 0; i < R; i++) m16[i] = _mm512_set1_ps(-INFINITY);
    for (int64_t j = 0; j < n; j += 16) {
        const __mmask16 lanes = n - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - j)) - 1);
        for (int i = 0; i < R; i++)
            m16[i] = _mm512_mask_max_ps(m16[i], lanes, m16[i], _mm512_maskz_loadu_ps(lanes, sr + i * stride + j));
    }
    const float c = scale ? *scale : 1.0f;
    int finite = c > 0.0f;
    for (int i = 0; i < R; i++) {
        const float m = _mm512_reduce_max_ps(m16[i]) * c;
        finite = finite && isfinite(m);
        vm[i] = _mm512_set1_ps(m);
        acc[i] = _mm512_setzero_ps();
    }
    if (!finite && R == 1) { /* the row's outputs are NaN whatever P holds: the raw scores */
        for (int64_t j = n; j < np; j++) sr[j] = 0.0f;
        for (int64_t j = 0; j < np; j += 32) _mm512_storeu_si512(pr + j / 2, pairs_bf16(sr + j));
        inv[0] = NAN;
        return;
    }
    if (!finite) {
        for (int i = 0; i < R; i++) inv[i] = softmax_pairs(sr + i * stride, n, np, scale, pr + i * (stride / 2));
        return;
    }
    const __m512 vc = _mm512_set1_ps(c);
    const int scaled = scale != NULL;
    for (int64_t j = 0; j < np; j += 32) {
        __m512 e[SOFTMAX_ROWS][2];
        for (int h = 0; h < 2; h++) {
            const int64_t at = j + 16 * h, left = n - at;
            const __mmask16 lanes = left >= 16 ? (__mmask16)0xFFFF : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
            for (int i = 0; i < R; i++) {
                e[i][h] = _mm512_setzero_ps();
                if (lanes) {
                    const __m512 x = _mm512_maskz_loadu_ps(lanes, sr + i * stride + at);
                    e[i][h] = exp2_bf16(scaled ? _mm512_fmsub_ps(x, vc, vm[i]) : _mm512_sub_ps(x, vm[i]));
                    if (lanes != 0xFFFF) e[i][h] = _mm512_maskz_mov_ps(lanes, e[i][h]); /* keys after n weigh nothing */
                }
                acc[i] = _mm512_add_ps(acc[i], e[i][h]);
            }
        }
        for (int i = 0; i < R; i++)
            _mm512_storeu_si512(pr + i * (stride / 2) + j / 2, (__m512i)_mm512_cvtne2ps_pbh(e[i][1], e[i][0]));
    }
    for (int i = 0; i < R; i++) inv[i] = 1.0f / _mm512_reduce_add_ps(acc[i]);
}

/* One row; returns 1 / sum (or NaN). */
BF16_TARGET static float softmax_pairs(float *sr, int64_t n, int64_t np, const float *scale, uint32_t *pr) {
    float inv;
    softmax_of_rows(1, sr, n, np, np, scale, pr, &inv);
    return inv;
}

/* SOFTMAX_ROWS rows, `stride` floats apart. */
BF16_TARGET static void softmax_rows(float *sr, int64_t n, int64_t np, int64_t stride, const float *scale, uint32_t *pr,
                                     float *inv) {
    softmax_of_rows(SOFTMAX_ROWS, sr, n, np, stride, scale, pr, inv);
}

/* A unit's keys and values in words of bf16 pairs (layouts above): K^T into kt2 (dw rows of np words, zero keys
 * from n on) and V into v2 (word rows 0 .. vrows - 1, zero from (n + 1) / 2 on). */
BF16_TARGET static void pairs_kv(const Job *job, const Unit *u, uint32_t *kt2, uint32_t *v2, int64_t vrows) {
    const int64_t n = job->lengths[u->seq], np = (n + 31) & ~(int64_t)31, d = job->d, dw = d / 2;
    const int64_t row = job->row; /* element offsets into qkv from here on */
    const int64_t base = job->starts[u->seq] * row + (int64_t)u->head * d, kbase = base + job->hidden,
                  vbase = base + 2 * job->hidden;
    /* The rows 16 keys ahead (K) and 16 keys ahead (V, 8 words) are asked for first: rows 4.5 or 9 kB apart, which
     * the hardware prefetchers do not follow; attention 0.97x over the reviews with bf16 q/k/v (session 17; with
     * fp32 ones and unaligned blocks, session 17 measured it 3-9 % slower). */
    /* K^T in words: 16 keys x 16 words (32 dims) per register transpose */
    for (int64_t j = 0; j < np; j += 16) {
        for (int i = 0; i < 16 && j + 16 + i < n; i++) prefetch_input_row(job, kbase + (j + 16 + i) * row);
        for (int64_t w = 0; w < dw; w += 16) {
            __m512 r[16];
            for (int i = 0; i < 16; i++)
                r[i] = j + i < n ? _mm512_castsi512_ps(input_pairs(job, kbase + (j + i) * row + 2 * w))
                                 : _mm512_setzero_ps();
            transpose16(r);
            for (int i = 0; i < 16; i++) _mm512_storeu_ps((float *)kt2 + (w + i) * np + j, r[i]);
        }
    }
    /* V in pairs of keys: v2[w][c] = (v_2w[c], v_2w+1[c]), zero rows after n */
    const __m512i lo_idx = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
    const __m512i hi_idx = _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
    const int64_t vw = (n + 1) / 2; /* word rows holding keys */
    for (int64_t w = 0; w < vw; w++) {
        for (int i = 0; i < 2 && 2 * (w + 8) + i < n; i++) prefetch_input_row(job, vbase + (2 * (w + 8) + i) * row);
        for (int64_t c = 0; c < d; c += 32) {
            __m512i a = input_pairs(job, vbase + 2 * w * row + c);
            __m512i b = 2 * w + 1 < n ? input_pairs(job, vbase + (2 * w + 1) * row + c) : _mm512_setzero_si512();
            __m512i lo = _mm512_unpacklo_epi16(a, b), hi = _mm512_unpackhi_epi16(a, b);
            _mm512_storeu_si512(v2 + w * d + c, _mm512_permutex2var_epi32(lo, lo_idx, hi));
            _mm512_storeu_si512(v2 + w * d + c + 16, _mm512_permutex2var_epi32(lo, hi_idx, hi));
        }
    }
    if (vrows > vw) memset(v2 + vw * d, 0, sizeof(uint32_t) * (size_t)((vrows - vw) * d));
}

BF16_TARGET static void unit_avx512bf16(const Job *job, const Unit *u, uint32_t *kt2, float *s, uint32_t *v2,
                                        uint32_t *q2, uint32_t *p2) {
    const int64_t n = job->lengths[u->seq], np = (n + 31) & ~(int64_t)31, d = job->d, dw = d / 2, nw = np / 2;
    const int64_t row = job->row;
    const int64_t base = job->starts[u->seq] * row + (int64_t)u->head * d;
    const int64_t vw = (n + 1) / 2; /* word rows P V reads */
    pairs_kv(job, u, kt2, v2, vw);
    const __m512 vc = _mm512_set1_ps(job->scale * LOG2E); /* scores in base 2 */
    float inv[MQ];
    for (int64_t i0 = u->q0; i0 < u->q1; i0 += MQ) {
        const int64_t m = u->q1 - i0 < MQ ? u->q1 - i0 : MQ;
        for (int r = 0; r < MQ; r++) {
            const int64_t q = base + (i0 + (r < m ? r : m - 1)) * row;
            for (int64_t w = 0; w < dw; w += 16) _mm512_storeu_si512(q2 + r * dw + w, input_pairs(job, q + 2 * w));
        }
        int64_t lo, hi;
        key_range(job, i0, m, n, 32, &lo, &hi);
        const int64_t hp = (hi + 31) & ~(int64_t)31, wlo = lo / 2, whi = (hi + 1) / 2; /* P's words: keys lo .. hi */
        /* S = Q K^T: 8 queries x 32 keys per step, a word (two dims) per vdpbf16ps */
        for (int64_t j = lo; j < hp; j += 32) {
            __m512 a[MQ][2];
            for (int r = 0; r < MQ; r++) a[r][0] = a[r][1] = _mm512_setzero_ps();
            for (int64_t w = 0; w < dw; w++) {
                __m512bh k0 = (__m512bh)_mm512_loadu_si512(kt2 + w * np + j);
                __m512bh k1 = (__m512bh)_mm512_loadu_si512(kt2 + w * np + j + 16);
                for (int r = 0; r < MQ; r++) {
                    __m512bh b = (__m512bh)_mm512_set1_epi32((int)q2[r * dw + w]);
                    a[r][0] = _mm512_dpbf16_ps(a[r][0], b, k0);
                    a[r][1] = _mm512_dpbf16_ps(a[r][1], b, k1);
                }
            }
            for (int r = 0; r < MQ; r++) {
                _mm512_storeu_ps(s + r * np + j, _mm512_mul_ps(a[r][0], vc));
                _mm512_storeu_ps(s + r * np + j + 16, _mm512_mul_ps(a[r][1], vc));
            }
        }
        if (job->rel)
            for (int r = 0; r < m; r++) add_rel(s + r * np + lo, rel_row(job, u->head, i0 + r) + lo, hi - lo, LOG2E);
        for (int r = 0; r < m; r++) inv[r] = softmax_pairs(s + r * np + lo, hi - lo, hp - lo, NULL, p2 + r * nw + wlo);
        /* O = P V: 4 queries x 64 columns per step, two keys per vdpbf16ps */
        for (int r0 = 0; r0 < m; r0 += 4) {
            const uint32_t *p[4];
            for (int r = 0; r < 4; r++) p[r] = p2 + (r0 + r < m ? r0 + r : r0) * nw;
            for (int64_t c = 0; c < d; c += 64) {
                const int cw = d - c >= 64 ? 4 : 2; /* vectors of 16 columns: d is a multiple of 32 */
                __m512 o[4][4];
                for (int r = 0; r < 4; r++)
                    for (int k = 0; k < 4; k++) o[r][k] = _mm512_setzero_ps();
                if (cw == 4) {
                    for (int64_t w = wlo; w < whi; w++) {
                        const uint32_t *v = v2 + w * d + c;
                        __m512bh v0 = (__m512bh)_mm512_loadu_si512(v), v1 = (__m512bh)_mm512_loadu_si512(v + 16),
                                 vv2 = (__m512bh)_mm512_loadu_si512(v + 32), v3 = (__m512bh)_mm512_loadu_si512(v + 48);
                        for (int r = 0; r < 4; r++) {
                            __m512bh b = (__m512bh)_mm512_set1_epi32((int)p[r][w]);
                            o[r][0] = _mm512_dpbf16_ps(o[r][0], b, v0);
                            o[r][1] = _mm512_dpbf16_ps(o[r][1], b, v1);
                            o[r][2] = _mm512_dpbf16_ps(o[r][2], b, vv2);
                            o[r][3] = _mm512_dpbf16_ps(o[r][3], b, v3);
                        }
                    }
                } else {
                    for (int64_t w = wlo; w < whi; w++) {
                        const uint32_t *v = v2 + w * d + c;
                        __m512bh v0 = (__m512bh)_mm512_loadu_si512(v), v1 = (__m512bh)_mm512_loadu_si512(v + 16);
                        for (int r = 0; r < 4; r++) {
                            __m512bh b = (__m512bh)_mm512_set1_epi32((int)p[r][w]);
                            o[r][0] = _mm512_dpbf16_ps(o[r][0], b, v0);
                            o[r][1] = _mm512_dpbf16_ps(o[r][1], b, v1);
                        }
                    }
                }
                for (int r = 0; r < 4 && r0 + r < m; r++) {
                    int64_t ti = job->first_only ? u->seq : job->starts[u->seq] + i0 + r0 + r;
                    float *out = job->out + ti * job->hidden + (int64_t)u->head * d + c;
                    __m512 sc = _mm512_set1_ps(inv[r0 + r]);
                    for (int k = 0; k < cw; k++) _mm512_storeu_ps(out + 16 * k, _mm512_mul_ps(o[r][k], sc));
                }
            }
        }
    }
}

/* Whether this CPU multiplies bf16 pairs (AVX512-BF16), read once. */
int coulisse_has_bf16_dot(void) {
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = coulisse_isa_level() == ISA_AVX512 && __builtin_cpu_supports("avx512bf16");
    }
    return cached;
}

/* ---------------------------------------------------------------- AMX-BF16 tiles
 * The same unit with its two products on AMX tiles (Sapphire Rapids and later): 16 queries per block, tiles of
 * 16 rows x 64 bytes. In TDPBF16PS C += A B, A is 16 rows of 16 words and B 16 rows of 16 words in pairs along
 * the sum: the layouts above are these already. S = Q K^T: A = q2 (16 queries, 32 dims a tile), B = kt2 (16
 * words of dims, 16 keys), C = 16 queries x 16 keys. O = P V: A = p2 (16 queries, 32 keys), B = v2 (16 word
 * rows of key pairs, 16 columns), C = 16 queries x 16 columns. The rounding is the vdpbf16ps unit's (bf16
 * inputs, exact products, fp32 sums; sums in another order, inside the same bound): an output row depends on
 * its own query only, so thread counts and first_only change no bit here either. Tiles 0-3 accumulate, 4 and 5
 * hold A in turn, 6 and 7 B in turn. Q's tiles read bf16 inputs in place, B in two tiles in turn: attention
 * 0.93-0.96x over batches of reviews' lengths (session 18). */
#define AMX_TARGET __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma,avx512bf16,amx-tile,amx-bf16")))
#define AMX_Q 16

/* Palette 1, tiles 0-7 of 16 rows x 64 bytes. */
static const TileConfig amx_tiles = {1, 0, {0}, {64, 64, 64, 64, 64, 64, 64, 64}, {16, 16, 16, 16, 16, 16, 16, 16}};

static void amx_configure(void) { coulisse_load_tiles(&amx_tiles); }

AMX_TARGET static void amx_release(void) { _tile_release(); }

/* Tile t of C += A (tile a) x B (tile bt, loaded from b with `stride` bytes between rows); t, a, bt literal tile
 * numbers (the intrinsics name them in the instruction). */
#define AMX_STEP(t, a, bt, b, stride) \
    do {                              \
        _tile_loadd(bt, (b), (stride)); \
        _tile_dpbf16ps(t, a, bt);     \
    } while (0)

/* C tiles 0 .. count-1 += A (tile a: 4 or 5) x B for `count` consecutive B tiles, `step` bytes apart: B in tiles 6
 * and 7 in turn, so that the next one loads while the last is multiplied. */
#define AMX_ROW_OF_TILES(a, b, step, stride, count)                    \
    do {                                                               \
        AMX_STEP(0, a, 6, (b), (stride));                              \
        if ((count) > 1) AMX_STEP(1, a, 7, (b) + (step), (stride));     \
        if ((count) > 2) AMX_STEP(2, a, 6, (b) + 2 * (step), (stride)); \
        if ((count) > 3) AMX_STEP(3, a, 7, (b) + 3 * (step), (stride)); \
    } while (0)

AMX_TARGET static inline void amx_store_tiles(char *c, int64_t step, int64_t stride, int count) {
    _tile_stored(0, c, stride);
    if (count > 1) _tile_stored(1, c + step, stride);
    if (count > 2) _tile_stored(2, c + 2 * step, stride);
    if (count > 3) _tile_stored(3, c + 3 * step, stride);
}

AMX_TARGET static void amx_zero_tiles(void) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
}

/* Where a block's query rows are for Q's tiles: read in place where the block is whole and the inputs bf16 (a tile
 * load takes a row stride), else copied into q2, the rows past m repeating the last query (finite, never written
 * out). */
typedef struct {
    const char *qa;
    int64_t stride;
} AmxQ;

AMX_TARGET static AmxQ amx_queries(const Job *job, int64_t base, int64_t i0, int64_t m, uint32_t *q2) {
    const int64_t row = job->row, dw = job->d / 2;
    if (job->qkv16 && m == AMX_Q) return (AmxQ){(const char *)(job->qkv16 + base + i0 * row), row * 2};
    for (int r = 0; r < AMX_Q; r++) {
        const int64_t q = base + (i0 + (r < m ? r : m - 1)) * row;
        for (int64_t w = 0; w < dw; w += 16) _mm512_storeu_si512(q2 + r * dw + w, input_pairs(job, q + 2 * w));
    }
    return (AmxQ){(const char *)q2, dw * 4};
}

/* S = Q K^T for keys j .. j + 63 (4 tiles; 2 where the block's keys end, at `end`, a multiple of 32) of a block: 32
 * dims per A tile, A in tiles 4 and 5 in turn, into s (16 x np). */
AMX_TARGET static void amx_scores(AmxQ q, const uint32_t *kt2, int64_t np, int64_t end, int64_t dw, int64_t j,
                                  float *s) {
    const int count = end - j >= 64 ? 4 : 2;
    amx_zero_tiles();
    for (int64_t w = 0; w < dw; w += 32) {
        _tile_loadd(4, q.qa + 4 * w, q.stride);
        AMX_ROW_OF_TILES(4, (const char *)(kt2 + w * np + j), 64, np * 4, count);
        if (w + 16 < dw) {
            _tile_loadd(5, q.qa + 4 * (w + 16), q.stride);
            AMX_ROW_OF_TILES(5, (const char *)(kt2 + (w + 16) * np + j), 64, np * 4, count);
        }
    }
    amx_store_tiles((char *)(s + j), 64, np * 4, count);
}

/* O = P V for columns c .. c + 63 (4 tiles; 2 where d ends) of a block: its words of key pairs wlo .. wend - 1
 * (multiples of 16; rows of P nw words apart), 32 keys per A tile, in tiles 4 and 5 in turn, into o (16 x d). */
AMX_TARGET static void amx_values(const uint32_t *p2, const uint32_t *v2, int64_t nw, int64_t wlo, int64_t wend,
                                  int64_t d, int64_t c, float *o) {
    const int count = d - c >= 64 ? 4 : 2;
    amx_zero_tiles();
    for (int64_t w = wlo; w < wend; w += 32) {
        _tile_loadd(4, p2 + w, nw * 4);
        AMX_ROW_OF_TILES(4, (const char *)(v2 + w * d + c), 64, d * 4, count);
        if (w + 16 < wend) {
            _tile_loadd(5, p2 + w + 16, nw * 4);
            AMX_ROW_OF_TILES(5, (const char *)(v2 + (w + 16) * d + c), 64, d * 4, count);
        }
    }
    amx_store_tiles((char *)(o + c), 64, d * 4, count);
}

/* The unit's blocks of 16 queries in a pipeline: iteration b runs block b's softmax four rows at a time
 * (softmax_rows), and between them the tile work of its neighbours, a group of 64 keys or columns at a time (each
 * group loads, multiplies and stores its own tiles): P V of block b - 1 (its P made in iteration b - 1) and Q K^T of
 * block b + 1; block b - 1's output rows follow, from O stored rows earlier. So no vector load waits on the tile store
 * just before it (each block's softmax read the scores its tiles had just stored, and its output the O tiles just
 * stored), and the tiles have work queued while the softmax runs. S and P have two buffers each; every row gets the
 * same operations in the same order as before (the same bits). Attention over 30 reviews' lengths (60-250, 4,643
 * tokens), bf16 inputs: 3.51 -> 3.39-3.41 ms (session 19; both with the output's stores below, alternating in one
 * process), a unit of one query (first_only) 1-2 % slower. Q's tiles are loaded again for each group of keys; kept in
 * tiles for the block, as before, they left no tiles for the other block's groups. The output's lines are written
 * whole, around the caches (non-temporal stores, where out starts on a cache line, as torch allocates it): no read of
 * each line before its write; attention alone 0.80x, the --fast pipeline in batches of 4,096 tokens 0.99x (the
 * attention block's GEMM then reads its input from memory, and quantize_avx512 asks for its rows ahead). */
AMX_TARGET static void unit_amx_bf16(const Job *job, const Unit *u, uint32_t *kt2, float *s, uint32_t *v2,
                                     uint32_t *q2, uint32_t *p2, float *o) {
    const int64_t n = job->lengths[u->seq], np = (n + 31) & ~(int64_t)31, d = job->d, dw = d / 2, nw = np / 2;
    const int64_t row = job->row;
    const int64_t base = job->starts[u->seq] * row + (int64_t)u->head * d;
    pairs_kv(job, u, kt2, v2, nw); /* P V reads whole tiles of 32 keys: zero word rows up to np / 2 */
    const float c2 = job->scale * LOG2E; /* scores in base 2 */
    float inv[2][AMX_Q];
    float *sb[2] = {s, s + AMX_Q * np};
    uint32_t *pb[2] = {p2, p2 + AMX_Q * nw};
    const int64_t blocks = (u->q1 - u->q0 + AMX_Q - 1) / AMX_Q, column_groups = (d + 63) / 64;
#define BLOCK_ROWS(b) (u->q1 - u->q0 - (b) * AMX_Q < AMX_Q ? u->q1 - u->q0 - (b) * AMX_Q : AMX_Q)
    /* block b's keys lo .. hi - 1 (key_range, lo a multiple of 64: the groups' tiles), their scores and P's words up
     * to `ends` (hi rounded up to 32), at b % 3: blocks b - 1, b and b + 1 are under way together */
    int64_t los[3], his[3], ends[3];
    key_range(job, u->q0, BLOCK_ROWS(0), n, 64, &los[0], &his[0]);
    ends[0] = (his[0] + 31) & ~(int64_t)31;
    AmxQ q = amx_queries(job, base, u->q0, BLOCK_ROWS(0), q2);
    for (int64_t j = los[0]; j < ends[0]; j += 64) amx_scores(q, kt2, np, ends[0], dw, j, sb[0]);
    for (int64_t b = 0; b <= blocks; b++) {
        const int64_t i0 = u->q0 + b * AMX_Q, m = b < blocks ? BLOCK_ROWS(b) : 0, before = b ? BLOCK_ROWS(b - 1) : 0;
        const int next = b + 1 < blocks, now = b & 1, then = (b + 1) & 1, last = (b - 1) & 1;
        const int64_t at = b % 3, at_next = (b + 1) % 3, at_last = (b + 2) % 3;
        if (next) {
            q = amx_queries(job, base, i0 + AMX_Q, BLOCK_ROWS(b + 1), q2);
            key_range(job, i0 + AMX_Q, BLOCK_ROWS(b + 1), n, 64, &los[at_next], &his[at_next]);
            ends[at_next] = (his[at_next] + 31) & ~(int64_t)31;
        }
        const int64_t key_groups = next ? (ends[at_next] - los[at_next] + 63) / 64 : 0;
        /* block b + 2's query rows asked for now (the qkv GEMM just wrote them, in L2 or farther, rows 4.5 or 9 kB
         * apart: the hardware prefetchers do not follow) */
        for (int64_t i = i0 + 2 * AMX_Q; i < i0 + 3 * AMX_Q && i < u->q1; i++) prefetch_input_row(job, base + i * row);
        const int64_t values = b ? column_groups : 0, tasks = values + key_groups;
        int64_t t = 0;
        for (int r = 0; r <= AMX_Q; r += SOFTMAX_ROWS) {
            for (; t < tasks && t * AMX_Q <= r * tasks; t++) { /* task t before row t * 16 / tasks */
                if (t < values)
                    amx_values(pb[last], v2, nw, los[at_last] / 2, ends[at_last] / 2, d, 64 * t, o);
                else
                    amx_scores(q, kt2, np, ends[at_next], dw, los[at_next] + 64 * (t - values), sb[then]);
            }
            if (r == AMX_Q || b == blocks) continue;
            const int64_t lo = los[at], hi = his[at], end = ends[at];
            float *sr = sb[now] + r * np + lo;
            uint32_t *pr = pb[now] + r * nw + lo / 2;
            if (job->rel) /* raw scores here: the bias divided by the scale that softmax_rows multiplies them by */
                for (int i = 0; i < SOFTMAX_ROWS && r + i < m; i++)
                    add_rel(sr + i * np, rel_row(job, u->head, i0 + r + i) + lo, hi - lo, 1.0f / job->scale);
            if (r + SOFTMAX_ROWS <= m) { /* the keys after hi weigh nothing */
                softmax_rows(sr, hi - lo, end - lo, np, &c2, pr, &inv[now][r]);
                continue;
            }
            for (int i = 0; i < SOFTMAX_ROWS; i++) {
                if (r + i >= m) /* P's rows past m: zeros (their outputs are dropped) */
                    memset(pr + i * nw, 0, sizeof(uint32_t) * (size_t)(end - lo) / 2);
                else
                    inv[now][r + i] = softmax_pairs(sr + i * np, hi - lo, end - lo, &c2, pr + i * nw);
            }
        }
        for (int64_t r = 0; r < before; r++) { /* block b - 1's output rows */
            const int64_t ti = job->first_only ? u->seq : job->starts[u->seq] + i0 - AMX_Q + r;
            float *out = job->out + ti * job->hidden + (int64_t)u->head * d;
            const __m512 sc = _mm512_set1_ps(inv[last][r]);
            for (int64_t c = 0; c < d; c += 16) {
                const __m512 v = _mm512_mul_ps(_mm512_loadu_ps(o + r * d + c), sc);
                if (job->stream_out)
                    _mm512_stream_ps(out + c, v);
                else
                    _mm512_storeu_ps(out + c, v);
            }
        }
    }
#undef BLOCK_ROWS
}

/* Whether this CPU has AMX-BF16 and this process may use its tiles (Linux grants the tile state on request,
 * once per process: arch_prctl ARCH_REQ_XCOMP_PERM). Read once; COULISSE_ATTENTION_AMX=0 says no. */
int coulisse_has_amx_bf16(void) {
    static int cached = -1;
    if (cached < 0) {
        const char *off = getenv("COULISSE_ATTENTION_AMX");
        __builtin_cpu_init();
        cached = coulisse_has_bf16_dot() && __builtin_cpu_supports("amx-bf16") && !(off && strcmp(off, "0") == 0);
        cached = cached && coulisse_amx_granted();
    }
    return cached;
}
#endif

/* ---------------------------------------------------------------- units over threads
 * Each thread allocates its K^T and S blocks once, then takes units from a shared counter; an output row
 * is always computed by one thread in the same order, so the thread count never changes a bit. */

/* One unit (a head of a sequence, a range of its queries) on the path the CPU and the job chose. */
static void run_unit(const Job *job, const Unit *u, float *kt, float *s, uint32_t *v2, uint32_t *q2, uint32_t *p2,
                     float *o) {
#if HAVE_X86
    if (job->amx) {
        unit_amx_bf16(job, u, (uint32_t *)kt, s, v2, q2, p2, o);
        return;
    }
    if (job->bf16) {
        unit_avx512bf16(job, u, (uint32_t *)kt, s, v2, q2, p2);
        return;
    }
    if (job->isa == ISA_AVX512 && job->d % 16 == 0) {
        unit_avx512(job, u, kt, s, (float *)v2, o);
        return;
    }
    if (job->isa >= ISA_AVX2 && job->d % 8 == 0) {
        unit_avx2(job, u, kt, s, (float *)v2, o);
        return;
    }
#else
    (void)v2, (void)q2, (void)p2, (void)o;
#endif
    unit_scalar(job, u, kt, s);
}

static void *attention_worker(void *arg) {
    Job *job = (Job *)arg;
    /* S's rows: with AMX two blocks (unit_amx_bf16's pipeline), with fp32 products a superblock (unit_avx512) */
    const int64_t np = job->width + 32, mq = job->amx ? 2 * 16 : job->bf16 ? MQ : SUPER_Q;
    /* K^T (d x np), S (mq x np); with bf16 products also V in pairs (np/2 x d words), Q and P in pairs, with AMX
     * the output tiles (16 x d); with fp32 products V (np x d, values_of) and a superblock's outputs (mq x d) */
    const size_t extra = job->bf16 ? (size_t)(np / 2 * job->d + mq * job->d / 2 + mq * np / 2 +
                                              (job->amx ? 16 * job->d : 0))
                                   : (size_t)((np + mq) * job->d);
    /* 64-byte aligned (the blocks inside start at multiples of 64 bytes from here): with malloc's 16, tile rows
     * and vectors could straddle two cache lines, as the address fell: aligned, attention on AMX tiles 0.90x
     * over 7 sequences and 0.94x over the reviews' batches (session 17) */
    const size_t bytes = sizeof(float) * ((size_t)(job->d * np + mq * np) + extra);
    float *kt = (float *)aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!kt) return (void *)1;
    float *s = kt + job->d * np;
    uint32_t *v2 = (uint32_t *)(s + mq * np), *q2 = v2 + np / 2 * job->d, *p2 = q2 + mq * job->d / 2;
    float *o = job->bf16 ? (float *)(p2 + mq * np / 2) : (float *)v2 + np * job->d;
#if HAVE_X86
    if (job->amx) amx_configure();
#endif
    /* whole sequences: one's rows at a time (width x hidden floats), written by each head's unit, then quantized */
    float *rows = job->whole ? (float *)aligned_alloc(64, sizeof(float) * (size_t)(job->width * job->hidden)) : NULL;
    if (job->whole && !rows) {
        free(kt);
        return (void *)1;
    }
    for (;;) {
        int64_t i = __atomic_fetch_add(&job->next, 1, __ATOMIC_RELAXED);
        if (i >= job->n_units) break;
        const Unit *u = &job->units[i];
        if (u->head >= 0) {
            run_unit(job, u, kt, s, v2, q2, p2, o);
            continue;
        }
        /* a whole sequence: its rows in `rows` (out shifted so that its first row lands there; never dereferenced
         * before it), then their codes */
        Job mine = *job;
        const int64_t first = job->starts[u->seq], n = job->lengths[u->seq];
        mine.out = (float *)((uintptr_t)rows - (uintptr_t)first * (uintptr_t)job->hidden * sizeof(float));
        mine.stream_out = 0;
        for (int h = 0; h < job->hidden / job->d; h++) {
            const Unit head = {u->seq, u->q0, u->q1, h};
            run_unit(&mine, &head, kt, s, v2, q2, p2, o);
        }
        for (int64_t r = 0; r < n; r++)
            coulisse_quantize_row(rows + r * job->hidden, job->hidden, job->codes + (first + r) * job->hidden,
                                  job->code_scale + first + r);
    }
#if HAVE_X86
    if (job->amx) {
        amx_release();
        _mm_sfence();
    }
#endif
    free(rows);
    free(kt);
    return NULL;
}

typedef struct {
    int64_t length, seq;
} ByLength;

static int longer_first(const void *a, const void *b) {
    const ByLength *x = (const ByLength *)a, *y = (const ByLength *)b;
    if (x->length != y->length) return x->length < y->length ? 1 : -1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* The units: every (sequence, head), longest sequences first; a sequence's queries are split in ranges
 * when there are too few pairs to keep every thread busy. Where codes are asked for, every sequence whole
 * (`whole`) if the longest leaves the threads even work, else heads and one quantize pass after. Returns 0 on
 * success. */
static int attention_run(Job *job, int64_t batch, int heads, int threads) {
    ByLength *order = (ByLength *)malloc(sizeof(ByLength) * (size_t)batch);
    if (!order) return -1;
    int64_t width = 0, total = 0;
    for (int64_t b = 0; b < batch; b++) {
        order[b] = (ByLength){job->lengths[b], b};
        width = job->lengths[b] > width ? job->lengths[b] : width;
    }
    qsort(order, (size_t)batch, sizeof(ByLength), longer_first);
    if (job->codes) { /* whole sequences where the longest takes at most a thread's share of the work (~n^2 a head) */
        double work = 0.0;
        for (int64_t b = 0; b < batch; b++) work += (double)job->lengths[b] * (double)job->lengths[b];
        job->whole = !job->first_only && (double)width * (double)width * threads <= work;
    }
    /* query ranges of at least 32: below, copying K^T again costs more than what sharing gains */
    int64_t span = INT64_MAX;
    if (threads > 1 && batch * heads < 4 * (int64_t)threads && !job->first_only && !job->whole) {
        span = (width * batch * heads + 4 * (int64_t)threads - 1) / (4 * (int64_t)threads);
        span = span < 32 ? 32 : span;
    }
    for (int64_t b = 0; b < batch; b++) {
        const int64_t nq = job->lengths[b] < 1 ? 0 : job->first_only ? 1 : job->lengths[b];
        const int64_t step = span < nq ? span : nq;
        if (nq) total += job->whole ? 1 : heads * ((nq + step - 1) / step);
    }
    Unit *units = (Unit *)malloc(sizeof(Unit) * (size_t)(total ? total : 1));
    if (!units) {
        free(order);
        return -1;
    }
    int64_t k = 0;
    for (int64_t o = 0; o < batch; o++) {
        const int64_t b = order[o].seq, nq = job->lengths[b] < 1 ? 0 : job->first_only ? 1 : job->lengths[b];
        const int64_t step = span < nq ? span : nq;
        if (job->whole) {
            if (nq) units[k++] = (Unit){b, 0, nq, -1};
            continue;
        }
        for (int h = 0; h < heads; h++)
            for (int64_t q0 = 0; q0 < nq; q0 += step) units[k++] = (Unit){b, q0, q0 + step < nq ? q0 + step : nq, h};
    }
    free(order);
    job->units = units;
    job->n_units = total;
    job->width = width;
    job->next = 0;
    if (threads > total) threads = (int)total;
    int failed = coulisse_run_workers(attention_worker, job, threads);
    free(units);
    if (job->codes && !job->whole && !failed) { /* by heads: the codes of the rows written out */
        int64_t rows = 0;
        for (int64_t b = 0; b < batch; b++) rows += job->first_only ? 1 : job->lengths[b];
        RowTask quantize = {0, 0, 0, job->hidden, job->out, NULL, job->codes, job->code_scale, NULL, 0, job->isa,
                            NULL, NULL, 0.0f, NULL, NULL};
        coulisse_run_rows(quantize, rows, threads);
    }
    return failed;
}

PY_CPU_FLAG(coulisse_py_has_bf16_dot, coulisse_has_bf16_dot)
PY_CPU_FLAG(coulisse_py_has_amx_attention, coulisse_has_amx_bf16)

PyObject *coulisse_py_attention(PyObject *self, PyObject *args) {
    Py_ssize_t qkv, out, starts, lengths, batch, hidden, codes = 0, code_scale = 0, rel = 0, rel_heads = 0,
                                                             rel_width = 0;
    int heads, threads, first_only, bf16 = 0, bf16_inputs = 0;
    double scale;
    (void)self;
    if (!PyArg_ParseTuple(args, "nnnnnnidpi|ppnnnnn", &qkv, &out, &starts, &lengths, &batch, &hidden, &heads, &scale,
                          &first_only, &threads, &bf16, &bf16_inputs, &codes, &code_scale, &rel, &rel_heads,
                          &rel_width))
        return NULL;
    if ((codes == 0) != (code_scale == 0) || !out) {
        PyErr_SetString(PyExc_ValueError, "attention: needs out (the rows, or a buffer for them where codes are asked "
                                          "for); codes and code_scale go together");
        return NULL;
    }
    if (batch < 1 || heads < 1 || hidden % heads != 0 || scale <= 0.0) {
        PyErr_Format(PyExc_ValueError, "attention: batch %zd, hidden %zd, heads %d, scale %g", batch, hidden, heads,
                     scale);
        return NULL;
    }
    if (rel) { /* rel_heads rows (1 or one a head) of rel_width = 2 W - 1 offsets, W at least the longest sequence */
        int64_t longest = 0;
        const int64_t *n = (const int64_t *)lengths;
        for (Py_ssize_t b = 0; b < batch; b++) longest = n[b] > longest ? n[b] : longest;
        if ((rel_heads != 1 && rel_heads != heads) || rel_width % 2 == 0 || (rel_width - 1) / 2 < longest - 1) {
            PyErr_Format(PyExc_ValueError, "attention: a relative bias of %zd x %zd for %d heads and sequences of "
                                           "up to %lld tokens (it needs 1 or %d rows of 2 n - 1 offsets, n >= %lld)",
                         rel_heads, rel_width, heads, (long long)longest, heads, (long long)longest);
            return NULL;
        }
    }
    Job job = {(const float *)qkv, NULL, (float *)out, (const int64_t *)starts, (const int64_t *)lengths, 3 * hidden,
               hidden, (int)(hidden / heads), (float)scale, first_only, coulisse_isa_level(), 0, 0, 0, NULL, 0, 0,
               0, (uint8_t *)codes, (float *)code_scale, 0};
#if HAVE_X86
    /* bf16 products where asked, the CPU has them and pairs of dims fill whole vectors; else fp32 */
    job.bf16 = (bf16 || bf16_inputs) && coulisse_has_bf16_dot() && job.d % 32 == 0;
    job.amx = job.bf16 && coulisse_has_amx_bf16();
    job.stream_out = ((uintptr_t)out % 64) == 0;
#endif
    if (bf16_inputs) { /* only the bf16-product unit reads bf16 */
        if (!job.bf16) {
            PyErr_Format(PyExc_ValueError, "attention: bf16 inputs need AVX512-BF16 and a head width that 32 "
                                           "divides (here %d); the caller should have used SDPA", job.d);
            return NULL;
        }
        job.qkv16 = (const uint16_t *)qkv;
        job.qkv = NULL;
    }
    if (rel) {
        job.rel = (const float *)rel;
        job.rel_head = rel_heads == 1 ? 0 : rel_width;
        job.rel_mid = (rel_width - 1) / 2;
        /* the offsets where some row is finite (none: every offset, and every row's outputs are NaN, as SDPA's) */
        int64_t first = rel_width, last = -1;
        const float *table = (const float *)rel;
        for (Py_ssize_t h = 0; h < rel_heads; h++)
            for (Py_ssize_t c = 0; c < rel_width; c++)
                if (table[h * rel_width + c] > -INFINITY || table[h * rel_width + c] != table[h * rel_width + c]) {
                    first = c < first ? c : first;
                    last = c > last ? c : last;
                }
        job.rel_lo = (last < 0 ? 0 : first) - job.rel_mid;
        job.rel_hi = (last < 0 ? rel_width - 1 : last) - job.rel_mid;
    }
    int failed;
    Py_BEGIN_ALLOW_THREADS failed = attention_run(&job, batch, heads, threads);
    Py_END_ALLOW_THREADS if (failed) return PyErr_NoMemory();
    Py_RETURN_NONE;
}
