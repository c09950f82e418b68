// Independent references for the tests: plain loops, written from the format description
// (include/gptq/format.h), sharing no code with the library.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace gptq_test {

// Bit-by-bit packing along dim 0 of codes [R, C]: value r of column c goes to stream bits
// [bits*r, bits*r + bits), stream bit b lives in word b/32 at bit b%32.
inline at::Tensor ref_pack_rows(const at::Tensor& codes, int bits) {
  auto c = codes.to(at::kLong).contiguous();
  const int64_t R = c.size(0), C = c.size(1);
  std::vector<uint32_t> words(static_cast<size_t>(R * bits / 32 * C), 0u);
  const int64_t* v = c.const_data_ptr<int64_t>();
  for (int64_t r = 0; r < R; ++r)
    for (int64_t col = 0; col < C; ++col)
      for (int b = 0; b < bits; ++b) {
        const uint32_t bitval = (static_cast<uint64_t>(v[r * C + col]) >> b) & 1u;
        const int64_t stream_bit = r * bits + b;
        words[(stream_bit / 32) * C + col] |= bitval << (stream_bit % 32);
      }
  auto out = at::empty({R * bits / 32, C}, at::kInt);
  std::memcpy(out.data_ptr<int32_t>(), words.data(), words.size() * 4);
  return out;
}

// Float64 dequantization from integer codes q [K, N], true zeros z [G, N], scales [G, N] and a
// group per input channel: W[n, k] = s[g, n] * (q[k, n] - z[g, n]).
inline at::Tensor ref_dequantize(const at::Tensor& q, const at::Tensor& z, const at::Tensor& scales,
                                 const at::Tensor& g_idx) {
  auto qd = q.to(at::kDouble), zd = z.to(at::kDouble), sd = scales.to(at::kDouble);
  auto gi = g_idx.to(at::kLong);
  return (sd.index_select(0, gi) * (qd - zd.index_select(0, gi))).t().contiguous();
}

inline double rel_error(const at::Tensor& out, const at::Tensor& ref) {
  auto o = out.to(at::kDouble).cpu(), r = ref.to(at::kDouble).cpu();
  return (o - r).norm().item<double>() / std::max(r.norm().item<double>(), 1e-300);
}

}  // namespace gptq_test
