// 3-bit pieces shared by the half2 GEMV (autogptq_gemv3.cu) and the tensor-core GEMV
// (autogptq_tcgemv3.cu), both over the checkpoint layout as stored: the fields of a column's 32-channel
// period, and a quad of features' group parameters.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

#include "common/gemv.cuh"

namespace gptq::cuda::decode3 {

// The 16 pairs (v_j, v_j+16), j = 0..15, of one column's period (w0, w1, w2), as Field::get<P>(w) of
// the word w that holds pair j's two fields at bit P (<= 7) of its two halves.
//
// The 96-bit run w0 | w1 << 32 | w2 << 64 has six 16-bit halves; half i starts at bit 16i = i (mod 3),
// so halves i and i + 3 have their fields at the same offsets, and one PRMT joins them:
//   wa = [w0.lo | w1.hi]: (v0,v16) (v1,v17) (v2,v18) at P = 0, 3, 6; wa >> 6: (v3,v19) (v4,v20) at 3, 6
//   wb = [w0.hi | w2.lo]: (v6,v22) (v7,v23) at 2, 5;  wb >> 6: (v8,v24) (v9,v25) at 2, 5
//   wc = [w1.lo | w2.hi]: (v11,v27) (v12,v28) (v13,v29) at 1, 4, 7;  wc >> 6: (v14,v30) (v15,v31) at 4, 7
//   the four fields that straddle halves, (v5,v21) and (v10,v26), from two funnel shifts and a PRMT.
template <typename Field>
__device__ __forceinline__ void period_pairs(uint32_t w0, uint32_t w1, uint32_t w2, __half2 (&d)[16]) {
  const uint32_t wa = __byte_perm(w0, w1, 0x7610), wa6 = wa >> 6;
  const uint32_t wb = __byte_perm(w0, w2, 0x5432), wb6 = wb >> 6;
  const uint32_t wc = __byte_perm(w1, w2, 0x7610), wc6 = wc >> 6;
  const uint32_t wd = __byte_perm(w0 >> 15, __funnelshift_r(w1, w2, 31), 0x5410);  // v5 | v21 at bit 0
  const uint32_t we = __byte_perm(__funnelshift_r(w0, w1, 30), w2 >> 14, 0x5410);  // v10 | v26 at bit 0
  d[0] = Field::template get<0>(wa);
  d[1] = Field::template get<3>(wa);
  d[2] = Field::template get<6>(wa);
  d[3] = Field::template get<3>(wa6);
  d[4] = Field::template get<6>(wa6);
  d[5] = Field::template get<0>(wd);
  d[6] = Field::template get<2>(wb);
  d[7] = Field::template get<5>(wb);
  d[8] = Field::template get<2>(wb6);
  d[9] = Field::template get<5>(wb6);
  d[10] = Field::template get<0>(we);
  d[11] = Field::template get<1>(wc);
  d[12] = Field::template get<4>(wc);
  d[13] = Field::template get<7>(wc);
  d[14] = Field::template get<4>(wc6);
  d[15] = Field::template get<7>(wc6);
}

// A LOP3 puts the 3-bit field at bit P of both halves of w into the mantissas of 1024.0: 1024 + v 2^P.
template <int P>
__device__ __forceinline__ __half2 biased(uint32_t w) {
  static_assert(P >= 0 && P <= 7, "the field must lie in the fp16 mantissa");
  return gemv::as_half2(gemv::and_or<(0x7u << P) | (0x7u << (P + 16)), 0x64006400u>(w));
}

// The group parameters of four adjacent features f0..f0+3 (f0 % 4 == 0): their scales (fp16 pairs) and
// their 12 zero-point bits, which start at bit (3 f0) % 32 of qzeros word (3 f0) / 32 of the group's
// row and may straddle into the next word.
struct Quad {
  int64_t word;  // first word in a row of qzeros [G, N * 3 / 32]
  int bit;       // first bit in it
  __device__ __forceinline__ explicit Quad(int64_t f0) : word((3 * f0) >> 5), bit(static_cast<int>((3 * f0) & 31)) {}
};
struct Group {
  uint2 s;
  uint32_t z0, z1;
  // The quad's 12 zero-point bits, feature c's at bits 3c..3c+2, as stored (z, or z - 1 in a v1
  // checkpoint).
  __device__ __forceinline__ uint32_t zero_bits(const Quad& quad) const { return __funnelshift_r(z0, z1, quad.bit); }
};
__device__ __forceinline__ Group load_group(const __half* scales, const uint32_t* qzeros, int64_t grp, int64_t N,
                                            int64_t f0, const Quad& quad, bool ok) {
  Group g;
  const uint32_t* zr = qzeros + grp * (N * 3 / 32) + quad.word;
  g.s = ok ? __ldg(reinterpret_cast<const uint2*>(scales + grp * N + f0)) : make_uint2(0, 0);
  g.z0 = ok ? __ldg(zr) : 0u;
  g.z1 = ok && quad.bit > 20 ? __ldg(zr + 1) : 0u;  // the 12 bits straddle into the next word
  return g;
}

}  // namespace gptq::cuda::decode3
