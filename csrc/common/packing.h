// Facts of the GPTQ bit packing shared by host code (src/) and device code (csrc/kernels/): along
// the packed dimension, one packing period of values fills whole int32 words: 32/bits values in one
// word for 2, 4 and 8 bits, 32 values in three words for 3 bits.
#pragma once

#if defined(__CUDACC__)
#define GPTQ_HOST_DEVICE __host__ __device__
#else
#define GPTQ_HOST_DEVICE
#endif

namespace gptq {

GPTQ_HOST_DEVICE constexpr int pack_period_values(int bits) { return bits == 3 ? 32 : 32 / bits; }
GPTQ_HOST_DEVICE constexpr int pack_period_words(int bits) { return bits == 3 ? 3 : 1; }

}  // namespace gptq
