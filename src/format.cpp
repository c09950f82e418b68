// CPU implementation of the checkpoint format ops: pack/unpack along rows and columns, and dequantize.
// Layout and conventions: include/gptq/format.h.
#include "gptq/format.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <vector>

#include "check.h"
#include "format_internal.h"

namespace gptq {

CheckpointFormat parse_checkpoint_format(const std::string& name) {
  if (name == "gptq") return CheckpointFormat::kGptq;
  if (name == "gptq_v2") return CheckpointFormat::kGptqV2;
  TORCH_CHECK(false, "checkpoint_format must be one of {\"gptq\", \"gptq_v2\"}, got \"", name, "\"");
}

std::string to_string(CheckpointFormat format) {
  return format == CheckpointFormat::kGptq ? "gptq" : "gptq_v2";
}

namespace detail {

PackedLayerShape check_packed_layer(const char* op, const at::Tensor& qweight, const at::Tensor& qzeros,
                                    const at::Tensor& scales, const c10::optional<at::Tensor>& g_idx,
                                    int64_t bits, int64_t group_size, int64_t checkpoint_format) {
  check_bits(op, bits);
  GPTQ_CHECK(checkpoint_format == 1 || checkpoint_format == 2, op,
             "checkpoint_format must be 1 (\"gptq\") or 2 (\"gptq_v2\"), got ", checkpoint_format);
  GPTQ_CHECK(group_size == -1 || group_size > 0, op, "group_size must be -1 or positive, got ", group_size);
  GPTQ_CHECK(qweight.scalar_type() == at::kInt, op, "qweight must be int32, got ", qweight.scalar_type());
  GPTQ_CHECK(qzeros.scalar_type() == at::kInt, op, "qzeros must be int32, got ", qzeros.scalar_type());
  GPTQ_CHECK(scales.scalar_type() == at::kHalf || scales.scalar_type() == at::kBFloat16 ||
                 scales.scalar_type() == at::kFloat,
             op, "scales must be float16, bfloat16 or float32, got ", scales.scalar_type());
  GPTQ_CHECK(qweight.dim() == 2, op, "qweight must be 2-D [K*bits/32, N], got ", qweight.sizes());
  GPTQ_CHECK(qzeros.dim() == 2, op, "qzeros must be 2-D [groups, N*bits/32], got ", qzeros.sizes());
  GPTQ_CHECK(scales.dim() == 2, op, "scales must be 2-D [groups, N], got ", scales.sizes());
  GPTQ_CHECK(qweight.size(0) % pack_period_words(bits) == 0, op, "qweight has ", qweight.size(0),
             " rows, not a multiple of ", pack_period_words(bits), " as ", bits, "-bit packing needs");
  const int64_t K = qweight.size(0) * 32 / bits;
  const int64_t N = qweight.size(1);
  const int64_t G = scales.size(0);
  GPTQ_CHECK(scales.size(1) == N, op, "scales has ", scales.size(1), " columns but qweight has N = ", N);
  GPTQ_CHECK(qzeros.size(0) == G, op, "qzeros has ", qzeros.size(0), " rows but scales has ", G, " groups");
  GPTQ_CHECK(N % pack_period_values(bits) == 0, op, "N = ", N, " must be a multiple of ",
             pack_period_values(bits), " to pack ", bits, "-bit zeros");
  GPTQ_CHECK(qzeros.size(1) * 32 == N * bits, op, "qzeros has ", qzeros.size(1), " columns, expected N*bits/32 = ",
             N * bits / 32);
  GPTQ_CHECK(qzeros.device() == qweight.device() && scales.device() == qweight.device(), op,
             "qweight, qzeros and scales must be on one device, got ", qweight.device(), ", ", qzeros.device(),
             ", ", scales.device());
  if (g_idx.has_value() && g_idx->defined()) {
    const auto& gi = *g_idx;
    GPTQ_CHECK(gi.scalar_type() == at::kInt, op, "g_idx must be int32, got ", gi.scalar_type());
    GPTQ_CHECK(gi.dim() == 1 && gi.size(0) == K, op, "g_idx must have shape [K] = [", K, "], got ", gi.sizes());
    GPTQ_CHECK(gi.device() == qweight.device(), op, "g_idx is on ", gi.device(), " but qweight on ",
               qweight.device());
    if (K > 0 && !gi.is_meta()) {
      auto [lo, hi] = at::aminmax(gi);
      const int64_t lo_v = lo.item<int64_t>(), hi_v = hi.item<int64_t>();
      GPTQ_CHECK(lo_v >= 0 && hi_v < G, op, "g_idx values must lie in [0, ", G, "), found [", lo_v, ", ", hi_v,
                 "]");
    }
  } else {
    const int64_t expected = group_size == -1 ? 1 : (K + group_size - 1) / group_size;
    GPTQ_CHECK(G == expected, op, "scales has ", G, " groups but K = ", K, " with group_size ", group_size,
               " needs ", expected);
  }
  return {K, N, G};
}

namespace {

// Packs along dim 0 of a [R, C] code matrix into int32 [R*bits/32, C]. The inner loop runs along C,
// which is contiguous in both input and output, so it vectorizes and streams memory.
template <typename code_t>
void pack_rows_kernel(const code_t* codes, uint32_t* out, int64_t R, int64_t C, int64_t bits) {
  const int64_t pv = pack_period_values(bits), pw = pack_period_words(bits);
  at::parallel_for(0, R / pv, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      uint32_t* words = out + p * pw * C;
      std::fill(words, words + pw * C, 0u);
      for (int64_t j = 0; j < pv; ++j) {
        const code_t* row = codes + (p * pv + j) * C;
        const int64_t bit = bits * j, w = bit >> 5, off = bit & 31;
        uint32_t* lo = words + w * C;
        for (int64_t c = 0; c < C; ++c) lo[c] |= static_cast<uint32_t>(row[c]) << off;
        if (off + bits > 32) {  // 3-bit values 10 and 21 straddle two words
          uint32_t* hi = words + (w + 1) * C;
          for (int64_t c = 0; c < C; ++c) hi[c] |= static_cast<uint32_t>(row[c]) >> (32 - off);
        }
      }
    }
  });
}

void unpack_rows_kernel(const uint32_t* packed, int32_t* out, int64_t R, int64_t C, int64_t bits) {
  const int64_t pv = pack_period_values(bits), pw = pack_period_words(bits);
  const uint32_t mask = (1u << bits) - 1u;
  at::parallel_for(0, R / pv, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const uint32_t* words = packed + p * pw * C;
      for (int64_t j = 0; j < pv; ++j) {
        int32_t* row = out + (p * pv + j) * C;
        const int64_t bit = bits * j, w = bit >> 5, off = bit & 31;
        const uint32_t* lo = words + w * C;
        if (off + bits > 32) {
          const uint32_t* hi = words + (w + 1) * C;
          for (int64_t c = 0; c < C; ++c) row[c] = static_cast<int32_t>(((lo[c] >> off) | (hi[c] << (32 - off))) & mask);
        } else {
          for (int64_t c = 0; c < C; ++c) row[c] = static_cast<int32_t>((lo[c] >> off) & mask);
        }
      }
    }
  });
}

void check_packable_rows(const char* op, const at::Tensor& t, int64_t bits) {
  check_bits(op, bits);
  GPTQ_CHECK(t.dim() == 2, op, "expects a 2-D tensor, got shape ", t.sizes());
  GPTQ_CHECK(t.size(0) % pack_period_values(bits) == 0, op, "dim 0 has ", t.size(0), " values, not a multiple of ",
             pack_period_values(bits), " as ", bits, "-bit packing needs");
}

}  // namespace

at::Tensor pack_rows_cpu(const at::Tensor& codes, int64_t bits) {
  const char* op = "gptq::pack_rows";
  check_packable_rows(op, codes, bits);
  GPTQ_CHECK(at::isIntegralType(codes.scalar_type(), /*includeBool=*/false), op,
             "codes must have an integer dtype, got ", codes.scalar_type());
  auto c = codes.contiguous();
  if (c.numel() > 0) {
    auto [lo, hi] = at::aminmax(c);
    const int64_t lo_v = lo.item<int64_t>(), hi_v = hi.item<int64_t>();
    GPTQ_CHECK(lo_v >= 0 && hi_v < (int64_t{1} << bits), op, "codes must lie in [0, ", (1 << bits), ") for ", bits,
               "-bit packing, found [", lo_v, ", ", hi_v, "]");
  }
  const int64_t R = c.size(0), C = c.size(1);
  auto out = at::empty({R * bits / 32, C}, c.options().dtype(at::kInt));
  AT_DISPATCH_INTEGRAL_TYPES(c.scalar_type(), "pack_rows", [&] {
    pack_rows_kernel<scalar_t>(c.const_data_ptr<scalar_t>(), reinterpret_cast<uint32_t*>(out.data_ptr<int32_t>()), R,
                               C, bits);
  });
  return out;
}

at::Tensor unpack_rows_cpu(const at::Tensor& packed, int64_t bits) {
  const char* op = "gptq::unpack_rows";
  check_bits(op, bits);
  GPTQ_CHECK(packed.scalar_type() == at::kInt, op, "packed must be int32, got ", packed.scalar_type());
  GPTQ_CHECK(packed.dim() == 2, op, "expects a 2-D tensor, got shape ", packed.sizes());
  GPTQ_CHECK(packed.size(0) % pack_period_words(bits) == 0, op, "dim 0 has ", packed.size(0),
             " words, not a multiple of ", pack_period_words(bits), " as ", bits, "-bit packing needs");
  auto p = packed.contiguous();
  const int64_t R = p.size(0) * 32 / bits, C = p.size(1);
  auto out = at::empty({R, C}, p.options());
  unpack_rows_kernel(reinterpret_cast<const uint32_t*>(p.const_data_ptr<int32_t>()), out.data_ptr<int32_t>(), R, C,
                     bits);
  return out;
}

// Columns are packed by transposing: qzeros are small ([groups, N]), so the copies cost nothing
// that matters, and one packing loop serves both layouts.
at::Tensor pack_cols_cpu(const at::Tensor& codes, int64_t bits) {
  GPTQ_CHECK(codes.dim() == 2, "gptq::pack_cols", "expects a 2-D tensor, got shape ", codes.sizes());
  return pack_rows_cpu(codes.t(), bits).t().contiguous();
}

at::Tensor unpack_cols_cpu(const at::Tensor& packed, int64_t bits) {
  GPTQ_CHECK(packed.dim() == 2, "gptq::unpack_cols", "expects a 2-D tensor, got shape ", packed.sizes());
  return unpack_rows_cpu(packed.t(), bits).t().contiguous();
}

// Zero points as integers [G, N], v1's "minus one" undone modulo 2^bits.
at::Tensor unpacked_zeros(const at::Tensor& qzeros, int64_t bits, int64_t checkpoint_format) {
  auto z = unpack_cols_cpu(qzeros, bits);
  if (checkpoint_format == static_cast<int64_t>(CheckpointFormat::kGptq)) {
    z = at::bitwise_and(z + 1, (1 << bits) - 1);
  }
  return z;
}

std::vector<int32_t> channel_groups(const c10::optional<at::Tensor>& g_idx, int64_t K, int64_t group_size) {
  std::vector<int32_t> groups(K);
  if (g_idx.has_value() && g_idx->defined()) {
    auto gi = g_idx->contiguous();
    std::copy(gi.const_data_ptr<int32_t>(), gi.const_data_ptr<int32_t>() + K, groups.begin());
  } else {
    for (int64_t k = 0; k < K; ++k) groups[k] = group_size == -1 ? 0 : static_cast<int32_t>(k / group_size);
  }
  return groups;
}

void decode_row(const uint32_t* packed, int64_t N, int64_t bits, int64_t k, int64_t n0, int64_t nn,
                const float* zrow, const float* srow, float* w) {
  const int64_t pv = pack_period_values(static_cast<int>(bits)), pw = pack_period_words(static_cast<int>(bits));
  const int64_t p = k / pv, bit = bits * (k % pv), off = bit & 31;
  const uint32_t mask = (1u << bits) - 1u;
  const uint32_t* lo = packed + (p * pw + (bit >> 5)) * N + n0;
  // The fields are cast to int32 before float: a signed convert vectorizes, an unsigned one does not.
  if (off + bits > 32) {  // a 3-bit field straddling two words
    const uint32_t* hi = lo + N;
    const int64_t hi_shift = 32 - off;
    for (int64_t n = 0; n < nn; ++n) {
      const int32_t q = static_cast<int32_t>(((lo[n] >> off) | (hi[n] << hi_shift)) & mask);
      w[n] = srow[n] * (static_cast<float>(q) - zrow[n]);
    }
  } else {
    for (int64_t n = 0; n < nn; ++n) {
      const int32_t q = static_cast<int32_t>((lo[n] >> off) & mask);
      w[n] = srow[n] * (static_cast<float>(q) - zrow[n]);
    }
  }
}

at::Tensor dequantize_cpu(const at::Tensor& qweight, const at::Tensor& qzeros, const at::Tensor& scales,
                          const c10::optional<at::Tensor>& g_idx, int64_t bits, int64_t group_size,
                          int64_t checkpoint_format) {
  const auto s = check_packed_layer("gptq::dequantize", qweight, qzeros, scales, g_idx, bits, group_size,
                                    checkpoint_format);
  const int64_t K = s.K, N = s.N;
  auto zf = unpacked_zeros(qzeros, bits, checkpoint_format).to(at::kFloat).contiguous();  // [G, N]
  auto sf = scales.to(at::kFloat).contiguous();                                            // [G, N]
  const std::vector<int32_t> groups = channel_groups(g_idx, K, group_size);
  // W^T [K, N] in fp32, row k = scales[g] * (q[k] - zeros[g]); rows are contiguous along N like the
  // packed words, then one transpose gives nn.Linear's [N, K].
  auto qw = qweight.contiguous();
  auto wt = at::empty({K, N}, scales.options().dtype(at::kFloat));
  const uint32_t* packed = reinterpret_cast<const uint32_t*>(qw.const_data_ptr<int32_t>());
  const float* zp = zf.const_data_ptr<float>();
  const float* sp = sf.const_data_ptr<float>();
  float* out = wt.data_ptr<float>();
  at::parallel_for(0, K, 1, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      decode_row(packed, N, bits, k, 0, N, zp + groups[k] * N, sp + groups[k] * N, out + k * N);
    }
  });
  return wt.t().to(scales.scalar_type()).contiguous();
}

}  // namespace detail

// ---- dispatcher entry points for C++ callers ------------------------------------------------------
namespace {
template <typename Sig>
c10::TypedOperatorHandle<Sig> op_handle(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}
}  // namespace

at::Tensor pack_rows(const at::Tensor& codes, int64_t bits) {
  static auto op = op_handle<at::Tensor(const at::Tensor&, int64_t)>("gptq::pack_rows");
  return op.call(codes, bits);
}
at::Tensor unpack_rows(const at::Tensor& packed, int64_t bits) {
  static auto op = op_handle<at::Tensor(const at::Tensor&, int64_t)>("gptq::unpack_rows");
  return op.call(packed, bits);
}
at::Tensor pack_cols(const at::Tensor& codes, int64_t bits) {
  static auto op = op_handle<at::Tensor(const at::Tensor&, int64_t)>("gptq::pack_cols");
  return op.call(codes, bits);
}
at::Tensor unpack_cols(const at::Tensor& packed, int64_t bits) {
  static auto op = op_handle<at::Tensor(const at::Tensor&, int64_t)>("gptq::unpack_cols");
  return op.call(packed, bits);
}
at::Tensor dequantize(const at::Tensor& qweight, const at::Tensor& qzeros, const at::Tensor& scales,
                      const c10::optional<at::Tensor>& g_idx, int64_t bits, int64_t group_size,
                      CheckpointFormat format) {
  static auto op = op_handle<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                        const c10::optional<at::Tensor>&, int64_t, int64_t, int64_t)>(
      "gptq::dequantize");
  return op.call(qweight, qzeros, scales, g_idx, bits, group_size, static_cast<int64_t>(format));
}

}  // namespace gptq
