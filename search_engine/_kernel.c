/*
 * Fused MaxSim kernel: for each page, the max over the page's vectors of <q_v, p_t> for every query vector v.
 *
 * Pages are stored as "panels": the page's T vectors in tiles of 16, each tile laid out [D][16] (16 consecutive
 * vectors' values of one dimension side by side), the last tile zero-padded. One AVX-512 register then holds one
 * dimension of 16 page vectors, and a block of up to MAX_ROWS query vectors is multiplied into MAX_ROWS
 * accumulators with broadcast FMAs, so a tile is read once per block straight from memory (software prefetch
 * two tiles ahead) and the products never leave the registers. Panels may be float32 or float16 (converted with
 * F16C on load; the values, and so the scores, are the same).
 *
 * Built as an optional extension: the AVX-512 code is compiled with a function-level target attribute and only
 * called when the CPU reports AVX-512F, F16C and FMA (`supported()`); everything else uses the torch path.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define LANES 16
#define MAX_ROWS 14
/* Tiles between the one being computed and the one being prefetched. */
#ifndef PREFETCH_TILES
#define PREFETCH_TILES 2
/* Up to this many query blocks, tiles are the outer loop (one read of each tile from memory); beyond, blocks. */
#define TILE_OUTER_MAX_BLOCKS 4
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_AVX512_PATH 1
#include <immintrin.h>

#define KERNEL_TARGET __attribute__((target("avx512f,f16c,fma")))

static inline __attribute__((always_inline)) KERNEL_TARGET __m512 load_lanes(const void *base, int64_t index,
                                                                               const int fp16) {
    if (fp16) {
        return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)base + index)));
    }
    return _mm512_loadu_ps((const float *)base + index);
}

/* Rows [0, rows) of the query block (query_t points at its first column; query_t[d * stride + r]) against one
 * tile of 16 page vectors; the lanes in `valid` update the running maxima best[r] (16 lanes each). */
static inline __attribute__((always_inline)) KERNEL_TARGET void block_tile(const int rows, const int fp16,
                                                                         const float *query_t, int64_t stride,
                                                                         int64_t dim, const void *tile,
                                                                         __mmask16 valid, float *best) {
    __m512 acc[MAX_ROWS];
    const int64_t element_size = fp16 ? 2 : 4;
    const char *ahead = (const char *)tile + PREFETCH_TILES * dim * LANES * element_size;
#pragma GCC unroll 16
    for (int r = 0; r < rows; r++) acc[r] = _mm512_setzero_ps();
    for (int64_t d = 0; d < dim; d++) {
        _mm_prefetch(ahead + d * LANES * element_size, _MM_HINT_T0);
        const __m512 lanes = load_lanes(tile, d * LANES, fp16);
        const float *q = query_t + d * stride;
#pragma GCC unroll 16
        for (int r = 0; r < rows; r++) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(q[r]), lanes, acc[r]);
    }
#pragma GCC unroll 16
    for (int r = 0; r < rows; r++) {
        const __m512 current = _mm512_loadu_ps(best + r * LANES);
        _mm512_storeu_ps(best + r * LANES, _mm512_mask_max_ps(current, valid, current, acc[r]));
    }
}

#define ROWS_CASE(n)                                                                                              \
    case n:                                                                                                       \
        if (fp16)                                                                                                 \
            block_tile(n, 1, query_t, stride, dim, tile, valid, best);                                            \
        else                                                                                                      \
            block_tile(n, 0, query_t, stride, dim, tile, valid, best);                                            \
        break;

static KERNEL_TARGET void block_dispatch(int rows, int fp16, const float *query_t, int64_t stride, int64_t dim,
                                         const void *tile, __mmask16 valid, float *best) {
    switch (rows) {
        ROWS_CASE(1)
        ROWS_CASE(2)
        ROWS_CASE(3)
        ROWS_CASE(4)
        ROWS_CASE(5)
        ROWS_CASE(6)
        ROWS_CASE(7)
        ROWS_CASE(8)
        ROWS_CASE(9)
        ROWS_CASE(10)
        ROWS_CASE(11)
        ROWS_CASE(12)
        ROWS_CASE(13)
        ROWS_CASE(14)
    }
}

/* All query vectors against pages [0, num_pages): maxes[p * vectors + v]. Query vectors are split into blocks of
 * balanced size (25 vectors: 13 + 12, so each keeps enough independent FMAs in flight), each packed [D][rows]
 * into `packed` (vectors * dim floats). With few blocks every tile is read from memory once and used by all blocks
 * while it sits in L1; with many (large batches) each block sweeps the whole page, which then sits in L2, while
 * the block's query values stay in L1. `best` holds vectors * 16 floats of running maxima. */
static KERNEL_TARGET void score_pages(const float *query_t, int64_t vectors, int64_t dim, const void *panels,
                                      int fp16, const int64_t *offsets, const int64_t *lengths, int64_t num_pages,
                                      float *maxes, float *packed, float *best) {
    const int64_t blocks = (vectors + MAX_ROWS - 1) / MAX_ROWS;
    const int64_t element_size = fp16 ? 2 : 4;
    for (int64_t b = 0; b < blocks; b++) {
        const int64_t start = b * vectors / blocks, rows = (b + 1) * vectors / blocks - start;
        for (int64_t d = 0; d < dim; d++) {
            for (int64_t r = 0; r < rows; r++) packed[start * dim + d * rows + r] = query_t[d * vectors + start + r];
        }
    }
    for (int64_t p = 0; p < num_pages; p++) {
        const int64_t tiles = (lengths[p] + LANES - 1) / LANES;
        const int tail = (int)(lengths[p] - (tiles - 1) * LANES);
        const char *page = (const char *)panels + offsets[p] * element_size;
        const int64_t tile_bytes = dim * LANES * element_size;
        const int tile_outer = blocks <= TILE_OUTER_MAX_BLOCKS;
        for (int64_t i = 0; i < vectors * LANES; i++) best[i] = -INFINITY;
        for (int64_t outer = 0; outer < (tile_outer ? tiles : blocks); outer++) {
            for (int64_t inner = 0; inner < (tile_outer ? blocks : tiles); inner++) {
                const int64_t t = tile_outer ? outer : inner, b = tile_outer ? inner : outer;
                const int64_t start = b * vectors / blocks, rows = (b + 1) * vectors / blocks - start;
                const __mmask16 valid = t + 1 == tiles ? (__mmask16)((1u << tail) - 1u) : (__mmask16)0xFFFF;
                block_dispatch((int)rows, fp16, packed + start * dim, rows, dim, page + t * tile_bytes, valid,
                               best + start * LANES);
            }
        }
        for (int64_t v = 0; v < vectors; v++) {
            maxes[p * vectors + v] = _mm512_reduce_max_ps(_mm512_loadu_ps(best + v * LANES));
        }
    }
}
#endif

static PyObject *kernel_supported(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
#ifdef HAVE_AVX512_PATH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) {
        Py_RETURN_TRUE;
    }
#endif
    Py_RETURN_FALSE;
}

static PyObject *kernel_score_panels(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer query_t, panels, offsets, lengths, maxes;
    Py_ssize_t vectors, dim;
    int fp16;
    if (!PyArg_ParseTuple(args, "y*nny*py*y*w*", &query_t, &vectors, &dim, &panels, &fp16, &offsets, &lengths,
                          &maxes)) {
        return NULL;
    }
    PyObject *result = NULL;
    const Py_ssize_t element_size = fp16 ? 2 : 4;
    const Py_ssize_t num_pages = offsets.len / (Py_ssize_t)sizeof(int64_t);
    if (vectors < 1 || dim < 1 || query_t.len != vectors * dim * (Py_ssize_t)sizeof(float)) {
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
#ifdef HAVE_AVX512_PATH
            float *scratch = PyMem_RawMalloc((size_t)vectors * (LANES + dim) * sizeof(float));
            if (scratch == NULL) {
                PyErr_NoMemory();
            } else {
                Py_BEGIN_ALLOW_THREADS score_pages((const float *)query_t.buf, vectors, dim, panels.buf, fp16,
                                                   offset, length, num_pages, (float *)maxes.buf, scratch,
                                                   scratch + vectors * dim);
                Py_END_ALLOW_THREADS PyMem_RawFree(scratch);
                result = Py_None;
                Py_INCREF(result);
            }
#else
            PyErr_SetString(PyExc_RuntimeError, "the fused MaxSim kernel is not available on this platform");
#endif
        }
    }
    PyBuffer_Release(&query_t);
    PyBuffer_Release(&panels);
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&lengths);
    PyBuffer_Release(&maxes);
    return result;
}

static PyMethodDef kernel_methods[] = {
    {"supported", kernel_supported, METH_NOARGS, "Whether this CPU can run the kernel (AVX-512F, FMA, F16C)."},
    {"score_panels", kernel_score_panels, METH_VARARGS,
     "score_panels(query_t, vectors, dim, panels, fp16, offsets, lengths, maxes): per page and query vector, "
     "the max dot product over the page's vectors. query_t: float32 [dim, vectors]; panels: float32 or float16 "
     "page panels; offsets, lengths: int64 per page (offset in elements); maxes: float32 [pages, vectors], "
     "written. Releases the GIL."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef kernel_module = {
    PyModuleDef_HEAD_INIT, "_kernel", "Fused AVX-512 MaxSim kernel over page panels.", -1, kernel_methods,
};

PyMODINIT_FUNC PyInit__kernel(void) { return PyModule_Create(&kernel_module); }
