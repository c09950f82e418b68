// The act-order gather of x's columns in front of the GEMVs, the mma.sync GEMM and the AutoGPTQ-style
// kernels on sorted rows (launcher contract in exllamav2_launch.h; device side in exllamav2_gather.cuh).
//
// Why a kernel of our own instead of torch's index_select: on the H100 index_select in front of the
// GEMV cost 5.6-6.6 us a call at m = 1 (4096x4096: 13.5 against 6.9 us, 8192x28672: 52.3 against
// 46.7; benchmarks/results/2026-11-22_h100_s6final_bench_kernels.txt), more than the 4096x4096 GEMV
// itself; this kernel cost 2.0 and 1.7 us (..._s7_act-order-gather_ab_bench_kernels.txt). It is a
// dependent launch that triggers its dependents before it waits (as the Hopper GEMM's x-staging kernel
// does, common/pdl.cuh): the GEMV behind it is already prefetching its weights into L2 while the
// kernel in front of both finishes, and only the gather's own loads and stores remain on the path.
//
// Blocks of up to gather::kThreads a token: the row into shared memory, then a 16-byte store of 8 gathered channels
// a thread (exllamav2_gather.cuh). K not a multiple of 8 (8-bit layers allow K = 4 mod 8) takes a plain kernel of
// 2-byte accesses straight from global memory.
#include "exllamav2_launch.h"

#include <atomic>

#include "common/smem.cuh"
#include "exllamav2_gather.cuh"

namespace gptq::cuda {
namespace {

using gather::kThreads;

// grid (M, chunk blocks) of gather::block_threads(K / 8): thread t of block (m, b) writes chunk
// b blockDim + t of token m.
template <bool kSmem>
__global__ void __launch_bounds__(kThreads) gather_rows_kernel(const uint16_t* __restrict__ x,
                                                                const int32_t* __restrict__ perm,
                                                                uint16_t* __restrict__ out, int64_t K) {
  extern __shared__ uint4 row_smem[];  // K x 2 bytes with kSmem
  const int64_t m = blockIdx.x, c = int64_t(blockIdx.y) * blockDim.x + threadIdx.x;
  const uint4 v = gather::gathered_chunk<kSmem>(x + m * K, perm, K, c, row_smem);
  if (c < K / 8) reinterpret_cast<uint4*>(out + m * K)[c] = v;
}

__global__ void __launch_bounds__(kThreads) gather_scalar_kernel(const uint16_t* __restrict__ x,
                                                                  const int32_t* __restrict__ perm,
                                                                  uint16_t* __restrict__ out, int64_t M, int64_t K) {
  pdl::launch_dependents();
  pdl::wait();
  const int64_t e = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (e >= M * K) return;
  const int64_t m = e / K;
  const int p = __ldg(perm + e % K);
  out[e] = p >= 0 && p < K ? __ldg(x + m * K + p) : uint16_t(gather::kNaN);
}

}  // namespace

cudaError_t launch_gather_columns(const uint16_t* x, const int32_t* perm, uint16_t* out, int64_t M, int64_t K,
                                  cudaStream_t stream) {
  if (M < 0 || K < 0 || (M * K > 0 && (x == nullptr || perm == nullptr || out == nullptr)))
    return cudaErrorInvalidValue;
  if (M == 0 || K == 0) return cudaSuccess;
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  if (K % 8 != 0 || !aligned(x) || !aligned(perm) || !aligned(out)) {
    const int64_t blocks = (M * K + kThreads - 1) / kThreads;
    if (blocks > 0x7FFFFFFF) return cudaErrorInvalidValue;
    return pdl::launch(true, gather_scalar_kernel, dim3(static_cast<unsigned>(blocks)), dim3(kThreads), 0, stream, x,
                       perm, out, M, K);
  }
  const int threads = gather::block_threads(K / 8);
  const int64_t chunk_blocks = (K / 8 + threads - 1) / threads;
  if (M > 0x7FFFFFFF || chunk_blocks > 65535) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(M), static_cast<unsigned>(chunk_blocks));
  if (K > gather::kMaxSmemK)
    return pdl::launch(true, gather_rows_kernel<false>, grid, dim3(threads), 0, stream, x, perm, out, K);
  static std::atomic<uint64_t> ready{0};
  const cudaError_t err = opt_in_smem(gather_rows_kernel<true>, static_cast<int>(gather::kMaxSmemK * 2), ready);
  if (err != cudaSuccess) return err;
  return pdl::launch(true, gather_rows_kernel<true>, grid, dim3(threads), static_cast<size_t>(K * 2), stream, x,
                     perm, out, K);
}

}  // namespace gptq::cuda
