// Quantization settings of one GPTQ run: the fields of AutoGPTQ's BaseQuantizeConfig plus ours
// (automatic damping increase, MSE clipping search, block size). python/gptq/config.py mirrors this
// struct field for field (BaseQuantizeConfig.to_native()).
#pragma once

#include <cstdint>
#include <string>

namespace gptq {

struct QuantizeConfig {
  int64_t bits = 4;                // code width: 2, 3, 4 or 8
  int64_t group_size = -1;         // input channels sharing one (scale, zero); -1: one group per row
  double damp_percent = 0.01;      // lambda = damp_percent * mean(diag(H)) added to diag(H); in (0, 1)
  bool desc_act = true;            // act-order: quantize columns by decreasing diag(H)
  bool static_groups = false;      // group grids fixed from the original weights before any update
  bool sym = true;                 // symmetric grid, zero point (2^bits)/2
  bool true_sequential = true;     // pipeline setting (carried, not used by the per-layer solver)
  std::string model_name_or_path;  // carried metadata ("" = None in Python)
  std::string model_file_base_name;
  std::string checkpoint_format = "gptq";  // "gptq" (v1 zeros minus one), "gptq_v2", or "marlin" (read only)
  std::string quant_method = "gptq";
  // When Cholesky of H + lambda I fails, damp_percent grows by this step (while it stays below 1)
  // until it succeeds; 0 disables the retry. The damping finally used is reported by the solver.
  double damp_auto_increment = 0.0025;
  // 0: min-max grid. > 0: norm exponent p of a clipping search: the group range [xmin, xmax] is
  // shrunk by s = 1 - i/kMseGrid for i < kMseMaxShrink*kMseGrid and, per output row, the s minimising
  // sum |dequant(quant(x)) - x|^p is kept (IST-DASLab/gptq quant.py; 2.4 there).
  double mse = 0.0;
  // Columns per lazy-update block (power of two in [16, 1024]); the result does not depend on it.
  int64_t block_size = 128;

  static constexpr int kMseGrid = 100;
  static constexpr double kMseMaxShrink = 0.8;

  // "" when every field is valid, else a message naming the first bad field, its value and the
  // allowed set, e.g. "bits must be one of {2, 3, 4, 8}, got 5".
  std::string error() const;
  // Throws c10::Error with error()'s message, prefixed by "gptq::QuantizeConfig: ".
  void validate() const;
  int64_t maxq() const { return (int64_t{1} << bits) - 1; }
};

}  // namespace gptq
