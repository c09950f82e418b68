// Validation of QuantizeConfig (include/gptq/config.h). The Python BaseQuantizeConfig validates
// through this function too, so both languages give the same message for the same bad value.
#include <c10/util/Exception.h>

#include <cmath>
#include <sstream>

#include "gptq/config.h"

namespace gptq {
namespace {

bool is_power_of_two(int64_t v) { return v > 0 && (v & (v - 1)) == 0; }

template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

}  // namespace

std::string QuantizeConfig::error() const {
  if (!(bits == 2 || bits == 3 || bits == 4 || bits == 8)) return cat("bits must be one of {2, 3, 4, 8}, got ", bits);
  if (!(group_size == -1 || (group_size >= 16 && is_power_of_two(group_size))))
    return cat("group_size must be -1 or a power of two >= 16 (16, 32, 64, 128, ...), got ", group_size);
  if (!(std::isfinite(damp_percent) && damp_percent > 0 && damp_percent < 1))
    return cat("damp_percent must lie in the open interval (0, 1), got ", damp_percent);
  if (!(std::isfinite(damp_auto_increment) && damp_auto_increment >= 0 && damp_auto_increment < 1))
    return cat("damp_auto_increment must lie in [0, 1) (0 disables the retry), got ", damp_auto_increment);
  if (!(std::isfinite(mse) && mse >= 0))
    return cat("mse must be 0 (off) or a positive, finite norm exponent such as 2.4, got ", mse);
  if (!(is_power_of_two(block_size) && block_size >= 16 && block_size <= 1024))
    return cat("block_size must be a power of two in [16, 1024], got ", block_size);
  if (!(checkpoint_format == "gptq" || checkpoint_format == "gptq_v2" || checkpoint_format == "marlin"))
    return cat("checkpoint_format must be one of {\"gptq\", \"gptq_v2\", \"marlin\"}, got \"", checkpoint_format, "\"");
  if (quant_method != "gptq") return cat("quant_method must be one of {\"gptq\"}, got \"", quant_method, "\"");
  return "";
}

void QuantizeConfig::validate() const {
  const std::string e = error();
  TORCH_CHECK_VALUE(e.empty(), "gptq::QuantizeConfig: ", e);
}

}  // namespace gptq
