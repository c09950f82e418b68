// cp.async (sm_80 and newer): global -> shared copies that bypass registers, shared by the Hopper GEMM
// (its weight, scale and zero-point stages) and the tensor-core GEMV (its x slots at 16 tokens).
// Destinations are addresses in the shared window (smem_addr, common/mma.cuh); a copy with !valid
// reads nothing and zero-fills its destination.
#pragma once

#include <cstdint>

namespace gptq::cuda {

__device__ __forceinline__ void cp_async4(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 4 : 0) : "memory");
}
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

}  // namespace gptq::cuda
