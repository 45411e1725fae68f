/*
 * coulisse's own int8 GEMMs, for CPUs with AVX512-VNNI, int8_gemm's blocks on AMX-INT8 tiles where the CPU has them
 * (the kernel plan, coulisse/engine/cpu.py, decides). Both compute
 *
 *   out[m][n] = (sum_k x[m][k] w[n][k] - 128 colsum[n]) w_scale[n],  x the u8 codes (signed code + 128),
 *
 * the int32 sum exact, so the result is oneDNN's and fbgemm's (sum(x8 w) w_scale, one rounding), from
 * weights packed once (models/quantize.py, `_small_pack`): blocks of 16 output columns, each K/4 words of
 * 16 x 4 bytes, w[n0 + i][4q .. 4q + 3] at word q, lane i, so that one 64-byte load feeds one vpdpbusd
 * for a row of activations (codes u8, broadcast four at a time).
 *
 * small_gemm, a few rows (a short request): the GEMM is a stream over the weights (85 MB of int8 codes
 * per forward of a base-size model, which fbgemm and oneDNN read at 11-18 GB/s on a Zen 4 whose cores read
 * ~32 GB/s; docs/benchmarks.md, session 13). Threads take pairs of column blocks in turn; rows go by groups
 * of up to 8, so each weight is read from memory once whatever the row count.
 *
 * int8_gemm, any row count: threads take blocks of rows in turn (32 at most; `rows_per_task`), quantize them first
 * where given fp32 rows (the row pass of quantize_rows, in the same thread), and run each against every column block, 8
 * rows x 3 column blocks at a time (24 accumulators in registers); the weights of three column blocks (K x 48 bytes)
 * stay in L2 while the block's rows pass. A block of rows is then finished while it is in cache by the row pass the
 * caller asked for (`coulisse_row_task`, _int8.c: dequantize + bias [+ GELU], or + residual + LayerNorm, and the codes
 * of the next int8 layer), on the same thread: no second pass over the layer's output, no second wake-up of the
 * threads. On a Zen 4 the product alone ran 3-6 % faster than oneDNN's at 1,024 rows (90-97 % of one vpdpbusd a cycle),
 * to the same bits (docs/benchmarks.md, session 14). With AMX-INT8 (and k a multiple of 64), blocks of up to 256 rows
 * (smaller towards the end: `amx_next_rows`) run on tiles instead (`amx_block`), the weights in 512 kB chunks that stay
 * in L2 while the block's rows pass: the same sums; with its row passes, 1.08x oneDNN's AMX GEMM and its passes in an
 * int8 forward on a Sapphire Rapids-class Xeon (docs/benchmarks.md, session 15). Up to AMX_COLUMNS_ROWS rows, the
 * threads split the columns instead (`amx_columns_worker`: the weights read from memory once, not once per block of
 * rows), and the row passes follow over all the rows. On tiles, a finish that only dequantizes (+ GELU) is done as the
 * sums become fp32 (`amx_finish_sums`), leaving the pass only the codes; there the query/key/value projection may also
 * write its output in bf16 (`bf16`), rounded as the bf16-product attention would round it (models/quantize.py,
 * `forward_bf16`): half the bytes written and read, no conversion in attention. The int8 pipeline over 160 reviews
 * 1-2.5 % faster, the same logits (AMX Xeon, session 17; the two ways alternating in one process).
 */
#include "_kernels.h"

/* The int32 lanes sum u8 x s8 products modulo 2^32; sum((x - 128) w), |.| <= 128 * 127 * k, is exact up to
 * this k (models/quantize.py, MAX_OWN_GEMM_IN). */
#define MAX_K 131072

/* small_gemm streams the weights from memory: it prefetches them 4 kB ahead (64 words), past the page the hardware
 * prefetchers stop at. 48 GEMMs of a base model in turn on the AMX Xeon: 3.3-3.5 -> 2.3-2.4 ms at 8 rows, 4.6-4.9 ->
 * 3.6-3.7 ms at 14 (session 16; 2 kB ahead did as well, 8 kB worse). */
#define SMALL_PREFETCH 64

/* Rows up to which int8_gemm splits the columns between threads on AMX tiles (amx_columns_worker). By rows, up to
 * 32 rows ran on one thread, and from 33 each thread read all the weights for its block. 48 GEMMs of a base model
 * in turn on the AMX Xeon (session 16), with their passes, by rows / by columns: 15 rows 6.2 / 3.8 ms, 32 rows
 * 8.5 / 5.4, 64 rows 7.7 / 7.2, 96 rows 10.4 / 9.9, 192 rows 16.4 / 17.1 (the passes, after the product, then
 * find fewer rows in cache). */
#define AMX_COLUMNS_ROWS 96

/* Rows a block takes at most on AMX tiles (amx_block): each block reads every weight chunk from memory once, so
 * larger blocks read the weights fewer times, but leave fewer of their rows in L2 for the passes after the product.
 * 128 was best until the sums were finished along the steps of k (session 18); since, 256: 48 GEMMs 0.97x alone and
 * 0.97-0.98x with their passes at 640 and 1,024 rows, 0.95x at 916, the --fast pipeline 0.98-0.99x (512: the
 * same as 256). */
#define AMX_ROWS 256

typedef struct {
    const uint8_t *x;  /* (m, k) codes */
    const int32_t *w;  /* packed: n/16 blocks of k/4 x 16 words */
    const int32_t *colsum;
    const float *scale;
    float *out;        /* (m, n) */
    int64_t m, k, n;
    int64_t next;      /* the next column block (small_gemm) or row (int8_gemm) to take (atomic) */
    int64_t rows_per_task;   /* int8_gemm, vector tiles: rows per task */
    int64_t ways;            /* int8_gemm on AMX tiles: twice the threads (amx_next_rows) */
    const RowTask *quantize; /* int8_gemm: the pass that makes each block's codes from its fp32 rows first, or NULL */
    const RowTask *finish;   /* int8_gemm: the pass over each block of rows once computed, or NULL */
    int amx;                 /* int8_gemm: blocks on AMX-INT8 tiles (coulisse_has_amx_int8, k % 64 == 0) */
    int64_t prefetch;        /* the weights this many 64-byte words ahead into L1 (small_gemm: from memory), or 0 */
    const uint8_t *padded;   /* amx_columns_worker: the last m % 32 rows' codes, then rows of 128 up to 32 rows */
    /* On AMX tiles, op 1's dequantize (+ GELU) runs as the sums become fp32 (amx_finish_sums), not in the pass */
    int fold, fold_gelu;
    const float *x_scale, *bias;
    int out_bf16; /* with fold (and no codes): out holds bf16 (m, n), rounded to nearest even (int8_gemm's `bf16`) */
    /* int8_gemm with codes and no output (out NULL): a scratch of `scratch_rows` rows for each thread, which takes
     * slot `slots` (atomic) */
    float *scratch;
    int64_t scratch_rows, slots;
    /* ... and where the finish is folded (op 1 on tiles), each row's max |output| tracked as the rows are made (16
     * lanes of abs_max_update's bits a row, `scratch_rows` rows a thread; in a thread's own Gemm, its block's, from
     * row max_r0), so that the codes pass reads each row once (coulisse_codes_with_max) */
    uint32_t *row_max;
    int64_t max_r0;
} Gemm;

#if HAVE_X86
#define VNNI __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma,avx512vnni")))
#define INLINE static inline __attribute__((always_inline))

/* acc += a (u8) . b (s8), four byte pairs per 32-bit lane, in place. gcc 12's intrinsic made it copy every
 * accumulator through another register and the stack on each step: half the speed in a register-blocked
 * loop. */
VNNI INLINE __m512i dpbusd(__m512i acc, __m512i a, __m512i b) {
    __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
    return acc;
}

/* Exact int32 sums of u8 codes x s8 weights to fp32: (sum - 128 colsum) rounded once, times the weight scale;
 * `comp` holds 128 colsum. Every kernel here makes its outputs with this, hence the same bits. */
VNNI INLINE __m512 sums_to_fp32(__m512i sums, __m512i comp, __m512 scale) {
    return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(sums, comp)), scale);
}

/* Rows m0 .. m0 + R - 1 against column blocks b .. b + NB - 1 (R <= 8, NB <= 3 constants where inlined). */
VNNI INLINE void tile(const Gemm *g, int64_t m0, int64_t b, const int R, const int NB) {
    const int64_t kw = g->k / 4;
    const int32_t *w = g->w + b * kw * 16;
    const int32_t *xr[8];
    for (int r = 0; r < R; r++) xr[r] = (const int32_t *)(g->x + (m0 + r) * g->k);
    __m512i acc[8][3];
    for (int r = 0; r < R; r++)
        for (int h = 0; h < NB; h++) acc[r][h] = _mm512_setzero_si512();
    for (int64_t q = 0; q < kw; q++) {
        __m512i wq[3];
        for (int h = 0; h < NB; h++) wq[h] = _mm512_loadu_si512(w + (h * kw + q) * 16);
        if (g->prefetch) /* past the block's end: the next block's words, or past the weights (never faults) */
            for (int h = 0; h < NB; h++) _mm_prefetch((const char *)(w + (h * kw + q + g->prefetch) * 16), _MM_HINT_T0);
        for (int r = 0; r < R; r++) {
            const __m512i v = _mm512_set1_epi32(xr[r][q]);
            for (int h = 0; h < NB; h++) acc[r][h] = dpbusd(acc[r][h], v, wq[h]);
        }
    }
    for (int h = 0; h < NB; h++) {
        const int64_t n0 = (b + h) * 16;
        const __m512i comp = _mm512_slli_epi32(_mm512_loadu_si512(g->colsum + n0), 7); /* 128 colsum */
        const __m512 s = _mm512_loadu_ps(g->scale + n0);
        for (int r = 0; r < R; r++)
            _mm512_storeu_ps(g->out + (m0 + r) * g->n + n0, sums_to_fp32(acc[r][h], comp, s));
    }
}

/* The full tile, 8 rows x 3 column blocks, with its 24 accumulators named: the loop above, given arrays,
 * kept two of them moving between registers on every step (~8 % slower at 1,024 rows on a Zen 4). */
VNNI static void tile_8x3(const Gemm *g, int64_t m0, int64_t b) {
    const int64_t kw = g->k / 4;
    const int32_t *w0 = g->w + b * kw * 16, *w1 = w0 + kw * 16, *w2 = w1 + kw * 16;
    const int32_t *x = (const int32_t *)(g->x + m0 * g->k);
#define Z _mm512_setzero_si512()
    __m512i c00 = Z, c01 = Z, c02 = Z, c10 = Z, c11 = Z, c12 = Z, c20 = Z, c21 = Z, c22 = Z, c30 = Z, c31 = Z,
            c32 = Z, c40 = Z, c41 = Z, c42 = Z, c50 = Z, c51 = Z, c52 = Z, c60 = Z, c61 = Z, c62 = Z, c70 = Z,
            c71 = Z, c72 = Z;
#undef Z
#define ROW(r)                                                                                                     \
    do {                                                                                                           \
        const __m512i v = _mm512_set1_epi32(x[(r) * kw + q]);                                                      \
        c##r##0 = dpbusd(c##r##0, v, w0q);                                                                         \
        c##r##1 = dpbusd(c##r##1, v, w1q);                                                                         \
        c##r##2 = dpbusd(c##r##2, v, w2q);                                                                         \
    } while (0)
    for (int64_t q = 0; q < kw; q++) {
        const __m512i w0q = _mm512_loadu_si512(w0 + q * 16), w1q = _mm512_loadu_si512(w1 + q * 16),
                      w2q = _mm512_loadu_si512(w2 + q * 16);
        ROW(0);
        ROW(1);
        ROW(2);
        ROW(3);
        ROW(4);
        ROW(5);
        ROW(6);
        ROW(7);
    }
#undef ROW
    for (int h = 0; h < 3; h++) {
        const int64_t n0 = (b + h) * 16;
        const __m512i comp = _mm512_slli_epi32(_mm512_loadu_si512(g->colsum + n0), 7); /* 128 colsum */
        const __m512 s = _mm512_loadu_ps(g->scale + n0);
#define STORE(r, acc) _mm512_storeu_ps(g->out + (m0 + (r)) * g->n + n0, sums_to_fp32(acc, comp, s))
        const __m512i a0 = h == 0 ? c00 : h == 1 ? c01 : c02, a1 = h == 0 ? c10 : h == 1 ? c11 : c12,
                      a2 = h == 0 ? c20 : h == 1 ? c21 : c22, a3 = h == 0 ? c30 : h == 1 ? c31 : c32,
                      a4 = h == 0 ? c40 : h == 1 ? c41 : c42, a5 = h == 0 ? c50 : h == 1 ? c51 : c52,
                      a6 = h == 0 ? c60 : h == 1 ? c61 : c62, a7 = h == 0 ? c70 : h == 1 ? c71 : c72;
        STORE(0, a0);
        STORE(1, a1);
        STORE(2, a2);
        STORE(3, a3);
        STORE(4, a4);
        STORE(5, a5);
        STORE(6, a6);
        STORE(7, a7);
#undef STORE
    }
}

#define TILES(NB)                                                                                                  \
    switch (rows) {                                                                                                \
    case 1: tile(g, m0, b, 1, NB); break;                                                                          \
    case 2: tile(g, m0, b, 2, NB); break;                                                                          \
    case 3: tile(g, m0, b, 3, NB); break;                                                                          \
    case 4: tile(g, m0, b, 4, NB); break;                                                                          \
    case 5: tile(g, m0, b, 5, NB); break;                                                                          \
    case 6: tile(g, m0, b, 6, NB); break;                                                                          \
    case 7: tile(g, m0, b, 7, NB); break;                                                                          \
    default: tile(g, m0, b, 8, NB); break;                                                                         \
    }

/* `rows` (1 to 8) rows from m0 against `nb` (1 to 3) column blocks from b. */
VNNI static void tiles(const Gemm *g, int64_t m0, int64_t b, int64_t rows, int nb) {
    if (nb == 3 && rows == 8) {
        tile_8x3(g, m0, b);
    } else if (nb == 3) {
        TILES(3)
    } else if (nb == 2) {
        TILES(2)
    } else {
        TILES(1)
    }
}
#undef TILES

/* ---------------------------------------------------------------- AMX-INT8 tiles
 * Where the CPU has AMX-INT8 (and k is a multiple of 64), a block of rows runs on tiles instead: TDPBUSD sums
 * u8 x s8 products into int32 like vpdpbusd, and the packed weights are its B operand already (a column block's
 * words q .. q + 15 are 16 rows of 16 columns x 4 bytes: one tile). A = 16 rows of codes x 64 bytes, read in
 * place. Per step of 64 along k: two row tiles (A 4, 5) x two column blocks (B 6, 7) into four accumulator
 * tiles (0-3). The int32 sums go through a scratch in L1 to the output rows, made fp32 as the vector tile does: the
 * same exact sums, the same bits. */
#define AMX8 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma,avx512vnni,avx512bf16,amx-tile,amx-int8")))

/* Tiles for `top` rows in the first row tile and `bottom` (0 to 16) in the second. */
static void amx_rows(int top, int bottom) {
    TileConfig cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    const int rows[8] = {top, top, bottom, bottom, top, bottom, 16, 16};
    for (int t = 0; t < 8; t++)
        if (rows[t]) {
            cfg.rows[t] = (uint8_t)rows[t];
            cfg.colsb[t] = 64;
        }
    coulisse_load_tiles(&cfg);
}

/* What a finish makes of the sums: fp32 outputs as the vector tile makes them (FINISH_SUMS), or op 1's dequantize
 * done on the value in hand (fold: the sums' value times the row's scale, + bias), then GELU. */
enum { FINISH_SUMS, FINISH_FOLD, FINISH_GELU };

/* Rows m0 + lo .. m0 + hi - 1 of column blocks n0 / 16 .. + count - 1 (1 or 2), from the int32 sums in `sums` (32 x
 * 32), stored in `out` (rows of n; bf16 where `bf16`). Everything it reads is in locals and `kind`, `bf16` and `count`
 * are constants where inlined: reading the Gemm's fields in the loop made gcc load them again after every store (a
 * bf16 store may alias anything), ~23 instructions a vector of 16 outputs for 5 vector ops. Alone that bought no
 * measurable time (the finishes are bound by their stores: writing the values without the arithmetic cost as much),
 * but the tracked max below then costs its two ops and no more. With `row_max` (row m0's 16 lanes first), each row's
 * max |output| is tracked as its columns are made (abs_max_update), for the codes pass that follows
 * (coulisse_codes_with_max), which then reads each row once instead of twice: the feed-forward's 768 -> 3,072 with
 * GELU and codes, 12 times, 77.6 -> 74.6 ms at 4,096 rows, 19.4 -> 19.2 at 1,024 (medians of 31 alternating rounds;
 * AMX Xeon, session 21; the same codes and scales). */
AMX8 static inline __attribute__((always_inline)) void finish_rows(const int32_t *sums, const int32_t *colsum,
                                                                   const float *scale, const float *bias,
                                                                   const float *x_scale, void *out, int64_t n,
                                                                   int64_t m0, int64_t lo, int64_t hi, int64_t n0,
                                                                   uint32_t *row_max, const int count, const int kind,
                                                                   const int bf16) {
    __m512i comp[2];
    __m512 sc[2], bi[2];
    for (int h = 0; h < count; h++) {
        comp[h] = _mm512_slli_epi32(_mm512_loadu_si512(colsum + n0 + 16 * h), 7); /* 128 colsum */
        sc[h] = _mm512_loadu_ps(scale + n0 + 16 * h);
        bi[h] = kind != FINISH_SUMS ? _mm512_loadu_ps(bias + n0 + 16 * h) : _mm512_setzero_ps();
    }
    for (int64_t r = lo; r < hi; r++) {
        const __m512 xs = kind != FINISH_SUMS ? _mm512_set1_ps(x_scale[m0 + r]) : _mm512_setzero_ps();
        for (int h = 0; h < count; h++) {
            __m512 v = sums_to_fp32(_mm512_loadu_si512(sums + r * 32 + 16 * h), comp[h], sc[h]);
            if (kind != FINISH_SUMS) /* y s + bias (then GELU) on the value in hand: the pass's ops on the same value */
                v = _mm512_fmadd_ps(v, xs, bi[h]);
            if (kind == FINISH_GELU) v = gelu_avx512(v);
            if (row_max) { /* a constant NULL where inlined without */
                __m512i *lanes = (__m512i *)(row_max + 16 * r);
                _mm512_storeu_si512(lanes, abs_max_update(_mm512_loadu_si512(lanes), v));
            }
            const int64_t at = (m0 + r) * n + n0 + 16 * h;
            if (bf16) /* vcvtneps2bf16: the rounding attention's kernel gives its fp32 inputs */
                _mm256_storeu_si256((__m256i *)((uint16_t *)out + at), (__m256i)_mm512_cvtneps_pbh(v));
            else
                _mm512_storeu_ps((float *)out + at, v);
        }
    }
}

#define FINISH_ROWS(count, kind, bf16, row_max)                                                                    \
    finish_rows(sums, g->colsum, g->scale, g->bias, g->x_scale, g->out, g->n, m0, lo, hi, n0, row_max, count, kind, \
                bf16)
#define FINISH_KINDS(count, bf16)                                                                                  \
    do {                                                                                                           \
        if (kind == FINISH_GELU)                                                                                   \
            FINISH_ROWS(count, FINISH_GELU, bf16, NULL);                                                           \
        else if (kind == FINISH_FOLD)                                                                              \
            FINISH_ROWS(count, FINISH_FOLD, bf16, NULL);                                                           \
        else                                                                                                       \
            FINISH_ROWS(count, FINISH_SUMS, bf16, NULL);                                                           \
    } while (0)

/* Column blocks b .. b + count - 1 (1 or 2) of rows m0 + lo .. m0 + hi - 1, from the int32 sums in `sums` (32 x 32)
 * to fp32 in the output, as the vector tile makes them (finish_rows, made for the Gemm's case). */
AMX8 static void amx_finish_sums(const Gemm *g, const int32_t *sums, int64_t m0, int64_t lo, int64_t hi, int64_t b,
                                 int count) {
    const int kind = !g->fold ? FINISH_SUMS : g->fold_gelu ? FINISH_GELU : FINISH_FOLD;
    const int64_t n0 = b * 16;
    if (g->row_max) { /* fp32 rows in a scratch, their max tracked (a fold: kind is not FINISH_SUMS) */
        uint32_t *row_max = g->row_max + 16 * (m0 - g->max_r0); /* row m0's lanes */
        if (kind == FINISH_GELU && count == 2) /* the first feed-forward's case, made for it */
            FINISH_ROWS(2, FINISH_GELU, 0, row_max);
        else
            FINISH_ROWS(count, kind, 0, row_max);
        return;
    }
    if (count == 2 && g->out_bf16)
        FINISH_KINDS(2, 1);
    else if (count == 2)
        FINISH_KINDS(2, 0);
    else if (g->out_bf16)
        FINISH_KINDS(1, 1);
    else
        FINISH_KINDS(1, 0);
}
#undef FINISH_KINDS
#undef FINISH_ROWS

/* The last pair's share of one step along k: `per` of its rows from row `lo` (none once all are done). */
AMX8 static inline void amx_finish_step(const Gemm *g, const int32_t *sums, int64_t m0, int64_t rows, int64_t lo,
                                        int64_t per, int64_t b, int count) {
    if (lo < rows) amx_finish_sums(g, sums, m0, lo, lo + per < rows ? lo + per : rows, b, count);
}

/* Rows m0 .. m0 + rows - 1 (1 to 32; the tiles configured for them; their codes at xa) against column blocks
 * b0 .. b1 - 1. The sums of a pair of column blocks go through one of two 4 kB scratches in L1, and become fp32
 * output while the tiles work on the next pair: a few rows after each step along k (`per`), so that the vector work
 * stays within what the core can reorder around the tile instructions. All of it after the pair's first step, as
 * before, left the tiles idle while the GELU ran: 48 GEMMs with their passes 0.94-0.96x at 916 and 1,024 rows, the
 * feed-forward's 768 -> 3,072 with GELU and codes 1.97 -> 1.76 ms at 1,024 rows, the --fast pipeline over 160
 * reviews 0.95x (AMX Xeon, session 18; the same bits). */
AMX8 static void amx_rows_by_blocks(const Gemm *g, const uint8_t *xa, int64_t m0, int64_t rows, int64_t b0,
                                    int64_t b1) {
    const int64_t kw = g->k / 4;
    const int two = rows > 16;
    int32_t sums[2][32 * 32] __attribute__((aligned(64)));
    const uint8_t *xb = xa + 16 * g->k;
    int64_t last = -1; /* the column block whose sums wait in sums[turn ^ 1], or -1 */
    int last_count = 0, turn = 0;
    const int64_t steps = kw / 16, per = (rows + steps - 1) / steps; /* the last pair's rows finished per step */
    for (int64_t b = b0; b < b1; b += 2, turn ^= 1) {
        const int pair = b1 - b >= 2;
        const int32_t *w0 = g->w + b * kw * 16, *w1 = w0 + kw * 16;
        _tile_zero(0);
        _tile_zero(1);
        if (two) {
            _tile_zero(2);
            _tile_zero(3);
        }
        if (pair && two) {
            for (int64_t q = 0; q < kw; q += 16) {
                _tile_loadd(4, xa + 4 * q, g->k);
                _tile_loadd(6, w0 + q * 16, 64);
                _tile_dpbusd(0, 4, 6);
                _tile_loadd(7, w1 + q * 16, 64);
                _tile_dpbusd(1, 4, 7);
                _tile_loadd(5, xb + 4 * q, g->k);
                _tile_dpbusd(2, 5, 6);
                _tile_dpbusd(3, 5, 7);
                { /* the B tiles of two steps ahead into L1 (tile loads from L2 wait; past the pair's last step this
                   * reads the next pair's first, or past the weights, which a prefetch may: it never faults) */
                    const char *p0 = (const char *)(w0 + (q + 32) * 16), *p1 = (const char *)(w1 + (q + 32) * 16);
                    for (int l = 0; l < 16; l++) {
                        _mm_prefetch(p0 + 64 * l, _MM_HINT_T0);
                        _mm_prefetch(p1 + 64 * l, _MM_HINT_T0);
                    }
                }
                if (last >= 0) amx_finish_step(g, sums[turn ^ 1], m0, rows, q / 16 * per, per, last, last_count);
            }
        } else {
            for (int64_t q = 0; q < kw; q += 16) {
                _tile_loadd(4, xa + 4 * q, g->k);
                _tile_loadd(6, w0 + q * 16, 64);
                _tile_dpbusd(0, 4, 6);
                if (pair) {
                    _tile_loadd(7, w1 + q * 16, 64);
                    _tile_dpbusd(1, 4, 7);
                }
                if (two) {
                    _tile_loadd(5, xb + 4 * q, g->k);
                    _tile_dpbusd(2, 5, 6);
                }
                if (last >= 0) amx_finish_step(g, sums[turn ^ 1], m0, rows, q / 16 * per, per, last, last_count);
            }
        }
        int32_t *mine = sums[turn];
        _tile_stored(0, mine, 128);
        if (pair) _tile_stored(1, mine + 16, 128);
        if (two) {
            _tile_stored(2, mine + 16 * 32, 128);
            if (pair) _tile_stored(3, mine + 16 * 32 + 16, 128);
        }
        last = b;
        last_count = 1 + pair;
    }
    if (last >= 0) amx_finish_sums(g, sums[turn ^ 1], m0, 0, rows, last, last_count);
}

/* Rows r0 .. r1 - 1 (up to AMX_ROWS) against every column block: the columns in chunks whose weights
 * (AMX_CHUNK bytes at most) stay in L2 while every 32 rows of the block pass, instead of all the weights
 * streaming through L2 once per 32 rows. `tiles` holds the rows the tiles are configured for. */
#define AMX_CHUNK (1 << 19)
AMX8 static void amx_block(const Gemm *g, int64_t r0, int64_t r1, int *tiles) {
    const int64_t blocks = g->n / 16;
    int64_t chunk = AMX_CHUNK / (16 * g->k);
    chunk = chunk < 2 ? 2 : chunk - chunk % 2;
    for (int64_t b0 = 0; b0 < blocks; b0 += chunk) {
        const int64_t b1 = b0 + chunk < blocks ? b0 + chunk : blocks;
        for (int64_t m0 = r0; m0 < r1; m0 += 32) {
            const int rows = (int)(r1 - m0 < 32 ? r1 - m0 : 32);
            if (rows != *tiles) {
                amx_rows(rows < 16 ? rows : 16, rows < 16 ? 0 : rows - 16);
                *tiles = rows;
            }
            amx_rows_by_blocks(g, g->x + m0 * g->k, m0, rows, b0, b1);
        }
    }
}

AMX8 static void amx_release(void) { _tile_release(); }

/* Few rows on tiles (m <= AMX_COLUMNS_ROWS): the threads split the columns instead of the rows, so that the weights,
 * which then cost more than the product, are read from memory once instead of once per block of rows. A worker
 * takes AMX_GROUP column blocks at a time and runs every 32 rows against them (the group's weights stay in L2
 * after the first); the last rows, fewer than 32, from a copy padded to 32 (the tiles stay configured for 32 rows
 * and read only whole rows). The row passes run after, over all the rows (int8_gemm). */
#define AMX_GROUP 8
AMX8 static void *amx_columns_worker(void *arg) {
    Gemm *g = (Gemm *)arg;
    const int64_t blocks = g->n / 16, full = g->m - g->m % 32, tail = g->m - full;
    amx_rows(16, 16);
    for (;;) {
        const int64_t b0 = __atomic_fetch_add(&g->next, AMX_GROUP, __ATOMIC_RELAXED);
        if (b0 >= blocks) break;
        const int64_t b1 = b0 + AMX_GROUP < blocks ? b0 + AMX_GROUP : blocks;
        for (int64_t m0 = 0; m0 < full; m0 += 32) amx_rows_by_blocks(g, g->x + m0 * g->k, m0, 32, b0, b1);
        if (tail) amx_rows_by_blocks(g, g->padded, full, tail, b0, b1);
    }
    amx_release();
    return NULL;
}

/* Whether int8_gemm runs its blocks on AMX-INT8 tiles here: the CPU has them, Linux granted this process the tile
 * state (arch_prctl ARCH_REQ_XCOMP_PERM), and COULISSE_INT8_AMX is not 0 (A/B runs). Read once. */
int coulisse_has_amx_int8(void) {
    static int cached = -1;
    if (cached < 0) {
        const char *off = getenv("COULISSE_INT8_AMX");
        __builtin_cpu_init();
        cached = coulisse_isa_level() == ISA_AVX512 && __builtin_cpu_supports("avx512vnni") &&
                 __builtin_cpu_supports("amx-int8") && !(off && strcmp(off, "0") == 0);
        cached = cached && coulisse_amx_granted();
    }
    return cached;
}

VNNI static void *small_gemm_worker(void *arg) {
    Gemm *g = (Gemm *)arg;
    const int64_t blocks = g->n / 16;
    for (;;) {
        const int64_t b = __atomic_fetch_add(&g->next, 2, __ATOMIC_RELAXED);
        if (b >= blocks) break;
        const int nb = blocks - b >= 2 ? 2 : 1;
        for (int64_t m0 = 0; m0 < g->m; m0 += 8) tiles(g, m0, b, g->m - m0 >= 8 ? 8 : g->m - m0, nb);
    }
    return NULL;
}

/* The next block of rows a thread takes on AMX tiles, r0 .. r1 - 1 (0 once every row is taken): of the tiles of 32
 * rows left, the part a thread would take if twice as many threads shared them, at most AMX_ROWS rows and at least
 * AMX_LEAST_TILES tiles (guided self-scheduling). Blocks of AMX_ROWS until the end, then smaller ones, so that the
 * threads end together: with blocks of AMX_ROWS to the end (in equal shares, one a thread), one thread waited on
 * the other for half a block on average, a 256-row block of the first feed-forward ~0.36 ms; the --fast pipeline's
 * GEMMs over 160 reviews, idle thread time 243 -> 49 ms over 6 passes of ~1,150 (their wall time 5,455 -> 5,277 ms;
 * AMX Xeon, session 22). Blocks below 2 tiles would read all the weights for 32 rows (what AMX_CHUNK avoids). */
#define AMX_LEAST_TILES 2
static int amx_next_rows(Gemm *g, int64_t *r0, int64_t *r1) {
    const int64_t tiles = (g->m + 31) / 32, most = AMX_ROWS / 32;
    int64_t at = __atomic_load_n(&g->next, __ATOMIC_RELAXED), take;
    do {
        if (at >= tiles) return 0;
        take = (tiles - at + g->ways - 1) / g->ways;
        take = take > most ? most : take < AMX_LEAST_TILES ? AMX_LEAST_TILES : take;
        take = take < tiles - at ? take : tiles - at;
    } while (!__atomic_compare_exchange_n(&g->next, &at, at + take, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    *r0 = 32 * at;
    *r1 = 32 * (at + take) < g->m ? 32 * (at + take) : g->m;
    return 1;
}

/* `out` shifted so that row r0 of it is `scratch`'s first: (m0 + r) * n indexing, as in the output, lands in the
 * scratch. Through integers (gcc maps pointers to addresses and back as they are), never dereferenced before r0. */
static float *rows_from(float *scratch, int64_t r0, int64_t n) {
    return (float *)((uintptr_t)scratch - (uintptr_t)r0 * (uintptr_t)n * sizeof(float));
}

AMX8 static void *int8_gemm_worker(void *arg) {
    Gemm *g = (Gemm *)arg, mine = *g; /* mine: g with this thread's output rows (the scratch, where one is used) */
    const int64_t blocks = g->n / 16;
    RowTask finish, quantize;
    if (g->finish) finish = *g->finish;
    if (g->quantize) quantize = *g->quantize;
    int configured = 0; /* the rows the tiles are configured for (0: not yet) */
    /* codes only (no output kept): each block's fp32 rows in a scratch of this thread's, reused block after block;
     * folded, with the rows' max |output| tracked in this thread's lanes */
    float *scratch = NULL;
    uint32_t *row_max = NULL;
    if (!g->out) {
        const int64_t slot = __atomic_fetch_add(&g->slots, 1, __ATOMIC_RELAXED);
        scratch = g->scratch + slot * g->scratch_rows * g->n;
        if (g->row_max) row_max = g->row_max + slot * g->scratch_rows * 16;
    }
    mine.row_max = row_max;
    for (;;) {
        int64_t r0, r1;
        if (g->amx) {
            if (!amx_next_rows(g, &r0, &r1)) break;
        } else {
            r0 = __atomic_fetch_add(&g->next, g->rows_per_task, __ATOMIC_RELAXED);
            if (r0 >= g->m) break;
            r1 = r0 + g->rows_per_task < g->m ? r0 + g->rows_per_task : g->m;
        }
        if (g->quantize) {
            quantize.r0 = r0;
            quantize.r1 = r1;
            coulisse_row_task(&quantize);
        }
        if (scratch) { /* the block's rows go to the scratch, where the finish reads them (op 0: x; op 1: y) */
            mine.out = rows_from(scratch, r0, g->n);
            finish.x = finish.op == 0 ? mine.out : finish.x;
            finish.y = finish.op == 0 ? finish.y : mine.out;
        }
        if (row_max) {
            mine.max_r0 = r0;
            memset(row_max, 0, sizeof(uint32_t) * 16 * (size_t)(r1 - r0));
        }
        if (g->amx) {
            amx_block(&mine, r0, r1, &configured);
        } else {
            for (int64_t b = 0; b < blocks; b += 3) {
                const int nb = blocks - b >= 3 ? 3 : (int)(blocks - b);
                for (int64_t m0 = r0; m0 < r1; m0 += 8) tiles(&mine, m0, b, r1 - m0 >= 8 ? 8 : r1 - m0, nb);
            }
        }
        if (row_max) { /* the codes pass, each row's max known */
            coulisse_codes_with_max(scratch, g->n, r1 - r0, row_max, finish.q + r0 * g->n, finish.scale + r0);
        } else if (g->finish) {
            finish.r0 = r0;
            finish.r1 = r1;
            coulisse_row_task(&finish);
        }
    }
    if (configured) amx_release();
    return NULL;
}
#endif

/* Rows per block for int8_gemm: at most 32 (the block's outputs stay in L2 for its row pass: 32 x 3,072
 * floats = 384 kB), as many blocks per thread as that takes, in multiples of 8 rows (the tile's) where
 * there are at least 8; the last block takes the rest, and the threads take blocks in turn. */
static int64_t rows_per_task(int64_t m, int threads) {
    const int64_t most = 32, per_thread = (m + threads * most - 1) / (threads * most);
    int64_t rows = (m + threads * per_thread - 1) / (threads * per_thread);
    if (rows > 8) rows -= rows % 8;
    return rows;
}

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

PY_CPU_FLAG(coulisse_py_has_int8_dot, coulisse_has_int8_dot)
PY_CPU_FLAG(coulisse_py_has_amx_int8, coulisse_has_amx_int8)

PyObject *coulisse_py_small_gemm(PyObject *self, PyObject *args) {
    Py_ssize_t x, w, colsum, scale, out, m, k, n;
    int threads;
    (void)self;
    if (!PyArg_ParseTuple(args, "nnnnnnnni", &x, &w, &colsum, &scale, &out, &m, &k, &n, &threads)) return NULL;
    if (!coulisse_has_int8_dot() || m < 1 || k < 4 || k % 4 || k > MAX_K || n < 16 || n % 16) {
        PyErr_Format(PyExc_ValueError,
                     "small_gemm: needs AVX512-VNNI, k a multiple of 4 up to 131072 and n of 16 (m %zd, k %zd, n %zd)",
                     m, k, n);
        return NULL;
    }
#if HAVE_X86
    Gemm g = {(const uint8_t *)x, (const int32_t *)w, (const int32_t *)colsum, (const float *)scale,
              (float *)out, m, k, n, 0, 0, 0, NULL, NULL, 0, SMALL_PREFETCH, NULL, 0, 0, NULL, NULL};
    const int64_t pairs = (n / 16 + 1) / 2;
    if (threads > pairs) threads = (int)pairs;
    Py_BEGIN_ALLOW_THREADS coulisse_run_workers(small_gemm_worker, &g, threads);
    Py_END_ALLOW_THREADS
#endif
    Py_RETURN_NONE;
}

PyObject *coulisse_py_int8_gemm(PyObject *self, PyObject *args) {
    Py_ssize_t x, w, colsum, scale, out, m, k, n, x_scale, bias, res, gamma, beta, codes, code_scale, rows = 0;
    int threads, op, gelu, bf16 = 0;
    double eps;
    (void)self;
    if (!PyArg_ParseTuple(args, "nnnnnnnniinnpnnndnn|np", &x, &w, &colsum, &scale, &out, &m, &k, &n, &threads, &op,
                          &x_scale, &bias, &gelu, &res, &gamma, &beta, &eps, &codes, &code_scale, &rows, &bf16))
        return NULL;
    if (!coulisse_has_int8_dot() || m < 1 || k < 4 || k % 4 || k > MAX_K || n < 16 || n % 16 || op < 0 || op > 2 ||
        (op && (!x_scale || !bias)) || (op == 2 && (!res || !gamma || !beta)) || (codes == 0) != (code_scale == 0) ||
        (rows && !x_scale)) {
        PyErr_Format(PyExc_ValueError,
                     "int8_gemm: needs AVX512-VNNI, k a multiple of 4 up to 131072 and n of 16 (m %zd, k %zd, n %zd), "
                     "op 0-2 (%d) with its pointers", m, k, n, op);
        return NULL;
    }
#if HAVE_X86
    RowTask finish = {op, 0, 0, n, (const float *)res, (float *)out, NULL, (float *)x_scale, (const float *)bias,
                      gelu, coulisse_isa_level(), (const float *)gamma, (const float *)beta, (float)eps,
                      (uint8_t *)codes, (float *)code_scale};
    if (threads < 1) threads = 1;
    /* fp32 rows given: each block quantizes its own into x and x_scale first (quantize_rows' codes) */
    RowTask quantize = {0, 0, 0, k, (const float *)rows, NULL, (uint8_t *)x, (float *)x_scale, NULL, 0,
                        coulisse_isa_level(), NULL, NULL, 0.0f, NULL, NULL};
    const int amx = k % 64 == 0 && coulisse_has_amx_int8();
    /* On tiles, op 1 is done as the sums are made (fold): what is left is the codes, quantize_rows' pass on the
     * finished rows (op 0 of a row task: the same codes as the dequantize pass makes), or nothing */
    const int fold = amx && op == 1;
    if (bf16 && !(fold && !codes && coulisse_has_bf16_dot())) {
        PyErr_Format(PyExc_ValueError, "int8_gemm: a bf16 output needs AMX-INT8 tiles (k %zd a multiple of 64: %s), "
                     "AVX512-BF16 and op 1 (%d) without codes", k, amx ? "yes" : "no", op);
        return NULL;
    }
    if (!out && (op != 1 || !codes)) {
        PyErr_Format(PyExc_ValueError, "int8_gemm: no output (out 0) only for op 1 with codes, which are then all it "
                     "keeps (op %d, codes %s)", op, codes ? "given" : "none");
        return NULL;
    }
    /* No output asked for (codes only): the few-row path keeps its rows in a buffer of its own for the passes after
     * the product; the blocks' path in a scratch per thread (below). The finishing
     * passes read the rows from there (the worker sets their pointers). */
    float *unkept = NULL;
    if (!out && amx && m <= AMX_COLUMNS_ROWS) {
        unkept = (float *)aligned_alloc(64, sizeof(float) * (size_t)(m * n));
        if (!unkept) return PyErr_NoMemory();
        out = (Py_ssize_t)unkept;
    }
    RowTask codes_only = {0, 0, 0, n, (const float *)out, NULL, (uint8_t *)codes, (float *)code_scale, NULL, 0,
                          coulisse_isa_level(), NULL, NULL, 0.0f, NULL, NULL};
    const RowTask *finishing = fold ? (codes ? &codes_only : NULL) : op ? &finish : NULL;
    if (amx && m <= AMX_COLUMNS_ROWS) { /* few rows: quantize them all, the product by columns, then the passes */
        uint8_t *padded = NULL;
        const int64_t full = m - m % 32;
        if (m > full) {
            padded = (uint8_t *)aligned_alloc(64, (size_t)(32 * k));
            if (!padded) {
                free(unkept);
                return PyErr_NoMemory();
            }
        }
        Gemm g = {(const uint8_t *)x, (const int32_t *)w, (const int32_t *)colsum, (const float *)scale,
                  (float *)out, m, k, n, 0, 0, 0, NULL, NULL, 1, 0, padded, fold, gelu, (const float *)x_scale,
                  (const float *)bias, bf16};
        const int64_t groups = (n / 16 + AMX_GROUP - 1) / AMX_GROUP;
        Py_BEGIN_ALLOW_THREADS
        if (rows) coulisse_run_rows(quantize, m, threads);
        if (padded) { /* the codes exist now: the last rows, padded with the zero code */
            memcpy(padded, (const uint8_t *)x + full * k, (size_t)((m - full) * k));
            memset(padded + (m - full) * k, 128, (size_t)((32 - (m - full)) * k));
        }
        coulisse_run_workers(amx_columns_worker, &g, threads < groups ? threads : (int)groups);
        if (finishing) coulisse_run_rows(*finishing, m, threads);
        Py_END_ALLOW_THREADS
        free(padded);
        free(unkept);
        Py_RETURN_NONE;
    }
    const int64_t per = amx ? 0 : rows_per_task(m, threads);
    const int64_t blocks = amx ? ((m + 31) / 32 + AMX_LEAST_TILES - 1) / AMX_LEAST_TILES : (m + per - 1) / per;
    if (threads > blocks) threads = (int)blocks;
    Gemm g = {(const uint8_t *)x, (const int32_t *)w, (const int32_t *)colsum, (const float *)scale,
              (float *)out, m, k, n, 0, per, 2 * threads, rows ? &quantize : NULL, finishing,
              amx, 0, NULL, fold, gelu, (const float *)x_scale, (const float *)bias, bf16, NULL, 0, 0};
    /* codes only: the rows of a block in a scratch of its thread's, where the codes pass reads them from L2, instead
     * of rows written to memory and read back (12 kB a row for a feed-forward's 3,072 columns): the feed-forward's
     * 768 -> 3,072 with GELU and codes, the output allocated afresh per call as the engine does, 2.10 -> 1.88 ms at
     * 1,024 rows, 1.88 -> 1.74 at 916, 9.14 -> 7.41 at 4,096; the --fast pipeline 0.98x in batches of 1,024 tokens,
     * 0.93x in batches of 4,096 (AMX Xeon, session 19; the same codes) */
    if (!out) {
        g.scratch_rows = amx ? AMX_ROWS : per;
        g.scratch = (float *)aligned_alloc(64, sizeof(float) * (size_t)(threads * g.scratch_rows * n));
        if (fold && g.scratch) g.row_max = (uint32_t *)aligned_alloc(64, 64 * (size_t)(threads * g.scratch_rows));
        if (!g.scratch || (fold && !g.row_max)) {
            free(g.scratch);
            return PyErr_NoMemory();
        }
    }
    Py_BEGIN_ALLOW_THREADS coulisse_run_workers(int8_gemm_worker, &g, threads);
    Py_END_ALLOW_THREADS
    free(g.scratch);
    free(g.row_max);
#endif
    Py_RETURN_NONE;
}
