// ExLlamaV2-style GEMV (see exllamav2_launch.h for the arithmetic). Work split as in the AutoGPTQ-style
// kernel: 8 warps per block, a lane owns 4 adjacent columns (one 16-byte load per packed row), the
// warps of a block split its K chunk, blocks split K further and a second kernel adds the fp32
// partial sums. Loads of the next 4 packed rows are issued before the current ones are decoded.
#include "exllamav2_launch.h"

#include <algorithm>

namespace gptq::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kColsPerBlock = 128;
constexpr int kMaxChunkK = 2048;
constexpr int kUnroll = 4;
// x is staged times 2^-4 so that a half2 partial sum of 4 products x * (v - z), |v - z| <= 15, stays
// below fp16's 65504 for |x| up to 17000; the factor is undone in fp32 with the scale.
constexpr float kXScale = 1.0f / 16.0f;

template <uint32_t MASK, uint32_t BITS_SET>
__device__ __forceinline__ uint32_t and_or(uint32_t a) {
  uint32_t d;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(d) : "r"(a), "n"(MASK), "n"(BITS_SET));
  return d;
}

__device__ __forceinline__ __half2 as_half2(uint32_t v) { return *reinterpret_cast<__half2*>(&v); }

__global__ void __launch_bounds__(kThreads) exllamav2_gemv_kernel(
    const __half* __restrict__ x, const uint32_t* __restrict__ qweight, const uint32_t* __restrict__ qzeros,
    const __half* __restrict__ scales, __half* __restrict__ out, float* __restrict__ partial, int64_t K, int64_t N,
    int64_t group_size, bool zeros_minus_one, int warp_rows) {
  extern __shared__ float4 smem4[];
  // x pairs in decode order: for packed row r and i in 0..3, (x[8r + i], x[8r + i + 4]) * 2^-4.
  __half2* xs = reinterpret_cast<__half2*>(smem4);
  float* red = reinterpret_cast<float*>(smem4);  // reused for the cross-warp reduction
  const int chunk_rows = kWarps * warp_rows;
  const int64_t rows = K / 8;
  const int64_t r_begin = static_cast<int64_t>(blockIdx.y) * chunk_rows;
  const int64_t r_end = min(rows, r_begin + chunk_rows);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kColsPerBlock + lane * 4;

  for (int i = threadIdx.x; i < chunk_rows * 4; i += kThreads) {
    const int rr = i >> 2, q = i & 3;
    const int64_t k = (r_begin + rr) * 8 + q;
    const bool ok = r_begin + rr < r_end;
    const float a = ok ? __half2float(x[k]) * kXScale : 0.f;
    const float b = ok ? __half2float(x[k + 4]) * kXScale : 0.f;
    xs[i] = __floats2half2_rn(a, b);
  }
  __syncthreads();

  float acc[4] = {0.f, 0.f, 0.f, 0.f}, gacc[4] = {0.f, 0.f, 0.f, 0.f};
  if (n0 < N) {
    const int64_t wr_begin = r_begin + static_cast<int64_t>(warp) * warp_rows;
    const int64_t wr_end = min(r_end, wr_begin + warp_rows);
    const int64_t rows_per_group = group_size < 0 ? (int64_t{1} << 62) : group_size / 8;
    const int64_t zero_row_words = N / 8;
    int64_t next_boundary = wr_begin;  // forces a group load at the first row
    float sc[4] = {0.f, 0.f, 0.f, 0.f};
    __half2 z2[4];
    auto load_group = [&](int64_t g) {
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        acc[c] = fmaf(sc[c], gacc[c], acc[c]);
        gacc[c] = 0.f;
        sc[c] = __half2float(scales[g * N + n0 + c]) * (1.0f / kXScale);
        const int64_t n = n0 + c;
        uint32_t z = (__ldg(qzeros + g * zero_row_words + (n >> 3)) >> (4 * (n & 7))) & 0xFu;
        if (zeros_minus_one) z = (z + 1u) & 0xFu;
        const uint32_t zz = 0x6400u | z;  // 1024 + z as fp16 bits
        z2[c] = as_half2(zz | (zz << 16));
      }
    };
    const uint32_t* wptr = qweight + n0;
    uint4 nxt[kUnroll];
    auto load_batch = [&](int64_t rb) {
#pragma unroll
      for (int u = 0; u < kUnroll; ++u)
        nxt[u] = rb + u < wr_end ? __ldg(reinterpret_cast<const uint4*>(wptr + (rb + u) * N)) : make_uint4(0, 0, 0, 0);
    };
    if (wr_begin < wr_end) load_batch(wr_begin);
    for (int64_t rb = wr_begin; rb < wr_end; rb += kUnroll) {
      uint4 cur[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) cur[u] = nxt[u];
      if (rb + kUnroll < wr_end) load_batch(rb + kUnroll);
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t r = rb + u;
        if (r >= wr_end) break;
        if (r >= next_boundary) {
          const int64_t g = r / rows_per_group;
          next_boundary = (g + 1) * rows_per_group;
          load_group(g);
        }
        const uint4 xv = *reinterpret_cast<const uint4*>(xs + (r - r_begin) * 4);
        const __half2 x0 = as_half2(xv.x), x1 = as_half2(xv.y), x2 = as_half2(xv.z), x3 = as_half2(xv.w);
        const uint32_t words[4] = {cur[u].x, cur[u].y, cur[u].z, cur[u].w};
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const uint32_t w = words[c];
          // pair i holds nibbles i and i + 4, i.e. input channels 8r + i and 8r + i + 4
          __half2 s2 = __hmul2(x0, __hsub2(as_half2(and_or<0x000F000Fu, 0x64006400u>(w)), z2[c]));
          s2 = __hfma2(x1, __hsub2(as_half2(and_or<0x000F000Fu, 0x64006400u>(w >> 4)), z2[c]), s2);
          s2 = __hfma2(x2, __hsub2(as_half2(and_or<0x000F000Fu, 0x64006400u>(w >> 8)), z2[c]), s2);
          s2 = __hfma2(x3, __hsub2(as_half2(and_or<0x000F000Fu, 0x64006400u>(w >> 12)), z2[c]), s2);
          const float2 f = __half22float2(s2);
          gacc[c] += f.x + f.y;
        }
      }
    }
#pragma unroll
    for (int c = 0; c < 4; ++c) acc[c] = fmaf(sc[c], gacc[c], acc[c]);
  }

  __syncthreads();
  *reinterpret_cast<float4*>(red + warp * kColsPerBlock + lane * 4) = make_float4(acc[0], acc[1], acc[2], acc[3]);
  __syncthreads();
  for (int i = threadIdx.x; i < kColsPerBlock; i += kThreads) {
    const int64_t n = static_cast<int64_t>(blockIdx.x) * kColsPerBlock + i;
    if (n >= N) continue;
    float s = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) s += red[w * kColsPerBlock + i];
    if (gridDim.y == 1) {
      out[n] = __float2half_rn(s);
    } else {
      partial[static_cast<int64_t>(blockIdx.y) * N + n] = s;
    }
  }
}

__global__ void reduce_kernel(const float* __restrict__ partial, __half* __restrict__ out, int64_t n, int splits) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float s = 0.f;
  for (int k = 0; k < splits; ++k) s += partial[k * n + i];
  out[i] = __float2half_rn(s);
}

struct Plan {
  int warp_rows;
  int64_t splits, col_blocks;
};

Plan make_plan(int64_t K, int64_t N, int sm_count) {
  const int64_t rows = K / 8;
  const int64_t col_blocks = (N + kColsPerBlock - 1) / kColsPerBlock;
  const int max_wr = kMaxChunkK / (kWarps * 8);
  const int64_t target_blocks = 8 * static_cast<int64_t>(std::max(sm_count, 1));
  const int64_t want = std::max<int64_t>(1, (target_blocks + col_blocks - 1) / col_blocks);
  int64_t wr = (rows + want * kWarps - 1) / (want * kWarps);
  wr = std::min<int64_t>(std::max<int64_t>(wr, 1), max_wr);
  return {static_cast<int>(wr), (rows + wr * kWarps - 1) / (wr * kWarps), col_blocks};
}

}  // namespace

int64_t exllamav2_workspace_bytes(int64_t K, int64_t N, int sm_count) {
  const Plan p = make_plan(K, N, sm_count);
  return p.splits > 1 ? p.splits * N * static_cast<int64_t>(sizeof(float)) : 0;
}

cudaError_t launch_exllamav2_gemv(const __half* x, const uint32_t* qweight, const uint32_t* qzeros,
                                  const __half* scales, __half* out, float* workspace, int64_t K, int64_t N,
                                  int64_t group_size, bool zeros_minus_one, int sm_count, cudaStream_t stream) {
  if (K % 8 != 0 || N % 8 != 0 || (group_size > 0 && group_size % 8 != 0)) return cudaErrorInvalidValue;
  if (N == 0) return cudaSuccess;
  const Plan p = make_plan(K, N, sm_count);
  if (p.splits > 65535 || (p.splits > 1 && workspace == nullptr)) return cudaErrorInvalidValue;
  const size_t smem = std::max<size_t>(sizeof(__half2) * kWarps * p.warp_rows * 4, sizeof(float) * kWarps * kColsPerBlock);
  const dim3 grid(static_cast<unsigned>(p.col_blocks), static_cast<unsigned>(p.splits));
  exllamav2_gemv_kernel<<<grid, kThreads, smem, stream>>>(x, qweight, qzeros, scales, out, workspace, K, N, group_size,
                                                          zeros_minus_one, p.warp_rows);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess || p.splits == 1) return err;
  reduce_kernel<<<static_cast<unsigned>((N + 255) / 256), 256, 0, stream>>>(workspace, out, N, static_cast<int>(p.splits));
  return cudaGetLastError();
}

}  // namespace gptq::cuda
