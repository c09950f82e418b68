// Programmatic dependent launch (compute capability 9.0 and newer) for the split-K GEMVs and GEMMs.
//
// Why. A decode step is a chain of small kernels: on the H100 a 4096x4096 int4 layer streams its
// 8.4 MB in about 3 us, yet a launch behind the previous kernel costs the drain of that kernel, the
// launch of this one and a DRAM round trip before the first weight arrives. With the launch attribute
// `programmaticStreamSerializationAllowed` a kernel may start while the kernel before it in the stream
// is still running, once every block of that one has run `griddepcontrol.launch_dependents` (or
// exited). What it may do before `griddepcontrol.wait`, which returns when the kernel before has
// completed and its writes are visible:
//   - touch nothing that kernel writes: no read of x (the previous layer's output), no write of the
//     output, the split-K partials or counters (the previous call of the same op may still be adding
//     them);
//   - read nothing it could have written either, which includes the weights: a repack or act-order
//     gather at load writes them with an ordinary kernel, and until the wait nothing orders its
//     stores before our loads. So the weights are only prefetched into L2 (`prefetch.global.L2`).
//     L2 is the GPU's point of coherence, so a prefetched line can never be stale: a store that
//     arrives later updates it. After the wait the loads hit L2 instead of DRAM.
// Every GEMV and GEMM here therefore runs: prefetch of its first weights, pdl::wait(), then
// pdl::launch_dependents() (so at most one later grid waits at a time), then its work. The Hopper
// GEMM's small x-staging kernel triggers before its wait instead, so that the GEMM behind it is
// already prefetching while the kernel in front of both still runs. Every kernel launched with the
// attribute calls pdl::wait() before it returns, so its completion implies that of all kernels
// before it: the ordering the next kernel relies on stays transitive.
// Launched without the attribute (older GPUs, GPTQ_PDL=0) the two instructions return at once; on
// sm_80 code they compile to nothing.
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <utility>

namespace gptq::cuda::pdl {

__device__ __forceinline__ void wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Brings the line holding p into L2 (no register, no L1 line).
__device__ __forceinline__ void prefetch_l2(const void* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

// Whether launches on the current device carry the attribute: compute capability 9.0 or newer, and
// GPTQ_PDL not "0" (a switch for measuring and for ruling it out when debugging). Cached per device.
inline bool enabled() {
  static const bool env_off = [] {
    const char* e = std::getenv("GPTQ_PDL");
    return e != nullptr && std::strcmp(e, "0") == 0;
  }();
  if (env_off) return false;
  static std::atomic<signed char> state[64] = {};  // 0: not yet asked, 1: yes, -1: no
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64) {
    (void)cudaGetLastError();
    return false;
  }
  signed char s = state[dev].load(std::memory_order_relaxed);
  if (s == 0) {
    int major = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
      (void)cudaGetLastError();
      major = 0;
    }
    s = major >= 9 ? 1 : -1;
    state[dev].store(s, std::memory_order_relaxed);
  }
  return s > 0;
}

// kernel<<<grid, block, smem, stream>>>(args...), with programmatic stream serialization where
// `dependent` and enabled().
template <typename... Params, typename... Args>
cudaError_t launch(bool dependent, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                   cudaStream_t stream, Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = dependent && enabled() ? 1 : 0;
  return cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
}
template <typename... Params, typename... Args>
cudaError_t launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                   Args&&... args) {
  return launch(true, kernel, grid, block, smem, stream, std::forward<Args>(args)...);
}

}  // namespace gptq::cuda::pdl
