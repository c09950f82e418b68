// Argument checks shared by every op. Each error names the op, the argument, the value found and the
// rule it breaks, e.g. "gptq::dequantize: qweight must be int32, got Float".
#pragma once

#include <c10/util/Exception.h>

#include "common/packing.h"

#define GPTQ_CHECK(cond, op, ...) TORCH_CHECK((cond), op, ": ", __VA_ARGS__)

namespace gptq::detail {

inline bool is_supported_bits(int64_t bits) { return bits == 2 || bits == 3 || bits == 4 || bits == 8; }

inline void check_bits(const char* op, int64_t bits) {
  GPTQ_CHECK(is_supported_bits(bits), op, "bits must be one of {2, 3, 4, 8}, got ", bits);
}

using gptq::pack_period_values;  // csrc/common/packing.h
using gptq::pack_period_words;

}  // namespace gptq::detail
