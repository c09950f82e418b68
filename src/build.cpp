// gptq::build_info() and friends: what was compiled in, and what the running machine can use.
#include "gptq/build.h"

#include <sstream>

#include "gptq/build_info.h"

#ifdef GPTQ_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace gptq {
namespace {

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> parts;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, sep)) {
    if (!item.empty()) parts.push_back(item);
  }
  return parts;
}

}  // namespace

BuildInfo build_info() {
  BuildInfo info;
  info.version = GPTQ_VERSION_STRING;
  info.git_commit = GPTQ_GIT_COMMIT;
  info.torch_version = GPTQ_BUILT_TORCH_VERSION;
  info.torch_cuda_version = GPTQ_BUILT_TORCH_CUDA_VERSION;
  info.cxx11_abi = GPTQ_BUILT_CXX11_ABI != 0;
#ifdef GPTQ_WITH_CUDA
  info.with_cuda = true;
#endif
  info.nvcc_version = GPTQ_BUILT_NVCC_VERSION;
  info.cuda_status = GPTQ_BUILT_CUDA_STATUS;
  for (const auto& entry : split(GPTQ_BUILT_KERNEL_FAMILIES, ';')) {
    const auto colon = entry.find(':');
    KernelFamily family;
    family.name = entry.substr(0, colon);
    if (colon != std::string::npos) family.archs = split(entry.substr(colon + 1), ',');
    info.kernel_families.push_back(family);
  }
  return info;
}

std::string cuda_driver_version() {
#ifdef GPTQ_WITH_CUDA
  int v = 0;
  if (cudaDriverGetVersion(&v) != cudaSuccess || v == 0) return "";
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
#else
  return "";
#endif
}

std::vector<std::string> usable_kernel_families(int major, int minor) {
  std::vector<std::string> usable;
  for (const auto& family : build_info().kernel_families) {
    for (const auto& arch : family.archs) {
      // SASS for sm_XY runs on devices of major X and minor >= Y; "a" (arch-specific) code runs only
      // on exactly that architecture.
      const bool specific = !arch.empty() && arch.back() == 'a';
      const int number = std::stoi(arch);
      const int a_major = number / 10, a_minor = number % 10;
      const bool runs = specific ? (a_major == major && a_minor == minor) : (a_major == major && a_minor <= minor);
      if (runs) {
        usable.push_back(family.name);
        break;
      }
    }
  }
  return usable;
}

}  // namespace gptq
