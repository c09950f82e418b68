// The large-batch 4-bit GEMM on Hopper (see cutlass_mixed_launch.h): CUTLASS's mixed-input collective
// for fp16 or bf16 x uint4 with group scales and additive zero points, and the per-call conversion of
// the weights and zero points into its operand layouts. Instantiated once per activation type, each in
// a file of its own (cutlass_mixed_f16_sm90a.cu, cutlass_mixed_bf16_sm90a.cu) so they compile in parallel.
//
// Why CUTLASS here: at m >= 1024 our own Hopper GEMM (exllamav2_wgmma_sm90a.cu) reaches 0.66-0.94x of
// fp16 cuBLAS, and the warp-specialized designs we wrote ourselves were slower still (docs/kernels.md,
// tenth session). CUTLASS's version of that design, measured in benchmarks/lab/cutlass_mixed_lab.cu
// (2026-11-23_h100_s13_cutlass-lab.txt), ran 8192x28672 at m = 1024 in 620 us against fp16's 715.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cutlass_mixed_launch.h"

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/dispatch_policy.hpp"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/util/mixed_dtype_utils.hpp"
#include "cutlass/util/packed_stride.hpp"

namespace gptq::cuda {
namespace {

using namespace cute;

using Quant = cutlass::uint4b_t;
// Operand A: weights, features x K, K contiguous. Operand B: x, K x tokens, K contiguous. D: features x
// tokens, features contiguous, which is out [tokens, features] row-major.
using StrideW = cutlass::detail::TagToStrideA_t<cutlass::layout::RowMajor>;
using StrideX = cutlass::detail::TagToStrideB_t<cutlass::layout::ColumnMajor>;
using LayoutOut = cutlass::layout::ColumnMajor;

using ValueShuffle = Layout<Shape<_2, _4>, Stride<_4, _1>>;

// The GEMM's types for 16-bit activations Mma (cutlass::half_t or cutlass::bfloat16_t).
template <class Mma>
struct MixedGemm {
  using Element = Mma;
  // One warp's A fragment for a k16 step (16 features x 16 channels) with each lane's 8 codes in one
  // 32-bit word, in the order 0,2,4,6,1,3,5,7 (its int4 -> fp16 conversion extracts nibble pairs with one
  // LOP3 that way). Repeated over (features, channels) with features fastest (tile_to_shape's default
  // order): atom (f / 16, k / 16) starts at code 256 (f / 16 + (k / 16) (N / 16)); checked at every call
  // on a few atoms before the conversion kernel relies on it.
  using AtomW = decltype(cutlass::compute_memory_reordering_atom<Mma, Layout<Shape<_1, _1>>, ValueShuffle>());
  using LayoutW = decltype(cute::tile_to_shape(AtomW{}, Layout<Shape<int, int, int>, StrideW>{}));
  static_assert(size<0>(AtomW{}) == 16 && size<1>(AtomW{}) == 16 && cosize(AtomW{}) == 256,
                "the conversion kernel assumes 16 x 16 atoms that fill 256 codes");

  // 128 features x 256 tokens x 64 channels (64 fp16 = one 128-byte swizzle row of x): of the tiles
  // measured in the lab, the fastest from m = 1024 on every layer of the issue (128 x 128, 64 x 128,
  // 64 x 256 and 128 x 64 ran 5-45% slower there).
  using TileShape = Shape<_128, _256, _64>;
  using ClusterShape = Shape<_1, _1, _1>;

  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float, void, LayoutOut, 8, Mma, LayoutOut, 8,
      cutlass::epilogue::TmaWarpSpecializedCooperative>::CollectiveOp;

  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, cute::tuple<Quant, Mma, Mma>, LayoutW, 32, Mma, StrideX, 8,
      float, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
      cutlass::gemm::KernelTmaWarpSpecializedCooperative>::CollectiveOp;

  using Kernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Mainloop, Epilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;
  using StrideS = typename Mainloop::StrideScale;
  using StrideD = typename Kernel::StrideD;
};

// Checkpoint layout -> CUTLASS's, for the atom layout as it is: lane (g, q) of an atom holds rows g and
// g + 8 (features) and columns 2q, 2q + 1, 2q + 8, 2q + 9 (channels) of the 16 x 16 A fragment, values
// v = (k % 2) + 2 (f / 8) + 4 (k / 8), stored at nibble 4 (v % 2) + v / 2 of word 4g + q
// (atom_is_as_assumed checks this against AtomW once). So the 4 words of lanes (g, 0..3) take byte q of
// the same 4 checkpoint words: features g and g + 8 of the atom, packed rows 2 kb and 2 kb + 1. One
// thread makes those 4 words: 4 loads of 4 bytes (a warp covers 2 rows x 64 features), 3 PRMT and a
// nibble compaction a word, one 16-byte store (a warp writes 4 consecutive atoms, 512 bytes).
// Two earlier versions looked every code up in a table (from global memory, then through shared memory:
// 188 us on 8192x28672 against 75 now, benchmarks/results/2026-11-23_h100_s13_cutlass-profile.txt); they
// were bound by their instructions, this one by memory (235 MB read and written at about 2.9 TB/s).
__device__ __forceinline__ void convert_weights(const uint32_t* __restrict__ qweight, uint32_t* __restrict__ dst,
                                                int64_t N, int64_t t) {
  const int64_t feature_blocks = N / 16;
  const int g = static_cast<int>(t % 8);
  const int64_t atom = t / 8;
  const int64_t fb = atom % feature_blocks, kb = atom / feature_blocks;
  const uint32_t* row = qweight + 2 * kb * N + 16 * fb + g;
  const uint32_t s00 = __ldg(row), s01 = __ldg(row + 8), s10 = __ldg(row + N), s11 = __ldg(row + N + 8);
  uint32_t w[4];
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    // bytes q of s00, s01, s10, s11, in that order: their low nibbles are v0, v2, v4, v6 (channel
    // 2q of features g, g + 8, then channel 2q + 8), their high nibbles v1, v3, v5, v7.
    const uint32_t sel = static_cast<uint32_t>(q | ((q + 4) << 4));
    const uint32_t x = __byte_perm(__byte_perm(s00, s01, sel), __byte_perm(s10, s11, sel), 0x5410);
    uint32_t lo = x & 0x0F0F0F0Fu, hi = (x >> 4) & 0x0F0F0F0Fu;
    lo = (lo | (lo >> 4)) & 0x00FF00FFu;
    hi = (hi | (hi >> 4)) & 0x00FF00FFu;
    lo = (lo | (lo >> 8)) & 0x0000FFFFu;
    hi = (hi | (hi >> 8)) & 0x0000FFFFu;
    w[q] = lo | (hi << 16);
  }
  *reinterpret_cast<uint4*>(dst + atom * 32 + 4 * g) = make_uint4(w[0], w[1], w[2], w[3]);
}

// The fragment order convert_weights assumes, against the atom layout CUTLASS will read.
template <class AtomW>
bool atom_is_as_assumed() {
  for (int f = 0; f < 16; ++f) {
    for (int k = 0; k < 16; ++k) {
      const int j = 4 * (f % 8) + (k % 8) / 2, v = (k % 2) + 2 * (f / 8) + 4 * (k / 8);
      if (static_cast<int>(AtomW{}(f, k)) != 8 * j + 4 * (v % 2) + v / 2) return false;
    }
  }
  return true;
}

// One launch converts the weights (threads 0 .. N K / 32 - 1, 4 words each) and the zero points
// z' = -z s, [G, N] (the threads after them, one z' each). The product of a 4-bit integer and an fp16
// or bf16 is exact in fp32, so z' is rounded once. A separate zero-point kernel cost 2-8 us more a call.
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
template <class T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

template <class T>
__global__ void __launch_bounds__(256) convert_kernel(const uint32_t* __restrict__ qweight,
                                                      const uint32_t* __restrict__ qzeros,
                                                      const T* __restrict__ scales, uint32_t* __restrict__ dst,
                                                      T* __restrict__ zeros, int64_t K, int64_t N, int64_t G,
                                                      bool zeros_minus_one) {
  const int64_t t = int64_t{blockIdx.x} * 256 + threadIdx.x;
  const int64_t weight_threads = N / 16 * (K / 16) * 8;
  if (t < weight_threads) {
    convert_weights(qweight, dst, N, t);
    return;
  }
  const int64_t i = t - weight_threads;
  if (i >= G * N) return;
  const int64_t g = i / N, n = i % N;
  uint32_t z = (__ldg(qzeros + g * (N / 8) + n / 8) >> (4 * (n % 8))) & 15u;
  if (zeros_minus_one) z = (z + 1u) & 15u;
  zeros[i] = from_float<T>(-static_cast<float>(z) * to_float(scales[i]));
}

template <class G>
typename G::LayoutW weight_layout(int64_t K, int64_t N) {
  return cute::tile_to_shape(typename G::AtomW{}, make_shape(static_cast<int>(N), static_cast<int>(K), 1));
}

// The atom placement convert_weights assumes, checked on the first, last and a middle atom.
template <class G>
bool layout_is_as_assumed(const typename G::LayoutW& layout, int64_t K, int64_t N) {
  const int64_t fb = N / 16, kb = K / 16;
  const int64_t atoms[3][2] = {{0, 0}, {fb - 1, kb - 1}, {fb / 2, kb / 2}};
  const int points[4][2] = {{0, 0}, {15, 0}, {0, 15}, {7, 9}};
  for (const auto& a : atoms) {
    for (const auto& p : points) {
      const int64_t got = layout(static_cast<int>(16 * a[0] + p[0]), static_cast<int>(16 * a[1] + p[1]), 0);
      const int64_t want = 256 * (a[0] + a[1] * fb) + typename G::AtomW{}(p[0], p[1]);
      if (got != want) return false;
    }
  }
  return true;
}

template <class G>
typename G::Gemm::Arguments gemm_arguments(const CutlassMixedArgs& a) {
  using Mma = typename G::Element;
  const int M = static_cast<int>(a.M), K = static_cast<int>(a.K), N = static_cast<int>(a.N);
  const int group = a.group_size == -1 ? K : static_cast<int>(a.group_size);
  const int groups = K / group;
  const StrideX stride_x = cutlass::make_cute_packed_stride(StrideX{}, make_shape(M, K, 1));
  const typename G::StrideD stride_d = cutlass::make_cute_packed_stride(typename G::StrideD{}, make_shape(N, M, 1));
  const typename G::StrideS stride_s =
      cutlass::make_cute_packed_stride(typename G::StrideS{}, make_shape(N, groups, 1));
  return typename G::Gemm::Arguments{
      cutlass::gemm::GemmUniversalMode::kGemm,
      {N, M, K, 1},
      {reinterpret_cast<const Quant*>(a.weights_ws), weight_layout<G>(a.K, a.N), reinterpret_cast<const Mma*>(a.x),
       stride_x, reinterpret_cast<const Mma*>(a.scales), stride_s, group, reinterpret_cast<const Mma*>(a.zeros_ws)},
      {{1.f, 0.f}, nullptr, stride_d, reinterpret_cast<Mma*>(a.out), stride_d}};
}


template <class G>
size_t workspace_bytes(int64_t M, int64_t K, int64_t N, int64_t group_size) {
  CutlassMixedArgs a;
  a.M = M, a.K = K, a.N = N, a.group_size = group_size;
  return G::Gemm::get_workspace_size(gemm_arguments<G>(a));
}

// T: the activations' CUDA type (__half or __nv_bfloat16), the same bits as G::Mma.
template <class G, class T>
cudaError_t launch(const CutlassMixedArgs& a, cudaStream_t stream) {
  // A conversion alone has no tokens; its checks run with one.
  const int64_t M = a.gemm ? a.M : 1;
  if (!cutlass_mixed_supports(M, a.K, a.N, a.group_size)) return cudaErrorInvalidValue;
  static const bool atom_ok = atom_is_as_assumed<typename G::AtomW>();
  if (!atom_ok || !layout_is_as_assumed<G>(weight_layout<G>(a.K, a.N), a.K, a.N)) return cudaErrorInvalidValue;
  CutlassMixedArgs checked = a;
  checked.M = M;
  const auto args = gemm_arguments<G>(checked);
  typename G::Gemm gemm;
  if (gemm.can_implement(args) != cutlass::Status::kSuccess) return cudaErrorInvalidValue;
  cudaError_t err = cudaSuccess;
  if (a.convert) {
    const int64_t groups = a.group_size == -1 ? 1 : a.K / a.group_size;
    const int64_t threads = a.N / 16 * (a.K / 16) * 8 + groups * a.N;
    convert_kernel<T><<<static_cast<unsigned>((threads + 255) / 256), 256, 0, stream>>>(
        a.qweight, a.qzeros, reinterpret_cast<const T*>(a.scales), a.weights_ws, reinterpret_cast<T*>(a.zeros_ws),
        a.K, a.N, groups, a.zeros_minus_one);
    err = cudaGetLastError();
    if (err != cudaSuccess || !a.gemm) return err;
  }
  if (gemm.initialize(args, a.gemm_ws, stream) != cutlass::Status::kSuccess) {
    err = cudaGetLastError();
    return err != cudaSuccess ? err : cudaErrorInvalidValue;
  }
  if (gemm.run(stream) != cutlass::Status::kSuccess) {
    err = cudaGetLastError();
    return err != cudaSuccess ? err : cudaErrorLaunchFailure;
  }
  return cudaGetLastError();
}

}  // namespace
}  // namespace gptq::cuda
