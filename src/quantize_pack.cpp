// Packing of a quantized layer into the GPTQ checkpoint format (layout: include/gptq/format.h), and
// the conversion of qzeros between "gptq" (v1) and "gptq_v2".
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <cstring>

#include "check.h"
#include "gptq/quantize.h"

namespace gptq {
namespace {

std::string layer_label(const std::string& name) { return name.empty() ? std::string() : " (layer '" + name + "')"; }

// Eight 4-bit values held one per byte (little endian, value j in byte j) -> one word with value j
// at bits [4j, 4j+4): three shift-or-mask steps halve the spacing each time.
inline uint32_t compress_nibbles(uint64_t x) {
  x = (x | (x >> 4)) & 0x00FF00FF00FF00FFull;
  x = (x | (x >> 8)) & 0x0000FFFF0000FFFFull;
  x = (x | (x >> 16)) & 0x00000000FFFFFFFFull;
  return static_cast<uint32_t>(x);
}

// codes [N, K] (weight layout, one code per byte) -> qweight [K*bits/32, N]. Work is split over
// tiles of 64 output columns n: each tile reads 64 code rows front to back (64 streams that stay in
// L1) and writes 256 contiguous bytes per word row, so no transposed copy of the codes is made.
void pack_nk_kernel(const uint8_t* codes, uint32_t* out, int64_t N, int64_t K, int64_t bits) {
  const int64_t pv = detail::pack_period_values(bits), pw = detail::pack_period_words(bits);
  const int64_t periods = K / pv;
  constexpr int64_t kTile = 64;
  at::parallel_for(0, (N + kTile - 1) / kTile, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n0 = t * kTile, n1 = std::min(N, n0 + kTile);
      for (int64_t p = 0; p < periods; ++p) {
        uint32_t* words = out + p * pw * N;
        if (bits == 4) {
          for (int64_t n = n0; n < n1; ++n) {
            uint64_t v;
            std::memcpy(&v, codes + n * K + p * 8, 8);
            words[n] = compress_nibbles(v);
          }
        } else if (bits == 8) {
          for (int64_t n = n0; n < n1; ++n) std::memcpy(&words[n], codes + n * K + p * 4, 4);
        } else {
          for (int64_t n = n0; n < n1; ++n) {
            const uint8_t* c = codes + n * K + p * pv;
            uint32_t w[3] = {0u, 0u, 0u};
            for (int64_t j = 0; j < pv; ++j) {
              const int64_t bit = bits * j, wi = bit >> 5, off = bit & 31;
              w[wi] |= static_cast<uint32_t>(c[j]) << off;
              if (off + bits > 32) w[wi + 1] |= static_cast<uint32_t>(c[j]) >> (32 - off);
            }
            for (int64_t i = 0; i < pw; ++i) words[i * N + n] = w[i];
          }
        }
      }
    }
  });
}

void check_packable(const char* op, int64_t K, int64_t N, int64_t bits, const std::string& name) {
  const int64_t pv = detail::pack_period_values(bits);
  GPTQ_CHECK(K % pv == 0, op, "in_features = ", K, layer_label(name), " must be a multiple of ", pv, " to pack ",
             bits, "-bit codes along K (the qweight layout); pad or leave this layer unquantized");
  GPTQ_CHECK(N % pv == 0, op, "out_features = ", N, layer_label(name), " must be a multiple of ", pv, " to pack ",
             bits, "-bit zeros along N (the qzeros layout); pad or leave this layer unquantized");
}

at::Tensor convert_qzeros_impl(const at::Tensor& qzeros, int64_t bits, int64_t from_format, int64_t to_format) {
  const char* op = "gptq::convert_qzeros";
  detail::check_bits(op, bits);
  for (int64_t f : {from_format, to_format})
    GPTQ_CHECK(f == 1 || f == 2, op, "checkpoint formats must be 1 (\"gptq\") or 2 (\"gptq_v2\"), got ", f);
  if (from_format == to_format) return qzeros.clone();
  auto z = unpack_cols(qzeros, bits);
  const int64_t delta = from_format == 1 ? 1 : -1;  // v1 -> v2 adds the one back
  return pack_cols(at::bitwise_and(z + delta, (int64_t{1} << bits) - 1), bits);
}

}  // namespace

at::Tensor pack_codes_nk(const at::Tensor& codes_nk, int64_t bits) {
  const char* op = "gptq::pack_codes_nk";
  detail::check_bits(op, bits);
  GPTQ_CHECK(codes_nk.dim() == 2 && codes_nk.scalar_type() == at::kByte, op,
             "codes must be a uint8 [N, K] tensor, got ", codes_nk.scalar_type(), " ", codes_nk.sizes());
  const int64_t N = codes_nk.size(0), K = codes_nk.size(1);
  const int64_t pv = detail::pack_period_values(bits);
  GPTQ_CHECK(K % pv == 0, op, "K = ", K, " must be a multiple of ", pv, " for ", bits, "-bit packing");
  auto c = codes_nk.device().is_cpu() ? codes_nk.contiguous() : codes_nk.cpu().contiguous();
  if (c.numel() > 0) {
    const int64_t hi = c.max().item<int64_t>();
    GPTQ_CHECK(hi < (int64_t{1} << bits), op, "codes must lie in [0, ", (1 << bits), ") for ", bits,
               "-bit packing, found ", hi);
  }
  auto out = at::empty({K * bits / 32, N}, c.options().dtype(at::kInt));
  pack_nk_kernel(c.const_data_ptr<uint8_t>(), reinterpret_cast<uint32_t*>(out.data_ptr<int32_t>()), N, K, bits);
  return codes_nk.device().is_cpu() ? out : out.to(codes_nk.device());
}

PackedWeight pack_result(const QuantizeResult& r, CheckpointFormat format, const std::string& name) {
  const char* op = "gptq::pack";
  const int64_t N = r.codes.size(0), K = r.codes.size(1), bits = r.bits;
  check_packable(op, K, N, bits, name);
  const int64_t maxq = (int64_t{1} << bits) - 1;
  auto stored = format == CheckpointFormat::kGptq ? at::bitwise_and(r.zeros - 1, maxq) : r.zeros;
  PackedWeight p;
  p.qweight = pack_codes_nk(r.codes, bits);
  p.qzeros = pack_cols(stored.to(at::kInt).contiguous(), bits);
  p.scales = r.scales.to(at::kHalf);
  p.g_idx = r.g_idx.to(at::kInt).contiguous();
  return p;
}

at::Tensor convert_qzeros(const at::Tensor& qzeros, int64_t bits, CheckpointFormat from, CheckpointFormat to) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("gptq::convert_qzeros", "")
                       .typed<at::Tensor(const at::Tensor&, int64_t, int64_t, int64_t)>();
  return op.call(qzeros, bits, static_cast<int64_t>(from), static_cast<int64_t>(to));
}

}  // namespace gptq

TORCH_LIBRARY_FRAGMENT(gptq, m) {
  m.def("convert_qzeros(Tensor qzeros, int bits, int from_format, int to_format) -> Tensor");
  m.def("pack_codes_nk(Tensor codes, int bits) -> Tensor");
}

// Both are compositions of device-generic steps (the pack ops run on every backend).
TORCH_LIBRARY_IMPL(gptq, CompositeImplicitAutograd, m) {
  m.impl("convert_qzeros", &gptq::convert_qzeros_impl);
  m.impl("pack_codes_nk", &gptq::pack_codes_nk);
}
