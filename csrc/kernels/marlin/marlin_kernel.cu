// Marlin-style mixed-input GEMM: out[M, N] = x[M, K] @ W^T, W a 4- or 8-bit GPTQ layer in the tile
// layout of marlin_launch.h, x and out fp16 or bf16, fp32 accumulation on the tensor cores.
//
// CTA = 4 warps, output tile (16 * MB) rows x 64 columns. Along K the CTA walks its range in stages
// of 128 rows through a 4-deep cp.async pipeline (global -> shared, 16-byte copies; weights with an
// L2 evict-first hint since each byte is read once). Inside a stage the 8 slices of 16 rows are
// dealt to the warps round-robin (warp w takes slices w and w + 4), so every warp streams weights
// even at M = 1; the four partial tiles are summed through shared memory at the end.
//
// Per slice a lane does: one 16-byte shared load per bits/4 of weights (its B fragments for all
// eight n8 sub-tiles), one for its eight scales (and zeros), ldmatrix.x4 per 16-row block of x, then
// dequantizes in registers with the magic-number trick: (q & 0x000f000f) | 0x64006400 is the fp16
// pair 1024 + q, so one subtract of 1024 + z is exact and one multiply by the scale rounds once.
// The high nibbles give 1024 + 16q, fixed by one fma with 1/16 (exact). bf16 uses 128 (0x4300) as
// magic for 4 bits; 8-bit bf16 goes through fp32 (0x4B000000 + byte) since 128 + 255 is not exact
// in bf16's 8-bit mantissa.
//
// Filling the machine: grid = (N_pad/64 column tiles, splits, M chunks). When the tiles alone would
// leave SMs idle (M = 1 on a 4096-column layer gives 64 tiles for 132 SMs), K is split over
// `splits` CTAs; each writes an fp32 partial tile, and the last one to finish (an atomic counter per
// tile, reset to 0 by that CTA) sums the partials in split order, so the result is deterministic.
#include <algorithm>
#include <mutex>

#include "marlin_launch.h"

namespace gptq::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kStages = 4;
constexpr int kSlices = kMarlinTileK / 16;  // 16-row slices per stage

// ---- PTX wrappers ---------------------------------------------------------------------------------
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
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
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
template <typename T>
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]);
template <>
__device__ __forceinline__ void mma_16816<__half>(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4],
                                                         const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
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

// Dequantizes one lane's share of a 16 x 64 slice into the B fragments of the eight n8 sub-tiles:
// b[j][0] = rows (2t, 2t+1), b[j][1] = rows (2t+8, 2t+9) of column 8j + g, as (q - z) * s rounded
// once to T. q: the lane's BITS words; s, z: its scales and zero points, word i = sub-tiles
// (2i, 2i+1).
template <typename T, int BITS>
struct Dequant;

template <>
struct Dequant<__half, 4> {
  static __device__ __forceinline__ void run(const uint32_t (&q)[4], const uint32_t (&s)[4], const uint32_t (&z)[4],
                                             uint32_t (&b)[8][2]) {
    using P = Pair<__half>;
    constexpr uint32_t kMagic = 0x64006400;   // fp16 1024
    constexpr uint32_t kM64 = 0x54005400;     // fp16 64
    constexpr uint32_t kSixteenth = 0x2c002c00;  // fp16 1/16
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      const uint32_t sa = dup_lo(s[w]), sb = dup_hi(s[w]);
      const uint32_t za = dup_lo(z[w]), zb = dup_hi(z[w]);
      const uint32_t zla = P::add(za, kMagic);               // 1024 + z, exact
      const uint32_t nzhb = P::sub(0u, P::add(zb, kM64));    // -(64 + z), exact
      const uint32_t x = q[w], y = q[w] >> 8;
      const uint32_t lo0 = (x & 0x000f000f) | kMagic, hi0 = (x & 0x00f000f0) | kMagic;
      const uint32_t lo1 = (y & 0x000f000f) | kMagic, hi1 = (y & 0x00f000f0) | kMagic;
      b[2 * w][0] = P::mul(P::sub(lo0, zla), sa);
      b[2 * w][1] = P::mul(P::sub(lo1, zla), sa);
      b[2 * w + 1][0] = P::mul(P::fma(hi0, kSixteenth, nzhb), sb);  // (1024 + 16q)/16 - 64 - z
      b[2 * w + 1][1] = P::mul(P::fma(hi1, kSixteenth, nzhb), sb);
    }
  }
};

template <>
struct Dequant<__nv_bfloat16, 4> {
  static __device__ __forceinline__ void run(const uint32_t (&q)[4], const uint32_t (&s)[4], const uint32_t (&z)[4],
                                             uint32_t (&b)[8][2]) {
    using P = Pair<__nv_bfloat16>;
    constexpr uint32_t kMagic = 0x43004300;  // bf16 128: 128 + q exact for q < 128
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      const uint32_t sa = dup_lo(s[w]), sb = dup_hi(s[w]);
      const uint32_t zla = P::add(dup_lo(z[w]), kMagic), zlb = P::add(dup_hi(z[w]), kMagic);
      const uint32_t x = q[w];
      b[2 * w][0] = P::mul(P::sub((x & 0x000f000f) | kMagic, zla), sa);
      b[2 * w + 1][0] = P::mul(P::sub(((x >> 4) & 0x000f000f) | kMagic, zlb), sb);
      b[2 * w][1] = P::mul(P::sub(((x >> 8) & 0x000f000f) | kMagic, zla), sa);
      b[2 * w + 1][1] = P::mul(P::sub(((x >> 12) & 0x000f000f) | kMagic, zlb), sb);
    }
  }
};

template <>
struct Dequant<__half, 8> {
  static __device__ __forceinline__ void run(const uint32_t (&q)[8], const uint32_t (&s)[4], const uint32_t (&z)[4],
                                             uint32_t (&b)[8][2]) {
    using P = Pair<__half>;
    constexpr uint32_t kMagic = 0x64006400;  // 1024 + q exact for q < 1024
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const uint32_t sj = (j & 1) ? dup_hi(s[j >> 1]) : dup_lo(s[j >> 1]);
      const uint32_t zj = P::add((j & 1) ? dup_hi(z[j >> 1]) : dup_lo(z[j >> 1]), kMagic);
      b[j][0] = P::mul(P::sub((q[j] & 0x00ff00ff) | kMagic, zj), sj);
      b[j][1] = P::mul(P::sub(((q[j] >> 8) & 0x00ff00ff) | kMagic, zj), sj);
    }
  }
};

template <>
struct Dequant<__nv_bfloat16, 8> {
  static __device__ __forceinline__ void run(const uint32_t (&q)[8], const uint32_t (&s)[4], const uint32_t (&z)[4],
                                             uint32_t (&b)[8][2]) {
    using P = Pair<__nv_bfloat16>;
    constexpr float kMagic = 8388608.f;  // 2^23: 0x4B000000 | byte is 2^23 + byte
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const float sj = (j & 1) ? P::hi(s[j >> 1]) : P::lo(s[j >> 1]);
      const float zj = kMagic + ((j & 1) ? P::hi(z[j >> 1]) : P::lo(z[j >> 1]));
      const uint32_t x = q[j];
      const float r0 = (__uint_as_float(0x4B000000u | (x & 0xff)) - zj) * sj;
      const float r8 = (__uint_as_float(0x4B000000u | ((x >> 8) & 0xff)) - zj) * sj;
      const float r1 = (__uint_as_float(0x4B000000u | ((x >> 16) & 0xff)) - zj) * sj;
      const float r9 = (__uint_as_float(0x4B000000u | (x >> 24)) - zj) * sj;
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

template <typename T, int BITS, int MB>
__global__ void __launch_bounds__(kThreads) marlin_gemm_kernel(MarlinGemmArgs a) {
  constexpr int kBPerSlice = 32 * BITS / 4;       // int4 per 16 x 64 slice
  constexpr int kBStage = kSlices * kBPerSlice;   // 256 (4 bits) or 512 (8 bits) int4
  constexpr int kRows = 16 * MB;
  constexpr int kChunks = kMarlinTileK / 8;       // 16-byte chunks per x row per stage
  constexpr int kAStage = kRows * kChunks;
  constexpr int kSStage = kSlices * 8;            // up to 8 group rows (groups >= 16) x 8 int4
  extern __shared__ int4 smem[];
  int4* sB = smem;
  int4* sA = sB + kStages * kBStage;
  int4* sS = sA + kStages * kAStage;
  int4* sZ = sS + kStages * kSStage;
  __shared__ int last_flag;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int nt = blockIdx.x, split = blockIdx.y;
  const int64_t m0 = int64_t(blockIdx.z) * kRows;
  const int rows_valid = static_cast<int>(a.M - m0 < kRows ? a.M - m0 : kRows);
  const int total_st = static_cast<int>(a.K_pad / kMarlinTileK);
  const int st0 = static_cast<int>(int64_t(split) * total_st / a.splits);
  const int st1 = static_cast<int>(int64_t(split + 1) * total_st / a.splits);
  const int nst = st1 - st0;
  const int gs = static_cast<int>(a.group_size);
  const int group_rows = gs >= kMarlinTileK ? 1 : kMarlinTileK / gs;
  // slice kk (16 rows) of a stage reads group row kk >> shift: 0 when a group spans the stage.
  const int row_shift = gs >= kMarlinTileK ? 3 : __ffs(gs / 16) - 1;
  const bool has_zp = a.zeros != nullptr;

  const T* x = static_cast<const T*>(a.x);
  const int4* qw = static_cast<const int4*>(a.qweight) + int64_t(nt) * (a.K_pad / 16) * kBPerSlice;
  const T* scales = static_cast<const T*>(a.scales) + int64_t(nt) * kMarlinTileN;
  const T* zeros = has_zp ? static_cast<const T*>(a.zeros) + int64_t(nt) * kMarlinTileN : nullptr;

  // Rows of x past M stay zero in every stage buffer: they are never loaded.
  for (int i = tid; i < kStages * kAStage; i += kThreads)
    if ((i % kAStage) / kChunks >= rows_valid) sA[i] = make_int4(0, 0, 0, 0);

  auto load_stage = [&](int buf, int st) {
    const int4* src = qw + int64_t(st) * kBStage;
    int4* dst = sB + buf * kBStage;
#pragma unroll
    for (int i = tid; i < kBStage; i += kThreads) cp_async16_stream(dst + i, src + i);
    int4* da = sA + buf * kAStage;
    const int64_t k0 = int64_t(st) * kMarlinTileK;
    for (int i = tid; i < rows_valid * kChunks; i += kThreads) {
      const int r = i / kChunks, c = i % kChunks;
      const int64_t kg = k0 + c * 8;
      const bool valid = kg < a.K;
      // XOR swizzle of the 16-byte chunk by row: the 8 rows an ldmatrix phase reads hit 8 distinct
      // bank groups.
      cp_async16_zfill(da + r * kChunks + (c ^ (r & 7)), valid ? x + (m0 + r) * a.K + kg : x, valid);
    }
    const int64_t g0 = k0 / gs;
    if (tid < group_rows * 8) {
      const int r = tid >> 3, c = tid & 7;
      cp_async16(sS + buf * kSStage + tid, scales + (g0 + r) * a.N_pad + c * 8);
      if (has_zp) cp_async16(sZ + buf * kSStage + tid, zeros + (g0 + r) * a.N_pad + c * 8);
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

  auto compute_stage = [&](int buf) {
    const int4* B = sB + buf * kBStage;
    const int4* A = sA + buf * kAStage;
#pragma unroll
    for (int i = 0; i < kSlices / kWarps; ++i) {
      const int kk = warp + kWarps * i;
      const int srow = kk >> row_shift;
      const int4 sv = sS[buf * kSStage + srow * 8 + (lane >> 2)];
      uint32_t s[4] = {uint32_t(sv.x), uint32_t(sv.y), uint32_t(sv.z), uint32_t(sv.w)};
      uint32_t z[4] = {zsym, zsym, zsym, zsym};
      if (has_zp) {
        const int4 zv = sZ[buf * kSStage + srow * 8 + (lane >> 2)];
        z[0] = zv.x; z[1] = zv.y; z[2] = zv.z; z[3] = zv.w;
      }
      uint32_t q[BITS];
#pragma unroll
      for (int h = 0; h < BITS / 4; ++h) {
        const int4 v = B[kk * kBPerSlice + h * 32 + lane];
        q[4 * h] = v.x; q[4 * h + 1] = v.y; q[4 * h + 2] = v.z; q[4 * h + 3] = v.w;
      }
      uint32_t af[MB][4];
#pragma unroll
      for (int mb = 0; mb < MB; ++mb) {
        const int r = mb * 16 + (lane & 15);
        const int c = kk * 2 + (lane >> 4);
        ldmatrix_x4(af[mb], A + r * kChunks + (c ^ (r & 7)));
      }
      uint32_t b[8][2];
      Dequant<T, BITS>::run(q, s, z, b);
#pragma unroll
      for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int mb = 0; mb < MB; ++mb) mma_16816<T>(acc[mb][j], af[mb], b[j]);
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
  __syncthreads();

  // Sum the four warps' partial tiles: red[warp][row][col], fp32, reusing the pipeline buffers.
  float* red = reinterpret_cast<float*>(smem);
  {
    const int g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int mb = 0; mb < MB; ++mb)
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        float* p = red + (warp * kRows + mb * 16 + g) * kMarlinTileN + 8 * j + 2 * t;
        p[0] = acc[mb][j][0];
        p[1] = acc[mb][j][1];
        p[8 * kMarlinTileN] = acc[mb][j][2];
        p[8 * kMarlinTileN + 1] = acc[mb][j][3];
      }
  }
  __syncthreads();
  T* out = static_cast<T*>(a.out);
  const int64_t n0 = int64_t(nt) * kMarlinTileN;
  for (int e = tid; e < rows_valid * kMarlinTileN; e += kThreads) {
    const int r = e / kMarlinTileN, c = e % kMarlinTileN;
    float v = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) v += red[(w * kRows + r) * kMarlinTileN + c];
    if (a.splits == 1) {
      if (n0 + c < a.N) out[(m0 + r) * a.N + n0 + c] = Pair<T>::from_float(v);
    } else {
      a.partial[(int64_t(split) * a.M + m0 + r) * a.N_pad + n0 + c] = v;
    }
  }
  if (a.splits == 1) return;

  // Split-K fix-up: the last CTA of this output tile adds the partials in split order.
  __threadfence();
  __syncthreads();
  int* counter = a.counters + int64_t(blockIdx.z) * gridDim.x + nt;
  if (tid == 0) last_flag = atomicAdd(counter, 1) == a.splits - 1;
  __syncthreads();
  if (!last_flag) return;
  __threadfence();
  for (int e = tid; e < rows_valid * kMarlinTileN; e += kThreads) {
    const int r = e / kMarlinTileN, c = e % kMarlinTileN;
    if (n0 + c >= a.N) continue;
    float v = 0.f;
    for (int s = 0; s < a.splits; ++s) v += __ldcg(a.partial + (int64_t(s) * a.M + m0 + r) * a.N_pad + n0 + c);
    out[(m0 + r) * a.N + n0 + c] = Pair<T>::from_float(v);
  }
  if (tid == 0) *counter = 0;  // ready for the next call with the same workspace
}

template <typename T, int BITS, int MB>
constexpr int smem_bytes() {
  constexpr int pipe = kStages * (kSlices * 32 * BITS / 4 + 16 * MB * (kMarlinTileK / 8) + 2 * kSlices * 8) * 16;
  constexpr int red = kWarps * 16 * MB * kMarlinTileN * 4;
  return pipe > red ? pipe : red;
}

// Dense W^T [K, N] from the tile layout: one thread per (tile, slice, lane), the same dequantization
// as the GEMM.
template <typename T, int BITS>
__global__ void marlin_unpack_kernel(const int4* __restrict__ qw, const T* __restrict__ scales,
                                     const T* __restrict__ zeros, T* __restrict__ out, int64_t K, int64_t N,
                                     int64_t K_pad, int64_t N_pad, int64_t group_size) {
  constexpr int kBPerSlice = 32 * BITS / 4;
  const int64_t KT = K_pad / 16;
  const int64_t id = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (id >= (N_pad / kMarlinTileN) * KT * 32) return;
  const int lane = static_cast<int>(id & 31);
  const int64_t kt = (id >> 5) % KT, nt = (id >> 5) / KT;
  const int64_t grp = kt * 16 / group_size;
  const int4* src = qw + (nt * KT + kt) * kBPerSlice;
  uint32_t q[BITS];
#pragma unroll
  for (int h = 0; h < BITS / 4; ++h) {
    const int4 v = src[h * 32 + lane];
    q[4 * h] = v.x; q[4 * h + 1] = v.y; q[4 * h + 2] = v.z; q[4 * h + 3] = v.w;
  }
  const int64_t sofs = grp * N_pad + nt * kMarlinTileN + (lane >> 2) * 8;
  const int4 sv = *reinterpret_cast<const int4*>(scales + sofs);
  uint32_t s[4] = {uint32_t(sv.x), uint32_t(sv.y), uint32_t(sv.z), uint32_t(sv.w)};
  const uint32_t zsym = symmetric_zero_pair<T, BITS>();
  uint32_t z[4] = {zsym, zsym, zsym, zsym};
  if (zeros != nullptr) {
    const int4 zv = *reinterpret_cast<const int4*>(zeros + sofs);
    z[0] = zv.x; z[1] = zv.y; z[2] = zv.z; z[3] = zv.w;
  }
  uint32_t b[8][2];
  Dequant<T, BITS>::run(q, s, z, b);
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const int64_t n = nt * kMarlinTileN + 8 * j + g;
    if (n >= N) continue;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int64_t k = kt * 16 + 2 * t + (e & 1) + 8 * (e >> 1);
      const auto pair = Pair<T>::v(b[j][e >> 1]);
      if (k < K) out[k * N + n] = (e & 1) ? pair.y : pair.x;
    }
  }
}

template <typename T, int BITS, int MB>
cudaError_t launch_config(const MarlinGemmArgs& args, const MarlinPlan& plan, cudaStream_t stream) {
  constexpr int bytes = smem_bytes<T, BITS, MB>();
  auto kernel = marlin_gemm_kernel<T, BITS, MB>;
  if (bytes > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
    if (err != cudaSuccess) return err;
  }
  const dim3 grid(static_cast<unsigned>(args.N_pad / kMarlinTileN), static_cast<unsigned>(plan.splits),
                  static_cast<unsigned>(plan.m_chunks));
  kernel<<<grid, kThreads, bytes, stream>>>(args);
  return cudaGetLastError();
}

template <typename T, int BITS, int MB>
int occupancy() {
  constexpr int bytes = smem_bytes<T, BITS, MB>();
  auto kernel = marlin_gemm_kernel<T, BITS, MB>;
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
  const int64_t tiles = (N_pad / kMarlinTileN) * plan.m_chunks;
  const int64_t stages = K_pad / kMarlinTileK;
  // One wave of resident CTAs; every split keeps at least two stages so the pipeline has work.
  int64_t splits = tiles >= slots ? 1 : slots / tiles;
  splits = std::min<int64_t>(splits, std::max<int64_t>(1, stages / 2));
  plan.splits = static_cast<int>(std::max<int64_t>(splits, 1));
  return plan;
}

template <typename T>
cudaError_t launch_marlin_gemm(const MarlinGemmArgs& args, const MarlinPlan& plan, cudaStream_t stream) {
  if (args.M == 0 || args.N == 0) return cudaSuccess;
  if (args.bits == 4) {
    switch (plan.m_blocks) {
      case 1: return launch_config<T, 4, 1>(args, plan, stream);
      case 2: return launch_config<T, 4, 2>(args, plan, stream);
      case 4: return launch_config<T, 4, 4>(args, plan, stream);
    }
  } else if (args.bits == 8) {
    switch (plan.m_blocks) {
      case 1: return launch_config<T, 8, 1>(args, plan, stream);
      case 2: return launch_config<T, 8, 2>(args, plan, stream);
      case 4: return launch_config<T, 8, 4>(args, plan, stream);
    }
  }
  return cudaErrorInvalidValue;
}

template <typename T>
cudaError_t launch_marlin_unpack(const void* qweight, const void* scales, const void* zeros, void* out, int64_t K,
                                 int64_t N, int64_t K_pad, int64_t N_pad, int64_t group_size, int bits,
                                 cudaStream_t stream) {
  const int64_t threads = (N_pad / kMarlinTileN) * (K_pad / 16) * 32;
  if (threads == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>((threads + 255) / 256);
  const auto* qw = static_cast<const int4*>(qweight);
  const auto* sc = static_cast<const T*>(scales);
  const auto* zp = static_cast<const T*>(zeros);
  auto* o = static_cast<T*>(out);
  if (bits == 4)
    marlin_unpack_kernel<T, 4><<<blocks, 256, 0, stream>>>(qw, sc, zp, o, K, N, K_pad, N_pad, group_size);
  else if (bits == 8)
    marlin_unpack_kernel<T, 8><<<blocks, 256, 0, stream>>>(qw, sc, zp, o, K, N, K_pad, N_pad, group_size);
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
