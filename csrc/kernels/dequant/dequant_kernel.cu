// Dequantize kernel: expands a packed GPTQ layer into W [N, K] in the scales' dtype.
//
// Used where a dense weight is wanted (loading into fp16, the large-m path that hands W to cuBLAS,
// tests), not on the decoding hot path. It is memory-bound: it reads K*N*bits/8 bytes of codes and
// writes K*N*sizeof(T) bytes, so the writes dominate (4x the reads at 4 bits, fp16) and are the
// ones made coalesced.
//
// Work split: one thread per (output row n, packing period p). A period is the run of values that
// fills whole int32 words along K: 32/bits values in one word (2, 4, 8 bits) or 32 values in three
// words (3 bits). Consecutive threads take consecutive periods of the same row n, so a warp writes
// one contiguous stretch of row n (16 bytes per thread at 4 bits, fp16). Its reads of qweight are
// strided by N words; they are the smaller stream and hit L2 as neighbouring warps read the
// neighbouring columns.
#include "dequant_launch.h"

namespace gptq::cuda {
namespace {

template <typename T>
__device__ __forceinline__ float to_float(T v);
template <>
__device__ __forceinline__ float to_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ float to_float<__half>(__half v) { return __half2float(v); }
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// Value j of a continuous little-endian bit stream starting at `words` (stride between consecutive
// words: `stride` elements).
template <int BITS>
__device__ __forceinline__ uint32_t stream_value(const uint32_t* words, int64_t stride, int64_t j) {
  const int64_t bit = j * BITS;
  const int64_t w = bit >> 5;
  const int off = static_cast<int>(bit & 31);
  uint32_t v = __ldg(words + w * stride) >> off;
  if (off + BITS > 32) v |= __ldg(words + (w + 1) * stride) << (32 - off);
  return v & ((1u << BITS) - 1u);
}

template <typename T, int BITS>
__global__ void dequantize_kernel(const uint32_t* __restrict__ qweight, const uint32_t* __restrict__ qzeros,
                                  const T* __restrict__ scales, const int32_t* __restrict__ g_idx,
                                  T* __restrict__ out, int64_t K, int64_t N, int64_t group_size,
                                  bool zeros_minus_one) {
  constexpr int kValues = BITS == 3 ? 32 : 32 / BITS;  // values per period
  constexpr int kWords = BITS == 3 ? 3 : 1;            // int32 words per period
  constexpr uint32_t kMask = (1u << BITS) - 1u;
  const int64_t periods = K / kValues;
  const int64_t p = blockIdx.y * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t n = blockIdx.x;
  if (p >= periods) return;

  // The period's words (column n of qweight, rows p*kWords ...), loaded once.
  uint32_t words[kWords];
#pragma unroll
  for (int w = 0; w < kWords; ++w) words[w] = __ldg(qweight + (p * kWords + w) * N + n);
  const int64_t zero_words_per_row = N * BITS / 32;

  T* row = out + n * K + p * kValues;
  int64_t cached_g = -1;
  float scale = 0.f, zero = 0.f;
#pragma unroll
  for (int j = 0; j < kValues; ++j) {
    const int64_t k = p * kValues + j;
    const int64_t g = g_idx != nullptr ? g_idx[k] : (group_size < 0 ? 0 : k / group_size);
    if (g != cached_g) {  // without act-order a whole period shares one group
      cached_g = g;
      scale = to_float(scales[g * N + n]);
      uint32_t z = stream_value<BITS>(qzeros + g * zero_words_per_row, 1, n);
      if (zeros_minus_one) z = (z + 1u) & kMask;
      zero = static_cast<float>(z);
    }
    const int bit = j * BITS;  // a constant after unrolling, so `words` stays in registers
    uint32_t q = words[bit >> 5] >> (bit & 31);
    if ((bit & 31) + BITS > 32) q |= words[(bit >> 5) + 1] << (32 - (bit & 31));
    row[j] = from_float<T>(scale * (static_cast<float>(q & kMask) - zero));
  }
}

template <typename T, int BITS>
cudaError_t launch(const uint32_t* qweight, const uint32_t* qzeros, const T* scales, const int32_t* g_idx, T* out,
                   int64_t K, int64_t N, int64_t group_size, bool zeros_minus_one, cudaStream_t stream) {
  constexpr int kValues = BITS == 3 ? 32 : 32 / BITS;
  const int64_t periods = K / kValues;
  if (periods == 0 || N == 0) return cudaSuccess;
  constexpr int kThreads = 128;
  // Rows on grid.x (limit 2^31-1, so any vocabulary-sized N fits); periods on grid.y (limit 65535
  // blocks of 128 periods, i.e. K up to 2^23 values at 8 bits).
  const int64_t period_blocks = (periods + kThreads - 1) / kThreads;
  if (period_blocks > 65535) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(N), static_cast<unsigned>(period_blocks));
  dequantize_kernel<T, BITS><<<grid, kThreads, 0, stream>>>(qweight, qzeros, scales, g_idx, out, K, N, group_size,
                                                            zeros_minus_one);
  return cudaGetLastError();
}

}  // namespace

template <typename T>
cudaError_t launch_dequantize(const uint32_t* qweight, const uint32_t* qzeros, const T* scales, const int32_t* g_idx,
                              T* out, int64_t K, int64_t N, int bits, int64_t group_size, bool zeros_minus_one,
                              cudaStream_t stream) {
  switch (bits) {
    case 2: return launch<T, 2>(qweight, qzeros, scales, g_idx, out, K, N, group_size, zeros_minus_one, stream);
    case 3: return launch<T, 3>(qweight, qzeros, scales, g_idx, out, K, N, group_size, zeros_minus_one, stream);
    case 4: return launch<T, 4>(qweight, qzeros, scales, g_idx, out, K, N, group_size, zeros_minus_one, stream);
    case 8: return launch<T, 8>(qweight, qzeros, scales, g_idx, out, K, N, group_size, zeros_minus_one, stream);
    default: return cudaErrorInvalidValue;
  }
}

template cudaError_t launch_dequantize<__half>(const uint32_t*, const uint32_t*, const __half*, const int32_t*,
                                               __half*, int64_t, int64_t, int, int64_t, bool, cudaStream_t);
template cudaError_t launch_dequantize<__nv_bfloat16>(const uint32_t*, const uint32_t*, const __nv_bfloat16*,
                                                      const int32_t*, __nv_bfloat16*, int64_t, int64_t, int, int64_t,
                                                      bool, cudaStream_t);
template cudaError_t launch_dequantize<float>(const uint32_t*, const uint32_t*, const float*, const int32_t*, float*,
                                              int64_t, int64_t, int, int64_t, bool, cudaStream_t);

}  // namespace gptq::cuda
