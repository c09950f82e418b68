// Hopper (sm_90a) warpgroup MMA building blocks: wgmma.mma_async with the A operand in registers and
// B in shared memory, its fences, and the shared-memory matrix descriptor. Include only from
// *_sm90a.cu files (compiled for 90a alone, see cmake/GptqCuda.cmake).
//
// wgmma.mma_async.m64nNk16 (f16 x f16 -> f32) is issued by a warpgroup (4 warps, 128 threads):
//   - A (64 x 16, registers): warp w supplies rows 16w..16w+15 with the mma.sync.m16n8k16 A fragment,
//     lane (g = lane / 4, q = lane % 4): a0 = (row g, k 2q, 2q+1), a1 = (row g+8, k 2q, 2q+1),
//     a2 = (row g, k 2q+8, 2q+9), a3 = (row g+8, k 2q+8, 2q+9);
//   - B (16 x N, shared memory, "K-major": each of the N columns holds its 16 k values as two 16-byte
//     halves) through a descriptor;
//   - D (64 x N, fp32 registers): warp w holds rows 16w + g and 16w + g + 8; d[4j + 0, 1] are row g,
//     columns 8j + 2q, 8j + 2q + 1, and d[4j + 2, 3] the same columns of row g + 8.
// It runs asynchronously: wgmma_commit closes a group of issued MMAs, wgmma_wait<n> waits until at
// most n groups are pending, and registers an MMA reads (A) or writes (D) must not be touched by
// other instructions before it completes; wgmma_fence orders earlier register writes before it.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "common/mma.cuh"  // smem_addr

namespace gptq::cuda::sm90 {

// Shared-memory matrix descriptor for the canonical layout without swizzle: the operand is a grid
// of "core matrices" of 8 rows x 16 bytes stored as 128 contiguous bytes. `lead` is the byte
// distance between core matrices adjacent along K, `stride` between those adjacent along M or N.
// Bits: [0, 14) address >> 4, [16, 30) lead >> 4, [32, 46) stride >> 4, [62, 64) swizzle (0: none).
__device__ __forceinline__ uint64_t smem_desc(const void* p, uint32_t lead, uint32_t stride) {
  const uint32_t addr = smem_addr(p);
  return uint64_t((addr >> 4) & 0x3FFF) | (uint64_t((lead >> 4) & 0x3FFF) << 16) |
         (uint64_t((stride >> 4) & 0x3FFF) << 32);
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Keeps the compiler from moving reads or writes of accumulator registers across a wgmma_wait.
template <int R>
__device__ __forceinline__ void fence_registers(float (&d)[R]) {
#pragma unroll
  for (int i = 0; i < R; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// Bulk copies (the TMA's one-dimensional form) complete on an mbarrier in shared memory. They write
// through the async proxy that wgmma reads B through, so no proxy fence is needed between them.
// (cp.async writes through the generic proxy; the fence.proxy.async it would need compiles to a
// MEMBAR that also waits for every copy still in flight, which serialized the pipeline.)
__device__ __forceinline__ void mbarrier_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count) : "memory");
}
// One arrival that also announces `bytes` of copies that will complete on the barrier.
__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(bytes)
               : "memory");
}
// Waits for the completion of the barrier's phase with the given parity.
__device__ __forceinline__ void mbarrier_wait(uint64_t* bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred done;\nWAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT;\n}\n" ::"r"(smem_addr(bar)),
      "r"(parity)
      : "memory");
}
// bytes (a multiple of 16, both addresses 16-byte aligned) from global to shared memory.
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
          smem_addr(dst)),
      "l"(src), "r"(bytes), "r"(smem_addr(bar))
      : "memory");
}

// d (64 x N fp32 fragments, N / 2 registers) += A (registers) x B (descriptor), T = __half or
// __nv_bfloat16 for both operands.
template <int N, typename T>
__device__ __forceinline__ void wgmma_rs(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t desc);

// One wrapper per N (its operand list has N / 2 accumulators), stamped out for fp16 and bf16.
#define GPTQ_WGMMA_RS_16(T, PTX)                                                                         \
  template <>                                                                                            \
  __device__ __forceinline__ void wgmma_rs<16, T>(float(&d)[8], const uint32_t(&a)[4], uint64_t desc) {  \
    asm volatile(                                                                                        \
        "{\n.reg .pred p;\nsetp.ne.b32 p, %13, 0;\n"                                                     \
        "wgmma.mma_async.sync.aligned.m64n16k16.f32." PTX "." PTX                                        \
        " {"                                                                                             \
        "%0,%1,%2,%3,%4,%5,%6,%7}, {%8,%9,%10,%11}, %12, p, 1, 1, 0;\n}\n"                               \
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]) \
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));                                \
  }
#define GPTQ_WGMMA_RS_32(T, PTX)                                                                                      \
  template <>                                                                                                         \
  __device__ __forceinline__ void wgmma_rs<32, T>(float(&d)[16], const uint32_t(&a)[4], uint64_t desc) {              \
    asm volatile(                                                                                                     \
        "{\n.reg .pred p;\nsetp.ne.b32 p, %21, 0;\n"                                                                  \
        "wgmma.mma_async.sync.aligned.m64n32k16.f32." PTX "." PTX                                                     \
        " {"                                                                                                          \
        "%0,%1,%2,%3,%4,%5,%6,%7,"                                                                                    \
        "%8,%9,%10,%11,%12,%13,%14,%15}, {%16,%17,%18,%19}, %20, p, 1, 1, 0;\n}\n"                                    \
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), \
          "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])                    \
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));                                             \
  }
#define GPTQ_WGMMA_RS_64(T, PTX)                                                                                      \
  template <>                                                                                                         \
  __device__ __forceinline__ void wgmma_rs<64, T>(float(&d)[32], const uint32_t(&a)[4], uint64_t desc) {              \
    asm volatile(                                                                                                     \
        "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"                                                                  \
        "wgmma.mma_async.sync.aligned.m64n64k16.f32." PTX "." PTX                                                     \
        " {"                                                                                                          \
        "%0,%1,%2,%3,%4,%5,%6,%7,"                                                                                    \
        "%8,%9,%10,%11,%12,%13,%14,%15,"                                                                              \
        "%16,%17,%18,%19,%20,%21,%22,%23,"                                                                            \
        "%24,%25,%26,%27,%28,%29,%30,%31}, {%32,%33,%34,%35}, %36, p, 1, 1, 0;\n}\n"                                  \
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), \
          "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),      \
          "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),     \
          "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])                   \
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));                                             \
  }
#define GPTQ_WGMMA_RS_128(T, PTX)                                                                                     \
  template <>                                                                                                         \
  __device__ __forceinline__ void wgmma_rs<128, T>(float(&d)[64], const uint32_t(&a)[4], uint64_t desc) {             \
    asm volatile(                                                                                                     \
        "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"                                                                  \
        "wgmma.mma_async.sync.aligned.m64n128k16.f32." PTX "." PTX                                                    \
        " {"                                                                                                          \
        "%0,%1,%2,%3,%4,%5,%6,%7,"                                                                                    \
        "%8,%9,%10,%11,%12,%13,%14,%15,"                                                                              \
        "%16,%17,%18,%19,%20,%21,%22,%23,"                                                                            \
        "%24,%25,%26,%27,%28,%29,%30,%31,"                                                                            \
        "%32,%33,%34,%35,%36,%37,%38,%39,"                                                                            \
        "%40,%41,%42,%43,%44,%45,%46,%47,"                                                                            \
        "%48,%49,%50,%51,%52,%53,%54,%55,"                                                                            \
        "%56,%57,%58,%59,%60,%61,%62,%63}, {%64,%65,%66,%67}, %68, p, 1, 1, 0;\n}\n"                                  \
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), \
          "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),      \
          "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),     \
          "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]),     \
          "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]),     \
          "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),     \
          "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]),     \
          "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])                   \
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));                                             \
  }
GPTQ_WGMMA_RS_16(__half, "f16")
GPTQ_WGMMA_RS_32(__half, "f16")
GPTQ_WGMMA_RS_64(__half, "f16")
GPTQ_WGMMA_RS_128(__half, "f16")
GPTQ_WGMMA_RS_16(__nv_bfloat16, "bf16")
GPTQ_WGMMA_RS_32(__nv_bfloat16, "bf16")
GPTQ_WGMMA_RS_64(__nv_bfloat16, "bf16")
GPTQ_WGMMA_RS_128(__nv_bfloat16, "bf16")
#undef GPTQ_WGMMA_RS_16
#undef GPTQ_WGMMA_RS_32
#undef GPTQ_WGMMA_RS_64
#undef GPTQ_WGMMA_RS_128

}  // namespace gptq::cuda::sm90
