// Runs one GPTQ-packed linear layer from C++ with no Python: packs a random 4-bit layer (group 128,
// act-order), dequantizes it with gptq::dequantize, computes y = x W^T, and checks y against a float64
// product computed from the integer codes. Exit status 0 when the relative error is within fp16
// rounding; prints what gptq was built with.
#include <gptq/gptq.h>
#include <torch/torch.h>

#include <cstdio>

int main() {
  const auto info = gptq::build_info();
  std::printf("gptq %s, built against torch %s, CUDA kernels: %s\n", info.version.c_str(), info.torch_version.c_str(),
              info.with_cuda ? info.cuda_status.c_str() : "no");

  const int64_t bits = 4, K = 512, N = 256, g = 128, G = K / g, M = 3;
  torch::manual_seed(0);
  auto q = torch::randint(0, 1 << bits, {K, N}, torch::kInt);             // codes [K, N]
  auto z = torch::randint(0, 1 << bits, {G, N}, torch::kInt);             // zero points [G, N]
  auto s = (torch::rand({G, N}) * 0.02 + 1e-3).to(torch::kHalf);          // scales [G, N]
  auto g_idx = torch::arange(K, torch::kInt).div(g, "floor").index_select(0, torch::randperm(K));
  auto qweight = gptq::pack_rows(q, bits);
  auto qzeros = gptq::pack_cols(torch::remainder(z - 1, 1 << bits), bits);  // format "gptq" stores z - 1

  auto device = torch::cuda::is_available() ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  auto W = gptq::dequantize(qweight.to(device), qzeros.to(device), s.to(device), g_idx.to(device), bits, g,
                            gptq::CheckpointFormat::kGptq);  // [N, K] fp16
  auto x = torch::randn({M, K}).to(torch::kHalf);
  auto y = torch::matmul(x.to(device), W.t()).cpu();

  auto gl = g_idx.to(torch::kLong);
  auto W_ref = (s.to(torch::kDouble).index_select(0, gl) *
                (q.to(torch::kDouble) - z.to(torch::kDouble).index_select(0, gl))).t();
  auto y_ref = torch::matmul(x.to(torch::kDouble), W_ref.t());
  const double err = ((y.to(torch::kDouble) - y_ref).norm() / y_ref.norm()).item<double>();
  std::printf("layer %lldx%lld, %lld-bit g%lld act-order on %s: relative error %.2e vs float64\n", (long long)N,
              (long long)K, (long long)bits, (long long)g, device.str().c_str(), err);
  return err < 2e-3 ? 0 : 1;  // fp16 weight and product rounding, not a tuned threshold
}
