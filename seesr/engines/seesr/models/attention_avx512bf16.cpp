// Exact bfloat16 attention for x86 CPUs with AVX512-BF16 (and no AMX), for seesr.engines.seesr.models.attention.
//
// softmax(scale * Q K^T) V for bf16 Q, K, V of shape (batch, heads, length, head_dim), computed as
// torch's CPU flash kernel computes it for bf16: Q K^T accumulated in float32, softmax in float32
// over blocks of keys (online rescaling), the probabilities rounded to bf16 (nearest even) for the
// product with V, which is accumulated in float32 and divided by the float32 row sum at the end.
// The products use vdpbf16ps (two bf16 products added into each float32 lane), which torch's
// kernel does not use without AMX. Built and loaded by seesr/models/attention.py (plain C ABI,
// OpenMP threads from the process's libgomp, i.e. torch's).
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

namespace {

constexpr int kRows = 6;           // query rows per micro tile
constexpr int kQueryBlock = 8 * kRows;  // query rows per work item
constexpr int kChunk = 64;         // keys per packed chunk (4 vectors of 16 float32 scores)
constexpr int kKeyBlock = 512;     // keys per online-softmax block
constexpr int kHeadChunk = 64;     // output columns per P.V micro tile (4 vectors)

inline __m512bh as_bh(__m512i x) { return (__m512bh)x; }

// exp(x) for float32 lanes, x <= 0 (scores minus their row maximum); within 2 ulp.
inline __m512 exp_ps(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-104.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-06f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

// scores[kRows][16 * NV] = Q rows (bf16 pairs, `pairs` per row) . a packed chunk of 16 * NV keys.
template <int NV>
inline void scores_tile(const uint32_t* q, int pairs, const uint32_t* chunk, float* scores, int ld) {
  __m512 acc[kRows][NV];
  for (int r = 0; r < kRows; ++r)
    for (int c = 0; c < NV; ++c) acc[r][c] = _mm512_setzero_ps();
  for (int p = 0; p < pairs; ++p) {
    __m512bh b[NV];
    for (int c = 0; c < NV; ++c) b[c] = as_bh(_mm512_loadu_si512(chunk + p * NV * 16 + c * 16));
    for (int r = 0; r < kRows; ++r) {
      const __m512bh a = as_bh(_mm512_set1_epi32((int)q[r * pairs + p]));
      for (int c = 0; c < NV; ++c) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], a, b[c]);
    }
  }
  for (int r = 0; r < kRows; ++r)
    for (int c = 0; c < NV; ++c) _mm512_storeu_ps(scores + r * ld + c * 16, acc[r][c]);
}

// All query rows of a block against one chunk of `vectors` x 16 keys (the last chunk may be short).
inline void scores_chunk(const uint32_t* q, int pairs, const uint32_t* chunk, int vectors, float* scores, int ld) {
  for (int r = 0; r < kQueryBlock; r += kRows) {
    const uint32_t* qr = q + r * pairs;
    float* sr = scores + r * ld;
    switch (vectors) {
      case 4: scores_tile<4>(qr, pairs, chunk, sr, ld); break;
      case 3: scores_tile<3>(qr, pairs, chunk, sr, ld); break;
      case 2: scores_tile<2>(qr, pairs, chunk, sr, ld); break;
      default: scores_tile<1>(qr, pairs, chunk, sr, ld); break;
    }
  }
}

// One head's K as chunks of 64 keys laid out [pair of head dims][key] (the last chunk as wide as
// its keys rounded up to 16), and its V as [pair of keys][head dim]; zeros past kv_len.
void pack_head(const uint16_t* k, int64_t k_row, const uint16_t* v, int64_t v_row, int kv_len, int64_t padded,
               int head_dim, uint32_t* packed_k, uint16_t* packed_v) {
  const int pairs = head_dim / 2;
  for (int k0 = 0; k0 < kv_len; k0 += kChunk) {
    const int keys = kv_len - k0 < kChunk ? (kv_len - k0 + 15) / 16 * 16 : kChunk;
    uint32_t* chunk = packed_k + (int64_t)k0 * pairs;
    for (int j = 0; j < keys; ++j) {
      const uint32_t* row = k0 + j < kv_len ? (const uint32_t*)(k + (k0 + j) * k_row) : nullptr;
      for (int p = 0; p < pairs; ++p) chunk[p * keys + j] = row ? row[p] : 0u;
    }
  }
  for (int key = 0; key < kv_len; key += 2) {
    const uint16_t* even = v + key * v_row;
    const uint16_t* odd = key + 1 < kv_len ? v + (key + 1) * v_row : nullptr;
    uint16_t* dst = packed_v + (int64_t)key * head_dim;
    for (int d = 0; d < head_dim; ++d) {
      dst[2 * d] = even[d];
      dst[2 * d + 1] = odd ? odd[d] : 0;
    }
  }
  const int64_t written = ((int64_t)kv_len + 1) / 2 * 2 * head_dim;
  memset(packed_v + written, 0, (padded * head_dim - written) * 2);
}

// out[kRows][64] += P rows (bf16 pairs of keys, `key_pairs` used, row stride `ld_p`) . V pairs.
inline void values_tile(const uint32_t* p, int ld_p, int key_pairs, const uint32_t* v, int ld_v, float* out, int ld_o) {
  __m512 acc[kRows][4];
  for (int r = 0; r < kRows; ++r)
    for (int c = 0; c < 4; ++c) acc[r][c] = _mm512_setzero_ps();
  for (int t = 0; t < key_pairs; ++t) {
    __m512bh b[4];
    for (int c = 0; c < 4; ++c) b[c] = as_bh(_mm512_loadu_si512(v + (int64_t)t * ld_v + c * 16));
    for (int r = 0; r < kRows; ++r) {
      const __m512bh a = as_bh(_mm512_set1_epi32((int)p[r * ld_p + t]));
      for (int c = 0; c < 4; ++c) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], a, b[c]);
    }
  }
  for (int r = 0; r < kRows; ++r)
    for (int c = 0; c < 4; ++c) {
      float* o = out + r * ld_o + c * 16;
      _mm512_storeu_ps(o, _mm512_add_ps(_mm512_loadu_ps(o), acc[r][c]));
    }
}

struct Strides {
  int64_t batch, head, row;
};

}  // namespace

extern "C" {

// Returns 0, or -1 when the shapes are not supported (head_dim not a multiple of 64) or memory ran out.
int seesr_attention_bf16(const uint16_t* q, const uint16_t* k, const uint16_t* v, uint16_t* out, int batch, int heads,
                         int q_len, int kv_len, int head_dim, float scale, const int64_t* q_strides,
                         const int64_t* k_strides, const int64_t* v_strides, const int64_t* out_strides) {
  if (head_dim % kHeadChunk != 0 || q_len <= 0 || kv_len <= 0) return -1;
  const Strides qs{q_strides[0], q_strides[1], q_strides[2]}, ks{k_strides[0], k_strides[1], k_strides[2]},
      vs{v_strides[0], v_strides[1], v_strides[2]}, os{out_strides[0], out_strides[1], out_strides[2]};
  const int pairs = head_dim / 2;
  const int64_t padded = ((int64_t)kv_len + kChunk - 1) / kChunk * kChunk;
  const int64_t bh = (int64_t)batch * heads;
  const int q_blocks = (q_len + kQueryBlock - 1) / kQueryBlock;
  int failed = 0;
  // One parallel region (no barrier but its end): each thread packs K and V of the head its next
  // block of queries needs, once per head it works on.
#pragma omp parallel reduction(| : failed)
  {
    uint32_t* packed_k = (uint32_t*)aligned_alloc(64, padded * head_dim * 2);
    uint16_t* packed_v = (uint16_t*)aligned_alloc(64, padded * head_dim * 2);
    uint32_t* qbuf = (uint32_t*)aligned_alloc(64, (size_t)kQueryBlock * head_dim * 2);
    float* scores = (float*)aligned_alloc(64, (size_t)kQueryBlock * kKeyBlock * 4);
    uint16_t* probs = (uint16_t*)aligned_alloc(64, (size_t)kQueryBlock * kKeyBlock * 2);
    float* acc = (float*)aligned_alloc(64, (size_t)kQueryBlock * head_dim * 4);
    float row_max[kQueryBlock], row_sum[kQueryBlock];
    int64_t packed_head = -1;
    if (!packed_k || !packed_v || !qbuf || !scores || !probs || !acc) failed = 1;
#pragma omp for collapse(2) schedule(dynamic, 1)
    for (int64_t h = 0; h < bh; ++h) {
      for (int qb = 0; qb < q_blocks; ++qb) {
        if (failed) continue;
        const int64_t b = h / heads, hh = h % heads;
        if (h != packed_head) {
          pack_head(k + b * ks.batch + hh * ks.head, ks.row, v + b * vs.batch + hh * vs.head, vs.row, kv_len, padded,
                    head_dim, packed_k, packed_v);
          packed_head = h;
        }
        const int q0 = qb * kQueryBlock, rows = q_len - q0 < kQueryBlock ? q_len - q0 : kQueryBlock;
        const uint16_t* qh = q + b * qs.batch + hh * qs.head;
        for (int r = 0; r < kQueryBlock; ++r) {
          uint16_t* dst = (uint16_t*)qbuf + (int64_t)r * head_dim;
          if (r < rows)
            memcpy(dst, qh + (q0 + r) * qs.row, head_dim * 2);
          else
            memset(dst, 0, head_dim * 2);
          row_max[r] = -INFINITY;
          row_sum[r] = 0.0f;
        }
        memset(acc, 0, (size_t)kQueryBlock * head_dim * 4);
        for (int k0 = 0; k0 < kv_len; k0 += kKeyBlock) {
          const int valid = kv_len - k0 < kKeyBlock ? kv_len - k0 : kKeyBlock;
          const int width = (valid + 15) / 16 * 16;
          for (int c = 0; c < width; c += kChunk) {
            const int vectors = width - c < kChunk ? (width - c) / 16 : kChunk / 16;
            scores_chunk(qbuf, pairs, packed_k + (int64_t)(k0 + c) * pairs, vectors, scores + c, kKeyBlock);
          }
          const __mmask16 tail = (__mmask16)((1u << (valid % 16)) - 1);
          const int full = valid / 16;
          for (int r = 0; r < kQueryBlock; ++r) {
            float* s = scores + r * kKeyBlock;
            __m512 vmax = _mm512_set1_ps(-INFINITY);
            for (int j = 0; j < full; ++j) vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(s + j * 16));
            if (tail) vmax = _mm512_mask_max_ps(vmax, tail, vmax, _mm512_maskz_loadu_ps(tail, s + full * 16));
            const float block_max = _mm512_reduce_max_ps(vmax) * scale;
            const float new_max = block_max > row_max[r] ? block_max : row_max[r];
            const float rescale = row_max[r] == -INFINITY ? 0.0f : expf(row_max[r] - new_max);
            row_max[r] = new_max;
            const __m512 vscale = _mm512_set1_ps(scale), shift = _mm512_set1_ps(new_max);
            __m512 vsum = _mm512_setzero_ps();
            uint16_t* pr = probs + r * kKeyBlock;
            for (int j = 0; j < full; ++j) {
              const __m512 e = exp_ps(_mm512_fmsub_ps(_mm512_loadu_ps(s + j * 16), vscale, shift));
              vsum = _mm512_add_ps(vsum, e);
              _mm256_storeu_si256((__m256i*)(pr + j * 16), (__m256i)_mm512_cvtneps_pbh(e));
            }
            for (int j = full; j < width / 16; ++j) {
              const __mmask16 m = j == full ? tail : (__mmask16)0;
              const __m512 e = _mm512_maskz_mov_ps(m, exp_ps(_mm512_fmsub_ps(_mm512_loadu_ps(s + j * 16), vscale, shift)));
              vsum = _mm512_add_ps(vsum, e);
              _mm256_storeu_si256((__m256i*)(pr + j * 16), (__m256i)_mm512_cvtneps_pbh(e));
            }
            row_sum[r] = row_sum[r] * rescale + _mm512_reduce_add_ps(vsum);
            if (rescale != 1.0f) {
              const __m512 f = _mm512_set1_ps(rescale);
              float* a = acc + (int64_t)r * head_dim;
              for (int d = 0; d < head_dim; d += 16) _mm512_storeu_ps(a + d, _mm512_mul_ps(_mm512_loadu_ps(a + d), f));
            }
          }
          const uint32_t* vblock = (const uint32_t*)packed_v + (int64_t)(k0 / 2) * head_dim;
          for (int r = 0; r < kQueryBlock; r += kRows)
            for (int d = 0; d < head_dim; d += kHeadChunk)
              values_tile((const uint32_t*)(probs + r * kKeyBlock), kKeyBlock / 2, width / 2, vblock + d, head_dim,
                          acc + (int64_t)r * head_dim + d, head_dim);
        }
        uint16_t* oh = out + b * os.batch + hh * os.head;
        for (int r = 0; r < rows; ++r) {
          const __m512 inv = _mm512_set1_ps(1.0f / row_sum[r]);
          const float* a = acc + (int64_t)r * head_dim;
          uint16_t* o = oh + (q0 + r) * os.row;
          for (int d = 0; d < head_dim; d += 16)
            _mm256_storeu_si256((__m256i*)(o + d), (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_loadu_ps(a + d), inv)));
        }
      }
    }
    free(packed_k);
    free(packed_v);
    free(qbuf);
    free(scores);
    free(probs);
    free(acc);
  }
  return failed ? -1 : 0;
}

}  // extern "C"
