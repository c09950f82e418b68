// Dequantization into W^T [K, N] (the qweight layout, unpacked): the large-M path of the GEMM ops
// hands W^T to cuBLAS, which reads either orientation at full speed.
//
// Unlike the general dequantize kernel (csrc/kernels/dequant, which writes nn.Linear's [N, K]), every
// read and write here is along N, the contiguous dimension of qweight, scales and the output: a
// thread loads one 16-byte group of 4 columns per packed word and writes 4 columns (8 bytes at fp16)
// of each of the period's rows, so a warp reads 512 and writes 256 contiguous bytes at a time. The
// kernel streams K*N*(bits/8 + 2) bytes and is bound by their bandwidth.
#include "autogptq_launch.h"

#include "common/packing.h"

namespace gptq::cuda {
namespace {


template <typename T>
struct Vec4;
template <>
struct Vec4<__half> {
  static __device__ __forceinline__ void store(__half* p, float a, float b, float c, float d) {
    __half2 lo = __floats2half2_rn(a, b), hi = __floats2half2_rn(c, d);
    uint2 v;
    v.x = *reinterpret_cast<uint32_t*>(&lo);
    v.y = *reinterpret_cast<uint32_t*>(&hi);
    *reinterpret_cast<uint2*>(p) = v;
  }
  static __device__ __forceinline__ float get(const __half* p) { return __half2float(*p); }
};
template <>
struct Vec4<__nv_bfloat16> {
  static __device__ __forceinline__ void store(__nv_bfloat16* p, float a, float b, float c, float d) {
    __nv_bfloat162 lo = __floats2bfloat162_rn(a, b), hi = __floats2bfloat162_rn(c, d);
    uint2 v;
    v.x = *reinterpret_cast<uint32_t*>(&lo);
    v.y = *reinterpret_cast<uint32_t*>(&hi);
    *reinterpret_cast<uint2*>(p) = v;
  }
  static __device__ __forceinline__ float get(const __nv_bfloat16* p) { return __bfloat162float(*p); }
};

template <typename T, int BITS>
__global__ void __launch_bounds__(256) dequantize_kn_kernel(const uint32_t* __restrict__ qweight,
                                                            const uint32_t* __restrict__ qzeros,
                                                            const T* __restrict__ scales,
                                                            const int32_t* __restrict__ g_idx, T* __restrict__ out,
                                                            int64_t K, int64_t N, int64_t group_size,
                                                            bool zeros_minus_one) {
  constexpr int PV = pack_period_values(BITS), PW = pack_period_words(BITS);
  constexpr uint32_t kMask = (1u << BITS) - 1u;
  const int64_t n0 = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * 4;
  const int64_t p = blockIdx.y;
  if (n0 >= N) return;
  uint32_t w[4][PW];
#pragma unroll
  for (int i = 0; i < PW; ++i) {
    const uint4 v = __ldcs(reinterpret_cast<const uint4*>(qweight + (p * PW + i) * N + n0));  // read once
    w[0][i] = v.x;
    w[1][i] = v.y;
    w[2][i] = v.z;
    w[3][i] = v.w;
  }
  const int64_t zero_row_words = N * BITS / 32;
  int64_t gcur = -1;
  float s[4], z[4];
#pragma unroll
  for (int j = 0; j < PV; ++j) {
    const int64_t k = p * PV + j;
    const int64_t g = g_idx != nullptr ? g_idx[k] : (group_size < 0 ? 0 : k / group_size);
    if (g != gcur) {
      gcur = g;
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        s[c] = Vec4<T>::get(scales + g * N + n0 + c);
        const uint32_t* row = qzeros + g * zero_row_words;
        const int64_t bit = (n0 + c) * BITS;
        const int off = static_cast<int>(bit & 31);
        uint32_t zv = __ldg(row + (bit >> 5)) >> off;
        if (off + BITS > 32) zv |= __ldg(row + (bit >> 5) + 1) << (32 - off);
        zv &= kMask;
        if (zeros_minus_one) zv = (zv + 1u) & kMask;
        z[c] = static_cast<float>(zv);
      }
    }
    const int bit = j * BITS, word = bit >> 5, off = bit & 31;  // constants after unrolling
    float v[4];
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      uint32_t q = w[c][word] >> off;
      if (off + BITS > 32) q |= w[c][word + 1] << (32 - off);
      // q as a float through the exponent of 2^23 (I2F is a slow instruction on sm_90).
      v[c] = s[c] * (__uint_as_float(0x4B000000u | (q & kMask)) - (8388608.0f + z[c]));
    }
    Vec4<T>::store(out + k * N + n0, v[0], v[1], v[2], v[3]);
  }
}

template <typename T, int BITS>
cudaError_t launch_bits(const uint32_t* qweight, const uint32_t* qzeros, const T* scales, const int32_t* g_idx,
                        T* out, int64_t K, int64_t N, int64_t group_size, bool zeros_minus_one, cudaStream_t stream) {
  const int64_t periods = K / pack_period_values(BITS);
  if (periods == 0 || N == 0) return cudaSuccess;
  if (periods > 65535) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>((N / 4 + 255) / 256), static_cast<unsigned>(periods));
  dequantize_kn_kernel<T, BITS><<<grid, 256, 0, stream>>>(qweight, qzeros, scales, g_idx, out, K, N, group_size,
                                                          zeros_minus_one);
  return cudaGetLastError();
}

}  // namespace

template <typename T>
cudaError_t launch_dequantize_kn(const uint32_t* qweight, const uint32_t* qzeros, const T* scales,
                                 const int32_t* g_idx, T* out, int64_t K, int64_t N, int bits, int64_t group_size,
                                 bool zeros_minus_one, cudaStream_t stream) {
  if (K % pack_period_values(bits) != 0 || N % 4 != 0) return cudaErrorInvalidValue;
  switch (bits) {
    case 2: return launch_bits<T, 2>(qweight, qzeros, scales, g_idx, out, K, N, group_size, zeros_minus_one, stream);
    case 3: return launch_bits<T, 3>(qweight, qzeros, scales, g_idx, out, K, N, group_size, zeros_minus_one, stream);
    case 4: return launch_bits<T, 4>(qweight, qzeros, scales, g_idx, out, K, N, group_size, zeros_minus_one, stream);
    case 8: return launch_bits<T, 8>(qweight, qzeros, scales, g_idx, out, K, N, group_size, zeros_minus_one, stream);
    default: return cudaErrorInvalidValue;
  }
}

template cudaError_t launch_dequantize_kn<__half>(const uint32_t*, const uint32_t*, const __half*, const int32_t*,
                                                  __half*, int64_t, int64_t, int, int64_t, bool, cudaStream_t);
template cudaError_t launch_dequantize_kn<__nv_bfloat16>(const uint32_t*, const uint32_t*, const __nv_bfloat16*,
                                                         const int32_t*, __nv_bfloat16*, int64_t, int64_t, int,
                                                         int64_t, bool, cudaStream_t);

}  // namespace gptq::cuda
