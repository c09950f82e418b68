// Dynamic shared memory above 48 KB, which a kernel must be opted into per device.
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

namespace gptq::cuda {

// Allows `kernel` up to `bytes` of dynamic shared memory on the current device. Done once per device
// (a bit a device in `ready`, the caller's static mask for this kernel); the attribute call is
// idempotent, so threads racing here do no harm, and the per-call path takes no lock.
template <typename Kernel>
cudaError_t opt_in_smem(Kernel kernel, int bytes, std::atomic<uint64_t>& ready) {
  int dev = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err != cudaSuccess) return err;
  const uint64_t bit = dev < 64 ? uint64_t{1} << dev : 0;
  if (bit != 0 && (ready.load(std::memory_order_relaxed) & bit) != 0) return cudaSuccess;
  err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (err == cudaSuccess) ready.fetch_or(bit, std::memory_order_relaxed);
  return err;
}

}  // namespace gptq::cuda
