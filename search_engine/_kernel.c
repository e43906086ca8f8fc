/*
 * Fused MaxSim kernels: for each page, the max over the page's vectors of <q_v, p_t> for every query vector v.
 *
 * Pages are stored as "panels": the page's T vectors in tiles of 16, each tile laid out [D][16] (16 consecutive
 * vectors' values of one dimension side by side), the last tile zero-padded. For every dimension the kernel loads
 * the tile's 16 values (one AVX-512 register, two AVX2 registers, four NEON registers) and multiplies them into
 * the accumulators of a block of query vectors with broadcast FMAs, so a tile is read once per block straight
 * from memory (software prefetch two tiles ahead) and the products never leave the registers: each block keeps a
 * running max per query vector and lane. Panels may be float32 or float16 (converted on load: F16C on x86-64,
 * FCVTL on aarch64; the values, and so the scores, are the same).
 *
 * One build serves every CPU of its architecture: the x86-64 kernels are compiled with function-level target
 * attributes and chosen at run time from what the CPU reports (`kernels()`: "avx512" needs AVX-512F/FMA/F16C,
 * "avx2" needs AVX2/FMA/F16C); the NEON kernel is compiled only on aarch64, where NEON is part of the base
 * architecture. Elsewhere `kernels()` is empty and search uses the torch path.
 *
 * Beside them, `probed_residual_scores`: the approximate mode's first-stage page scores, WARP-style, from
 * residual-compressed inverted lists (search_engine/residuals.py), a block of 16 list entries at a time: one
 * AVX-512 permute per nibble position, two AVX2 permutes and a blend per half block, a portable loop elsewhere.
 */
/* MAXSIM_KERNELS_ONLY: the kernels without the Python module (tests/search/kernel_check.c builds them that way for
 * another architecture and runs them under an emulator). */
#ifndef MAXSIM_KERNELS_ONLY
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#endif
#include <math.h>
#include <stdint.h>
#include <string.h>

#define LANES 16
/* Tiles between the one being computed and the one being prefetched. */
#define PREFETCH_TILES 2

/* rows query vectors (query_t[d * stride + r], r < rows) against one tile; lanes >= valid are padding and never
 * update the running maxima best[r * 16 + lane]. While at dimension d the kernel prefetches ahead + d * ahead_step
 * (the data of the tile PREFETCH_TILES ahead, spread over the loop: a burst of prefetches stalls on the few misses
 * a core keeps in flight). */
typedef void (*block_fn)(int rows, int fp16, const float *query_t, int64_t stride, int64_t dim, const void *tile,
                         const char *ahead, int64_t ahead_step, int valid, float *best);

/* Residual scores of one block of RESIDUAL_BLOCK list entries against one query vector: out[e] = base + sum over
 * byte positions b of tables[b][0][low nibble] + tables[b][1][high nibble] of entry e's byte b; the block's codes
 * are laid out [byte][entry]. */
#define RESIDUAL_BLOCK 16
typedef void (*block_scores_fn)(const float *tables, int64_t code_bytes, const uint8_t *block, float base,
                                float *out);

static void block_scores_generic(const float *tables, int64_t code_bytes, const uint8_t *block, float base,
                                 float *out) {
    for (int e = 0; e < RESIDUAL_BLOCK; e++) out[e] = base;
    for (int64_t b = 0; b < code_bytes; b++) {
        const float *low = tables + b * 32, *high = low + 16;
        const uint8_t *bytes = block + b * RESIDUAL_BLOCK;
        for (int e = 0; e < RESIDUAL_BLOCK; e++) out[e] += low[bytes[e] & 15] + high[bytes[e] >> 4];
    }
}

typedef struct {
    const char *name;
    /* Query vectors per block: as many accumulators as the register file holds besides the tile's values. */
    int max_rows;
    /* Up to this many blocks, tiles are the outer loop (each tile read from memory once, reused by every block from
     * L1); beyond (large batches), blocks are: the page then sits in L2 and the block's query values in L1. */
    int tile_outer_max_blocks;
    block_fn block;
    int (*supported)(void);
    /* Optional: 16 row-major fp16 vectors (`valid` of them; the rest read as zeros) of `dim` values, dim a multiple
     * of 16, into a float32 tile [dim][16] (score_rows' transpose in registers; NULL: element by element). */
    void (*tile_from_rows)(const uint16_t *rows, int64_t dim, int valid, float *tile);
    /* Residual scores of one block of list entries (probed_residual_scores; NULL: the portable loop). */
    block_scores_fn block_scores;
} kernel_isa;

#define ROWS_CASE(prefix, n)                                                                                      \
    case n:                                                                                                       \
        if (fp16)                                                                                                 \
            prefix##_tile(n, 1, query_t, stride, dim, tile, ahead, ahead_step, valid, best);                      \
        else                                                                                                      \
            prefix##_tile(n, 0, query_t, stride, dim, tile, ahead, ahead_step, valid, best);                      \
        break;

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_X86_KERNELS 1
#include <immintrin.h>

/* ---- AVX-512F + FMA + F16C: one register per dimension of a tile, up to 14 query vectors per block. ---- */
#define AVX512_TARGET __attribute__((target("avx512f,f16c,fma")))
#define AVX512_ROWS 14

static inline __attribute__((always_inline)) AVX512_TARGET __m512 avx512_lanes(const void *base, int64_t index,
                                                                                const int fp16) {
    if (fp16) {
        return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)base + index)));
    }
    return _mm512_loadu_ps((const float *)base + index);
}

static inline __attribute__((always_inline)) AVX512_TARGET void avx512_tile(const int rows, const int fp16,
                                                                            const float *query_t, int64_t stride,
                                                                            int64_t dim, const void *tile,
                                                                            const char *ahead, int64_t ahead_step,
                                                                            int valid, float *best) {
    __m512 acc[AVX512_ROWS];
#pragma GCC unroll 16
    for (int r = 0; r < rows; r++) acc[r] = _mm512_setzero_ps();
    for (int64_t d = 0; d < dim; d++) {
        _mm_prefetch(ahead + d * ahead_step, _MM_HINT_T0);
        const __m512 lanes = avx512_lanes(tile, d * LANES, fp16);
        const float *q = query_t + d * stride;
#pragma GCC unroll 16
        for (int r = 0; r < rows; r++) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(q[r]), lanes, acc[r]);
    }
    const __mmask16 mask = (__mmask16)((1u << valid) - 1u);
#pragma GCC unroll 16
    for (int r = 0; r < rows; r++) {
        const __m512 current = _mm512_loadu_ps(best + r * LANES);
        _mm512_storeu_ps(best + r * LANES, _mm512_mask_max_ps(current, mask, current, acc[r]));
    }
}

static AVX512_TARGET void avx512_block(int rows, int fp16, const float *query_t, int64_t stride, int64_t dim,
                                       const void *tile, const char *ahead, int64_t ahead_step, int valid,
                                       float *best) {
    switch (rows) {
        ROWS_CASE(avx512, 1)
        ROWS_CASE(avx512, 2)
        ROWS_CASE(avx512, 3)
        ROWS_CASE(avx512, 4)
        ROWS_CASE(avx512, 5)
        ROWS_CASE(avx512, 6)
        ROWS_CASE(avx512, 7)
        ROWS_CASE(avx512, 8)
        ROWS_CASE(avx512, 9)
        ROWS_CASE(avx512, 10)
        ROWS_CASE(avx512, 11)
        ROWS_CASE(avx512, 12)
        ROWS_CASE(avx512, 13)
        ROWS_CASE(avx512, 14)
    }
}

/* Eight 16 x 16 transposes (unpack 32-bit, unpack 64-bit, two 128-bit lane shuffles) of the vectors converted
 * to float32, a tenth of the instructions of the FMAs the tile then feeds (copying it element by element held a
 * 24-vector query to 58 GFLOP/s per core on cached rows, against 92 this way). */
static AVX512_TARGET void avx512_tile_from_rows(const uint16_t *rows, int64_t dim, int valid, float *tile) {
    for (int64_t d = 0; d < dim; d += LANES) {
        __m512 r[LANES], t[LANES];
#pragma GCC unroll 16
        for (int i = 0; i < LANES; i++) {
            r[i] = i < valid ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(rows + i * dim + d)))
                             : _mm512_setzero_ps();
        }
#pragma GCC unroll 8
        for (int i = 0; i < LANES; i += 2) {
            t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
            t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
        }
#pragma GCC unroll 4
        for (int i = 0; i < LANES; i += 4) {
            r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
            r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
            r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
            r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
        }
#pragma GCC unroll 2
        for (int h = 0; h < LANES; h += 8) {
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++) {
                t[h + i] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0x88);
                t[h + i + 4] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0xdd);
            }
        }
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++) {
            _mm512_storeu_ps(tile + (d + i) * LANES, _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88));
            _mm512_storeu_ps(tile + (d + i + 8) * LANES, _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd));
        }
    }
}

static int avx512_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}

/* A 16-entry table is one register: one permute looks a nibble position up for the whole block. Four
 * accumulators keep four independent chains of additions. */
static AVX512_TARGET void block_scores_avx512(const float *tables, int64_t code_bytes, const uint8_t *block,
                                              float base, float *out) {
    const __m512i fifteen = _mm512_set1_epi32(15);
    __m512 a0 = _mm512_set1_ps(base), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
    int64_t b = 0;
    for (; b + 1 < code_bytes; b += 2) {
        const __m512i x = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(block + b * RESIDUAL_BLOCK)));
        const __m512i y = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(block + (b + 1) * RESIDUAL_BLOCK)));
        a0 = _mm512_add_ps(a0, _mm512_permutexvar_ps(_mm512_and_si512(x, fifteen), _mm512_loadu_ps(tables + b * 32)));
        a1 = _mm512_add_ps(a1, _mm512_permutexvar_ps(_mm512_srli_epi32(x, 4), _mm512_loadu_ps(tables + b * 32 + 16)));
        a2 = _mm512_add_ps(a2, _mm512_permutexvar_ps(_mm512_and_si512(y, fifteen),
                                                     _mm512_loadu_ps(tables + (b + 1) * 32)));
        a3 = _mm512_add_ps(a3, _mm512_permutexvar_ps(_mm512_srli_epi32(y, 4),
                                                     _mm512_loadu_ps(tables + (b + 1) * 32 + 16)));
    }
    if (b < code_bytes) {
        const __m512i x = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(block + b * RESIDUAL_BLOCK)));
        a0 = _mm512_add_ps(a0, _mm512_permutexvar_ps(_mm512_and_si512(x, fifteen), _mm512_loadu_ps(tables + b * 32)));
        a1 = _mm512_add_ps(a1, _mm512_permutexvar_ps(_mm512_srli_epi32(x, 4), _mm512_loadu_ps(tables + b * 32 + 16)));
    }
    _mm512_storeu_ps(out, _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

/* ---- AVX2 + FMA + F16C: a tile is taken in two halves of 8 lanes (one register per dimension), up to 13 query
 * vectors per block (13 accumulators + the half tile + a broadcast of the 16 ymm registers). Halves rather than
 * two registers per dimension leave room for twice the rows, so one fp16 conversion feeds 13 FMAs instead of 6.
 * ---- */
#define AVX2_TARGET __attribute__((target("avx2,f16c,fma")))
#define AVX2_ROWS 13

static inline __attribute__((always_inline)) AVX2_TARGET __m256 avx2_lanes(const void *base, int64_t index,
                                                                            const int fp16) {
    if (fp16) {
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)base + index)));
    }
    return _mm256_loadu_ps((const float *)base + index);
}

static inline __attribute__((always_inline)) AVX2_TARGET void avx2_tile(const int rows, const int fp16,
                                                                        const float *query_t, int64_t stride,
                                                                        int64_t dim, const void *tile,
                                                                        const char *ahead, int64_t ahead_step,
                                                                        int valid, float *best) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256 minus_inf = _mm256_set1_ps(-INFINITY);
    for (int half = 0; half < LANES; half += 8) {
        __m256 acc[AVX2_ROWS];
#pragma GCC unroll 16
        for (int r = 0; r < rows; r++) acc[r] = _mm256_setzero_ps();
        for (int64_t d = 0; d < dim; d++) {
            if (half == 0) _mm_prefetch(ahead + d * ahead_step, _MM_HINT_T0);
            const __m256 lanes = avx2_lanes(tile, d * LANES + half, fp16);
            const float *q = query_t + d * stride;
#pragma GCC unroll 16
            for (int r = 0; r < rows; r++) acc[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(q + r), lanes, acc[r]);
        }
        const __m256 keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(valid - half), lane));
#pragma GCC unroll 16
        for (int r = 0; r < rows; r++) {
            float *out = best + r * LANES + half;
            _mm256_storeu_ps(out, _mm256_max_ps(_mm256_loadu_ps(out), _mm256_blendv_ps(minus_inf, acc[r], keep)));
        }
    }
}

static AVX2_TARGET void avx2_block(int rows, int fp16, const float *query_t, int64_t stride, int64_t dim,
                                   const void *tile, const char *ahead, int64_t ahead_step, int valid, float *best) {
    switch (rows) {
        ROWS_CASE(avx2, 1)
        ROWS_CASE(avx2, 2)
        ROWS_CASE(avx2, 3)
        ROWS_CASE(avx2, 4)
        ROWS_CASE(avx2, 5)
        ROWS_CASE(avx2, 6)
        ROWS_CASE(avx2, 7)
        ROWS_CASE(avx2, 8)
        ROWS_CASE(avx2, 9)
        ROWS_CASE(avx2, 10)
        ROWS_CASE(avx2, 11)
        ROWS_CASE(avx2, 12)
        ROWS_CASE(avx2, 13)
    }
}

static int avx2_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}

/* Two halves of 8 entries; a 16-entry table is two registers: both are permuted by the nibble's low 3 bits and
 * its bit 3 (shifted into the sign bit) picks one. */
static inline __attribute__((always_inline)) AVX2_TARGET __m256 avx2_lookup16(const float *table, __m256i nibbles) {
    const __m256 low = _mm256_permutevar8x32_ps(_mm256_loadu_ps(table), nibbles);
    const __m256 high = _mm256_permutevar8x32_ps(_mm256_loadu_ps(table + 8), nibbles);
    return _mm256_blendv_ps(low, high, _mm256_castsi256_ps(_mm256_slli_epi32(nibbles, 28)));
}

static AVX2_TARGET void block_scores_avx2(const float *tables, int64_t code_bytes, const uint8_t *block, float base,
                                          float *out) {
    const __m256i fifteen = _mm256_set1_epi32(15);
    __m256 a0 = _mm256_set1_ps(base), a1 = _mm256_set1_ps(base), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    for (int64_t b = 0; b < code_bytes; b++) {
        const __m128i bytes = _mm_loadu_si128((const __m128i *)(block + b * RESIDUAL_BLOCK));
        const __m256i x = _mm256_cvtepu8_epi32(bytes), y = _mm256_cvtepu8_epi32(_mm_srli_si128(bytes, 8));
        const float *low = tables + b * 32, *high = low + 16;
        a0 = _mm256_add_ps(a0, avx2_lookup16(low, _mm256_and_si256(x, fifteen)));
        a1 = _mm256_add_ps(a1, avx2_lookup16(low, _mm256_and_si256(y, fifteen)));
        a2 = _mm256_add_ps(a2, avx2_lookup16(high, _mm256_srli_epi32(x, 4)));
        a3 = _mm256_add_ps(a3, avx2_lookup16(high, _mm256_srli_epi32(y, 4)));
    }
    _mm256_storeu_ps(out, _mm256_add_ps(a0, a2));
    _mm256_storeu_ps(out + 8, _mm256_add_ps(a1, a3));
}

static const kernel_isa KERNELS[] = {
    {"avx512", AVX512_ROWS, 4, avx512_block, avx512_supported, avx512_tile_from_rows, block_scores_avx512},
    {"avx2", AVX2_ROWS, 4, avx2_block, avx2_supported, NULL, block_scores_avx2},
};
#define NUM_KERNELS 2

#elif defined(__aarch64__)
#define HAVE_NEON_KERNEL 1
#include <arm_neon.h>

/* ---- NEON (base aarch64): four 4-lane registers per dimension of a tile, up to 6 query vectors per block
 * (24 accumulators + 4 tile registers of the 32 vector registers). ---- */
#define NEON_ROWS 6

static inline __attribute__((always_inline)) void neon_tile(const int rows, const int fp16, const float *query_t,
                                                            int64_t stride, int64_t dim, const void *tile,
                                                            const char *ahead, int64_t ahead_step, int valid,
                                                            float *best) {
    float32x4_t acc[NEON_ROWS][4];
#pragma GCC unroll 8
    for (int r = 0; r < rows; r++) {
        for (int k = 0; k < 4; k++) acc[r][k] = vdupq_n_f32(0.0f);
    }
    for (int64_t d = 0; d < dim; d++) {
        __builtin_prefetch(ahead + d * ahead_step, 0, 3);
        float32x4_t lanes[4];
        if (fp16) {
            const float16_t *h = (const float16_t *)tile + d * LANES;
            const float16x8_t first = vld1q_f16(h), second = vld1q_f16(h + 8);
            lanes[0] = vcvt_f32_f16(vget_low_f16(first));
            lanes[1] = vcvt_high_f32_f16(first);
            lanes[2] = vcvt_f32_f16(vget_low_f16(second));
            lanes[3] = vcvt_high_f32_f16(second);
        } else {
            const float *f = (const float *)tile + d * LANES;
            for (int k = 0; k < 4; k++) lanes[k] = vld1q_f32(f + 4 * k);
        }
        const float *q = query_t + d * stride;
#pragma GCC unroll 8
        for (int r = 0; r < rows; r++) {
            for (int k = 0; k < 4; k++) acc[r][k] = vfmaq_n_f32(acc[r][k], lanes[k], q[r]);
        }
    }
    const int32_t index[4] = {0, 1, 2, 3};
    const int32x4_t lane = vld1q_s32(index);
#pragma GCC unroll 8
    for (int r = 0; r < rows; r++) {
        for (int k = 0; k < 4; k++) {
            float *out = best + r * LANES + 4 * k;
            const uint32x4_t keep = vcltq_s32(lane, vdupq_n_s32(valid - 4 * k));
            const float32x4_t current = vld1q_f32(out);
            vst1q_f32(out, vbslq_f32(keep, vmaxq_f32(current, acc[r][k]), current));
        }
    }
}

static void neon_block(int rows, int fp16, const float *query_t, int64_t stride, int64_t dim, const void *tile,
                       const char *ahead, int64_t ahead_step, int valid, float *best) {
    switch (rows) {
        ROWS_CASE(neon, 1)
        ROWS_CASE(neon, 2)
        ROWS_CASE(neon, 3)
        ROWS_CASE(neon, 4)
        ROWS_CASE(neon, 5)
        ROWS_CASE(neon, 6)
    }
}

static int neon_supported(void) { return 1; }

static const kernel_isa KERNELS[] = {
    {"neon", NEON_ROWS, 8, neon_block, neon_supported, NULL, NULL},
};
#define NUM_KERNELS 1

#else
static const kernel_isa KERNELS[] = {{NULL, 0, 0, NULL, NULL, NULL, NULL}};
#define NUM_KERNELS 0
#endif

/* Where tile t of page p's data lies PREFETCH_TILES tiles ahead: in page p, or in the next page scored (pages
 * lie anywhere in memory, where the hardware prefetchers start cold); `fallback` (already cached) past the last. */
static inline const char *tile_ahead(const char *data, int64_t element_size, int64_t tile_elements,
                                     const int64_t *starts, const int64_t *lengths, int64_t num_pages, int64_t p,
                                     int64_t t, const char *fallback) {
    const int64_t tiles = (lengths[p] + LANES - 1) / LANES, ahead = t + PREFETCH_TILES;
    if (ahead < tiles) return data + (starts[p] + ahead * tile_elements) * element_size;
    if (p + 1 < num_pages && ahead - tiles < (lengths[p + 1] + LANES - 1) / LANES) {
        return data + (starts[p + 1] + (ahead - tiles) * tile_elements) * element_size;
    }
    return fallback;
}

/* The query vectors split into `blocks` blocks of balanced size, block b's vectors [start, start + rows) packed
 * [D][rows] at packed + start * dim. */
static void pack_query(const float *query_t, int64_t vectors, int64_t dim, int64_t blocks, float *packed) {
    for (int64_t b = 0; b < blocks; b++) {
        const int64_t start = b * vectors / blocks, rows = (b + 1) * vectors / blocks - start;
        for (int64_t d = 0; d < dim; d++) {
            for (int64_t r = 0; r < rows; r++) packed[start * dim + d * rows + r] = query_t[d * vectors + start + r];
        }
    }
}

/* All query vectors against pages [0, num_pages): maxes[p * vectors + v]. Query vectors are split into blocks of
 * balanced size (25 vectors with 13 or 14 rows: 13 + 12; with 6 rows: 5 x 5, so each keeps enough independent FMAs in
 * flight), each packed [D][rows] into `packed` (vectors * dim floats); `best` holds vectors * 16 floats of running
 * maxima. */
static void score_pages(const kernel_isa *isa, const float *query_t, int64_t vectors, int64_t dim,
                        const void *panels, int fp16, const int64_t *offsets, const int64_t *lengths,
                        int64_t num_pages, float *maxes, float *packed, float *best) {
    const int64_t blocks = (vectors + isa->max_rows - 1) / isa->max_rows;
    const int64_t element_size = fp16 ? 2 : 4;
    const int64_t tile_bytes = dim * LANES * element_size;
    const int tile_outer = blocks <= isa->tile_outer_max_blocks;
    pack_query(query_t, vectors, dim, blocks, packed);
    for (int64_t p = 0; p < num_pages; p++) {
        const int64_t tiles = (lengths[p] + LANES - 1) / LANES;
        const int tail = (int)(lengths[p] - (tiles - 1) * LANES);
        const char *page = (const char *)panels + offsets[p] * element_size;
        for (int64_t i = 0; i < vectors * LANES; i++) best[i] = -INFINITY;
        for (int64_t outer = 0; outer < (tile_outer ? tiles : blocks); outer++) {
            for (int64_t inner = 0; inner < (tile_outer ? blocks : tiles); inner++) {
                const int64_t t = tile_outer ? outer : inner, b = tile_outer ? inner : outer;
                const int64_t start = b * vectors / blocks, rows = (b + 1) * vectors / blocks - start;
                const char *ahead = tile_ahead((const char *)panels, element_size, dim * LANES, offsets, lengths,
                                               num_pages, p, t, page);
                isa->block((int)rows, fp16, packed + start * dim, rows, dim, page + t * tile_bytes, ahead,
                           LANES * element_size, t + 1 == tiles ? tail : LANES, best + start * LANES);
            }
        }
        for (int64_t v = 0; v < vectors; v++) {
            float top = best[v * LANES];
            for (int lane = 1; lane < LANES; lane++) top = fmaxf(top, best[v * LANES + lane]);
            maxes[p * vectors + v] = top;
        }
    }
}

/* score_pages over pages stored row-major in fp16 (a shard as written: vector after vector, `dim` values each),
 * page p starting at row offsets[p]: each tile of 16 vectors is transposed into the panel layout in `tile`
 * (dim * 16 values, padding lanes zero; float32 where the kernel transposes in registers, else fp16 as stored)
 * once and used by every block while it sits in L1, so a memory-mapped shard is scored without a panel copy of the
 * corpus. */
static void score_rows(const kernel_isa *isa, const float *query_t, int64_t vectors, int64_t dim,
                       const uint16_t *rows, const int64_t *offsets, const int64_t *lengths, int64_t num_pages,
                       float *maxes, float *packed, float *best, float *tile) {
    const int64_t blocks = (vectors + isa->max_rows - 1) / isa->max_rows;
    const int in_registers = isa->tile_from_rows != NULL && dim % LANES == 0;
    uint16_t *tile16 = (uint16_t *)tile;
    pack_query(query_t, vectors, dim, blocks, packed);
    for (int64_t p = 0; p < num_pages; p++) {
        const int64_t tiles = (lengths[p] + LANES - 1) / LANES;
        const uint16_t *page = rows + offsets[p] * dim;
        for (int64_t i = 0; i < vectors * LANES; i++) best[i] = -INFINITY;
        for (int64_t t = 0; t < tiles; t++) {
            const int valid = (int)(t + 1 == tiles ? lengths[p] - t * LANES : LANES);
            /* Rows offsets[p] on are page p's: a page starts at element offsets[p] * dim. */
            const char *ahead = tile_ahead((const char *)rows, (int64_t)sizeof(uint16_t) * dim, LANES, offsets,
                                           lengths, num_pages, p, t, (const char *)page);
            if (in_registers) {
                isa->tile_from_rows(page + t * LANES * dim, dim, valid, tile);
            } else {
                for (int lane = 0; lane < LANES; lane++) {
                    const uint16_t *vector = page + (t * LANES + lane) * dim;
                    for (int64_t d = 0; d < dim; d++) tile16[d * LANES + lane] = lane < valid ? vector[d] : 0;
                }
            }
            for (int64_t b = 0; b < blocks; b++) {
                const int64_t start = b * vectors / blocks, count = (b + 1) * vectors / blocks - start;
                isa->block((int)count, !in_registers, packed + start * dim, count, dim, tile, ahead,
                           LANES * (int64_t)sizeof(uint16_t), valid, best + start * LANES);
            }
        }
        for (int64_t v = 0; v < vectors; v++) {
            float top = best[v * LANES];
            for (int lane = 1; lane < LANES; lane++) top = fmaxf(top, best[v * LANES + lane]);
            maxes[p * vectors + v] = top;
        }
    }
}

/* Every query vector against `count` vectors held as float32 panels (tiles of 16, [D][16] each, the last one
 * zero-padded): scores[v * count + i] = <q_v, x_i>, the running maxima of one tile being its dot products. The
 * approximate mode's query-centroid scores: a GEMM of a few rows, which BLAS runs far below this kernel's rate. */
static void dense_scores(const kernel_isa *isa, const float *query_t, int64_t vectors, int64_t dim,
                         const float *panels, int64_t count, float *scores, float *packed, float *best) {
    const int64_t blocks = (vectors + isa->max_rows - 1) / isa->max_rows;
    const int64_t tiles = (count + LANES - 1) / LANES, tile_floats = dim * LANES;
    pack_query(query_t, vectors, dim, blocks, packed);
    for (int64_t t = 0; t < tiles; t++) {
        const int valid = (int)(t + 1 == tiles ? count - t * LANES : LANES);
        const float *tile = panels + t * tile_floats;
        const char *ahead = (const char *)(t + PREFETCH_TILES < tiles ? tile + PREFETCH_TILES * tile_floats : tile);
        for (int64_t b = 0; b < blocks; b++) {
            const int64_t start = b * vectors / blocks, rows = (b + 1) * vectors / blocks - start;
            for (int64_t i = 0; i < rows * LANES; i++) best[start * LANES + i] = -INFINITY;
            isa->block((int)rows, 0, packed + start * dim, rows, dim, tile, ahead, LANES * (int64_t)sizeof(float),
                       valid, best + start * LANES);
            for (int64_t r = 0; r < rows; r++) {
                memcpy(scores + (start + r) * count + t * LANES, best + (start + r) * LANES, valid * sizeof(float));
            }
        }
    }
}

/* WARP-style scoring of residual-compressed pooled vectors (search_engine/residuals.py): for each query vector v,
 * the entries of its probed lists (whole blocks; padding entries have page -1) get their residual scores; per page
 * the maximum over its entries found, and delta[page] += maximum - imputed[v] for every page found. best and touched
 * (per page) are workspaces, best filled with -infinity by the caller (and left so). Returns 0, or -1 when an entry
 * names a page at or beyond num_pages. */
static int probed_residual_scores(const float *tables, int64_t code_bytes, const int64_t *centroids,
                                  const float *centroid_scores, const float *imputed, int64_t vectors, int64_t probe,
                                  const int64_t *offsets, const int32_t *pages, const uint8_t *residuals,
                                  int64_t num_pages, block_scores_fn block_scores, float *delta, float *best,
                                  int32_t *touched) {
    float scores[RESIDUAL_BLOCK];
    for (int64_t v = 0; v < vectors; v++) {
        const float *table = tables + v * code_bytes * 32;
        int64_t found = 0;
        for (int64_t j = 0; j < probe; j++) {
            const int64_t centroid = centroids[v * probe + j];
            const float base = centroid_scores[v * probe + j];
            for (int64_t first = offsets[centroid]; first < offsets[centroid + 1]; first += RESIDUAL_BLOCK) {
                block_scores(table, code_bytes, residuals + first * code_bytes, base, scores);
                for (int e = 0; e < RESIDUAL_BLOCK; e++) {
                    const int32_t page = pages[first + e];
                    if (page < 0) continue;
                    if (page >= num_pages) return -1;
                    /* Branch-free: whether an entry beats its page's best so far is a coin toss. */
                    const float current = best[page];
                    touched[found] = page;
                    found += current == -INFINITY;
                    best[page] = scores[e] > current ? scores[e] : current;
                }
            }
        }
        for (int64_t t = 0; t < found; t++) {
            delta[touched[t]] += best[touched[t]] - imputed[v];
            best[touched[t]] = -INFINITY;
        }
    }
    return 0;
}

#ifndef MAXSIM_KERNELS_ONLY
/* Names of the kernels this CPU runs, fastest first; `residual`: only those with a residual block function, then
 * "portable". */
static PyObject *supported_names(int residual) {
    PyObject *names = PyList_New(0);
    if (names == NULL) return NULL;
    for (int i = 0; i <= NUM_KERNELS; i++) {
        const int portable = i == NUM_KERNELS;
        if (portable ? !residual : !KERNELS[i].supported() || (residual && KERNELS[i].block_scores == NULL)) continue;
        PyObject *name = PyUnicode_FromString(portable ? "portable" : KERNELS[i].name);
        if (name == NULL || PyList_Append(names, name) < 0) {
            Py_XDECREF(name);
            Py_DECREF(names);
            return NULL;
        }
        Py_DECREF(name);
    }
    PyObject *result = PyList_AsTuple(names);
    Py_DECREF(names);
    return result;
}

static PyObject *kernel_kernels(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    return supported_names(0);
}

static PyObject *kernel_residual_kernels(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    return supported_names(1);
}

static PyObject *kernel_compiled(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    PyObject *names = PyTuple_New(NUM_KERNELS);
    if (names == NULL) return NULL;
    for (int i = 0; i < NUM_KERNELS; i++) {
        PyObject *name = PyUnicode_FromString(KERNELS[i].name);
        if (name == NULL) {
            Py_DECREF(names);
            return NULL;
        }
        PyTuple_SET_ITEM(names, i, name);
    }
    return names;
}

/* The named kernel if this CPU runs it, else NULL with ValueError; the empty name picks the best one. */
static const kernel_isa *find_kernel(const char *name) {
    for (int i = 0; i < NUM_KERNELS; i++) {
        if ((name[0] == '\0' || strcmp(name, KERNELS[i].name) == 0) && KERNELS[i].supported()) return &KERNELS[i];
    }
    if (name[0] == '\0') {
        PyErr_SetString(PyExc_RuntimeError, "no fused MaxSim kernel runs on this CPU");
    } else {
        PyErr_Format(PyExc_ValueError, "fused MaxSim kernel '%s' is not compiled in or this CPU cannot run it", name);
    }
    return NULL;
}

static PyObject *kernel_score_panels(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer query_t, panels, offsets, lengths, maxes;
    Py_ssize_t vectors, dim;
    int fp16;
    const char *name = "";
    if (!PyArg_ParseTuple(args, "y*nny*py*y*w*|s", &query_t, &vectors, &dim, &panels, &fp16, &offsets, &lengths,
                          &maxes, &name)) {
        return NULL;
    }
    PyObject *result = NULL;
    const Py_ssize_t element_size = fp16 ? 2 : 4;
    const Py_ssize_t num_pages = offsets.len / (Py_ssize_t)sizeof(int64_t);
    const kernel_isa *isa = find_kernel(name);
    if (isa == NULL) {
        /* error set */
    } else if (vectors < 1 || dim < 1 || query_t.len != vectors * dim * (Py_ssize_t)sizeof(float)) {
        PyErr_SetString(PyExc_ValueError, "query_t must hold vectors * dim float32 values");
    } else if (lengths.len != offsets.len || maxes.len != num_pages * vectors * (Py_ssize_t)sizeof(float)) {
        PyErr_SetString(PyExc_ValueError, "offsets, lengths and maxes disagree on the number of pages");
    } else {
        const int64_t *offset = (const int64_t *)offsets.buf;
        const int64_t *length = (const int64_t *)lengths.buf;
        const Py_ssize_t panel_elements = panels.len / element_size;
        for (Py_ssize_t p = 0; p < num_pages; p++) {
            const int64_t tiles = (length[p] + LANES - 1) / LANES;
            if (length[p] < 1 || offset[p] < 0 || offset[p] + tiles * LANES * dim > panel_elements) {
                PyErr_Format(PyExc_ValueError, "page %zd lies outside the panel buffer", p);
                break;
            }
        }
        if (!PyErr_Occurred()) {
            float *scratch = PyMem_RawMalloc((size_t)vectors * (LANES + dim) * sizeof(float));
            if (scratch == NULL) {
                PyErr_NoMemory();
            } else {
                Py_BEGIN_ALLOW_THREADS score_pages(isa, (const float *)query_t.buf, vectors, dim, panels.buf, fp16,
                                                   offset, length, num_pages, (float *)maxes.buf, scratch,
                                                   scratch + vectors * dim);
                Py_END_ALLOW_THREADS PyMem_RawFree(scratch);
                result = Py_None;
                Py_INCREF(result);
            }
        }
    }
    PyBuffer_Release(&query_t);
    PyBuffer_Release(&panels);
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&lengths);
    PyBuffer_Release(&maxes);
    return result;
}

static PyObject *kernel_score_rows(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer query_t, rows, offsets, lengths, maxes;
    Py_ssize_t vectors, dim;
    const char *name = "";
    if (!PyArg_ParseTuple(args, "y*nny*y*y*w*|s", &query_t, &vectors, &dim, &rows, &offsets, &lengths, &maxes,
                          &name)) {
        return NULL;
    }
    PyObject *result = NULL;
    const Py_ssize_t num_pages = offsets.len / (Py_ssize_t)sizeof(int64_t);
    const kernel_isa *isa = find_kernel(name);
    if (isa == NULL) {
        /* error set */
    } else if (vectors < 1 || dim < 1 || query_t.len != vectors * dim * (Py_ssize_t)sizeof(float)) {
        PyErr_SetString(PyExc_ValueError, "query_t must hold vectors * dim float32 values");
    } else if (lengths.len != offsets.len || maxes.len != num_pages * vectors * (Py_ssize_t)sizeof(float)) {
        PyErr_SetString(PyExc_ValueError, "offsets, lengths and maxes disagree on the number of pages");
    } else {
        const int64_t *offset = (const int64_t *)offsets.buf;
        const int64_t *length = (const int64_t *)lengths.buf;
        const Py_ssize_t num_rows = rows.len / (Py_ssize_t)(dim * sizeof(uint16_t));
        for (Py_ssize_t p = 0; p < num_pages; p++) {
            if (length[p] < 1 || offset[p] < 0 || offset[p] + length[p] > num_rows) {
                PyErr_Format(PyExc_ValueError, "page %zd lies outside the rows", p);
                break;
            }
        }
        if (!PyErr_Occurred()) {
            const size_t floats = (size_t)vectors * (LANES + dim);
            float *scratch = PyMem_RawMalloc((floats + (size_t)dim * LANES) * sizeof(float));
            if (scratch == NULL) {
                PyErr_NoMemory();
            } else {
                Py_BEGIN_ALLOW_THREADS score_rows(isa, (const float *)query_t.buf, vectors, dim,
                                                  (const uint16_t *)rows.buf, offset, length, num_pages,
                                                  (float *)maxes.buf, scratch, scratch + vectors * dim,
                                                  scratch + floats);
                Py_END_ALLOW_THREADS PyMem_RawFree(scratch);
                result = Py_None;
                Py_INCREF(result);
            }
        }
    }
    PyBuffer_Release(&query_t);
    PyBuffer_Release(&rows);
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&lengths);
    PyBuffer_Release(&maxes);
    return result;
}

static PyObject *kernel_dense_scores(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer query_t, panels, scores;
    Py_ssize_t vectors, dim, count;
    const char *name = "";
    if (!PyArg_ParseTuple(args, "y*nny*nw*|s", &query_t, &vectors, &dim, &panels, &count, &scores, &name)) {
        return NULL;
    }
    PyObject *result = NULL;
    const kernel_isa *isa = find_kernel(name);
    const Py_ssize_t tiles = count > 0 ? (count + LANES - 1) / LANES : 0;
    if (isa == NULL) {
        /* error set */
    } else if (vectors < 1 || dim < 1 || query_t.len != vectors * dim * (Py_ssize_t)sizeof(float)) {
        PyErr_SetString(PyExc_ValueError, "query_t must hold vectors * dim float32 values");
    } else if (count < 1 || panels.len != tiles * dim * LANES * (Py_ssize_t)sizeof(float)) {
        PyErr_SetString(PyExc_ValueError, "panels must hold ceil(count / 16) float32 tiles of dim x 16");
    } else if (scores.len != vectors * count * (Py_ssize_t)sizeof(float)) {
        PyErr_SetString(PyExc_ValueError, "scores must be float32 [vectors, count]");
    } else {
        float *scratch = PyMem_RawMalloc((size_t)vectors * (LANES + dim) * sizeof(float));
        if (scratch == NULL) {
            PyErr_NoMemory();
        } else {
            Py_BEGIN_ALLOW_THREADS dense_scores(isa, (const float *)query_t.buf, vectors, dim,
                                                (const float *)panels.buf, count, (float *)scores.buf, scratch,
                                                scratch + vectors * dim);
            Py_END_ALLOW_THREADS PyMem_RawFree(scratch);
            result = Py_None;
            Py_INCREF(result);
        }
    }
    PyBuffer_Release(&query_t);
    PyBuffer_Release(&panels);
    PyBuffer_Release(&scores);
    return result;
}

/* The residual block function of kernel `name` (one of residual_kernels(), or "": the first of them); NULL with an
 * error set for any other name. */
static block_scores_fn residual_block_scores(const char *name) {
    if (strcmp(name, "portable") == 0) return block_scores_generic;
    for (int i = 0; i < NUM_KERNELS; i++) {
        if (!KERNELS[i].supported() || KERNELS[i].block_scores == NULL) continue;
        if (name[0] == '\0' || strcmp(name, KERNELS[i].name) == 0) return KERNELS[i].block_scores;
    }
    if (name[0] == '\0') return block_scores_generic;
    PyErr_Format(PyExc_ValueError, "residual kernel '%s' is not compiled in or this CPU cannot run it", name);
    return NULL;
}

static PyObject *kernel_probed_residual_scores(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer tables, centroids, centroid_scores, imputed, offsets, pages, residuals, delta;
    const char *name = "";
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*y*w*|s", &tables, &centroids, &centroid_scores, &imputed, &offsets,
                          &pages, &residuals, &delta, &name)) {
        return NULL;
    }
    PyObject *result = NULL;
    block_scores_fn block_scores = residual_block_scores(name);
    const Py_ssize_t vectors = imputed.len / (Py_ssize_t)sizeof(float);
    const Py_ssize_t probe = vectors > 0 ? centroids.len / (vectors * (Py_ssize_t)sizeof(int64_t)) : 0;
    const Py_ssize_t code_bytes = vectors > 0 ? tables.len / (vectors * 32 * (Py_ssize_t)sizeof(float)) : 0;
    const Py_ssize_t lists = offsets.len / (Py_ssize_t)sizeof(int64_t) - 1;
    const Py_ssize_t entries = pages.len / (Py_ssize_t)sizeof(int32_t);
    const Py_ssize_t num_pages = delta.len / (Py_ssize_t)sizeof(float);
    const int64_t *offset = (const int64_t *)offsets.buf;
    const int64_t *centroid = (const int64_t *)centroids.buf;
    if (block_scores == NULL) {
        /* error set */
    } else if (vectors < 1 || probe < 1 || code_bytes < 1 || tables.len != vectors * code_bytes * 32 * (Py_ssize_t)sizeof(float) ||
        centroids.len != vectors * probe * (Py_ssize_t)sizeof(int64_t) ||
        centroid_scores.len != vectors * probe * (Py_ssize_t)sizeof(float)) {
        PyErr_SetString(PyExc_ValueError,
                        "tables [V, bytes, 2, 16] float32, centroids [V, probe] int64, centroid_scores [V, probe] "
                        "float32 and imputed [V] float32 disagree");
    } else if (lists < 1 || offset[0] != 0 || offset[lists] != entries ||
               residuals.len != entries * code_bytes) {
        PyErr_SetString(PyExc_ValueError, "offsets [K + 1] must run from 0 to the entries of pages and residuals");
    } else {
        for (Py_ssize_t i = 0; i < lists; i++) {
            if (offset[i] > offset[i + 1] || offset[i + 1] % RESIDUAL_BLOCK) {
                PyErr_SetString(PyExc_ValueError, "offsets must not decrease and must be whole blocks of 16");
                break;
            }
        }
        for (Py_ssize_t i = 0; !PyErr_Occurred() && i < vectors * probe; i++) {
            if (centroid[i] < 0 || centroid[i] >= lists) {
                PyErr_Format(PyExc_ValueError, "centroid %lld is outside the %zd lists", (long long)centroid[i], lists);
            }
        }
        if (!PyErr_Occurred()) {
            const size_t count = num_pages > 0 ? (size_t)num_pages : 1;
            float *best = PyMem_RawMalloc(count * (sizeof(float) + sizeof(int32_t)));
            if (best == NULL) {
                PyErr_NoMemory();
            } else {
                int32_t *touched = (int32_t *)(best + count);
                int status;
                for (size_t i = 0; i < count; i++) best[i] = -INFINITY;
                Py_BEGIN_ALLOW_THREADS status = probed_residual_scores(
                    (const float *)tables.buf, code_bytes, centroid, (const float *)centroid_scores.buf,
                    (const float *)imputed.buf, vectors, probe, offset, (const int32_t *)pages.buf,
                    (const uint8_t *)residuals.buf, num_pages, block_scores, (float *)delta.buf, best, touched);
                Py_END_ALLOW_THREADS PyMem_RawFree(best);
                if (status != 0) {
                    PyErr_SetString(PyExc_ValueError, "an entry names a page outside delta");
                } else {
                    result = Py_None;
                    Py_INCREF(result);
                }
            }
        }
    }
    PyBuffer_Release(&tables);
    PyBuffer_Release(&centroids);
    PyBuffer_Release(&centroid_scores);
    PyBuffer_Release(&imputed);
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&pages);
    PyBuffer_Release(&residuals);
    PyBuffer_Release(&delta);
    return result;
}

static PyObject *kernel_supported(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    for (int i = 0; i < NUM_KERNELS; i++) {
        if (KERNELS[i].supported()) Py_RETURN_TRUE;
    }
    Py_RETURN_FALSE;
}

static PyMethodDef kernel_methods[] = {
    {"supported", kernel_supported, METH_NOARGS, "Whether any compiled-in kernel runs on this CPU."},
    {"kernels", kernel_kernels, METH_NOARGS, "Names of the kernels this CPU runs, fastest first."},
    {"residual_kernels", kernel_residual_kernels, METH_NOARGS,
     "Names probed_residual_scores takes on this CPU, fastest first: the kernels with a residual block function, "
     "then 'portable'."},
    {"compiled", kernel_compiled, METH_NOARGS, "Names of the kernels compiled into this build."},
    {"score_panels", kernel_score_panels, METH_VARARGS,
     "score_panels(query_t, vectors, dim, panels, fp16, offsets, lengths, maxes, kernel=''): per page and query "
     "vector, the max dot product over the page's vectors. query_t: float32 [dim, vectors]; panels: float32 or "
     "float16 page panels; offsets, lengths: int64 per page (offset in elements); maxes: float32 [pages, vectors], "
     "written. kernel: a name from kernels() ('' = the first). Releases the GIL."},
    {"dense_scores", kernel_dense_scores, METH_VARARGS,
     "dense_scores(query_t, vectors, dim, panels, count, scores, kernel=''): every query vector's dot product with "
     "each of `count` vectors. query_t: float32 [dim, vectors]; panels: float32 [ceil(count / 16), dim, 16] (the "
     "vectors in tiles of 16, the last zero-padded); scores: float32 [vectors, count], written. Releases the GIL."},
    {"probed_residual_scores", kernel_probed_residual_scores, METH_VARARGS,
     "probed_residual_scores(tables, centroids, centroid_scores, imputed, offsets, pages, residuals, delta, "
     "kernel=''): "
     "WARP-style page scores from residual-compressed lists (search_engine/residuals.py). tables: float32 "
     "[V, bytes, 2, 16] nibble tables; centroids: int64 [V, probe] probed lists; centroid_scores: float32 "
     "[V, probe]; imputed: float32 [V]; offsets: int64 [K + 1], whole blocks of 16; pages: int32 [n] (-1: "
     "padding); residuals: uint8 [n / 16, bytes, 16]; delta: float32 "
     "[num_pages], added to (page maximum - imputed, per query vector, for the pages found); kernel: a name of "
     "residual_kernels(), '' for the first. Releases the GIL."},
    {"score_rows", kernel_score_rows, METH_VARARGS,
     "score_rows(query_t, vectors, dim, rows, offsets, lengths, maxes, kernel=''): score_panels for pages stored "
     "row-major as float16 [n, dim] (e.g. a memory-mapped shard); offsets and lengths in rows. Releases the GIL."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef kernel_module = {
    PyModuleDef_HEAD_INIT, "_kernel", "Fused MaxSim kernels (AVX-512, AVX2, NEON) over page panels.", -1,
    kernel_methods,
};

PyMODINIT_FUNC PyInit__kernel(void) { return PyModule_Create(&kernel_module); }
#endif
