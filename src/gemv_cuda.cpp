#include "gemv_cuda.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <tuple>

#include "check.h"

namespace gptq::cuda {
namespace {

// GPTQ_GEMV_MAX_SPLITS caps the K splits of every plan (tuning only; 0 or unset: no cap).
int64_t max_splits_override() {
  static const int64_t v = [] {
    const char* e = std::getenv("GPTQ_GEMV_MAX_SPLITS");
    return e != nullptr ? std::atoll(e) : int64_t{0};
  }();
  return v;
}

// Split-K counters that need no memset per call. Every launch leaves its counters at zero again, so a
// buffer zeroed once serves every later launch that cannot run at the same time as another user of
// the same buffer: one buffer per (device, stream) for eager calls (a stream runs its kernels in
// order) and one per stream capture, that is per CUDA graph (replays of one graph run in order), so
// concurrent streams and different graphs never share counters. The buffers live outside torch's
// caching allocator and its graph pools (a graph may outlive any tensor), are zeroed when made by a
// memset on a private stream (allowed during a capture in the relaxed capture mode), and are never
// freed: 16 KB each, and kernels already queued may still use a buffer that a larger one replaced.
// This removes a memset node from every split-K call: about 1 us on the H100, e.g. 8192x8192 at
// m = 1 from 17.6 to 16.7 us (benchmarks/results/2026-11-22_h100_counters-*_bench_kernels.txt).
int* zeroed_counters(int64_t n, int device, cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  unsigned long long capture_id = 0;
  C10_CUDA_CHECK(cudaStreamGetCaptureInfo(stream, &status, &capture_id));
  const bool capturing = status == cudaStreamCaptureStatusActive;
  using Key = std::tuple<int, uintptr_t, unsigned long long>;
  static std::mutex mu;
  static std::map<Key, std::pair<int*, int64_t>> buffers;
  const std::lock_guard<std::mutex> lock(mu);
  auto& entry = buffers[Key{device, capturing ? 0 : reinterpret_cast<uintptr_t>(stream), capturing ? capture_id : 0}];
  if (entry.first == nullptr || entry.second < n) {
    const int64_t size = std::max<int64_t>(n, 4096);
    const c10::cuda::CUDAStreamCaptureModeGuard relaxed(cudaStreamCaptureModeRelaxed);
    int* p = nullptr;
    C10_CUDA_CHECK(cudaMalloc(&p, size * sizeof(int)));
    cudaStream_t side = nullptr;
    C10_CUDA_CHECK(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking));
    C10_CUDA_CHECK(cudaMemsetAsync(p, 0, size * sizeof(int), side));
    C10_CUDA_CHECK(cudaStreamSynchronize(side));
    C10_CUDA_CHECK(cudaStreamDestroy(side));
    entry = {p, size};
  }
  return entry.first;
}

}  // namespace

int64_t env_rows(const char* name) {
  const char* e = std::getenv(name);
  return e != nullptr ? std::max<int64_t>(1, std::atoll(e)) : int64_t{0};
}

at::Tensor aligned16(const at::Tensor& t) {
  auto c = t.contiguous();
  return reinterpret_cast<uintptr_t>(c.const_data_ptr()) % 16 == 0 ? c : c.clone();
}

at::Tensor run_gemv(const char* op, const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& qzeros,
                    const at::Tensor& scales, int64_t K, int64_t N, int64_t group_size, bool zeros_minus_one,
                    const std::function<GemvPlan(const GemvDevice&)>& plan_for, GemvLaunchFn launch,
                    const at::Tensor& perm) {
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t M = x.size(0);
  auto out = at::empty({M, N}, x.options());
  if (M == 0 || N == 0) return out;
  if (K == 0) return out.zero_();
  // 16-byte loads of x and qweight, and bulk copies of scale and zero-point rows.
  const auto xc = aligned16(x), qw = aligned16(qweight), sc = aligned16(scales), qz = aligned16(qzeros);
  const auto* props = at::cuda::getCurrentDeviceProperties();
  GemvDevice dev;
  dev.sm_count = props->multiProcessorCount;
  if (max_splits_override() > 0) dev.max_splits = max_splits_override();
  const GemvPlan plan = plan_for(dev);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream().stream();
  at::Tensor partial, workspace;
  GemvArgs args;
  if (plan.workspace_bytes > 0) {
    workspace = at::empty({plan.workspace_bytes}, x.options().dtype(at::kByte));  // 512-byte aligned
    args.workspace = workspace.data_ptr();
  }
  if (plan.splits > 1) {
    partial = at::empty({plan.splits, M, N}, x.options().dtype(at::kFloat));
    args.partial = partial.data_ptr<float>();
    args.counters = zeroed_counters(plan.col_blocks, x.device().index(), stream);
  }
  // fp16, or bf16 for the kernels that take it (args.bf16): the same 2-byte bits either way. The op's
  // argument check has already matched the scales' dtype to x's.
  GPTQ_CHECK(x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16, op, "x must be fp16 or bf16, got ",
             x.scalar_type());
  args.bf16 = x.scalar_type() == at::kBFloat16;
  args.x = static_cast<const __half*>(xc.const_data_ptr());
  // perm was checked (int32 [K] on x's device) by the op that passes it.
  const at::Tensor pc = perm.defined() ? aligned16(perm) : at::Tensor();
  if (pc.defined()) args.perm = pc.const_data_ptr<int32_t>();
  args.qweight = reinterpret_cast<const uint32_t*>(qw.const_data_ptr<int32_t>());
  args.qzeros = reinterpret_cast<const uint32_t*>(qz.const_data_ptr<int32_t>());
  args.scales = static_cast<const __half*>(sc.const_data_ptr());
  args.out = static_cast<__half*>(out.data_ptr());
  args.M = M;
  args.K = K;
  args.N = N;
  args.group_size = group_size;
  args.zeros_minus_one = zeros_minus_one;
  const cudaError_t err = launch(args, plan, stream);
  GPTQ_CHECK(err == cudaSuccess, op, "kernel launch failed for M = ", M, ", K = ", K, ", N = ", N, ": ",
             cudaGetErrorString(err));
  return out;
}

}  // namespace gptq::cuda
