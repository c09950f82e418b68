// Dequantize kernel: expands a packed GPTQ layer into W [N, K] in the scales' dtype.
//
// Used where a dense weight is wanted (the large-m path that hands W to cuBLAS, loading into fp16,
// tests). It is memory-bound: it reads K*N*bits/8 bytes of codes and writes K*N*sizeof(T) bytes.
// The two streams run in transposed directions: qweight [K*bits/32, N] is contiguous along N,
// W [N, K] along K. Reading qweight column-wise or writing W row-wise with one thread per element
// run wastes most of each 32-byte sector, so each thread block transposes a tile through shared
// memory:
//   tile = 64 output rows (n) x 128 input channels (k)
//   1. load: threads take consecutive n, so each warp reads whole 128-byte runs of a qweight row;
//      a thread decodes one packing period (32/bits values in one word, or 32 values in 3 words for
//      3 bits) and stores the dequantized values into the tile, row n;
//   2. store: threads take consecutive 16-byte chunks of one tile row and write W row-wise.
// The tile row is padded by 16 bytes: in step 1 consecutive threads store 16-byte vectors into
// consecutive rows, 272 bytes apart at fp16, which lands eight threads on eight different 16-byte
// bank groups, so each quarter-warp store phase is conflict-free.
#include "dequant_launch.h"

#include "common/dtype.cuh"
#include "common/packing.h"

namespace gptq::cuda {
namespace {

// Value j of a continuous little-endian bit stream of contiguous words starting at `words`.
template <int BITS>
__device__ __forceinline__ uint32_t stream_value(const uint32_t* words, int64_t j) {
  const int64_t bit = j * BITS;
  const int64_t w = bit >> 5;
  const int off = static_cast<int>(bit & 31);
  uint32_t v = __ldg(words + w) >> off;
  if (off + BITS > 32) v |= __ldg(words + w + 1) << (32 - off);
  return v & ((1u << BITS) - 1u);
}

constexpr int kTileN = 64;    // output rows per tile
constexpr int kTileK = 128;   // input channels per tile (a multiple of every packing period)
constexpr int kThreads = 256;

template <typename T, int BITS>
__global__ void __launch_bounds__(kThreads) dequantize_kernel(
    const uint32_t* __restrict__ qweight, const uint32_t* __restrict__ qzeros, const T* __restrict__ scales,
    const int32_t* __restrict__ g_idx, T* __restrict__ out, int64_t K, int64_t N, int64_t group_size,
    bool zeros_minus_one) {
  constexpr int kValues = pack_period_values(BITS);  // values per packing period
  constexpr int kWords = pack_period_words(BITS);    // int32 words per period
  constexpr int kPeriods = kTileK / kValues;           // periods per tile column
  constexpr uint32_t kMask = (1u << BITS) - 1u;
  constexpr int kRowElems = kTileK + 16 / static_cast<int>(sizeof(T));  // padded tile row
  __shared__ __align__(16) T tile[kTileN * kRowElems];

  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kTileN;
  const int64_t k0 = static_cast<int64_t>(blockIdx.y) * kTileK;
  const int64_t zero_words_per_row = N * BITS / 32;

  // 1. decode: task t = (period p, column c), c fastest so a warp reads consecutive columns.
  for (int t = threadIdx.x; t < kTileN * kPeriods; t += kThreads) {
    const int c = t % kTileN, p = t / kTileN;
    const int64_t n = n0 + c, kp = k0 + static_cast<int64_t>(p) * kValues;
    if (n >= N || kp >= K) continue;
    uint32_t words[kWords];
#pragma unroll
    for (int w = 0; w < kWords; ++w) words[w] = __ldg(qweight + (kp / kValues * kWords + w) * N + n);
    // The period's values are assembled in registers, then stored as 16-byte vectors (8 bytes for
    // 8-bit fp16/bf16, whose period is 4 values).
    alignas(16) T vals[kValues];
    int64_t cached_g = -1;
    float scale = 0.f, zero = 0.f;
#pragma unroll
    for (int j = 0; j < kValues; ++j) {
      const int64_t k = kp + j;
      const int64_t g = g_idx != nullptr ? __ldg(g_idx + k) : (group_size < 0 ? 0 : k / group_size);
      if (g != cached_g) {  // without act-order a whole period usually shares one group
        cached_g = g;
        scale = to_float(scales[g * N + n]);
        uint32_t z = stream_value<BITS>(qzeros + g * zero_words_per_row, n);
        if (zeros_minus_one) z = (z + 1u) & kMask;
        zero = static_cast<float>(z);
      }
      const int bit = j * BITS;  // a constant after unrolling, so `words` stays in registers
      uint32_t q = words[bit >> 5] >> (bit & 31);
      if ((bit & 31) + BITS > 32) q |= words[(bit >> 5) + 1] << (32 - (bit & 31));
      vals[j] = from_float<T>(scale * (static_cast<float>(q & kMask) - zero));
    }
    T* row = tile + c * kRowElems + p * kValues;
    if constexpr (kValues * sizeof(T) >= 16) {
#pragma unroll
      for (int v = 0; v < static_cast<int>(kValues * sizeof(T) / 16); ++v)
        reinterpret_cast<uint4*>(row)[v] = reinterpret_cast<const uint4*>(vals)[v];
    } else {
      *reinterpret_cast<uint2*>(row) = *reinterpret_cast<const uint2*>(vals);
    }
  }
  __syncthreads();

  // 2. store: consecutive threads along one row of W, in 16-byte chunks when every row starts on a
  // 16-byte boundary (K a multiple of 16/sizeof(T), true for any K divisible by 32), else element
  // by element.
  constexpr int kChunkElems = 16 / sizeof(T);
  const int64_t k_valid = K - k0 < kTileK ? K - k0 : kTileK;
  if (K % kChunkElems == 0) {
    constexpr int kChunksPerRow = kTileK / kChunkElems;
    for (int t = threadIdx.x; t < kTileN * kChunksPerRow; t += kThreads) {
      const int r = t / kChunksPerRow, ch = t % kChunksPerRow;
      const int64_t n = n0 + r;
      if (n >= N || ch * kChunkElems >= k_valid) continue;
      *reinterpret_cast<uint4*>(out + n * K + k0 + ch * kChunkElems) =
          *reinterpret_cast<const uint4*>(tile + r * kRowElems + ch * kChunkElems);
    }
  } else {
    for (int t = threadIdx.x; t < kTileN * kTileK; t += kThreads) {
      const int r = t / kTileK, e = t % kTileK;
      const int64_t n = n0 + r;
      if (n < N && e < k_valid) out[n * K + k0 + e] = tile[r * kRowElems + e];
    }
  }
}

template <typename T, int BITS>
cudaError_t launch(const uint32_t* qweight, const uint32_t* qzeros, const T* scales, const int32_t* g_idx, T* out,
                   int64_t K, int64_t N, int64_t group_size, bool zeros_minus_one, cudaStream_t stream) {
  if (K == 0 || N == 0) return cudaSuccess;
  // Tiles of N on grid.x (limit 2^31-1), tiles of K on grid.y (limit 65535, i.e. K up to 8.3M).
  const int64_t k_tiles = (K + kTileK - 1) / kTileK;
  if (k_tiles > 65535) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>((N + kTileN - 1) / kTileN), static_cast<unsigned>(k_tiles));
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
