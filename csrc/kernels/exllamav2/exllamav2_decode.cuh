// Decoding 4-bit weights of the checkpoint layout into tensor-core operand registers, shared by the
// Hopper GEMM (exllamav2_wgmma_sm90a.cu) and the tensor-core GEMV (exllamav2_tcgemv.cu). A word of
// qweight holds channels 8r..8r+7 of one feature; its nibble pairs (e0, e4), (e1, e5), (e2, e6),
// (e3, e7) become the four 2-element registers d[0..3] of that feature, as weights (q - z) s in the
// activation dtype. Which k slots of an MMA these pairs fill is up to the kernel, which stages x in
// the same channel order.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "common/gemv.cuh"

namespace gptq::cuda {

using gemv::and_or;
using gemv::as_half2;
using gemv::as_u32;

// Decoding a word of 8 nibbles into the four A-register pairs (e0, e4), (e1, e5), (e2, e6), (e3, e7)
// of one feature as weights (q - z) s, for fp16 or bf16 activations. Group parameters are kept per
// lane for its 4 features c as bit patterns of pairs: zl = (bias + z) twice, zh (fp16: -(64 + z)),
// s twice.
template <typename T>
struct Decode;

template <>
struct Decode<__half> {
  // fp16: a LOP3 puts a nibble pair into the mantissas of 1024.0 (1024 + e), or the next pair 4 bits
  // up (1024 + 16e); HSUB2 (1024 + z), resp. HFMA2 with 1/16 and -(64 + z), gives the exact q - z;
  // HMUL2 applies the scale. The word shifted by 8 gives the other two pairs: 13 instructions.
  static __device__ __forceinline__ uint32_t bias_z(uint32_t z) { return __byte_perm(z, 0x64u, 0x4040); }
  static __device__ __forceinline__ uint32_t neg_z(uint32_t zl) {
    return as_u32(__hsub2(as_half2(0x63806380u), as_half2(zl)));  // 960 - (1024 + z)
  }
  static __device__ __forceinline__ void word(uint32_t v, uint32_t zl, uint32_t zh, uint32_t sc, uint32_t (&d)[4]) {
    const __half2 k16 = as_half2(0x2C002C00u);  // 1/16
    const __half2 z2 = as_half2(zl), zh2 = as_half2(zh), s2 = as_half2(sc);
    const uint32_t v8 = v >> 8;
    d[0] = as_u32(__hmul2(__hsub2(as_half2(and_or<0x000F000Fu, 0x64006400u>(v)), z2), s2));
    d[1] = as_u32(__hmul2(__hfma2(as_half2(and_or<0x00F000F0u, 0x64006400u>(v)), k16, zh2), s2));
    d[2] = as_u32(__hmul2(__hsub2(as_half2(and_or<0x000F000Fu, 0x64006400u>(v8)), z2), s2));
    d[3] = as_u32(__hmul2(__hfma2(as_half2(and_or<0x00F000F0u, 0x64006400u>(v8)), k16, zh2), s2));
  }
  static __device__ __forceinline__ uint2 pack4(float4 v) {
    return make_uint2(as_u32(__floats2half2_rn(v.x, v.y)), as_u32(__floats2half2_rn(v.z, v.w)));
  }
};

template <>
struct Decode<__nv_bfloat16> {
  // bf16 has 7 mantissa bits: 128.0 (0x4300) holds a nibble at bits 0-3 exactly, not one 4 bits up,
  // so each pair is shifted down first (v, v >> 4, v >> 8, v >> 12); HSUB2 (128 + z) gives the exact
  // q - z and HMUL2 applies the scale (rounded to bf16, 2^-9 relative): 15 instructions.
  static __device__ __forceinline__ __nv_bfloat162 as_bf2(uint32_t v) {
    return *reinterpret_cast<__nv_bfloat162*>(&v);
  }
  static __device__ __forceinline__ uint32_t as_u(__nv_bfloat162 v) { return *reinterpret_cast<uint32_t*>(&v); }
  static __device__ __forceinline__ uint32_t bias_z(uint32_t z) { return __byte_perm(z, 0x43u, 0x4040); }
  static __device__ __forceinline__ uint32_t neg_z(uint32_t) { return 0u; }
  static __device__ __forceinline__ void word(uint32_t v, uint32_t zl, uint32_t, uint32_t sc, uint32_t (&d)[4]) {
    const __nv_bfloat162 z2 = as_bf2(zl), s2 = as_bf2(sc);
    d[0] = as_u(__hmul2(__hsub2(as_bf2(and_or<0x000F000Fu, 0x43004300u>(v)), z2), s2));
    d[1] = as_u(__hmul2(__hsub2(as_bf2(and_or<0x000F000Fu, 0x43004300u>(v >> 4)), z2), s2));
    d[2] = as_u(__hmul2(__hsub2(as_bf2(and_or<0x000F000Fu, 0x43004300u>(v >> 8)), z2), s2));
    d[3] = as_u(__hmul2(__hsub2(as_bf2(and_or<0x000F000Fu, 0x43004300u>(v >> 12)), z2), s2));
  }
  static __device__ __forceinline__ uint2 pack4(float4 v) {
    return make_uint2(as_u(__floats2bfloat162_rn(v.x, v.y)), as_u(__floats2bfloat162_rn(v.z, v.w)));
  }
};

}  // namespace gptq::cuda
