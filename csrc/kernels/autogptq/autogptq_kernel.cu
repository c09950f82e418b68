// AutoGPTQ-style GEMM kernel: split-K GEMV on CUDA cores over the checkpoint layout as stored.
//
// Work split. A block is 8 warps; each lane owns 4 adjacent output columns, so one 16-byte load of a
// qweight row feeds a lane with 4 columns x (32/bits) input channels, and a warp reads 512
// contiguous bytes per row. The 8 warps of a block share 128 columns and split the block's K chunk
// between them (reduced through shared memory at the end); blocks split K further (grid.y), writing
// fp32 partial sums that a second small kernel adds up. The split is chosen so that about 8 blocks
// per SM are launched, which keeps every SM streaming even for N = 4096.
//
// Decoding. A packing period is the run of values that fills whole words along K: 32/bits values in
// one word (2, 4, 8 bits) or 32 values in 3 words (3 bits). Value j of a period sits at bit offset
// o = bits*j. Instead of shifting it down and converting int->float (I2F runs at 1/8 of the FMA rate
// on sm_90), we OR the masked field, left in place at position p, into the exponent of 2^23:
//   as_float(0x4B000000 | (w & (mask << p))) - 2^23 = v * 2^p      (exact while p + bits <= 23)
// and pre-scale x[k] by 2^-p when staging it in shared memory, so one LOP3 + FADD + FFMA per weight
// accumulates x[k] * v exactly. Fields above bit 23 are read from w >> 16 (one shift per word) and the
// two 3-bit fields that straddle words from a funnel shift.
//
// Zero points and scales. Within one group, sum_k x[k] (v - z) = sum_k x[k] v - z sum_k x[k]: the inner
// loop accumulates x*v in fp32, and at a group change each column adds s * (acc - z * sum x). The
// per-period sums of x come from shared memory. With act-order (g_idx given) the group may change at
// every k; the same flush then runs per k, reloading scale and zero when the group differs.
#include "autogptq_launch.h"

#include "common/dtype.cuh"
#include "common/packing.h"
#include "common/pdl.cuh"

#include <algorithm>
#include <type_traits>

namespace gptq::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kColsPerBlock = 32 * 4;
constexpr int kMaxChunkK = 1024;  // input channels staged per block: MT * 4 KiB of shared memory


// Bit position, inside the 32-bit view it is decoded from, of value j of a period (see the header).
__host__ __device__ constexpr int field_pos(int bits, int j) {
  return ((bits * j) & 31) + bits > 32 ? 0 : (((bits * j) & 31) + bits <= 23 ? ((bits * j) & 31) : ((bits * j) & 31) - 16);
}


// (a & MASK) | BITS_SET as one LOP3: written in PTX because the compiler otherwise splits it into
// two instructions (a LOP3 takes a single immediate operand).
template <uint32_t MASK, uint32_t BITS_SET>
__device__ __forceinline__ uint32_t and_or(uint32_t a) {
  uint32_t d;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(d) : "r"(a), "n"(MASK), "n"(BITS_SET));
  return d;
}

// v_j * 2^field_pos(j) as a float, from the period's words w and their upper halves w16 = w >> 16.
template <int BITS, int J>
__device__ __forceinline__ float decode_scaled(const uint32_t* w, const uint32_t* w16) {
  constexpr uint32_t kMask = (1u << BITS) - 1u;
  constexpr int kBit = BITS * J, kWord = kBit >> 5, kOff = kBit & 31;
  constexpr int kPos = field_pos(BITS, J);
  uint32_t view;
  if constexpr (kOff + BITS > 32) {
    view = __funnelshift_r(w[kWord], w[kWord + 1], kOff);
  } else if constexpr (kOff + BITS <= 23) {
    view = w[kWord];
  } else {
    view = w16[kWord];
  }
  return __uint_as_float(and_or<(kMask << kPos), 0x4B000000u>(view)) - 8388608.0f;
}

// Zero point of column n in group g (stream value n of qzeros row g), v1's "minus one" undone.
template <int BITS>
__device__ __forceinline__ float load_zero(const uint32_t* __restrict__ qzeros, int64_t row_words, int64_t g,
                                           int64_t n, bool zeros_minus_one) {
  constexpr uint32_t kMask = (1u << BITS) - 1u;
  const uint32_t* row = qzeros + g * row_words;
  const int64_t bit = n * BITS;
  const int64_t w = bit >> 5;
  const int off = static_cast<int>(bit & 31);
  uint32_t v = __ldg(row + w) >> off;
  if (off + BITS > 32) v |= __ldg(row + w + 1) << (32 - off);
  v &= kMask;
  if (zeros_minus_one) v = (v + 1u) & kMask;
  return static_cast<float>(v);
}

template <int J, int N, typename F>
__device__ __forceinline__ void static_for(F&& f) {
  if constexpr (J < N) {
    f(std::integral_constant<int, J>{});
    static_for<J + 1, N>(f);
  }
}

// MT: rows of x handled together (1 or 4); the block loops over row tiles, re-reading its weight
// chunk from L1/L2. PER_K: the group may change at every input channel (act-order, or a group size
// that does not divide the period).
template <typename T, int BITS, int MT, bool PER_K>
__global__ void __launch_bounds__(kThreads) autogptq_gemv_kernel(
    const T* __restrict__ x, const uint32_t* __restrict__ qweight, const uint32_t* __restrict__ qzeros,
    const T* __restrict__ scales, const int32_t* __restrict__ g_idx, T* __restrict__ out,
    float* __restrict__ partial, int64_t M, int64_t K, int64_t N, int64_t group_size, bool zeros_minus_one,
    int warp_periods) {
  constexpr int PV = pack_period_values(BITS);
  constexpr int PW = pack_period_words(BITS);
  constexpr int U = BITS == 3 ? 2 : 4;  // periods whose loads are in flight together
  extern __shared__ float4 smem4[];
  float* smem = reinterpret_cast<float*>(smem4);
  const int chunk_periods = kWarps * warp_periods;
  const int chunk_k = chunk_periods * PV;
  float* xs = smem;                              // [MT][chunk_k]   x[k] * 2^-field_pos
  float* psum = xs + MT * chunk_k;               // [MT][chunk_periods] sum of x over each period
  int* gk = reinterpret_cast<int*>(psum + MT * chunk_periods);  // [chunk_k] group of each k (PER_K)

  const int64_t periods = K / PV;
  const int64_t p_begin = static_cast<int64_t>(blockIdx.y) * chunk_periods;
  const int64_t p_end = min(periods, p_begin + chunk_periods);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kColsPerBlock + lane * 4;
  const bool col_ok = n0 < N;  // N % 4 == 0, so a lane's 4 columns are all in or all out
  const int64_t wp_begin = p_begin + static_cast<int64_t>(warp) * warp_periods;
  const int64_t wp_end = min(p_end, wp_begin + warp_periods);
  const int64_t zero_row_words = N * BITS / 32;

  // The warp's first U periods into L2 while the kernel before may still run; x and every write wait
  // for it (common/pdl.cuh).
  if (col_ok) {
    for (int64_t p = wp_begin; p < min(wp_end, wp_begin + U); ++p)
      for (int w = 0; w < PW; ++w) pdl::prefetch_l2(qweight + (p * PW + w) * N + n0);
  }
  pdl::wait();
  pdl::launch_dependents();

  for (int64_t m0 = 0; m0 < M; m0 += MT) {
    __syncthreads();  // the previous row tile is done with shared memory (the reduction reuses it)
    if constexpr (PER_K) {
      for (int i = threadIdx.x; i < chunk_k; i += kThreads) {
        const int64_t k = p_begin * PV + i;
        gk[i] = k >= K ? 0 : (g_idx != nullptr ? g_idx[k] : static_cast<int>(k / group_size));
      }
    }
    for (int i = threadIdx.x; i < MT * chunk_periods; i += kThreads) {
      const int r = i / chunk_periods, pp = i - r * chunk_periods;
      const int64_t p = p_begin + pp, row = m0 + r;
      const bool ok = row < M && p < p_end;
      const T* xr = x + row * K + p * PV;
      float* dst = xs + r * chunk_k + pp * PV;
      float s = 0.f;
      static_for<0, PV>([&](auto jc) {
        constexpr int j = decltype(jc)::value;
        const float v = ok ? to_float(xr[j]) : 0.f;
        s += v;
        dst[j] = v * __uint_as_float(static_cast<uint32_t>(127 - field_pos(BITS, j)) << 23);  // v * 2^-pos
      });
      psum[r * chunk_periods + pp] = s;
    }
    __syncthreads();

    float acc[MT][4], gacc[MT][4], gx[MT];
#pragma unroll
    for (int r = 0; r < MT; ++r) {
      gx[r] = 0.f;
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[r][c] = gacc[r][c] = 0.f;
    }
    float sc[4] = {0.f, 0.f, 0.f, 0.f}, zc[4] = {0.f, 0.f, 0.f, 0.f};
    int64_t gcur = -1;
    auto flush = [&]() {
#pragma unroll
      for (int r = 0; r < MT; ++r) {
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          acc[r][c] = fmaf(sc[c], gacc[r][c] - zc[c] * gx[r], acc[r][c]);
          gacc[r][c] = 0.f;
        }
        gx[r] = 0.f;
      }
    };
    auto load_group = [&](int64_t g) {
      if (gcur >= 0) flush();
      gcur = g;
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        sc[c] = to_float(scales[g * N + n0 + c]);
        zc[c] = load_zero<BITS>(qzeros, zero_row_words, g, n0 + c, zeros_minus_one);
      }
    };

    if (col_ok) {
      // Groups are contiguous here: track the next group boundary instead of dividing per period.
      const int64_t periods_per_group = group_size < 0 ? (int64_t{1} << 62) : group_size / PV;
      int64_t next_boundary = 0;
      // Software pipeline: the loads of the next U periods are in flight while these are decoded.
      const uint32_t* wptr = qweight + wp_begin * PW * N + n0;
      const int64_t period_stride = PW * N;
      uint4 nxt[U][PW];
      auto load_batch = [&](int64_t pb) {
#pragma unroll
        for (int u = 0; u < U; ++u) {
#pragma unroll
          for (int w = 0; w < PW; ++w) {
            nxt[u][w] = pb + u < wp_end
                            ? __ldg(reinterpret_cast<const uint4*>(wptr + (pb + u - wp_begin) * period_stride + w * N))
                            : make_uint4(0u, 0u, 0u, 0u);
          }
        }
      };
      load_batch(wp_begin);
      for (int64_t pb = wp_begin; pb < wp_end; pb += U) {
        uint4 words[U][PW];
#pragma unroll
        for (int u = 0; u < U; ++u) {
#pragma unroll
          for (int w = 0; w < PW; ++w) words[u][w] = nxt[u][w];
        }
        if (pb + U < wp_end) load_batch(pb + U);
#pragma unroll
        for (int u = 0; u < U; ++u) {
          const int64_t p = pb + u;
          if (p >= wp_end) break;
          const int pp = static_cast<int>(p - p_begin);
          if constexpr (!PER_K) {
            if (p >= next_boundary) {
              const int64_t g = p / periods_per_group;
              next_boundary = (g + 1) * periods_per_group;
              load_group(g);
            }
#pragma unroll
            for (int r = 0; r < MT; ++r) gx[r] += psum[r * chunk_periods + pp];
          }
          uint32_t w[4][PW], w16[4][PW];
#pragma unroll
          for (int i = 0; i < PW; ++i) {
            w[0][i] = words[u][i].x;
            w[1][i] = words[u][i].y;
            w[2][i] = words[u][i].z;
            w[3][i] = words[u][i].w;
#pragma unroll
            for (int c = 0; c < 4; ++c) w16[c][i] = w[c][i] >> 16;
          }
          // Four input channels at a time: one 16-byte shared load of x per row.
          static_for<0, PV / 4>([&](auto qc) {
            constexpr int q = decltype(qc)::value;
            float4 xv[MT];
#pragma unroll
            for (int r = 0; r < MT; ++r) xv[r] = *reinterpret_cast<const float4*>(xs + r * chunk_k + pp * PV + 4 * q);
            static_for<0, 4>([&](auto ic) {
              constexpr int i = decltype(ic)::value;
              constexpr int j = 4 * q + i;
              if constexpr (PER_K) {
                const int g = gk[pp * PV + j];
                if (g != gcur) load_group(g);
#pragma unroll
                for (int r = 0; r < MT; ++r) {
                  const float xj = i == 0 ? xv[r].x : i == 1 ? xv[r].y : i == 2 ? xv[r].z : xv[r].w;
                  gx[r] += xj * __uint_as_float(static_cast<uint32_t>(127 + field_pos(BITS, j)) << 23);
                }
              }
#pragma unroll
              for (int c = 0; c < 4; ++c) {
                const float f = decode_scaled<BITS, j>(w[c], w16[c]);
#pragma unroll
                for (int r = 0; r < MT; ++r) {
                  const float xj = i == 0 ? xv[r].x : i == 1 ? xv[r].y : i == 2 ? xv[r].z : xv[r].w;
                  gacc[r][c] = fmaf(xj, f, gacc[r][c]);
                }
              }
            });
          });
        }
      }
      if (gcur >= 0) flush();
    }

    // Reduce the 8 warps' partial sums through shared memory (reusing the x buffer).
    __syncthreads();
    float* red = smem;  // [kWarps][MT][kColsPerBlock]
#pragma unroll
    for (int r = 0; r < MT; ++r) {
      *reinterpret_cast<float4*>(red + (warp * MT + r) * kColsPerBlock + lane * 4) =
          make_float4(acc[r][0], acc[r][1], acc[r][2], acc[r][3]);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < MT * kColsPerBlock; i += kThreads) {
      const int r = i / kColsPerBlock, col = i - r * kColsPerBlock;
      const int64_t row = m0 + r, n = static_cast<int64_t>(blockIdx.x) * kColsPerBlock + col;
      if (row >= M || n >= N) continue;
      float s = 0.f;
#pragma unroll
      for (int wv = 0; wv < kWarps; ++wv) s += red[(wv * MT + r) * kColsPerBlock + col];
      if (gridDim.y == 1) {
        out[row * N + n] = from_float<T>(s);
      } else {
        partial[(static_cast<int64_t>(blockIdx.y) * M + row) * N + n] = s;
      }
    }
  }
}

// out[i] = sum over splits of partial[s][i], i over M*N.
template <typename T>
__global__ void reduce_splits_kernel(const float* __restrict__ partial, T* __restrict__ out, int64_t mn,
                                     int splits) {
  pdl::wait();  // the partials are the GEMV's output
  pdl::launch_dependents();
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= mn) return;
  float s = 0.f;
  for (int k = 0; k < splits; ++k) s += partial[k * mn + i];
  out[i] = from_float<T>(s);
}

struct Plan {
  int warp_periods;
  int64_t splits;
  int64_t col_blocks;
};

Plan make_plan(int64_t K, int64_t N, int bits, int sm_count) {
  const int pv = pack_period_values(bits);
  const int64_t periods = K / pv;
  const int64_t col_blocks = (N + kColsPerBlock - 1) / kColsPerBlock;
  const int max_wp = std::max(1, kMaxChunkK / (kWarps * pv));
  const int64_t target_blocks = 8 * static_cast<int64_t>(std::max(sm_count, 1));
  const int64_t want_splits = std::max<int64_t>(1, (target_blocks + col_blocks - 1) / col_blocks);
  int64_t wp = (periods + want_splits * kWarps - 1) / (want_splits * kWarps);
  wp = std::min<int64_t>(std::max<int64_t>(wp, 1), max_wp);
  const int64_t splits = (periods + wp * kWarps - 1) / (wp * kWarps);
  return {static_cast<int>(wp), splits, col_blocks};
}

template <typename T, int BITS, int MT, bool PER_K>
cudaError_t launch_typed(const T* x, const uint32_t* qweight, const uint32_t* qzeros, const T* scales,
                         const int32_t* g_idx, T* out, float* workspace, int64_t M, int64_t K, int64_t N,
                         int64_t group_size, bool zeros_minus_one, const Plan& plan, cudaStream_t stream) {
  constexpr int PV = pack_period_values(BITS);
  const int chunk_periods = kWarps * plan.warp_periods;
  const int chunk_k = chunk_periods * PV;
  const size_t stage = sizeof(float) * (MT * (chunk_k + chunk_periods) + (PER_K ? chunk_k : 0));
  const size_t reduce = sizeof(float) * kWarps * MT * kColsPerBlock;
  const size_t smem = std::max(stage, reduce);
  if (plan.splits > 65535) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(plan.col_blocks), static_cast<unsigned>(plan.splits));
  cudaError_t err = pdl::launch(autogptq_gemv_kernel<T, BITS, MT, PER_K>, grid, dim3(kThreads), smem, stream, x,
                                qweight, qzeros, scales, g_idx, out, workspace, M, K, N, group_size,
                                zeros_minus_one, plan.warp_periods);
  if (err != cudaSuccess || plan.splits == 1) return err;
  const int64_t mn = M * N;
  return pdl::launch(reduce_splits_kernel<T>, dim3(static_cast<unsigned>((mn + 255) / 256)), dim3(256), 0, stream,
                     static_cast<const float*>(workspace), out, mn, static_cast<int>(plan.splits));
}

template <typename T, int BITS>
cudaError_t launch_bits(const T* x, const uint32_t* qweight, const uint32_t* qzeros, const T* scales,
                        const int32_t* g_idx, T* out, float* workspace, int64_t M, int64_t K, int64_t N,
                        int64_t group_size, bool zeros_minus_one, const Plan& plan, cudaStream_t stream) {
  constexpr int PV = pack_period_values(BITS);
  // Contiguous groups that never change inside a period take the per-period path.
  const bool per_k = g_idx != nullptr || (group_size > 0 && group_size % PV != 0);
#define GPTQ_AUTOGPTQ_LAUNCH(MT, PK)                                                                              \
  return launch_typed<T, BITS, MT, PK>(x, qweight, qzeros, scales, g_idx, out, workspace, M, K, N, group_size, \
                                       zeros_minus_one, plan, stream)
  if (M == 1) {
    if (per_k) GPTQ_AUTOGPTQ_LAUNCH(1, true);
    GPTQ_AUTOGPTQ_LAUNCH(1, false);
  }
  if (per_k) GPTQ_AUTOGPTQ_LAUNCH(4, true);
  GPTQ_AUTOGPTQ_LAUNCH(4, false);
#undef GPTQ_AUTOGPTQ_LAUNCH
}

}  // namespace

int64_t autogptq_workspace_bytes(int64_t M, int64_t K, int64_t N, int bits, int sm_count) {
  const Plan plan = make_plan(K, N, bits, sm_count);
  return plan.splits > 1 ? plan.splits * M * N * static_cast<int64_t>(sizeof(float)) : 0;
}

template <typename T>
cudaError_t launch_autogptq_gemm(const T* x, const uint32_t* qweight, const uint32_t* qzeros, const T* scales,
                                 const int32_t* g_idx, T* out, float* workspace, int64_t M, int64_t K, int64_t N,
                                 int bits, int64_t group_size, bool zeros_minus_one, int sm_count,
                                 cudaStream_t stream) {
  if (M < 1 || M > kGemvMaxRows || K % pack_period_values(bits) != 0 || N % 4 != 0) return cudaErrorInvalidValue;
  if (N == 0) return cudaSuccess;
  const Plan plan = make_plan(K, N, bits, sm_count);
  if (plan.splits > 1 && workspace == nullptr) return cudaErrorInvalidValue;
  switch (bits) {
    case 2: return launch_bits<T, 2>(x, qweight, qzeros, scales, g_idx, out, workspace, M, K, N, group_size, zeros_minus_one, plan, stream);
    case 3: return launch_bits<T, 3>(x, qweight, qzeros, scales, g_idx, out, workspace, M, K, N, group_size, zeros_minus_one, plan, stream);
    case 4: return launch_bits<T, 4>(x, qweight, qzeros, scales, g_idx, out, workspace, M, K, N, group_size, zeros_minus_one, plan, stream);
    case 8: return launch_bits<T, 8>(x, qweight, qzeros, scales, g_idx, out, workspace, M, K, N, group_size, zeros_minus_one, plan, stream);
    default: return cudaErrorInvalidValue;
  }
}

template cudaError_t launch_autogptq_gemm<__half>(const __half*, const uint32_t*, const uint32_t*, const __half*,
                                                  const int32_t*, __half*, float*, int64_t, int64_t, int64_t, int,
                                                  int64_t, bool, int, cudaStream_t);
template cudaError_t launch_autogptq_gemm<__nv_bfloat16>(const __nv_bfloat16*, const uint32_t*, const uint32_t*,
                                                         const __nv_bfloat16*, const int32_t*, __nv_bfloat16*, float*,
                                                         int64_t, int64_t, int64_t, int, int64_t, bool, int,
                                                         cudaStream_t);

}  // namespace gptq::cuda
