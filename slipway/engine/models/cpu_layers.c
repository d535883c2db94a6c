/* The small operations between a layer's matrix products, fused, for bfloat16 on CPU.
 *
 *   rms_norm_bf16        out = x / rms(x) * weight
 *   add_rms_norm_bf16    residual += x (rounded to bfloat16, as an eager add rounds), then
 *                        out = residual / rms(residual) * weight
 *   rope_and_cache_bf16  rotate the queries and keys of a fused q|k|v row in place by each
 *                        token's position, and write its keys and values into their cache slots
 *   silu_and_mul_bf16    out = silu(gate) * up, from a fused gate|up row
 *
 * Eagerly, each of these is several PyTorch operators (a norm upcasts, reduces, scales and casts
 * back; rotary embeddings slice, negate, concatenate, multiply and add), and every operator is a
 * Python dispatch and an OpenMP fork and join. For the few rows of a decode step those costs, not
 * the arithmetic, are the time: on SmolLM2 the operators between the products took about as long
 * as the products themselves. Here each is one call and one pass over its rows, in float32
 * inside and rounded to bfloat16 once at the end (eager bfloat16 rounds after every operator, so
 * results agree to bfloat16 rounding, not bit for bit; float32 models never come here).
 *
 * Layouts: rows of `hidden` (or `inter`) bfloat16 values, contiguous; the KV cache is one
 * layer's [num_kv_heads, num_slots, head_dim] (num_slots = blocks * block_size, see
 * models/attention.py); rotary tables [max_positions, head_dim] in the rotate-half convention.
 * Work is split over rows with OpenMP only when there are enough of them to pay for waking the
 * other threads (a prompt chunk, not a decode step).
 */
#include <math.h>
#include <stdint.h>

#include "cpu_kernels.h"

#define PARALLEL_MIN_ELEMENTS 32768  /* as PyTorch's grain size: fewer run on the calling thread */

#if defined(__AVX512F__) && defined(__AVX512BF16__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#include <immintrin.h>
#define LAYERS_AVX512 1

static inline void store_bf16x16(uint16_t *dst, __m512 value) {
    _mm256_storeu_si256((__m256i *)dst, (__m256i)_mm512_cvtneps_pbh(value));
}

#endif

/* -- norms -------------------------------------------------------------------------------- */

/* One row: out = x * rsqrt(mean(x^2) + eps) * weight; when `residual` is given, x is first added
 * into it and the sum (rounded to bfloat16) is what gets normalised. */
static void norm_row(const uint16_t *x, uint16_t *residual, const uint16_t *weight, uint16_t *out,
                     int64_t hidden, float eps) {
    const uint16_t *source = x;
    float squares = 0.0f;
    int64_t d = 0;
#ifdef LAYERS_AVX512
    __m512 sum_vec = _mm512_setzero_ps();
    for (; d + 16 <= hidden; d += 16) {
        __m512 v = bf16x16_to_float(x + d);
        if (residual != NULL) {
            v = _mm512_add_ps(v, bf16x16_to_float(residual + d));
            store_bf16x16(residual + d, v);
            v = bf16x16_to_float(residual + d);  /* the rounded sum, as the eager path normalises it */
        }
        sum_vec = _mm512_fmadd_ps(v, v, sum_vec);
    }
    squares = _mm512_reduce_add_ps(sum_vec);
#endif
    for (; d < hidden; d++) {
        float v = bf16_to_float(x[d]);
        if (residual != NULL) {
            residual[d] = float_to_bf16(v + bf16_to_float(residual[d]));
            v = bf16_to_float(residual[d]);
        }
        squares += v * v;
    }
    if (residual != NULL) source = residual;
    const float scale = 1.0f / sqrtf(squares / (float)hidden + eps);
    d = 0;
#ifdef LAYERS_AVX512
    const __m512 scale_vec = _mm512_set1_ps(scale);
    for (; d + 16 <= hidden; d += 16)
        store_bf16x16(out + d, _mm512_mul_ps(_mm512_mul_ps(bf16x16_to_float(source + d), scale_vec),
                                             bf16x16_to_float(weight + d)));
#endif
    for (; d < hidden; d++) out[d] = float_to_bf16(bf16_to_float(source[d]) * scale * bf16_to_float(weight[d]));
}

void rms_norm_bf16(const uint16_t *x, const uint16_t *weight, uint16_t *out, int64_t rows, int64_t hidden,
                   float eps, int num_threads) {
    #pragma omp parallel for num_threads(num_threads) if (rows * hidden >= PARALLEL_MIN_ELEMENTS)
    for (int64_t r = 0; r < rows; r++) norm_row(x + r * hidden, NULL, weight, out + r * hidden, hidden, eps);
}

void add_rms_norm_bf16(const uint16_t *x, uint16_t *residual, const uint16_t *weight, uint16_t *out, int64_t rows,
                       int64_t hidden, float eps, int num_threads) {
    #pragma omp parallel for num_threads(num_threads) if (rows * hidden >= PARALLEL_MIN_ELEMENTS)
    for (int64_t r = 0; r < rows; r++)
        norm_row(x + r * hidden, residual + r * hidden, weight, out + r * hidden, hidden, eps);
}

/* -- rotary embeddings and the cache write ------------------------------------------------ */

/* One head of head_dim values in place: first half x1*cos - x2*sin, second half x2*cos + x1*sin. */
static void rotate_head(uint16_t *x, const uint16_t *cos, const uint16_t *sin, int64_t head_dim) {
    const int64_t half = head_dim / 2;
    int64_t d = 0;
#ifdef LAYERS_AVX512
    for (; d + 16 <= half; d += 16) {
        __m512 first = bf16x16_to_float(x + d), second = bf16x16_to_float(x + half + d);
        __m512 rotated_first = _mm512_fmsub_ps(first, bf16x16_to_float(cos + d),
                                               _mm512_mul_ps(second, bf16x16_to_float(sin + d)));
        __m512 rotated_second = _mm512_fmadd_ps(second, bf16x16_to_float(cos + half + d),
                                                _mm512_mul_ps(first, bf16x16_to_float(sin + half + d)));
        store_bf16x16(x + d, rotated_first);
        store_bf16x16(x + half + d, rotated_second);
    }
#endif
    for (; d < half; d++) {
        float first = bf16_to_float(x[d]), second = bf16_to_float(x[half + d]);
        x[d] = float_to_bf16(first * bf16_to_float(cos[d]) - second * bf16_to_float(sin[d]));
        x[half + d] = float_to_bf16(second * bf16_to_float(cos[half + d]) + first * bf16_to_float(sin[half + d]));
    }
}

/* qkv: [rows, (num_heads + 2 * num_kv_heads) * head_dim], queries then keys then values.
 * positions, slots: [rows]. Returns 0, or -1 for an odd head_dim (the caller stays eager). */
int rope_and_cache_bf16(uint16_t *qkv, int64_t rows, const int64_t *positions, const uint16_t *cos_table,
                        const uint16_t *sin_table, int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
                        uint16_t *k_cache, uint16_t *v_cache, const int64_t *slots, int64_t num_slots,
                        int num_threads) {
    if (head_dim % 2 != 0) return -1;
    const int64_t row_size = (num_heads + 2 * num_kv_heads) * head_dim;
    #pragma omp parallel for num_threads(num_threads) if (rows * row_size >= PARALLEL_MIN_ELEMENTS)
    for (int64_t r = 0; r < rows; r++) {
        uint16_t *row = qkv + r * row_size;
        const uint16_t *cos = cos_table + positions[r] * head_dim, *sin = sin_table + positions[r] * head_dim;
        for (int64_t head = 0; head < num_heads + num_kv_heads; head++) rotate_head(row + head * head_dim, cos, sin, head_dim);
        const uint16_t *keys = row + num_heads * head_dim, *values = keys + num_kv_heads * head_dim;
        for (int64_t kv_head = 0; kv_head < num_kv_heads; kv_head++) {
            int64_t offset = (kv_head * num_slots + slots[r]) * head_dim;
            memcpy(k_cache + offset, keys + kv_head * head_dim, head_dim * sizeof(uint16_t));
            memcpy(v_cache + offset, values + kv_head * head_dim, head_dim * sizeof(uint16_t));
        }
    }
    return 0;
}

/* -- the MLP's activation ----------------------------------------------------------------- */

/* gate_up: [rows, 2 * inter], gate then up; out: [rows, inter]. silu(g) = g * sigmoid(g). */
void silu_and_mul_bf16(const uint16_t *gate_up, uint16_t *out, int64_t rows, int64_t inter, int num_threads) {
    #pragma omp parallel for num_threads(num_threads) if (rows * inter >= PARALLEL_MIN_ELEMENTS)
    for (int64_t r = 0; r < rows; r++) {
        const uint16_t *gate = gate_up + r * 2 * inter, *up = gate + inter;
        uint16_t *dst = out + r * inter;
        int64_t j = 0;
#ifdef LAYERS_AVX512
        const __m512 one = _mm512_set1_ps(1.0f);
        for (; j + 16 <= inter; j += 16) {
            __m512 g = bf16x16_to_float(gate + j);
            /* sigmoid from e = exp(-|g|) <= 1, which never overflows: 1/(1+e) for g >= 0, e/(1+e) below. */
            __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(g)));
            __m512 inverse = _mm512_div_ps(one, _mm512_add_ps(one, e));
            __mmask16 negative = _mm512_cmp_ps_mask(g, _mm512_setzero_ps(), _CMP_LT_OQ);
            __m512 sigmoid = _mm512_mask_mul_ps(inverse, negative, inverse, e);
            store_bf16x16(dst + j, _mm512_mul_ps(_mm512_mul_ps(g, sigmoid), bf16x16_to_float(up + j)));
        }
#endif
        for (; j < inter; j++) {
            float g = bf16_to_float(gate[j]);
            dst[j] = float_to_bf16(g / (1.0f + expf(-g)) * bf16_to_float(up[j]));
        }
    }
}
