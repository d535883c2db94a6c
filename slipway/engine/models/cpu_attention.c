/* Attention over the paged KV cache on CPU, reading the cache in place. Two entry points:
 *
 *   paged_attention_queries   a few queries per sequence (decodes, speculative drafts), many sequences
 *   paged_prefill_attention   one sequence's prompt chunk (further below)
 *
 * PyTorch has no op that attends over blocks scattered through a cache: the eager path first
 * copies each sequence's blocks into one tensor (index_select) and then runs SDPA over the copy,
 * so every cached byte is read, written and read again. At long contexts a decode step is then
 * mostly memory traffic. These kernels walk each sequence's block table and read every key and
 * value once, with an online softmax (running max and sum, rescaling the accumulator), so nothing
 * the size of the context is ever materialised.
 *
 * paged_attention_queries, layouts (all contiguous, row-major):
 *   q            float32 [num_tokens, num_heads, head_dim], already multiplied by 1/sqrt(head_dim)
 *   k/v cache    [num_kv_heads, num_blocks, block_size, head_dim], bfloat16 (uint16 bits) or float32
 *   block_tables int64   [num_seqs, max_blocks]
 *   query_starts int64   [num_seqs + 1]: the queries of sequence s are rows
 *                        query_starts[s] .. query_starts[s+1]-1 of q, its last tokens in order
 *   context_lens int64   [num_seqs]: tokens of sequence s in the cache, this step's included
 *   out          [num_tokens, num_heads, head_dim], the cache's dtype
 * Query i of n (0-based) of a sequence sits at position context_len - n + i and attends to
 * keys 0 .. context_len - n + i: causal, so decodes and speculative verification both fit.
 * The query heads that share a KV head (grouped-query attention) are handled together, so each
 * key and value row is converted once for all of them.
 *
 * Built at run time by cpu_attention.py with the machine's C compiler (-O3 -march=native), and
 * parallel over (sequence, KV head, query) with OpenMP: the same libgomp runtime PyTorch loaded,
 * so both share one pool of threads, and as many threads as PyTorch's (num_threads, passed in:
 * a replica sized for 2 CPUs on a 64-core machine must not attend on 64).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "cpu_kernels.h"

#define MAX_GROUP 16    /* query heads per KV head */
#define MAX_HEAD_DIM 256
#define CHUNK 32        /* keys scored at once between two softmax updates */
#define PREFETCH_BLOCKS 1  /* how many blocks ahead of the one being attended keys and values are fetched */

/* One row of head_dim values of the cache, as float32. */
static inline void load_row(const void *cache, int is_bf16, int64_t offset, int head_dim, float *row) {
    if (is_bf16) {
        const uint16_t *src = (const uint16_t *)cache + offset;
        for (int d = 0; d < head_dim; d++) row[d] = bf16_to_float(src[d]);
    } else {
        const float *src = (const float *)cache + offset;
        for (int d = 0; d < head_dim; d++) row[d] = src[d];
    }
}

static void attend_one(const float *q, const void *k_cache, const void *v_cache, int is_bf16,
                       const int64_t *block_table, int64_t num_keys, int64_t kv_head,
                       int64_t num_blocks, int block_size, int group, int head_dim, void *out) {
    float acc[MAX_GROUP][MAX_HEAD_DIM];
    float running_max[MAX_GROUP], running_sum[MAX_GROUP];
    float scores[MAX_GROUP][CHUNK];
    float key[MAX_HEAD_DIM], value[MAX_HEAD_DIM];
    for (int g = 0; g < group; g++) {
        running_max[g] = -INFINITY;
        running_sum[g] = 0.0f;
        for (int d = 0; d < head_dim; d++) acc[g][d] = 0.0f;
    }
    const int64_t head_base = kv_head * num_blocks * block_size * head_dim;
    for (int64_t first = 0; first < num_keys; first += CHUNK) {
        int count = (int)(num_keys - first < CHUNK ? num_keys - first : CHUNK);
        for (int t = 0; t < count; t++) {
            int64_t position = first + t;
            int64_t row = block_table[position / block_size] * block_size + position % block_size;
            load_row(k_cache, is_bf16, head_base + row * head_dim, head_dim, key);
            for (int g = 0; g < group; g++) {
                const float *qg = q + (int64_t)g * head_dim;
                float dot = 0.0f;
                for (int d = 0; d < head_dim; d++) dot += qg[d] * key[d];
                scores[g][t] = dot;
            }
        }
        for (int g = 0; g < group; g++) {
            float chunk_max = running_max[g];
            for (int t = 0; t < count; t++) chunk_max = scores[g][t] > chunk_max ? scores[g][t] : chunk_max;
            float rescale = expf(running_max[g] - chunk_max);
            running_max[g] = chunk_max;
            running_sum[g] *= rescale;
            for (int d = 0; d < head_dim; d++) acc[g][d] *= rescale;
            float sum = 0.0f;
            for (int t = 0; t < count; t++) {
                float p = expf(scores[g][t] - chunk_max);
                scores[g][t] = p;
                sum += p;
            }
            running_sum[g] += sum;
        }
        for (int t = 0; t < count; t++) {
            int64_t position = first + t;
            int64_t row = block_table[position / block_size] * block_size + position % block_size;
            load_row(v_cache, is_bf16, head_base + row * head_dim, head_dim, value);
            for (int g = 0; g < group; g++) {
                float p = scores[g][t];
                for (int d = 0; d < head_dim; d++) acc[g][d] += p * value[d];
            }
        }
    }
    for (int g = 0; g < group; g++) {
        float inverse = running_sum[g] > 0.0f ? 1.0f / running_sum[g] : 0.0f;
        if (is_bf16) {
            uint16_t *dst = (uint16_t *)out + (int64_t)g * head_dim;
            for (int d = 0; d < head_dim; d++) dst[d] = float_to_bf16(acc[g][d] * inverse);
        } else {
            float *dst = (float *)out + (int64_t)g * head_dim;
            for (int d = 0; d < head_dim; d++) dst[d] = acc[g][d] * inverse;
        }
    }
}

#if defined(__AVX512F__) && defined(__AVX512BF16__)
#include <immintrin.h>
#define HAVE_AVX512_BF16 1

/* The bfloat16 cache with AVX-512: q . k with vdpbf16ps straight on the cached bits (the query,
 * scaled by a power of two, is exact in bfloat16; products are exact in float32 and summed in
 * float32), values converted to float32 and accumulated in float32. head_dim % 32 == 0.
 * Always inlined into callers that pass constant group and head_dim, so that the accumulators
 * live in registers for the common shapes. */
static inline __attribute__((always_inline)) void
attend_one_bf16_avx512(const float *q, const uint16_t *k_cache, const uint16_t *v_cache,
                       const int64_t *block_table, int64_t num_keys, int64_t kv_head, int64_t num_blocks,
                       const int block_size, const int group, const int head_dim, uint16_t *out) {
    const int pairs = head_dim / 32, vecs = head_dim / 16;
    __m512bh qb[MAX_GROUP][MAX_HEAD_DIM / 32];
    __m512 acc[MAX_GROUP][MAX_HEAD_DIM / 16];
    float running_max[MAX_GROUP], running_sum[MAX_GROUP];
    float scores[MAX_GROUP][16] __attribute__((aligned(64)));
    for (int g = 0; g < group; g++) {
        for (int j = 0; j < pairs; j++) {
            const float *src = q + (int64_t)g * head_dim + j * 32;
            qb[g][j] = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + 16), _mm512_loadu_ps(src));
        }
        for (int j = 0; j < vecs; j++) acc[g][j] = _mm512_setzero_ps();
        running_max[g] = -INFINITY;
        running_sum[g] = 0.0f;
    }
    const int64_t block_stride = (int64_t)block_size * head_dim;
    const uint16_t *k_head = k_cache + kv_head * num_blocks * block_stride;
    const uint16_t *v_head = v_cache + kv_head * num_blocks * block_stride;
    for (int64_t block_start = 0; block_start < num_keys; block_start += block_size) {
        const int64_t block = block_table[block_start / block_size];
        const int64_t in_block = num_keys - block_start < block_size ? num_keys - block_start : block_size;
        const uint16_t *k_block = k_head + block * block_stride, *v_block = v_head + block * block_stride;
        if (block_start + PREFETCH_BLOCKS * block_size < num_keys) {
            /* Blocks lie wherever the pool had room: ask for the keys and values of a block a
             * little ahead now, so that its reads overlap this block's arithmetic instead of
             * following it. */
            const int64_t ahead = block_start + PREFETCH_BLOCKS * block_size;
            const int64_t next = block_table[ahead / block_size];
            const int64_t next_keys = num_keys - ahead < block_size ? num_keys - ahead : block_size;
            const char *next_k = (const char *)(k_head + next * block_stride);
            const char *next_v = (const char *)(v_head + next * block_stride);
            for (int64_t offset = 0; offset < next_keys * head_dim * 2; offset += 64) {
                _mm_prefetch(next_k + offset, _MM_HINT_T0);
                _mm_prefetch(next_v + offset, _MM_HINT_T0);
            }
        }
        for (int first = 0; first < in_block; first += 16) {
            const int count = in_block - first < 16 ? (int)(in_block - first) : 16;
            const __mmask16 valid = (__mmask16)((1u << count) - 1u);
            for (int t = 0; t < count; t++) {
                const uint16_t *key = k_block + (int64_t)(first + t) * head_dim;
                for (int g = 0; g < group; g++) {
                    __m512 dot = _mm512_setzero_ps();
                    for (int j = 0; j < pairs; j++)
                        dot = _mm512_dpbf16_ps(dot, qb[g][j], (__m512bh)_mm512_loadu_si512(key + j * 32));
                    scores[g][t] = _mm512_reduce_add_ps(dot);
                }
            }
            for (int g = 0; g < group; g++) {
                __m512 s = _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), valid, scores[g]);
                float chunk_max = _mm512_reduce_max_ps(s);
                float new_max = chunk_max > running_max[g] ? chunk_max : running_max[g];
                float rescale = expf(running_max[g] - new_max);
                running_max[g] = new_max;
                __m512 p = _mm512_maskz_mov_ps(valid, exp_nonpositive(_mm512_sub_ps(s, _mm512_set1_ps(new_max))));
                running_sum[g] = running_sum[g] * rescale + _mm512_reduce_add_ps(p);
                __m512 r = _mm512_set1_ps(rescale);
                for (int j = 0; j < vecs; j++) acc[g][j] = _mm512_mul_ps(acc[g][j], r);
                _mm512_store_ps(scores[g], p);
            }
            for (int t = 0; t < count; t++) {
                const uint16_t *value = v_block + (int64_t)(first + t) * head_dim;
                __m512 v[MAX_HEAD_DIM / 16];
                for (int j = 0; j < vecs; j++) v[j] = bf16x16_to_float(value + j * 16);
                for (int g = 0; g < group; g++) {
                    __m512 p = _mm512_set1_ps(scores[g][t]);
                    for (int j = 0; j < vecs; j++) acc[g][j] = _mm512_fmadd_ps(p, v[j], acc[g][j]);
                }
            }
        }
    }
    for (int g = 0; g < group; g++) {
        float inverse = running_sum[g] > 0.0f ? 1.0f / running_sum[g] : 0.0f;
        float row[MAX_HEAD_DIM] __attribute__((aligned(64)));
        for (int j = 0; j < vecs; j++) _mm512_store_ps(row + j * 16, _mm512_mul_ps(acc[g][j], _mm512_set1_ps(inverse)));
        for (int d = 0; d < head_dim; d++) out[(int64_t)g * head_dim + d] = float_to_bf16(row[d]);
    }
}

/* Specialised copies for the shapes of common models (query heads per KV head, head_dim). */
#define SHAPE_CASE(G, D) \
    if (group == G && head_dim == D) { \
        attend_one_bf16_avx512(q, k_cache, v_cache, block_table, num_keys, kv_head, num_blocks, block_size, \
                               G, D, out); \
        return; \
    }

static void attend_one_bf16(const float *q, const uint16_t *k_cache, const uint16_t *v_cache,
                            const int64_t *block_table, int64_t num_keys, int64_t kv_head, int64_t num_blocks,
                            int block_size, int group, int head_dim, uint16_t *out) {
    SHAPE_CASE(1, 64) SHAPE_CASE(2, 64) SHAPE_CASE(3, 64) SHAPE_CASE(4, 64) SHAPE_CASE(7, 64) SHAPE_CASE(8, 64)
    SHAPE_CASE(1, 128) SHAPE_CASE(2, 128) SHAPE_CASE(4, 128) SHAPE_CASE(6, 128) SHAPE_CASE(7, 128) SHAPE_CASE(8, 128)
    SHAPE_CASE(1, 32) SHAPE_CASE(2, 32) SHAPE_CASE(4, 32)
    attend_one_bf16_avx512(q, k_cache, v_cache, block_table, num_keys, kv_head, num_blocks, block_size, group,
                           head_dim, out);
}
#endif

/* Returns 0, or -1 when the shapes exceed what the kernel was built for (the caller falls back). */
int paged_attention_queries(const float *q, const void *k_cache, const void *v_cache, int is_bf16,
                            const int64_t *block_tables, const int64_t *query_starts,
                            const int64_t *context_lens, void *out, int64_t num_seqs,
                            int64_t max_blocks, int64_t num_heads, int64_t num_kv_heads,
                            int64_t num_blocks, int64_t block_size, int64_t head_dim, int num_threads) {
    if (num_kv_heads <= 0 || num_heads % num_kv_heads != 0) return -1;
    const int group = (int)(num_heads / num_kv_heads);
    if (group > MAX_GROUP || head_dim > MAX_HEAD_DIM) return -1;
    const int64_t num_tokens = query_starts[num_seqs];
    const int64_t element = is_bf16 ? 2 : 4;
    /* One work item per (query token, KV head); a token knows its sequence by search. */
    #pragma omp parallel for num_threads(num_threads) schedule(dynamic, 1)
    for (int64_t item = 0; item < num_tokens * num_kv_heads; item++) {
        int64_t token = item / num_kv_heads, kv_head = item % num_kv_heads;
        int64_t seq = 0;
        while (query_starts[seq + 1] <= token) seq++;
        int64_t num_queries = query_starts[seq + 1] - query_starts[seq];
        int64_t index = token - query_starts[seq];
        int64_t num_keys = context_lens[seq] - num_queries + index + 1;
        int64_t first_head = kv_head * group;
#ifdef HAVE_AVX512_BF16
        if (is_bf16 && head_dim % 32 == 0) {
            attend_one_bf16(q + (token * num_heads + first_head) * head_dim, (const uint16_t *)k_cache,
                            (const uint16_t *)v_cache, block_tables + seq * max_blocks, num_keys, kv_head,
                            num_blocks, (int)block_size, group, (int)head_dim,
                            (uint16_t *)out + (token * num_heads + first_head) * head_dim);
            continue;
        }
#endif
        attend_one(q + (token * num_heads + first_head) * head_dim, k_cache, v_cache, is_bf16,
                   block_tables + seq * max_blocks, num_keys, kv_head, num_blocks, (int)block_size,
                   group, (int)head_dim,
                   (char *)out + (token * num_heads + first_head) * head_dim * element);
    }
    return 0;
}

/* -- prefill chunks: many queries of one sequence ---------------------------------------------
 *
 * A chunk of T new tokens (positions past .. past+T-1) attends over the sequence's first past+T
 * cached tokens, causally. This is a flash-attention loop written as small matrix products on
 * vdpbf16ps: the keys and values of each KV head are first packed (once per call, into
 * `scratch`) so that a pair of head_dim entries of 16 keys fills one register, then each work
 * item, a tile of rows (query tokens x the query heads of one KV head), walks the keys 16 at a
 * time: scores for all its rows, an online-softmax update, probabilities rounded to bfloat16
 * (as PyTorch's own CPU flash attention does), and the probabilities times the packed values.
 *
 *   scratch   uint16 [num_kv_heads, 2, padded_keys, head_dim], padded_keys = past+T rounded up to 16
 *   q, out    bfloat16 [T, num_heads, head_dim]; q unscaled (scale is applied to the scores)
 * Needs AVX-512 BF16 and head_dim % 32 == 0; returns -1 otherwise (PyTorch then attends). */
#define TILE_ROWS 12

#ifdef HAVE_AVX512_BF16
/* Keys of one group of 16 as [head_dim / 2][16 keys][2], values as [8 key pairs][head_dim][2]. */
static void pack_key_group(const uint16_t *k_head, const uint16_t *v_head, const int64_t *block_table,
                           int64_t first_key, int64_t num_keys, int block_size, int head_dim,
                           uint16_t *k_packed, uint16_t *v_packed) {
    const int64_t block_stride = (int64_t)block_size * head_dim;
    const uint16_t *k_rows[16], *v_rows[16];
    for (int n = 0; n < 16; n++) {
        int64_t key = first_key + n;
        if (key < num_keys) {
            int64_t offset = block_table[key / block_size] * block_stride + (key % block_size) * head_dim;
            k_rows[n] = k_head + offset;
            v_rows[n] = v_head + offset;
        } else {
            k_rows[n] = v_rows[n] = NULL;  /* beyond the context: packed as zeros */
        }
    }
    for (int pair = 0; pair < head_dim / 2; pair++)
        for (int n = 0; n < 16; n++) {
            uint16_t *dst = k_packed + ((int64_t)pair * 16 + n) * 2;
            dst[0] = k_rows[n] ? k_rows[n][2 * pair] : 0;
            dst[1] = k_rows[n] ? k_rows[n][2 * pair + 1] : 0;
        }
    for (int pair = 0; pair < 8; pair++)
        for (int d = 0; d < head_dim; d++) {
            uint16_t *dst = v_packed + ((int64_t)pair * head_dim + d) * 2;
            dst[0] = v_rows[2 * pair] ? v_rows[2 * pair][d] : 0;
            dst[1] = v_rows[2 * pair + 1] ? v_rows[2 * pair + 1][d] : 0;
        }
}

static void prefill_tile(const uint16_t *q, const uint16_t *k_packed, const uint16_t *v_packed, int64_t past,
                         int64_t first_token, int tile_tokens, int group, int64_t kv_head, int64_t num_heads,
                         int head_dim, float scale, uint16_t *out) {
    const int rows = tile_tokens * group;
    const int pairs = head_dim / 2, chunks = head_dim / 16;
    const uint32_t *q_rows[TILE_ROWS];
    int64_t row_position[TILE_ROWS];
    for (int r = 0; r < TILE_ROWS; r++) {
        int used = r < rows ? r : rows - 1;  /* padding rows repeat the last real one */
        int64_t token = first_token + used / group, head = kv_head * group + used % group;
        q_rows[r] = (const uint32_t *)(q + (token * num_heads + head) * head_dim);
        row_position[r] = past + token;
    }
    float running_max[16];
    __m512 sums[TILE_ROWS];
    float acc[TILE_ROWS][MAX_HEAD_DIM] __attribute__((aligned(64)));
    uint16_t probs[TILE_ROWS][16] __attribute__((aligned(64)));
    for (int r = 0; r < TILE_ROWS; r++) {
        running_max[r] = -INFINITY;
        sums[r] = _mm512_setzero_ps();
        for (int d = 0; d < head_dim; d++) acc[r][d] = 0.0f;
    }
    const int64_t last_position = row_position[TILE_ROWS - 1] > row_position[0] ? row_position[TILE_ROWS - 1]
                                                                               : row_position[0];
    const __m512 scale_vec = _mm512_set1_ps(scale);
    for (int64_t first_key = 0; first_key <= last_position; first_key += 16) {
        const uint16_t *kg = k_packed + first_key * head_dim;  /* this group's packed keys */
        const uint16_t *vg = v_packed + first_key * head_dim;
        __m512 s[TILE_ROWS];
        for (int r = 0; r < TILE_ROWS; r++) s[r] = _mm512_setzero_ps();
        for (int pair = 0; pair < pairs; pair++) {
            __m512bh keys = (__m512bh)_mm512_loadu_si512(kg + (int64_t)pair * 32);
            for (int r = 0; r < TILE_ROWS; r++)
                s[r] = _mm512_dpbf16_ps(s[r], (__m512bh)_mm512_set1_epi32((int)q_rows[r][pair]), keys);
        }
        /* Row maxima, then every row's new running max and rescale factor at once (one vector). */
        float group_max[16] __attribute__((aligned(64)));
        __mmask16 valid[TILE_ROWS];
        for (int r = 0; r < TILE_ROWS; r++) {
            int64_t limit = row_position[r] - first_key + 1;  /* keys of this group the row may see */
            valid[r] = limit >= 16 ? (__mmask16)0xFFFF : limit <= 0 ? (__mmask16)0 : (__mmask16)((1u << limit) - 1u);
            s[r] = _mm512_mask_mul_ps(_mm512_set1_ps(-INFINITY), valid[r], s[r], scale_vec);
            group_max[r] = _mm512_reduce_max_ps(s[r]);
        }
        const __mmask16 row_lanes = (__mmask16)((1u << TILE_ROWS) - 1u);
        __m512 old_max = _mm512_maskz_loadu_ps(row_lanes, running_max);
        __m512 new_max = _mm512_max_ps(old_max, _mm512_maskz_load_ps(row_lanes, group_max));
        __m512 alpha_vec = exp_nonpositive(_mm512_sub_ps(old_max, new_max));  /* -inf - x: 0 */
        float alpha[16] __attribute__((aligned(64)));
        _mm512_store_ps(alpha, alpha_vec);
        _mm512_mask_storeu_ps(running_max, row_lanes, new_max);
        for (int r = 0; r < TILE_ROWS; r++) {
            __m512 shifted = _mm512_sub_ps(s[r], _mm512_set1_ps(running_max[r]));
            __m512 p = _mm512_maskz_mov_ps(valid[r], exp_nonpositive(shifted));
            __m256bh rounded = _mm512_cvtneps_pbh(p);
            _mm256_store_si256((__m256i *)probs[r], (__m256i)rounded);
            /* Sums per lane of what is multiplied (the rounded probabilities), reduced at the end. */
            sums[r] = _mm512_fmadd_ps(sums[r], _mm512_set1_ps(alpha[r]), _mm512_cvtpbh_ps(rounded));
        }
        for (int c = 0; c < chunks; c++) {
            __m512 o[TILE_ROWS];
            for (int r = 0; r < TILE_ROWS; r++)
                o[r] = _mm512_mul_ps(_mm512_load_ps(acc[r] + c * 16), _mm512_set1_ps(alpha[r]));
            for (int pair = 0; pair < 8; pair++) {
                __m512bh values = (__m512bh)_mm512_loadu_si512(vg + ((int64_t)pair * head_dim + c * 16) * 2);
                for (int r = 0; r < TILE_ROWS; r++)
                    o[r] = _mm512_dpbf16_ps(o[r], (__m512bh)_mm512_set1_epi32(((const int *)probs[r])[pair]), values);
            }
            for (int r = 0; r < TILE_ROWS; r++) _mm512_store_ps(acc[r] + c * 16, o[r]);
        }
    }
    for (int r = 0; r < rows; r++) {
        int64_t token = first_token + r / group, head = kv_head * group + r % group;
        uint16_t *dst = out + (token * num_heads + head) * head_dim;
        float total = _mm512_reduce_add_ps(sums[r]);
        float inverse = total > 0.0f ? 1.0f / total : 0.0f;
        for (int d = 0; d < head_dim; d++) dst[d] = float_to_bf16(acc[r][d] * inverse);
    }
}
#endif

int paged_prefill_attention(const uint16_t *q, const uint16_t *k_cache, const uint16_t *v_cache,
                            const int64_t *block_table, int64_t past, int64_t num_tokens, float scale,
                            uint16_t *out, int64_t num_heads, int64_t num_kv_heads, int64_t num_blocks,
                            int64_t block_size, int64_t head_dim, uint16_t *scratch, int num_threads) {
#ifdef HAVE_AVX512_BF16
    if (num_kv_heads <= 0 || num_heads % num_kv_heads != 0 || head_dim % 32 != 0 || head_dim > MAX_HEAD_DIM)
        return -1;
    const int group = (int)(num_heads / num_kv_heads);
    if (group > TILE_ROWS) return -1;
    const int tile_tokens = TILE_ROWS / group;
    const int64_t num_keys = past + num_tokens;
    const int64_t padded_keys = (num_keys + 15) / 16 * 16, groups = padded_keys / 16;
    const int64_t head_stride = num_blocks * block_size * head_dim;
    #pragma omp parallel num_threads(num_threads)
    {
        #pragma omp for schedule(static)
        for (int64_t item = 0; item < num_kv_heads * groups; item++) {
            int64_t kv_head = item / groups, key_group = item % groups;
            uint16_t *k_packed = scratch + (kv_head * 2) * padded_keys * head_dim;
            uint16_t *v_packed = k_packed + padded_keys * head_dim;
            pack_key_group(k_cache + kv_head * head_stride, v_cache + kv_head * head_stride, block_table,
                           key_group * 16, num_keys, (int)block_size, (int)head_dim,
                           k_packed + key_group * 16 * head_dim, v_packed + key_group * 16 * head_dim);
        }
        const int64_t tiles = (num_tokens + tile_tokens - 1) / tile_tokens;
        /* Later tiles see more keys: hand them out first so the threads finish together. */
        #pragma omp for schedule(dynamic, 1)
        for (int64_t item = 0; item < num_kv_heads * tiles; item++) {
            int64_t kv_head = item % num_kv_heads, tile = tiles - 1 - item / num_kv_heads;
            int64_t first_token = tile * tile_tokens;
            int count = (int)(num_tokens - first_token < tile_tokens ? num_tokens - first_token : tile_tokens);
            const uint16_t *k_packed = scratch + (kv_head * 2) * padded_keys * head_dim;
            prefill_tile(q, k_packed, k_packed + padded_keys * head_dim, past, first_token, count, group, kv_head,
                         num_heads, (int)head_dim, scale, out);
        }
    }
    return 0;
#else
    (void)q; (void)k_cache; (void)v_cache; (void)block_table; (void)past; (void)num_tokens; (void)scale;
    (void)out; (void)num_heads; (void)num_kv_heads; (void)num_blocks; (void)block_size; (void)head_dim;
    (void)scratch; (void)num_threads;
    return -1;
#endif
}
