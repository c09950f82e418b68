// The uniform quantization grid of GPTQ (IST-DASLab/gptq quant.py, AutoGPTQ's Quantizer), as scalar
// functions shared by the CPU solver (src/solver.cpp) and the CUDA kernel, so that both take the
// same rounding decisions. No CUDA headers: host compilers see plain inline functions.
//
// Per output row and group: xmin = min(x, 0), xmax = max(x, 0); symmetric grids widen to
// [-max|x|, max|x|] (a group with no negative value keeps xmin = 0); an all-zero group gets [-1, 1];
// scale = (xmax - xmin) / maxq; zero = (maxq + 1) / 2 (sym) or round(-xmin / scale);
// code = clamp(round(x / scale) + zero, 0, maxq); dequantized value = scale * (code - zero).
// round is half-to-even (torch.round), division is IEEE (not a reciprocal multiply).
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define GPTQ_HD __host__ __device__ __forceinline__
#else
#define GPTQ_HD inline
#endif

namespace gptq::grid {

template <typename T>
GPTQ_HD T round_half_even(T x) {
#if defined(__CUDA_ARCH__)
  return rint(x);
#else
  return std::nearbyint(x);
#endif
}

template <typename T>
GPTQ_HD T power(T x, T e) {
#if defined(__CUDA_ARCH__)
  return pow(x, e);
#else
  return std::pow(x, e);
#endif
}

// A product rounded on its own: nvcc would otherwise fuse a*b + c into one FMA, whose single
// rounding differs from the CPU's (and PyTorch's) two, and flips codes at near-ties.
GPTQ_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
GPTQ_HD double mul_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}

template <typename T>
struct Params {
  T scale;
  T zero;
};

// The range [xmin, xmax] after the sign and zero-range adjustments of minmax_params; the MSE search
// shrinks this range.
template <typename T>
GPTQ_HD void adjusted_range(T& xmin, T& xmax, bool sym) {
  xmin = xmin < T(0) ? xmin : T(0);
  xmax = xmax > T(0) ? xmax : T(0);
  if (sym) {
    const T a = xmin < T(0) ? -xmin : xmin;
    xmax = a > xmax ? a : xmax;
    if (xmin < T(0)) xmin = -xmax;
  }
  if (xmin == T(0) && xmax == T(0)) {
    xmin = T(-1);
    xmax = T(1);
  }
}

// xmin/xmax: the raw min and max of the group's values (any sign).
template <typename T>
GPTQ_HD Params<T> minmax_params(T xmin, T xmax, int maxq, bool sym) {
  adjusted_range(xmin, xmax, sym);
  Params<T> p;
  p.scale = (xmax - xmin) / T(maxq);
  p.zero = sym ? T((maxq + 1) / 2) : round_half_even(-xmin / p.scale);
  return p;
}

// Candidate i of the MSE clipping search: the adjusted range shrunk by s = 1 - i/100.
template <typename T>
GPTQ_HD Params<T> shrunk_params(T xmin, T xmax, int i, int maxq, bool sym) {
  const T s = static_cast<T>(1.0 - static_cast<double>(i) / 100.0);
  const T lo = mul_rn(s, xmin), hi = mul_rn(s, xmax);
  Params<T> p;
  p.scale = (hi - lo) / T(maxq);
  p.zero = sym ? T((maxq + 1) / 2) : round_half_even(-lo / p.scale);
  return p;
}

template <typename T>
GPTQ_HD T code(T x, T scale, T zero, int maxq) {
  T q = round_half_even(x / scale) + zero;
  q = q < T(0) ? T(0) : q;
  return q > T(maxq) ? T(maxq) : q;
}

template <typename T>
GPTQ_HD T dequant(T q, T scale, T zero) {
  return mul_rn(scale, q - zero);
}

// |dequant(code(x)) - x|^norm, the MSE search's per-value cost.
template <typename T>
GPTQ_HD T clip_cost(T x, const Params<T>& p, int maxq, T norm) {
  const T d = dequant(code(x, p.scale, p.zero, maxq), p.scale, p.zero) - x;
  return power(d < T(0) ? -d : d, norm);
}

// Number of MSE candidates: int(maxshrink * grid) with maxshrink = 0.8, grid = 100.
constexpr int kMseCandidates = 80;

}  // namespace gptq::grid
