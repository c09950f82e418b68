// GPTQ block kernel: the column-serial inner loop of the solver as one launch per block of columns.
//
// One warp owns one output row n (rows are independent in GPTQ). The row's B <= 128 block values sit
// in registers, value j on lane j % 32 as v[j / 32], so every per-column step is register work:
// broadcast w[p] from its lane (shfl), quantize (every lane computes the same code), then each lane
// updates its own later columns with U[p, j] read from shared memory, where the B x B diagonal
// block of U (64 KiB in fp32) is staged once per thread block of kWarps rows. Group grids that start
// in the block are reduced across the warp (min/max, and the MSE search's costs).
//
// The plain PyTorch loop launches ~10 tiny kernels per column; this is one launch per 128 columns,
// followed by the lazy-update GEMM that the host issues.
#include <cuda_runtime.h>

#include <cfloat>
#include <cmath>

#include "kernels/gptq_solver/quant_grid.h"
#include "kernels/gptq_solver/solver_launch.h"

namespace gptq::cuda {
namespace {

constexpr int kWarps = 16;  // rows per thread block: U's block is staged once per 16 rows
constexpr int kVals = kSolveBlockMaxCols / 32;

template <typename T>
__device__ __forceinline__ T warp_min(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmin(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
template <typename T>
__device__ __forceinline__ T warp_max(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
// Butterfly sum: every lane ends with the same bits (a + b == b + a), so the MSE choice is uniform.
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename T>
__global__ void __launch_bounds__(kWarps * 32)
    solve_block_kernel(T* __restrict__ W, const T* __restrict__ U, uint8_t* __restrict__ codes, T* __restrict__ err,
                       int64_t err_ld, T* __restrict__ loss, T* __restrict__ scales, T* __restrict__ zeros,
                       const int32_t* __restrict__ col_group, int64_t N, int64_t K, int64_t i1, int B, int maxq,
                       bool sym, int64_t gs, bool dynamic, T norm) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* Us = reinterpret_cast<T*>(smem_raw);  // [B, B], U[i1 + r, i1 + c]
  for (int idx = threadIdx.x; idx < B * B; idx += blockDim.x) {
    const int r = idx / B, c = idx - r * B;
    Us[idx] = U[(i1 + r) * K + i1 + c];
  }
  __syncthreads();
  const int lane = threadIdx.x & 31;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (n >= N) return;  // whole warps leave together; no block-wide barrier follows
  T* w = W + n * K;
  T v[kVals], ekeep[kVals];
  int qkeep[kVals];
#pragma unroll
  for (int c = 0; c < kVals; ++c) {
    const int j = c * 32 + lane;
    v[c] = j < B ? w[i1 + j] : T(0);
    ekeep[c] = T(0);
    qkeep[c] = 0;
  }
  T l = 0, s = 0, z = 0;
  int64_t cur_g = -1;
#pragma unroll
  for (int c = 0; c < kVals; ++c) {
    if (c * 32 >= B) break;
    for (int l2 = 0; l2 < 32; ++l2) {
      const int i = c * 32 + l2;
      if (i >= B) break;
      const int64_t p = i1 + i;
      const int64_t g = col_group[p];
      if (dynamic && p % gs == 0) {
        // Current values of the group [p, e): in-block ones in registers; ones past the block only
        // when the group starts the block (gs > B), where W is fully updated.
        const int64_t e = p + gs < K ? p + gs : K;
        T lo = T(INFINITY), hi = T(-INFINITY);
#pragma unroll
        for (int cc = 0; cc < kVals; ++cc) {
          const int64_t a = i1 + cc * 32 + lane;
          if (cc * 32 + lane < B && a >= p && a < e) {
            lo = fmin(lo, v[cc]);
            hi = fmax(hi, v[cc]);
          }
        }
        for (int64_t a = i1 + B + lane; a < e; a += 32) {
          lo = fmin(lo, w[a]);
          hi = fmax(hi, w[a]);
        }
        lo = warp_min(lo);
        hi = warp_max(hi);
        auto prm = grid::minmax_params<T>(lo, hi, maxq, sym);
        if (norm > T(0)) {
          grid::adjusted_range(lo, hi, sym);
          T best = T(INFINITY);
          for (int cand = 0; cand < grid::kMseCandidates; ++cand) {
            const auto cp = grid::shrunk_params<T>(lo, hi, cand, maxq, sym);
            T cost = 0;
#pragma unroll
            for (int cc = 0; cc < kVals; ++cc) {
              const int64_t a = i1 + cc * 32 + lane;
              if (cc * 32 + lane < B && a >= p && a < e) cost += grid::clip_cost<T>(v[cc], cp, maxq, norm);
            }
            for (int64_t a = i1 + B + lane; a < e; a += 32) cost += grid::clip_cost<T>(w[a], cp, maxq, norm);
            cost = warp_sum(cost);
            if (cost < best) {
              best = cost;
              prm = cp;
            }
          }
        }
        if (lane == 0) {
          scales[g * N + n] = prm.scale;
          zeros[g * N + n] = prm.zero;
        }
        s = prm.scale;
        z = prm.zero;
        cur_g = g;
      } else if (g != cur_g) {
        s = scales[g * N + n];
        z = zeros[g * N + n];
        cur_g = g;
      }
      const T x = __shfl_sync(0xffffffffu, v[c], l2);
      const T q = grid::code<T>(x, s, z, maxq);
      const T r = x - grid::dequant<T>(q, s, z);
      const T d = Us[i * B + i];
      const T e = r / d;
      l += grid::mul_rn(r, r) / grid::mul_rn(d, d);
      if (lane == l2) {
        ekeep[c] = e;
        qkeep[c] = static_cast<int>(q);
      }
      const T* u = Us + i * B;
#pragma unroll
      for (int cc = c; cc < kVals; ++cc) {
        const int j = cc * 32 + lane;
        if (j > i && j < B) v[cc] = v[cc] - grid::mul_rn(e, u[j]);
      }
    }
  }
#pragma unroll
  for (int c = 0; c < kVals; ++c) {
    const int j = c * 32 + lane;
    if (j < B) {
      codes[n * K + i1 + j] = static_cast<uint8_t>(qkeep[c]);
      err[n * err_ld + j] = ekeep[c];
    }
  }
  if (lane == 0) loss[n] += l / T(2);
}

}  // namespace

template <typename T>
cudaError_t launch_solve_block(T* W, const T* U, uint8_t* codes, T* err, int64_t err_ld, T* loss, T* scales,
                               T* zeros, const int32_t* col_group, int64_t N, int64_t K, int64_t i1, int B, int bits,
                               bool sym, int64_t group_size, bool dynamic, double mse, cudaStream_t stream) {
  if (B <= 0 || B > kSolveBlockMaxCols) return cudaErrorInvalidValue;
  if (N == 0) return cudaSuccess;
  const size_t smem = static_cast<size_t>(B) * B * sizeof(T);
  const cudaError_t attr = cudaFuncSetAttribute(
      solve_block_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
      static_cast<int>(kSolveBlockMaxCols * kSolveBlockMaxCols * sizeof(T)));
  if (attr != cudaSuccess) return attr;
  const unsigned blocks = static_cast<unsigned>((N + kWarps - 1) / kWarps);
  solve_block_kernel<T><<<blocks, kWarps * 32, smem, stream>>>(W, U, codes, err, err_ld, loss, scales, zeros,
                                                               col_group, N, K, i1, B, (1 << bits) - 1, sym,
                                                               group_size, dynamic, static_cast<T>(mse));
  return cudaGetLastError();
}

template cudaError_t launch_solve_block<float>(float*, const float*, uint8_t*, float*, int64_t, float*, float*,
                                               float*, const int32_t*, int64_t, int64_t, int64_t, int, int, bool,
                                               int64_t, bool, double, cudaStream_t);
template cudaError_t launch_solve_block<double>(double*, const double*, uint8_t*, double*, int64_t, double*,
                                                double*, double*, const int32_t*, int64_t, int64_t, int64_t, int, int,
                                                bool, int64_t, bool, double, cudaStream_t);

}  // namespace gptq::cuda
