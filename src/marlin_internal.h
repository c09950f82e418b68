// Host pieces of the Marlin ops shared by their CPU, CUDA and Meta registrations.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <cstdint>
#include <tuple>

namespace gptq::detail {

constexpr int64_t kMarlinTileK = 128;  // K padding (rows per pipeline stage); csrc/kernels/marlin
constexpr int64_t kMarlinTileN = 64;   // N padding (columns per CTA tile)

inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// Rows per group after padding: group_size, or K_pad for group_size -1 (one group).
inline int64_t marlin_group_rows(int64_t group_size, int64_t K_pad) { return group_size == -1 ? K_pad : group_size; }

// The kernel reads one group row per 128-row stage, or the 2 or 4 whole groups of 64 or 32 rows in it.
inline bool marlin_group_ok(int64_t rows) { return rows % kMarlinTileK == 0 || rows == 32 || rows == 64; }

// The repack, written with tensor ops only: runs wherever its inputs live (CPU, CUDA).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> marlin_repack_impl(
    const at::Tensor& qweight, const at::Tensor& qzeros, const at::Tensor& scales,
    const c10::optional<at::Tensor>& g_idx, int64_t bits, int64_t group_size, int64_t checkpoint_format);

}  // namespace gptq::detail
