// ExLlamaV2-style GEMM on Hopper's warpgroup MMA (sm_90a): y [M, N] = x [M, K] W^T for 4-bit
// weights in the checkpoint layout (fp16, contiguous groups of -1 or a power of two >= 32), for the
// batch sizes where mma.sync and the dequantize + cuBLAS path leave the H100 idle (M > 16).
//
// The problem is transposed: the layer's output features are the MMA's M (64 per wgmma), the tokens
// its N (BT = 16, 32, 64 or 128 per block), so the weights form operand A, which wgmma takes from
// registers, and x forms operand B, which it reads from shared memory. Each weight is decoded once,
// straight from its shared-memory copy of the checkpoint layout into an A fragment, and serves all
// BT tokens of the block.
//
// Operand A from the checkpoint layout. qweight is [K/8, N] int32, word (r, n) holding channels
// 8r..8r+7 of feature n. Lane (g = lane / 4, q = lane % 4) of warp w reads 16 bytes: packed row
// 4i + q of 32-channel iteration i, features 32w + 4g + c (c = 0..3). The A fragment wants rows g and
// g + 8 of the warp's 16 rows and the k slots 2q, 2q + 1, 2q + 8, 2q + 9. Rows of A are output
// features, which may be any features as long as the epilogue knows them: word c is row g (c even) or
// g + 8 (c odd) of the warpgroup's MMA slice c / 2. The k slots may stand for any channels as long as
// x is staged in the same order (a dot product does not depend on the order of its terms): a LOP3
// puts nibbles (e0, e4) of a word into a half2 as 1024 + e, another (e1, e5) as 1024 + 16e, and the
// word shifted by 8 gives (e2, e6) and (e3, e7). So k16 step t of iteration i has, in slot
//   2q -> channel 8q + 2t, 2q + 1 -> 8q + 4 + 2t, 2q + 8 -> 8q + 1 + 2t, 2q + 9 -> 8q + 5 + 2t
// (plus 32i). An HSUB2 (or an HFMA2 with 1/16) gives the exact integer q - z, and an HMUL2 with the
// group's scale the fp16 weight, as in every fp16 dequantization: 13 instructions per word of 8.
//
// Operand B. A small kernel first stages x in that channel order, in wgmma's canonical K-major layout
// (core matrices of 8 tokens x 16 bytes): per token tile and 128-channel stage, rows
// [iteration i][step t][half kc][token] of 16 bytes, half kc holding slots 8kc..8kc+7. The main
// kernel then copies a stage of x with one bulk copy and points the descriptor at rows (i, t)
// (lead: the kc stride BT x 16 bytes; stride: 128 bytes between groups of 8 tokens).
//
// A block is two warpgroups (256 threads) over 256 features x BT tokens, with a pipeline of S stages
// of 128 channels (x, the 16 packed rows of weights, the stage's scales and zero points) in shared
// memory, S - 2 of them in flight. Per 32-channel iteration a warpgroup issues four wgmmas (2 k16
// steps x 2 slices of 64 features) as one group and waits for the group before it, so the decode of
// the next fragments overlaps the tensor cores (ptxas keeps the two register sets apart; allowing
// three groups in flight made it serialize the wgmmas). A stage's buffer is refilled two stages
// later, when every wgmma that read it has completed. K splits add fp32 partials as the other
// split-K kernels do (the last block of a tile adds them in split order).
//
// Measured on the H100 (benchmarks/results/2026-11-22_h100_int1_bench_kernels.txt): 8192x28672 at
// m = 16 in 63 us (the mma.sync GEMM took 72), m = 64 in 81 us (2.1x fp16; dequantize + cuBLAS
// took 370), m = 256 in 244 us (0.80x). The tensor pipe runs at about 40% at m = 64 and issue slots
// are about half used (2026-11-22_h100_wgmma_lab_v2_ncu.txt): latency-bound with 8 warps an SM.
#include "exllamav2_launch.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>

#include "common/cp_async.cuh"
#include "common/gemv.cuh"
#include "common/mma.cuh"
#include "common/smem.cuh"
#include "common/wgmma.cuh"
#include "exllamav2_decode.cuh"
#include "exllamav2_gather.cuh"

#include <cuda_bf16.h>

namespace gptq::cuda {
namespace {

using gemv::and_or;
using gemv::as_half2;
using gemv::as_u32;
using gemv::increment_nibbles;
using namespace sm90;

constexpr int kThreads = 256;               // two warpgroups
constexpr int kCols = 256;                  // features a block: 8 warps x 32
constexpr int kStageK = 128;                // channels a stage
constexpr int kDepth = 2;                   // wgmma groups (iterations) in flight
constexpr int kStageRows = kStageK / 8;     // packed rows a stage
constexpr int kIters = kStageK / 32;        // 32-channel iterations a stage
constexpr int kMaxGroups = kStageK / 32;    // groups a stage at group size 32
// Packed rows of a stage in shared memory, 1024 bytes of weights each, padded by 32 bytes: lanes
// (g, q) read 16 bytes at row 4i + q, byte 16 (8w + g), so a quarter warp (g in {2p, 2p + 1},
// q = 0..3) hits 16-byte bank groups 2q + g (mod 8), all different.
constexpr int kWPitch = kCols * 4 + 32;
constexpr int kSmemBudget = 220 * 1024;  // of the 227 KB a block may have

// Stage layout of a block of BT tokens, CTAS blocks resident per SM.
template <int BT, int CTAS>
struct Layout {
  static constexpr int kX = 0;                                    // [4 i][2 t][2 kc][BT tokens] x 16 B
  static constexpr int kW = BT * kStageK * 2;                     // [16 rows] x kWPitch
  static constexpr int kScale = kW + kStageRows * kWPitch;        // [4 groups][256] half
  static constexpr int kZero = kScale + kMaxGroups * kCols * 2;   // [4 groups][32] words
  static constexpr int kStage = kZero + kMaxGroups * kCols / 8 * 4;
  static constexpr int kStages = std::min(9, kSmemBudget / CTAS / kStage);  // 9: 16 tokens, one block an SM
  static constexpr int kAhead = kStages - 2;                      // stages in flight
  static constexpr int kSmem = kStages * kStage;
  static_assert(kStage % 128 == 0 && kAhead >= 2, "stage layout");
};

// x [M, K] -> xs [token tile][stage][i][t][kc][BT] of 16-byte rows (see the top of the file): the
// 8 channels (k0..k7) of iteration i's chunk c of token n give word c of rows (t, kc) = (0, 0):
// (k0, k4), (0, 1): (k1, k5), (1, 0): (k2, k6), (1, 1): (k3, k7).
template <int BT>
__device__ __forceinline__ void stage_chunk(uint32_t* __restrict__ xs, int64_t n, int s, int u, const uint4& v,
                                            int num_stages) {
  const int i = u >> 2, c = u & 3, nt = static_cast<int>(n % BT);
  uint32_t* block = xs + ((n / BT) * num_stages + s) * int64_t(BT * kStageK / 2);
  auto row = [&](int t, int kc) { return block + ((((i * 2 + t) * 2 + kc) * BT + nt) * 4 + c); };
  *row(0, 0) = __byte_perm(v.x, v.z, 0x5410);
  *row(0, 1) = __byte_perm(v.x, v.z, 0x7632);
  *row(1, 0) = __byte_perm(v.y, v.w, 0x5410);
  *row(1, 1) = __byte_perm(v.y, v.w, 0x7632);
}

// One thread per 8 channels of a token; tokens >= M and channels >= K stage as zero.
template <int BT>
__global__ void __launch_bounds__(256) stage_x_kernel(const __half* __restrict__ x, uint32_t* __restrict__ xs,
                                                      int64_t M, int64_t K, int64_t tokens, int num_stages) {
  // The GEMM behind this kernel may start at once: its blocks prefetch their weights into L2 while the
  // kernel before this one finishes, and wait for this one before reading x (common/pdl.cuh). Measured
  // on the H100 against a trigger after the wait: 4096x4096 at m = 16 in 13.8 against 16.1 us,
  // 4096x11008 at m = 32 in 22.1 against 23.9 us (benchmarks/results/2026-11-22_h100_pdl4_*).
  pdl::launch_dependents();
  pdl::wait();  // x is the kernel before's output
  const int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= tokens * num_stages * (kStageK / 8)) return;
  const int u = static_cast<int>(e % (kStageK / 8));
  const int64_t rest = e / (kStageK / 8);
  const int s = static_cast<int>(rest % num_stages);
  const int64_t n = rest / num_stages;
  const int64_t k = int64_t(s) * kStageK + 8 * u;
  const uint4 v = n < M && k < K ? __ldg(reinterpret_cast<const uint4*>(x + n * K + k)) : make_uint4(0, 0, 0, 0);
  stage_chunk<BT>(xs, n, s, u, v, num_stages);
}

// Act-order (rows sorted at load): staged channel k is x[n, perm[k]], gathered through shared memory
// (exllamav2_gather.cuh; kSmem: the row fits, K <= gather::kMaxSmemK), so the GEMM needs no gather
// kernel of its own. grid (tokens, chunk blocks) of gather::block_threads(chunks): thread t of block
// (n, b) stages chunk b blockDim + t of token n; blocks of tokens >= M stage zeros.
template <int BT, bool kSmem>
__global__ void __launch_bounds__(gather::kThreads) stage_x_perm_kernel(const __half* __restrict__ x,
                                                                         const int32_t* __restrict__ perm,
                                                                         uint32_t* __restrict__ xs, int64_t M,
                                                                         int64_t K, int num_stages) {
  extern __shared__ uint4 row_smem[];
  const int64_t n = blockIdx.x;  // K % 8 == 0 (the launcher checks)
  const int e = static_cast<int>(blockIdx.y * blockDim.x + threadIdx.x);
  const uint16_t* xr = n < M ? reinterpret_cast<const uint16_t*>(x) + n * K : nullptr;
  const uint4 v = gather::gathered_chunk<kSmem>(xr, perm, K, e, row_smem);  // triggers as stage_x_kernel does
  if (e < num_stages * (kStageK / 8)) stage_chunk<BT>(xs, n, e / (kStageK / 8), e % (kStageK / 8), v, num_stages);
}

// The split-K sum of a thread's outputs, features n0..n0+3 of tokens tok0 + 8j + e (j < BT / 8,
// e < 2), from partial [splits, M, N] into out (T bits), in split order. Up to 16 outputs' partials of
// a split are loaded together, so that a split costs one L2 latency per 16 outputs; output by output,
// a block of 64 tokens (16 outputs a thread) waited out 16 chains of loads in a row (8192x8192 at
// m = 64: 30.9-31.9 against 36.1-36.5 us, 4096x11008 at m = 64: 24.2-24.5 against 29.8-31.0;
// benchmarks/results/2026-11-23_h100_s12_split-sum-noinline_ab.txt). Not inlined: inlined, it changed
// the code of the kernel's main loop more (..._s12_split-sum-inline_ab.txt).
template <typename T, int BT>
__device__ __noinline__ void add_splits(const float* __restrict__ partial, __half* __restrict__ out, int64_t M,
                                        int64_t N, int64_t tok0, int64_t n0, int splits) {
  constexpr int kOut = BT / 4;  // output o is (j, e) = (o / 2, o % 2)
  constexpr int kChunk = kOut < 16 ? kOut : 16;
#pragma unroll
  for (int o0 = 0; o0 < kOut; o0 += kChunk) {
    float4 total[kChunk];
#pragma unroll
    for (int c = 0; c < kChunk; ++c) total[c] = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int y = 0; y < splits; ++y) {
      float4 v[kChunk];
#pragma unroll
      for (int c = 0; c < kChunk; ++c) {
        const int64_t m = tok0 + 8 * ((o0 + c) >> 1) + ((o0 + c) & 1);
        v[c] = m < M ? __ldcg(reinterpret_cast<const float4*>(partial + (int64_t(y) * M + m) * N + n0))
                     : make_float4(0.f, 0.f, 0.f, 0.f);
      }
#pragma unroll
      for (int c = 0; c < kChunk; ++c) {
        total[c].x += v[c].x;
        total[c].y += v[c].y;
        total[c].z += v[c].z;
        total[c].w += v[c].w;
      }
    }
#pragma unroll
    for (int c = 0; c < kChunk; ++c) {
      const int64_t m = tok0 + 8 * ((o0 + c) >> 1) + ((o0 + c) & 1);
      if (m < M) *reinterpret_cast<uint2*>(out + m * N + n0) = Decode<T>::pack4(total[c]);
    }
  }
}

template <typename T, int BT, int CTAS>
__global__ void __launch_bounds__(kThreads, CTAS) wgmma_kernel(GemvArgs a) {
  using D = Decode<T>;
  using L = Layout<BT, CTAS>;
  constexpr int R = BT / 2;  // accumulators per thread and slice
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ int last_flag;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, q = lane & 3;
  const int64_t N = a.N, K = a.K, M = a.M;
  const int token_tiles = static_cast<int>((M + BT - 1) / BT);
  const int tile_t = static_cast<int>(blockIdx.x % token_tiles);
  const int64_t col_base = int64_t(blockIdx.x / token_tiles) * kCols;
  const int rows = static_cast<int>(K / 8);
  const int num_stages = static_cast<int>((K + kStageK - 1) / kStageK);
  const int s_begin = static_cast<int>(blockIdx.y) * a.batches_per_split;
  const int s_end = min(num_stages, s_begin + a.batches_per_split);
  const int64_t gs = a.group_size;
  const bool several_groups = gs > 0 && gs < kStageK;  // groups of 32 or 64: 4 or 2 a stage
  const int groups_a_stage = several_groups ? static_cast<int>(kStageK / gs) : 1;
  const int64_t num_groups = gs < 0 ? 1 : (K + gs - 1) / gs;
  const uint4* xs = static_cast<const uint4*>(a.workspace) + int64_t(tile_t) * num_stages * (BT * kStageK / 8);
  // Group sizes are -1 or powers of two >= 32: stage-local groups by shift.
  const int group_shift = gs > 0 ? __ffsll(gs) - 1 : 0;

  // The pipeline: every thread copies its share of the packed rows, scale and zero-point rows of a
  // stage with cp.async (one commit group a stage), and thread 0 copies x with one bulk copy (the
  // TMA's one-dimensional form), which completes on x_full[b]. Bulk copies write through the async
  // proxy that wgmma reads B through, so x needs no proxy fence; cp.async writes through the generic
  // proxy, and the fence.proxy.async that x would need after it compiles to a MEMBAR that waits for
  // every copy in flight (8192x28672 at m = 16 took 83 against 69 us). Moving the weights to bulk
  // copies issued by one warp, with full/empty barriers instead of the block barrier, was slower
  // still (115 us; benchmarks/results/2026-11-22_h100_wgmma_lab_v*.txt).
  __shared__ __align__(8) uint64_t x_full[L::kStages];
  if (tid == 0) {
#pragma unroll
    for (int b = 0; b < L::kStages; ++b) mbarrier_init(&x_full[b], 1);
  }
  __syncthreads();

  // Per-thread parts of the copies, fixed over the stages (the copy code runs between the barrier and
  // the first wgmma of every stage, so it is kept to a few instructions a copy): weight chunks
  // (row tid / 64 + 4h, 16 bytes at column 4 (tid % 64)), walked by a pointer that advances a stage
  // per call (issue() is called for s_begin, s_begin + 1, ...); scale and zero-point chunks of group
  // row tid / 32, column 8 (tid % 32). Offsets fit in 32 bits (launch_exllamav2_wgmma checks).
  const uint32_t smem0 = smem_addr(smem);
  const int w_row = tid >> 6, w_c4 = tid & 63;
  const bool w_col_ok = col_base + 4 * w_c4 < N;
  const int n32 = static_cast<int>(N);
  const uint32_t* w_next = a.qweight + (s_begin * kStageRows + w_row) * n32 + static_cast<int>(col_base) + 4 * w_c4;
  int rows_left = rows - s_begin * kStageRows - w_row;  // packed rows at and after this thread's first
  const uint32_t w_dst = L::kW + w_row * kWPitch + 16 * w_c4;
  const int g_row = tid >> 5, g_c8 = tid & 31;
  const bool g_ok = tid < 32 * groups_a_stage && col_base + 8 * g_c8 < N;
  const __half* s_src = a.scales + static_cast<int>(col_base) + 8 * g_c8;
  const uint32_t* z_src = a.qzeros + static_cast<int>(col_base / 8) + g_c8;
  const uint32_t s_dst = L::kScale + g_row * (kCols * 2) + 16 * g_c8, z_dst = L::kZero + g_row * (kCols / 2) + 4 * g_c8;
  const int last_group = static_cast<int>(num_groups - 1);

  auto issue = [&](int s) {
    if (s < s_end) {
      const int b = (s - s_begin) % L::kStages;
      const uint32_t buf = smem0 + b * L::kStage;
      if (tid == 0) {
        mbarrier_arrive_expect_tx(&x_full[b], BT * kStageK * 2);
        bulk_copy(smem + b * L::kStage + L::kX, xs + int64_t(s) * (BT * kStageK / 8), BT * kStageK * 2, &x_full[b]);
      }
#pragma unroll
      for (int h = 0; h < kStageRows * (kCols / 4) / kThreads; ++h) {
        const bool ok = w_col_ok && 4 * h < rows_left;
        cp_async16(buf + w_dst + 4 * h * kWPitch, ok ? w_next + 4 * h * n32 : a.qweight, ok);
      }
      w_next += kStageRows * n32;
      rows_left -= kStageRows;
      if (g_ok) {
        const int grp = min((gs < 0 ? 0 : (s * kStageK) >> group_shift) + g_row, last_group);
        cp_async16(buf + s_dst, s_src + grp * n32, true);
        cp_async4(buf + z_dst, z_src + grp * (n32 / 8), true);
      }
    }
    cp_async_commit();
  };

  float acc[2][R];
#pragma unroll
  for (int sl = 0; sl < 2; ++sl)
#pragma unroll
    for (int e = 0; e < R; ++e) acc[sl][e] = 0.f;

  // The weights of the stages about to be issued into L2 while stage_x_kernel (the kernel before)
  // still runs; x's staged copy only after the wait (common/pdl.cuh).
  {
    const uint32_t* p = w_next;
    for (int h = 0; h < L::kAhead && s_begin + h < s_end; ++h, p += kStageRows * n32)
#pragma unroll
      for (int j = 0; j < kStageRows * (kCols / 4) / kThreads; ++j)
        if (w_col_ok && 4 * j < rows_left - h * kStageRows) pdl::prefetch_l2(p + 4 * j * n32);
  }
  pdl::wait();
  pdl::launch_dependents();

#pragma unroll
  for (int h = 0; h < L::kAhead; ++h) issue(s_begin + h);

  const int wcol = 32 * warp + 4 * g;          // the lane's first feature in the block
  uint32_t zl[4], zh[4], sc[4];  // the group's (bias + z), fp16's -(64 + z), s: pairs of features wcol + c
  for (int s = s_begin; s < s_end; ++s) {
    const int k = s - s_begin, b = k % L::kStages;
    cp_async_wait<L::kAhead - 1>();
    __syncthreads();
    issue(s + L::kAhead);  // into the buffer of stage s - 2, whose wgmmas have completed
    mbarrier_wait(&x_full[b], (k / L::kStages) & 1);
    const unsigned char* buf = smem + b * L::kStage;
    // The stage's weights: 4 x 16 bytes a lane, loaded at once so that no shared-memory latency sits
    // between a wgmma_wait and the next decode.
    uint4 wq[kIters];
#pragma unroll
    for (int i = 0; i < kIters; ++i)
      wq[i] = *reinterpret_cast<const uint4*>(buf + L::kW + (4 * i + q) * kWPitch + 4 * wcol);
#pragma unroll
    for (int i = 0; i < kIters; ++i) {
      if (i == 0 || (several_groups && ((32 * i) & (gs - 1)) == 0)) {
        // The group's scales and zero points of features wcol..wcol+3, as half2 pairs.
        const int gl = several_groups ? (32 * i) >> group_shift : 0;
        const uint2 sv = *reinterpret_cast<const uint2*>(buf + L::kScale + gl * (kCols * 2) + 2 * wcol);
        uint32_t zw = *reinterpret_cast<const uint32_t*>(buf + L::kZero + gl * (kCols / 2) + 4 * (wcol / 8));
        if (a.zeros_minus_one) zw = increment_nibbles(zw);
        zw >>= 4 * (wcol & 7);
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          zl[c] = D::bias_z((zw >> (4 * c)) & 0xFu);
          zh[c] = D::neg_z(zl[c]);
        }
        sc[0] = __byte_perm(sv.x, 0, 0x1010);
        sc[1] = __byte_perm(sv.x, 0, 0x3232);
        sc[2] = __byte_perm(sv.y, 0, 0x1010);
        sc[3] = __byte_perm(sv.y, 0, 0x3232);
      }
      const uint32_t words[4] = {wq[i].x, wq[i].y, wq[i].z, wq[i].w};
      // d[c][p]: word c's pair p = (e0, e4), (e1, e5), (e2, e6), (e3, e7), as fp16 weights.
      uint32_t d[4][4];
#pragma unroll
      for (int c = 0; c < 4; ++c) D::word(words[c], zl[c], zh[c], sc[c], d[c]);
      wgmma_fence();
#pragma unroll
      for (int t = 0; t < 2; ++t) {
        const uint64_t desc = smem_desc(buf + L::kX + (i * 2 + t) * 2 * BT * 16, BT * 16, 128);
#pragma unroll
        for (int sl = 0; sl < 2; ++sl) {
          // Slice sl: rows g, g + 8 are words 2 sl, 2 sl + 1; slots (2q, 2q+1) pair 2t, (2q+8, 2q+9) pair 2t+1.
          const uint32_t frag[4] = {d[2 * sl][2 * t], d[2 * sl + 1][2 * t], d[2 * sl][2 * t + 1],
                                    d[2 * sl + 1][2 * t + 1]};
          wgmma_rs<BT, T>(acc[sl], frag, desc);
        }
      }
      wgmma_commit();
      wgmma_wait<kDepth - 1>();
    }
  }
  wgmma_wait<0>();
  fence_registers(acc[0]);
  fence_registers(acc[1]);

  // acc[sl][4j + e]: feature col_base + wcol + 2 sl + (e >> 1), token 8j + 2q + (e & 1) of the tile.
  // for_each_output(f) calls f(token m, features n0..n0+3 as a float4) for the thread's outputs.
  const int64_t n0 = col_base + wcol;
  const int64_t tok0 = int64_t(tile_t) * BT + 2 * q;
  auto for_each_output = [&](auto&& f) {
    if (n0 >= N) return;
#pragma unroll
    for (int j = 0; j < BT / 8; ++j) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int64_t m = tok0 + 8 * j + e;
        if (m < M) f(m, make_float4(acc[0][4 * j + e], acc[0][4 * j + 2 + e], acc[1][4 * j + e], acc[1][4 * j + 2 + e]));
      }
    }
  };
  auto store = [&](int64_t m, float4 v) { *reinterpret_cast<uint2*>(a.out + m * N + n0) = D::pack4(v); };
  if (gridDim.y == 1) {
    for_each_output(store);
    return;
  }
  for_each_output([&](int64_t m, float4 v) {
    *reinterpret_cast<float4*>(a.partial + (int64_t(blockIdx.y) * M + m) * N + n0) = v;
  });
  __threadfence();
  __syncthreads();
  if (tid == 0) last_flag = atomicAdd(a.counters + blockIdx.x, 1) == int(gridDim.y) - 1;
  __syncthreads();
  if (!last_flag) return;
  __threadfence();
  // The last block of the tile adds the splits in split order (its own included): deterministic.
  if constexpr (BT <= 64) {
    if (n0 < N) add_splits<T, BT>(a.partial, a.out, M, N, tok0, n0, static_cast<int>(gridDim.y));
  } else {
    // Output by output at 128 tokens, as before: every change tried here changed this instantiation's
    // main loop too and cost 1-4% on the launches without splits, which are most of its (8192x28672 at
    // m = 1024 with add_splits: 806-827 against 799-812 us, ..._s12_split-sum-noinline_ab.txt; with
    // the split code in a separate instantiation: 820-825 against 804-806, ..._s12_split-sum-kinds_ab.txt).
    for_each_output([&](int64_t m, float4) {
      float4 total = make_float4(0.f, 0.f, 0.f, 0.f);
      for (int y = 0; y < int(gridDim.y); ++y) {
        const float4 p = __ldcg(reinterpret_cast<const float4*>(a.partial + (int64_t(y) * M + m) * N + n0));
        total.x += p.x;
        total.y += p.y;
        total.z += p.z;
        total.w += p.w;
      }
      store(m, total);
    });
  }
  if (tid == 0) a.counters[blockIdx.x] = 0;  // ready for the next call
}

int tokens_a_block(int64_t M) { return M <= 16 ? 16 : M <= 32 ? 32 : M <= 64 ? 64 : 128; }

// GPTQ_EXLLAMAV2_WGMMA_BLOCKS_PER_SM: 1 or 2 forces the blocks an SM at 16 tokens (tuning only; named
// GPTQ_WGMMA_CTAS in the lab); 0 or unset: the plan's choice.
int forced_blocks_per_sm() {
  static const int forced = [] {
    const char* e = std::getenv("GPTQ_EXLLAMAV2_WGMMA_BLOCKS_PER_SM");
    return e != nullptr ? std::atoi(e) : 0;
  }();
  return forced;
}

template <typename T, int BT, int CTAS>
cudaError_t launch_bt(const GemvArgs& args, const GemvPlan& plan, cudaStream_t stream) {
  using L = Layout<BT, CTAS>;
  static std::atomic<uint64_t> ready{0};
  cudaError_t err = opt_in_smem(wgmma_kernel<T, BT, CTAS>, L::kSmem, ready);
  if (err != cudaSuccess) return err;
  const int num_stages = static_cast<int>((args.K + kStageK - 1) / kStageK);
  const int64_t tokens = (args.M + BT - 1) / BT * BT;
  auto* xs = static_cast<uint32_t*>(args.workspace);
  if (args.perm == nullptr) {
    const int64_t threads = tokens * num_stages * (kStageK / 8);
    err = pdl::launch(stage_x_kernel<BT>, dim3(static_cast<unsigned>((threads + 255) / 256)), dim3(256), 0, stream,
                      args.x, xs, args.M, args.K, tokens, num_stages);
  } else {
    const int chunks = num_stages * (kStageK / 8), threads = gather::block_threads(chunks);
    const dim3 grid(static_cast<unsigned>(tokens), static_cast<unsigned>((chunks + threads - 1) / threads));
    // Through shared memory wherever the row fits. Gathering straight from global memory at 16 and 64
    // tokens (where the staging blocks' row, K x 2 bytes, keeps the GEMM's ~220 KB blocks off their
    // SMs until they exit) was not faster: 8192x28672 at m = 64 in 84.3 / 89.8 against 81.9 us,
    // 4096x4096 in 26.5 / 26.6 against 25.6
    // (benchmarks/results/2026-11-22_h100_s7_gather-smem_ab_{1,0,unset}_bench_kernels.txt).
    if (args.K > gather::kMaxSmemK) {
      err = pdl::launch(stage_x_perm_kernel<BT, false>, grid, dim3(threads), 0, stream, args.x, args.perm, xs,
                        args.M, args.K, num_stages);
    } else {
      static std::atomic<uint64_t> ready_perm{0};
      err = opt_in_smem(stage_x_perm_kernel<BT, true>, static_cast<int>(gather::kMaxSmemK * 2), ready_perm);
      if (err != cudaSuccess) return err;
      err = pdl::launch(stage_x_perm_kernel<BT, true>, grid, dim3(threads), static_cast<size_t>(args.K * 2),
                        stream, args.x, args.perm, xs, args.M, args.K, num_stages);
    }
  }
  if (err != cudaSuccess) return err;
  GemvArgs a = args;
  a.batches_per_split = static_cast<int>(plan.batches_per_split);
  const dim3 grid(static_cast<unsigned>(plan.col_blocks), static_cast<unsigned>(plan.splits));
  return pdl::launch(wgmma_kernel<T, BT, CTAS>, grid, dim3(kThreads), L::kSmem, stream, a);
}

template <int BT, int CTAS>
cudaError_t launch_typed(const GemvArgs& args, const GemvPlan& plan, cudaStream_t stream) {
  return args.bf16 ? launch_bt<__nv_bfloat16, BT, CTAS>(args, plan, stream) : launch_bt<__half, BT, CTAS>(args, plan, stream);
}

}  // namespace

GemvPlan exllamav2_wgmma_plan(int64_t M, int64_t K, int64_t N, const GemvDevice& dev) {
  const int bt = tokens_a_block(M);
  const int64_t token_tiles = (M + bt - 1) / bt;
  const int64_t num_stages = (K + kStageK - 1) / kStageK;
  auto plan = [&](int blocks_per_sm) {
    GemvPlan p;
    p.batch = bt;
    p.blocks_per_sm = blocks_per_sm;
    p.cols = kCols;
    p.col_blocks = (N + kCols - 1) / kCols * token_tiles;
    // Split K until the blocks fill one wave, with at least 4 stages a split and at most 8 splits
    // (each adds M x N fp32 partials; 15 splits made 11008x4096 at m = 16 slower, 26.4 against 22.8 us).
    const int64_t slots = int64_t(dev.sm_count) * blocks_per_sm;
    int64_t splits = std::max<int64_t>(1, slots / std::max<int64_t>(p.col_blocks, 1));
    splits = std::min<int64_t>(splits, std::max<int64_t>(1, num_stages / 4));
    splits = std::min<int64_t>(splits, std::max<int64_t>(1, std::min<int64_t>(8, dev.max_splits)));
    p.batches_per_split = (num_stages + splits - 1) / splits;
    p.splits = (num_stages + p.batches_per_split - 1) / p.batches_per_split;
    p.workspace_bytes = token_tiles * bt * num_stages * kStageK * 2;
    return p;
  };
  // Blocks an SM: one from 32 tokens (two blocks of 32 tokens were slower, 75.7 against 72.6 us on
  // 8192x28672 at m = 32; benchmarks/results/2026-11-22_h100_wgmma_lab_v4_ctas.txt). At 16 tokens two
  // blocks of a 4-stage pipeline (2 stages in flight each, 16 warps an SM) beat one block of 9 stages
  // (7 in flight) where the two fill the GPU with long splits:
  // 8192x28672 at m = 16 in 54.4-54.6 against 58.4 us, 8192x8192 at m = 4 in 20.3 against 21.5-21.7.
  // Where the second block would find no work (8 splits of 16 column blocks: 128 blocks for 132 SMs)
  // or the splits are short (fewer than 8 stages), one block wins: 11008x4096 at m = 4 / 16 in
  // 16.9-17.2 / 18.7-19.2 against 21.3-21.5 / 23.6-23.7 us, 4096x4096 at m = 16 12.0 against 13.5-13.7,
  // 4096x11008 (6 splits of 6 stages) 19.0-19.3 against 20.7-20.9
  // (benchmarks/results/2026-11-22_h100_s6_blocks-per-sm_bench_kernels.txt).
  const int forced = forced_blocks_per_sm();
  if (bt != 16 || forced == 1) return plan(1);
  const GemvPlan two = plan(2);
  if (forced == 2) return two;
  return two.col_blocks * two.splits <= dev.sm_count || two.batches_per_split < 8 ? plan(1) : two;
}

cudaError_t launch_exllamav2_wgmma(const GemvArgs& args, const GemvPlan& plan, cudaStream_t stream) {
  // Offsets into qweight and scales are 32-bit in the kernel.
  if (!exllamav2_wgmma_supports(args.M, args.group_size) || args.K % 8 != 0 || args.N % 8 != 0 ||
      args.K / 8 * args.N >= (int64_t{1} << 31) || args.K * args.N / 32 >= (int64_t{1} << 31) ||
      args.workspace == nullptr || (plan.splits > 1 && (args.partial == nullptr || args.counters == nullptr)) ||
      plan.splits > 65535 || plan.batch != tokens_a_block(args.M) ||
      (plan.blocks_per_sm != 1 && (plan.blocks_per_sm != 2 || plan.batch != 16)))
    return cudaErrorInvalidValue;
  if (args.N == 0 || args.M == 0) return cudaSuccess;
  switch (plan.batch) {
    case 16:
      return plan.blocks_per_sm == 2 ? launch_typed<16, 2>(args, plan, stream) : launch_typed<16, 1>(args, plan, stream);
    case 32: return launch_typed<32, 1>(args, plan, stream);
    case 64: return launch_typed<64, 1>(args, plan, stream);
    default: return launch_typed<128, 1>(args, plan, stream);
  }
}

}  // namespace gptq::cuda
