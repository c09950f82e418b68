// Argument checks shared by every op. Each error names the op, the argument, the value found and the
// rule it breaks, e.g. "gptq::dequantize: qweight must be int32, got Float".
#pragma once

#include <c10/util/Exception.h>

#define GPTQ_CHECK(cond, op, ...) TORCH_CHECK((cond), op, ": ", __VA_ARGS__)

namespace gptq::detail {

inline bool is_supported_bits(int64_t bits) { return bits == 2 || bits == 3 || bits == 4 || bits == 8; }

inline void check_bits(const char* op, int64_t bits) {
  GPTQ_CHECK(is_supported_bits(bits), op, "bits must be one of {2, 3, 4, 8}, got ", bits);
}

// Values per packing period and the words they fill: 32 values -> 3 words for 3 bits; 32/bits values
// -> 1 word otherwise.
inline int64_t pack_period_values(int64_t bits) { return bits == 3 ? 32 : 32 / bits; }
inline int64_t pack_period_words(int64_t bits) { return bits == 3 ? 3 : 1; }

}  // namespace gptq::detail
