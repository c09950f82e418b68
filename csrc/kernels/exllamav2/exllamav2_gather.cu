// The act-order gather of x's columns (launcher contract in exllamav2_launch.h).
//
// Why a kernel of our own instead of torch's index_select: on the H100 index_select in front of the
// GEMV cost 5.6-6.6 us a call at m = 1 (4096x4096: 13.5 against 6.9 us, 8192x28672: 52.3 against
// 46.7; benchmarks/results/2026-11-22_h100_s6final_bench_kernels.txt), more than the 4096x4096 GEMV
// itself. This one is a dependent launch that triggers its dependents before it waits (as the Hopper
// GEMM's x-staging kernel does, common/pdl.cuh): the GEMV behind it is already prefetching its
// weights into L2 while the kernel in front of both finishes, and only the gather's own few loads and
// stores remain on the path.
//
// One thread writes 8 consecutive channels of one token: a 16-byte store where K is a multiple of 8
// (the 4-bit layers: K = 8 x packed rows), else 2-byte stores. perm is read with two 16-byte loads
// in that case, x with 8 two-byte loads, which hit L1 or L2: x is one token row of at most a few
// tens of KB.
#include "exllamav2_launch.h"

#include "common/pdl.cuh"

namespace gptq::cuda {
namespace {

constexpr int kThreads = 256;
constexpr uint16_t kNaN = 0x7FFF;  // NaN in fp16 (exponent 0x1F) and in bf16 (exponent 0xFF)

template <bool kVec>
__global__ void __launch_bounds__(kThreads) gather_columns_kernel(const uint16_t* __restrict__ x,
                                                                   const int32_t* __restrict__ perm,
                                                                   uint16_t* __restrict__ out, int64_t M, int64_t K) {
  pdl::launch_dependents();
  pdl::wait();  // x is the output of the kernel in front
  const int64_t chunks = (K + 7) / 8;
  const int64_t e = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (e >= M * chunks) return;
  const int64_t m = e / chunks, k0 = (e % chunks) * 8;
  const uint16_t* xr = x + m * K;
  if constexpr (kVec) {
    const int4 p0 = __ldg(reinterpret_cast<const int4*>(perm + k0));
    const int4 p1 = __ldg(reinterpret_cast<const int4*>(perm + k0 + 4));
    const int p[8] = {p0.x, p0.y, p0.z, p0.w, p1.x, p1.y, p1.z, p1.w};
    uint32_t h[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) h[j] = p[j] >= 0 && p[j] < K ? __ldg(xr + p[j]) : kNaN;
    *reinterpret_cast<uint4*>(out + m * K + k0) =
        make_uint4(h[0] | h[1] << 16, h[2] | h[3] << 16, h[4] | h[5] << 16, h[6] | h[7] << 16);
  } else {
    for (int64_t k = k0; k < min(K, k0 + 8); ++k) {
      const int p = __ldg(perm + k);
      out[m * K + k] = p >= 0 && p < K ? __ldg(xr + p) : kNaN;
    }
  }
}

}  // namespace

cudaError_t launch_gather_columns(const uint16_t* x, const int32_t* perm, uint16_t* out, int64_t M, int64_t K,
                                  cudaStream_t stream) {
  if (M < 0 || K < 0 || (M * K > 0 && (x == nullptr || perm == nullptr || out == nullptr)))
    return cudaErrorInvalidValue;
  if (M == 0 || K == 0) return cudaSuccess;
  const int64_t blocks = (M * ((K + 7) / 8) + kThreads - 1) / kThreads;
  if (blocks > 0x7FFFFFFF) return cudaErrorInvalidValue;
  // 16-byte accesses need K % 8 == 0 and 16-byte aligned bases.
  const bool vec = K % 8 == 0 && reinterpret_cast<uintptr_t>(perm) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(out) % 16 == 0;
  return vec ? pdl::launch(true, gather_columns_kernel<true>, dim3(static_cast<unsigned>(blocks)), dim3(kThreads), 0,
                           stream, x, perm, out, M, K)
             : pdl::launch(true, gather_columns_kernel<false>, dim3(static_cast<unsigned>(blocks)), dim3(kThreads), 0,
                           stream, x, perm, out, M, K);
}

}  // namespace gptq::cuda
