/*
 * Standalone check of the fused MaxSim kernels of search_engine/_kernel.c against a double-precision definition,
 * without Python: built for another architecture (aarch64: the NEON kernel) and run under an emulator by
 * tests/search/test_kernel.py where a cross compiler and qemu are installed. Prints one line per kernel and exits
 * non-zero on any mismatch.
 */
#define MAXSIM_KERNELS_ONLY
#include "../../search_engine/_kernel.c"

#include <stdio.h>
#include <stdlib.h>

static uint16_t to_half(float value) {
    /* Values here are multiples of 1/64 in [-2, 2]: exactly representable, so round-to-nearest is not needed. */
    union {
        float f;
        uint32_t u;
    } bits = {value};
    if (value == 0.0f) return (uint16_t)((bits.u >> 16) & 0x8000u);
    const uint32_t sign = (bits.u >> 16) & 0x8000u, exponent = ((bits.u >> 23) & 0xFFu) - 127 + 15;
    return (uint16_t)(sign | (exponent << 10) | ((bits.u >> 13) & 0x3FFu));
}

int main(void) {
    const int64_t dim = 40, lengths[] = {1, 15, 16, 17, 33, 100, 47};
    const int64_t num_pages = 7, sizes[] = {1, 6, 7, 13, 25, 40};
    int64_t offsets[7], total = 0;
    for (int p = 0; p < num_pages; p++) {
        offsets[p] = total;
        total += (lengths[p] + LANES - 1) / LANES * LANES * dim;
    }
    float *values = calloc((size_t)total, sizeof(float));
    uint16_t *halves = calloc((size_t)total, sizeof(uint16_t));
    float *pages[7];
    unsigned seed = 12345;
    for (int p = 0; p < num_pages; p++) {
        pages[p] = malloc((size_t)(lengths[p] * dim) * sizeof(float));
        for (int64_t t = 0; t < lengths[p]; t++) {
            for (int64_t d = 0; d < dim; d++) {
                seed = seed * 1103515245u + 12345u;
                const float v = (float)((int)((seed >> 16) % 257) - 128) / 64.0f;
                pages[p][t * dim + d] = v;
                const int64_t at = offsets[p] + (t / LANES) * dim * LANES + d * LANES + t % LANES;
                values[at] = v;
                halves[at] = to_half(v);
            }
        }
    }
    int failures = 0;
    for (int k = 0; k < NUM_KERNELS; k++) {
        if (!KERNELS[k].supported()) continue;
        double worst = 0.0;
        for (int s = 0; s < 6; s++) {
            const int64_t vectors = sizes[s];
            float *query_t = malloc((size_t)(vectors * dim) * sizeof(float));
            for (int64_t i = 0; i < vectors * dim; i++) {
                seed = seed * 1103515245u + 12345u;
                query_t[i] = (float)((int)((seed >> 16) % 257) - 128) / 64.0f;
            }
            float *maxes = malloc((size_t)(num_pages * vectors) * sizeof(float));
            float *scratch = malloc((size_t)(vectors * (LANES + dim)) * sizeof(float));
            for (int fp16 = 0; fp16 < 2; fp16++) {
                score_pages(&KERNELS[k], query_t, vectors, dim, fp16 ? (const void *)halves : (const void *)values,
                            fp16, offsets, lengths, num_pages, maxes, scratch, scratch + vectors * dim);
                for (int p = 0; p < num_pages; p++) {
                    for (int64_t v = 0; v < vectors; v++) {
                        double best = -INFINITY;
                        for (int64_t t = 0; t < lengths[p]; t++) {
                            double dot = 0.0;
                            for (int64_t d = 0; d < dim; d++) dot += (double)query_t[d * vectors + v] * pages[p][t * dim + d];
                            if (dot > best) best = dot;
                        }
                        const double error = fabs(best - maxes[p * vectors + v]);
                        if (error > worst) worst = error;
                    }
                }
            }
            free(query_t);
            free(maxes);
            free(scratch);
        }
        printf("%s max_abs_error %.3g\n", KERNELS[k].name, worst);
        if (worst > 1e-4) failures++;
    }
    return failures;
}
