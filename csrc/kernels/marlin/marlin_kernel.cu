// Marlin-style mixed-input GEMM: out[M, N] = x[M, K] @ W^T, W a 4- or 8-bit GPTQ layer in the tile
// layout of marlin_launch.h, x and out fp16 or bf16, fp32 accumulation on the tensor cores.
//
// CTA = 4 warps, output tile (16 * MB) rows x 256 columns: warp w owns the 64-column tile nt0 + w
// for the whole K range, so the x tile in shared memory feeds four tiles and a group's scales are
// prepared once per warp and stage. Along K the CTA walks its range in stages of 128 rows through a
// cp.async pipeline (3 stages at 4 bits, 2 at 8; global -> shared, 16-byte copies; weights with an
// L2 evict-first hint since each byte is read once).
//
// Per 16-row slice a lane does: one 16-byte shared load per bits/4 of weights (its B fragments for
// all eight n8 sub-tiles), ldmatrix.x4 per 16-row block of x, then dequantizes in registers with the
// magic-number trick: (q & 0x000f000f) | 0x64006400 is the fp16 pair 1024 + q, so one subtract of
// 1024 + z is exact and one multiply by the scale rounds once. The high nibbles give 1024 + 16q,
// fixed by one exact fma with 1/16. bf16 uses 128 (0x4300) as magic for 4 bits; 8-bit bf16 goes
// through fp32 (0x4B000000 + byte) since 128 + 255 is not exact in bf16's 8-bit mantissa.
//
// Filling the machine: grid = (ceil(N_pad/256), splits, M chunks). When the CTAs alone would leave
// SMs idle (M = 1 on an 8192-column layer gives 32 CTAs for 132 SMs), K is split over `splits`
// CTAs; each writes an fp32 partial tile, and the last one to finish (an atomic counter per CTA
// tile, reset to 0 by that CTA) sums the partials in split order, so the result is deterministic.
#include <algorithm>
#include <mutex>

#include "marlin_launch.h"

#include "common/mma.cuh"

namespace gptq::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kSlices = kMarlinTileK / 16;  // 16-row slices per stage
constexpr int kMaxGroupRows = kMarlinTileK / 32;  // groups of >= 32 rows: at most 4 per stage

// ---- PTX wrappers ---------------------------------------------------------------------------------
__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(dst)), "l"(src));
}
// Weights are read exactly once: keep them from evicting x, partials and scales from L2.
__device__ __forceinline__ void cp_async16_stream(void* dst, const void* src) {
  asm volatile(
      "{\n .reg .b64 p;\n createpolicy.fractional.L2::evict_first.b64 p, 1.0;\n"
      " cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, p;\n}\n" ::"r"(smem_addr(dst)),
      "l"(src));
}
// Copies 16 bytes, or writes 16 zero bytes when !valid (src-size 0 reads nothing).
__device__ __forceinline__ void cp_async16_zfill(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// ---- packed 2 x 16-bit arithmetic on raw registers ------------------------------------------------
__device__ __forceinline__ uint32_t dup_lo(uint32_t v) { return __byte_perm(v, v, 0x1010); }
__device__ __forceinline__ uint32_t dup_hi(uint32_t v) { return __byte_perm(v, v, 0x3232); }

template <typename T>
struct Pair;
template <>
struct Pair<__half> {
  using V = __half2;
  static __device__ __forceinline__ V v(uint32_t u) { return *reinterpret_cast<V*>(&u); }
  static __device__ __forceinline__ uint32_t u(V x) { return *reinterpret_cast<uint32_t*>(&x); }
  static __device__ __forceinline__ uint32_t sub(uint32_t a, uint32_t b) { return u(__hsub2(v(a), v(b))); }
  static __device__ __forceinline__ uint32_t add(uint32_t a, uint32_t b) { return u(__hadd2(v(a), v(b))); }
  static __device__ __forceinline__ uint32_t mul(uint32_t a, uint32_t b) { return u(__hmul2(v(a), v(b))); }
  static __device__ __forceinline__ uint32_t fma(uint32_t a, uint32_t b, uint32_t c) {
    return u(__hfma2(v(a), v(b), v(c)));
  }
  static __device__ __forceinline__ float lo(uint32_t a) { return __low2float(v(a)); }
  static __device__ __forceinline__ float hi(uint32_t a) { return __high2float(v(a)); }
  static __device__ __forceinline__ uint32_t pack(float a, float b) { return u(__floats2half2_rn(a, b)); }
  static __device__ __forceinline__ __half from_float(float a) { return __float2half_rn(a); }
};
template <>
struct Pair<__nv_bfloat16> {
  using V = __nv_bfloat162;
  static __device__ __forceinline__ V v(uint32_t u) { return *reinterpret_cast<V*>(&u); }
  static __device__ __forceinline__ uint32_t u(V x) { return *reinterpret_cast<uint32_t*>(&x); }
  static __device__ __forceinline__ uint32_t sub(uint32_t a, uint32_t b) { return u(__hsub2(v(a), v(b))); }
  static __device__ __forceinline__ uint32_t add(uint32_t a, uint32_t b) { return u(__hadd2(v(a), v(b))); }
  static __device__ __forceinline__ uint32_t mul(uint32_t a, uint32_t b) { return u(__hmul2(v(a), v(b))); }
  static __device__ __forceinline__ uint32_t fma(uint32_t a, uint32_t b, uint32_t c) {
    return u(__hfma2(v(a), v(b), v(c)));
  }
  static __device__ __forceinline__ float lo(uint32_t a) { return __low2float(v(a)); }
  static __device__ __forceinline__ float hi(uint32_t a) { return __high2float(v(a)); }
  static __device__ __forceinline__ uint32_t pack(float a, float b) { return u(__floats2bfloat162_rn(a, b)); }
  static __device__ __forceinline__ __nv_bfloat16 from_float(float a) { return __float2bfloat16_rn(a); }
};

// Dequantization of one lane's share of a 16 x 64 slice into the B fragments of the eight n8
// sub-tiles: b[j][0] = rows (2t, 2t+1), b[j][1] = rows (2t+8, 2t+9) of column 8j + g, as (q - z) * s
// rounded once to T. prep() turns a group's scales and zeros (words i = sub-tiles 2i, 2i+1, as
// loaded) into per-sub-tile constants once per group; apply() runs per slice.
template <typename T, int BITS>
struct Dequant;

template <>
struct Dequant<__half, 4> {
  uint32_t s[8], z[8];
  __device__ __forceinline__ void prep(const uint32_t (&sw)[4], const uint32_t (&zw)[4]) {
    using P = Pair<__half>;
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      s[2 * w] = dup_lo(sw[w]);
      s[2 * w + 1] = dup_hi(sw[w]);
      z[2 * w] = P::add(dup_lo(zw[w]), 0x64006400);                    // 1024 + z, exact
      z[2 * w + 1] = P::sub(0u, P::add(dup_hi(zw[w]), 0x54005400));     // -(64 + z), exact
    }
  }
  __device__ __forceinline__ void apply(const uint32_t (&q)[4], uint32_t (&b)[8][2]) const {
    using P = Pair<__half>;
    constexpr uint32_t kMagic = 0x64006400;      // fp16 1024: (q & 0xf) | magic = 1024 + q
    constexpr uint32_t kSixteenth = 0x2c002c00;  // fp16 1/16
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      const uint32_t x = q[w], y = q[w] >> 8;
      b[2 * w][0] = P::mul(P::sub((x & 0x000f000f) | kMagic, z[2 * w]), s[2 * w]);
      b[2 * w][1] = P::mul(P::sub((y & 0x000f000f) | kMagic, z[2 * w]), s[2 * w]);
      // high nibbles: 1024 + 16q; (1024 + 16q)/16 - (64 + z) = q - z in one exact fma
      b[2 * w + 1][0] = P::mul(P::fma((x & 0x00f000f0) | kMagic, kSixteenth, z[2 * w + 1]), s[2 * w + 1]);
      b[2 * w + 1][1] = P::mul(P::fma((y & 0x00f000f0) | kMagic, kSixteenth, z[2 * w + 1]), s[2 * w + 1]);
    }
  }
};

template <>
struct Dequant<__nv_bfloat16, 4> {
  uint32_t s[8], z[8];
  __device__ __forceinline__ void prep(const uint32_t (&sw)[4], const uint32_t (&zw)[4]) {
    using P = Pair<__nv_bfloat16>;
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      s[2 * w] = dup_lo(sw[w]);
      s[2 * w + 1] = dup_hi(sw[w]);
      z[2 * w] = P::add(dup_lo(zw[w]), 0x43004300);  // 128 + z, exact
      z[2 * w + 1] = P::add(dup_hi(zw[w]), 0x43004300);
    }
  }
  __device__ __forceinline__ void apply(const uint32_t (&q)[4], uint32_t (&b)[8][2]) const {
    using P = Pair<__nv_bfloat16>;
    constexpr uint32_t kMagic = 0x43004300;  // bf16 128: 128 + q exact for q < 128
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      const uint32_t x = q[w];
      b[2 * w][0] = P::mul(P::sub((x & 0x000f000f) | kMagic, z[2 * w]), s[2 * w]);
      b[2 * w + 1][0] = P::mul(P::sub(((x >> 4) & 0x000f000f) | kMagic, z[2 * w + 1]), s[2 * w + 1]);
      b[2 * w][1] = P::mul(P::sub(((x >> 8) & 0x000f000f) | kMagic, z[2 * w]), s[2 * w]);
      b[2 * w + 1][1] = P::mul(P::sub(((x >> 12) & 0x000f000f) | kMagic, z[2 * w + 1]), s[2 * w + 1]);
    }
  }
};

template <>
struct Dequant<__half, 8> {
  uint32_t s[8], z[8];
  __device__ __forceinline__ void prep(const uint32_t (&sw)[4], const uint32_t (&zw)[4]) {
    using P = Pair<__half>;
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      s[2 * w] = dup_lo(sw[w]);
      s[2 * w + 1] = dup_hi(sw[w]);
      z[2 * w] = P::add(dup_lo(zw[w]), 0x64006400);  // 1024 + z
      z[2 * w + 1] = P::add(dup_hi(zw[w]), 0x64006400);
    }
  }
  __device__ __forceinline__ void apply(const uint32_t (&q)[8], uint32_t (&b)[8][2]) const {
    using P = Pair<__half>;
    constexpr uint32_t kMagic = 0x64006400;  // 1024 + q exact for q < 1024
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      b[j][0] = P::mul(P::sub((q[j] & 0x00ff00ff) | kMagic, z[j]), s[j]);
      b[j][1] = P::mul(P::sub(((q[j] >> 8) & 0x00ff00ff) | kMagic, z[j]), s[j]);
    }
  }
};

template <>
struct Dequant<__nv_bfloat16, 8> {
  float s[8], z[8];  // 128 + 255 is not exact in bf16's 8-bit mantissa: go through fp32
  __device__ __forceinline__ void prep(const uint32_t (&sw)[4], const uint32_t (&zw)[4]) {
    using P = Pair<__nv_bfloat16>;
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      s[2 * w] = P::lo(sw[w]);
      s[2 * w + 1] = P::hi(sw[w]);
      z[2 * w] = 8388608.f + P::lo(zw[w]);  // 2^23 + z: 0x4B000000 | byte is 2^23 + byte
      z[2 * w + 1] = 8388608.f + P::hi(zw[w]);
    }
  }
  __device__ __forceinline__ void apply(const uint32_t (&q)[8], uint32_t (&b)[8][2]) const {
    using P = Pair<__nv_bfloat16>;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const uint32_t x = q[j];
      const float r0 = (__uint_as_float(0x4B000000u | (x & 0xff)) - z[j]) * s[j];
      const float r8 = (__uint_as_float(0x4B000000u | ((x >> 8) & 0xff)) - z[j]) * s[j];
      const float r1 = (__uint_as_float(0x4B000000u | ((x >> 16) & 0xff)) - z[j]) * s[j];
      const float r9 = (__uint_as_float(0x4B000000u | (x >> 24)) - z[j]) * s[j];
      b[j][0] = P::pack(r0, r1);
      b[j][1] = P::pack(r8, r9);
    }
  }
};

// Symmetric zero point 2^(bits-1) as a T pair.
template <typename T, int BITS>
__device__ __forceinline__ uint32_t symmetric_zero_pair() {
  return Pair<T>::pack(float(1 << (BITS - 1)), float(1 << (BITS - 1)));
}

__device__ __forceinline__ void words_of(const int4& v, uint32_t* w) {
  w[0] = v.x; w[1] = v.y; w[2] = v.z; w[3] = v.w;
}

template <int BITS>
constexpr int stages_for() { return BITS == 4 ? 3 : 2; }  // keeps 2-3 CTAs per SM within 227 KB

template <typename T, int BITS, int MB, bool HAS_ZP>
struct Config {
  static constexpr int kStages = stages_for<BITS>();
  static constexpr int kBPerSlice = 32 * BITS / 4;           // int4 per 16 x 64 slice
  static constexpr int kBTile = kSlices * kBPerSlice;        // int4 per column tile per stage
  static constexpr int kBStage = kWarps * kBTile;
  static constexpr int kRows = 16 * MB;
  static constexpr int kChunks = kMarlinTileK / 8;           // 16-byte chunks per x row per stage
  static constexpr int kAStage = kRows * kChunks;
  static constexpr int kSTile = kMaxGroupRows * 8;           // int4: up to 4 group rows x 64 columns
  static constexpr int kSStage = kWarps * kSTile;
  static constexpr int kSmem = kStages * (kBStage + kAStage + kSStage * (HAS_ZP ? 2 : 1)) * 16;
};

template <typename T, int BITS, int MB, bool HAS_ZP>
__global__ void __launch_bounds__(kThreads) marlin_gemm_kernel(MarlinGemmArgs a) {
  using C = Config<T, BITS, MB, HAS_ZP>;
  constexpr int kStages = C::kStages;
  extern __shared__ int4 smem[];
  int4* sB = smem;
  int4* sA = sB + kStages * C::kBStage;
  int4* sS = sA + kStages * C::kAStage;
  int4* sZ = sS + kStages * C::kSStage;  // only with HAS_ZP
  __shared__ int last_flag;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int NT = static_cast<int>(a.N_pad / kMarlinTileN);
  const int nt0 = blockIdx.x * kWarps;         // this CTA's first 64-column tile; warp w owns nt0 + w
  const int tiles = min(kWarps, NT - nt0);
  const int split = blockIdx.y;
  const int64_t m0 = int64_t(blockIdx.z) * C::kRows;
  const int rows_valid = static_cast<int>(a.M - m0 < C::kRows ? a.M - m0 : C::kRows);
  const int total_st = static_cast<int>(a.K_pad / kMarlinTileK);
  const int st0 = static_cast<int>(int64_t(split) * total_st / a.splits);
  const int st1 = static_cast<int>(int64_t(split + 1) * total_st / a.splits);
  const int nst = st1 - st0;
  const int gs = static_cast<int>(a.group_size);
  const int group_rows = gs >= kMarlinTileK ? 1 : kMarlinTileK / gs;  // 1, 2 or 4
  const int slice_shift = gs >= kMarlinTileK ? 3 : __ffs(gs) - 1 - 4;  // slice i reads row i >> shift
  const int64_t KT = a.K_pad / 16;

  const T* x = static_cast<const T*>(a.x);
  const int4* qw = static_cast<const int4*>(a.qweight);
  const T* scales = static_cast<const T*>(a.scales);
  const T* zeros = static_cast<const T*>(a.zeros);

  // Rows of x past M stay zero in every stage buffer: they are never loaded.
  for (int i = tid; i < kStages * C::kAStage; i += kThreads)
    if ((i % C::kAStage) / C::kChunks >= rows_valid) sA[i] = make_int4(0, 0, 0, 0);

  auto load_stage = [&](int buf, int st) {
    // Weights: each tile's stage is one contiguous run of kBTile int4.
    int4* db = sB + buf * C::kBStage;
    for (int i = tid; i < tiles * C::kBTile; i += kThreads) {
      const int tile = i / C::kBTile, off = i % C::kBTile;
      cp_async16_stream(db + i, qw + (int64_t(nt0 + tile) * KT * C::kBPerSlice + int64_t(st) * C::kBTile + off));
    }
    int4* da = sA + buf * C::kAStage;
    const int64_t k0 = int64_t(st) * kMarlinTileK;
    for (int i = tid; i < rows_valid * C::kChunks; i += kThreads) {
      const int r = i / C::kChunks, c = i % C::kChunks;
      const int64_t kg = k0 + c * 8;
      const bool valid = kg < a.K;
      // XOR swizzle of the 16-byte chunk by row: the 8 rows an ldmatrix phase reads hit 8 distinct
      // bank groups.
      cp_async16_zfill(da + r * C::kChunks + (c ^ (r & 7)), valid ? x + (m0 + r) * a.K + kg : x, valid);
    }
    const int64_t g0 = k0 / gs;
    const int per_tile = group_rows * 8;
    for (int i = tid; i < tiles * per_tile; i += kThreads) {
      const int tile = i / per_tile, rem = i % per_tile, r = rem >> 3, c = rem & 7;
      const int64_t src = (g0 + r) * a.N_pad + int64_t(nt0 + tile) * kMarlinTileN + c * 8;
      const int dst = buf * C::kSStage + tile * C::kSTile + rem;
      cp_async16(sS + dst, scales + src);
      if constexpr (HAS_ZP) cp_async16(sZ + dst, zeros + src);
    }
  };

  float acc[MB][8][4];
#pragma unroll
  for (int mb = 0; mb < MB; ++mb)
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mb][j][e] = 0.f;
  const uint32_t zsym = symmetric_zero_pair<T, BITS>();

  Dequant<T, BITS> dq;
  auto prep = [&](const int4* S, const int4* Z, int row) {
    uint32_t sw[4], zw[4] = {zsym, zsym, zsym, zsym};
    words_of(S[row * 8 + (lane >> 2)], sw);
    if constexpr (HAS_ZP) words_of(Z[row * 8 + (lane >> 2)], zw);
    dq.prep(sw, zw);
  };
  auto slice = [&](const int4* B, const int4* A, int i) {
    uint32_t q[BITS];
#pragma unroll
    for (int h = 0; h < BITS / 4; ++h) words_of(B[i * C::kBPerSlice + h * 32 + lane], q + 4 * h);
    uint32_t af[MB][4];
#pragma unroll
    for (int mb = 0; mb < MB; ++mb) {
      const int r = mb * 16 + (lane & 15);
      const int c = i * 2 + (lane >> 4);
      ldmatrix_x4(af[mb], A + r * C::kChunks + (c ^ (r & 7)));
    }
    uint32_t b[8][2];
    dq.apply(q, b);
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int mb = 0; mb < MB; ++mb) mma_16816<T>(acc[mb][j], af[mb], b[j]);
  };
  // Warp w computes its own 64-column tile over all 8 slices of the stage: the group's scales are
  // prepared once per group, not once per slice.
  auto compute_stage = [&](int buf) {
    if (warp >= tiles) return;
    const int4* B = sB + buf * C::kBStage + warp * C::kBTile;
    const int4* A = sA + buf * C::kAStage;
    const int4* S = sS + buf * C::kSStage + warp * C::kSTile;
    const int4* Z = sZ + buf * C::kSStage + warp * C::kSTile;
    if (group_rows == 1) {
      prep(S, Z, 0);
#pragma unroll
      for (int i = 0; i < kSlices; ++i) slice(B, A, i);
    } else {
#pragma unroll
      for (int i = 0; i < kSlices; ++i) {
        if ((i & ((1 << slice_shift) - 1)) == 0) prep(S, Z, i >> slice_shift);
        slice(B, A, i);
      }
    }
  };

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < nst) load_stage(s, st0 + s);
    cp_async_commit();
  }
  for (int it = 0; it < nst; ++it) {
    cp_async_wait<kStages - 2>();
    __syncthreads();
    const int nxt = it + kStages - 1;
    if (nxt < nst) load_stage(nxt % kStages, st0 + nxt);
    cp_async_commit();
    compute_stage(it % kStages);
  }
  cp_async_wait<0>();

  // Epilogue. Lane (g, t) holds rows g, g+8 of each 16-row block and columns 8j + 2t, 8j + 2t + 1.
  T* out = static_cast<T*>(a.out);
  const int g = lane >> 2, t = lane & 3;
  if (warp < tiles) {
    const int64_t nb = int64_t(nt0 + warp) * kMarlinTileN;
#pragma unroll
    for (int mb = 0; mb < MB; ++mb)
#pragma unroll
      for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int r = mb * 16 + g + 8 * h;
          const int64_t col = nb + 8 * j + 2 * t;
          if (r >= rows_valid) continue;
          const float v0 = acc[mb][j][2 * h], v1 = acc[mb][j][2 * h + 1];
          if (a.splits == 1) {
            // N is even (the format packs zeros along N), so a column pair never straddles N.
            if (col < a.N) *reinterpret_cast<uint32_t*>(out + (m0 + r) * a.N + col) = Pair<T>::pack(v0, v1);
          } else {
            *reinterpret_cast<float2*>(a.partial + (int64_t(split) * a.M + m0 + r) * a.N_pad + col) =
                make_float2(v0, v1);
          }
        }
  }
  if (a.splits == 1) return;

  // Split-K fix-up: the last CTA of this output tile adds the partials in split order.
  __threadfence();
  __syncthreads();
  int* counter = a.counters + int64_t(blockIdx.z) * gridDim.x + blockIdx.x;
  if (tid == 0) last_flag = atomicAdd(counter, 1) == a.splits - 1;
  __syncthreads();
  if (!last_flag) return;
  __threadfence();
  const int pairs = tiles * kMarlinTileN / 2;
  for (int e = tid; e < rows_valid * pairs; e += kThreads) {
    const int r = e / pairs;
    const int64_t col = int64_t(nt0) * kMarlinTileN + 2 * (e % pairs);
    if (col >= a.N) continue;
    float2 v = make_float2(0.f, 0.f);
    for (int s = 0; s < a.splits; ++s) {
      const float2 p = __ldcg(reinterpret_cast<const float2*>(a.partial + (int64_t(s) * a.M + m0 + r) * a.N_pad + col));
      v.x += p.x;
      v.y += p.y;
    }
    *reinterpret_cast<uint32_t*>(out + (m0 + r) * a.N + col) = Pair<T>::pack(v.x, v.y);
  }
  if (tid == 0) *counter = 0;  // ready for the next call with the same workspace
}

// Dense W [N, K] (nn.Linear's layout) from the tile layout, for the large-M path (cuBLAS after).
// Block = 8 warps = one 64-column tile x 128 rows: warp w dequantizes slice w like the GEMM does,
// the block transposes through shared memory and writes 64 rows of 256 contiguous bytes.
template <typename T, int BITS, bool HAS_ZP>
__global__ void __launch_bounds__(256) marlin_unpack_kernel(const int4* __restrict__ qw, const T* __restrict__ scales,
                                                            const T* __restrict__ zeros, T* __restrict__ out,
                                                            int64_t K, int64_t N, int64_t K_pad, int64_t N_pad,
                                                            int64_t group_size) {
  constexpr int kBPerSlice = 32 * BITS / 4;
  constexpr int kPitch = 68;  // words per column row: 64 pairs + 4, so the pair stores hit 32 banks
  __shared__ __align__(16) uint32_t sw[kMarlinTileN * kPitch];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t nt = blockIdx.x, KT = K_pad / 16;
  const int64_t kt = int64_t(blockIdx.y) * 8 + warp;
  const int64_t grp = kt * 16 / group_size;
  uint32_t q[BITS];
#pragma unroll
  for (int h = 0; h < BITS / 4; ++h) words_of(qw[(nt * KT + kt) * kBPerSlice + h * 32 + lane], q + 4 * h);
  const int64_t sofs = grp * N_pad + nt * kMarlinTileN + (lane >> 2) * 8;
  const uint32_t zsym = symmetric_zero_pair<T, BITS>();
  uint32_t s4[4], z4[4] = {zsym, zsym, zsym, zsym};
  words_of(*reinterpret_cast<const int4*>(scales + sofs), s4);
  if constexpr (HAS_ZP) words_of(*reinterpret_cast<const int4*>(zeros + sofs), z4);
  Dequant<T, BITS> dq;
  dq.prep(s4, z4);
  uint32_t b[8][2];
  dq.apply(q, b);
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    sw[(8 * j + g) * kPitch + warp * 8 + t] = b[j][0];      // rows 16w + 2t, +1
    sw[(8 * j + g) * kPitch + warp * 8 + 4 + t] = b[j][1];  // rows 16w + 2t + 8, +9
  }
  __syncthreads();
  const int64_t k_base = int64_t(blockIdx.y) * kMarlinTileK;
  for (int i = threadIdx.x; i < kMarlinTileN * 16; i += 256) {
    const int n = i >> 4, c = i & 15;
    const int64_t col = nt * kMarlinTileN + n, k = k_base + c * 8;
    if (col >= N || k >= K) continue;
    const uint32_t* src = sw + n * kPitch + c * 4;
    if (K % 8 == 0) {
      *reinterpret_cast<int4*>(out + col * K + k) = *reinterpret_cast<const int4*>(src);
    } else {
      const T* v = reinterpret_cast<const T*>(src);
      for (int e = 0; e < 8 && k + e < K; ++e) out[col * K + k + e] = v[e];
    }
  }
}

template <typename T, int BITS, int MB, bool HAS_ZP>
cudaError_t launch_config(const MarlinGemmArgs& args, const MarlinPlan& plan, cudaStream_t stream) {
  constexpr int bytes = Config<T, BITS, MB, HAS_ZP>::kSmem;
  auto kernel = marlin_gemm_kernel<T, BITS, MB, HAS_ZP>;
  if (bytes > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
    if (err != cudaSuccess) return err;
  }
  const dim3 grid(static_cast<unsigned>(plan.ctas_n), static_cast<unsigned>(plan.splits),
                  static_cast<unsigned>(plan.m_chunks));
  kernel<<<grid, kThreads, bytes, stream>>>(args);
  return cudaGetLastError();
}

template <typename T, int BITS, int MB>
cudaError_t launch_zp(const MarlinGemmArgs& args, const MarlinPlan& plan, cudaStream_t stream) {
  return args.zeros != nullptr ? launch_config<T, BITS, MB, true>(args, plan, stream)
                               : launch_config<T, BITS, MB, false>(args, plan, stream);
}

template <typename T, int BITS, int MB>
int occupancy() {
  // The symmetric variant uses less shared memory; plan with the larger one.
  constexpr int bytes = Config<T, BITS, MB, true>::kSmem;
  auto kernel = marlin_gemm_kernel<T, BITS, MB, true>;
  if (bytes > 48 * 1024) cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  int blocks = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, kThreads, bytes) != cudaSuccess) {
    (void)cudaGetLastError();
    return 1;
  }
  return std::max(blocks, 1);
}

template <typename T>
int occupancy_of(int bits, int m_blocks) {
  if (bits == 4) {
    if (m_blocks == 1) return occupancy<T, 4, 1>();
    if (m_blocks == 2) return occupancy<T, 4, 2>();
    return occupancy<T, 4, 4>();
  }
  if (m_blocks == 1) return occupancy<T, 8, 1>();
  if (m_blocks == 2) return occupancy<T, 8, 2>();
  return occupancy<T, 8, 4>();
}

}  // namespace

MarlinPlan marlin_plan(int64_t M, int64_t K_pad, int64_t N_pad, int bits, bool bf16) {
  MarlinPlan plan;
  plan.m_blocks = M <= 16 ? 1 : (M <= 32 ? 2 : 4);
  plan.m_chunks = static_cast<int>((M + 16 * plan.m_blocks - 1) / (16 * plan.m_blocks));
  plan.ctas_n = static_cast<int>((N_pad / kMarlinTileN + kWarps - 1) / kWarps);
  // Resident CTA slots of the device, per configuration (cached: one query per device and config).
  static std::mutex mu;
  static int cache[64][2][2][3] = {};  // [device][bits 4/8][fp16/bf16][m_blocks 1/2/4]
  int dev = 0;
  cudaGetDevice(&dev);
  const int mi = plan.m_blocks == 1 ? 0 : (plan.m_blocks == 2 ? 1 : 2);
  int slots;
  {
    std::lock_guard<std::mutex> lock(mu);
    int& c = cache[dev & 63][bits == 8][bf16][mi];
    if (c == 0) {
      int sms = 0;
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
      const int occ = bf16 ? occupancy_of<__nv_bfloat16>(bits, plan.m_blocks) : occupancy_of<__half>(bits, plan.m_blocks);
      c = std::max(sms, 1) * occ;
    }
    slots = c;
  }
  const int64_t tiles = int64_t(plan.ctas_n) * plan.m_chunks;
  const int64_t stages = K_pad / kMarlinTileK;
  // One wave of resident CTAs; every split keeps at least four stages so the pipeline has work.
  int64_t splits = tiles >= slots ? 1 : slots / tiles;
  splits = std::min<int64_t>(splits, std::max<int64_t>(1, stages / 4));
  plan.splits = static_cast<int>(std::max<int64_t>(splits, 1));
  return plan;
}

template <typename T>
cudaError_t launch_marlin_gemm(const MarlinGemmArgs& args, const MarlinPlan& plan, cudaStream_t stream) {
  if (args.M == 0 || args.N == 0) return cudaSuccess;
  if (args.bits == 4) {
    switch (plan.m_blocks) {
      case 1: return launch_zp<T, 4, 1>(args, plan, stream);
      case 2: return launch_zp<T, 4, 2>(args, plan, stream);
      case 4: return launch_zp<T, 4, 4>(args, plan, stream);
    }
  } else if (args.bits == 8) {
    switch (plan.m_blocks) {
      case 1: return launch_zp<T, 8, 1>(args, plan, stream);
      case 2: return launch_zp<T, 8, 2>(args, plan, stream);
      case 4: return launch_zp<T, 8, 4>(args, plan, stream);
    }
  }
  return cudaErrorInvalidValue;
}

template <typename T>
cudaError_t launch_marlin_unpack(const void* qweight, const void* scales, const void* zeros, void* out, int64_t K,
                                 int64_t N, int64_t K_pad, int64_t N_pad, int64_t group_size, int bits,
                                 cudaStream_t stream) {
  if (K == 0 || N == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>(N_pad / kMarlinTileN), static_cast<unsigned>(K_pad / kMarlinTileK));
  const auto* qw = static_cast<const int4*>(qweight);
  const auto* sc = static_cast<const T*>(scales);
  const auto* zp = static_cast<const T*>(zeros);
  auto* o = static_cast<T*>(out);
  if (bits == 4 && zp != nullptr)
    marlin_unpack_kernel<T, 4, true><<<grid, 256, 0, stream>>>(qw, sc, zp, o, K, N, K_pad, N_pad, group_size);
  else if (bits == 4)
    marlin_unpack_kernel<T, 4, false><<<grid, 256, 0, stream>>>(qw, sc, zp, o, K, N, K_pad, N_pad, group_size);
  else if (bits == 8 && zp != nullptr)
    marlin_unpack_kernel<T, 8, true><<<grid, 256, 0, stream>>>(qw, sc, zp, o, K, N, K_pad, N_pad, group_size);
  else if (bits == 8)
    marlin_unpack_kernel<T, 8, false><<<grid, 256, 0, stream>>>(qw, sc, zp, o, K, N, K_pad, N_pad, group_size);
  else
    return cudaErrorInvalidValue;
  return cudaGetLastError();
}

template cudaError_t launch_marlin_gemm<__half>(const MarlinGemmArgs&, const MarlinPlan&, cudaStream_t);
template cudaError_t launch_marlin_gemm<__nv_bfloat16>(const MarlinGemmArgs&, const MarlinPlan&, cudaStream_t);
template cudaError_t launch_marlin_unpack<__half>(const void*, const void*, const void*, void*, int64_t, int64_t,
                                                  int64_t, int64_t, int64_t, int, cudaStream_t);
template cudaError_t launch_marlin_unpack<__nv_bfloat16>(const void*, const void*, const void*, void*, int64_t,
                                                         int64_t, int64_t, int64_t, int64_t, int, cudaStream_t);

}  // namespace gptq::cuda
