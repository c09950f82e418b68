// What this copy of libgptq was built with, and what the machine it runs on offers.
#pragma once

#include <string>
#include <vector>

namespace gptq {

struct KernelFamily {
  std::string name;                // folder under csrc/kernels/, e.g. "dequant"
  std::vector<std::string> archs;  // compiled architectures, e.g. {"80", "90a"}
};

struct BuildInfo {
  std::string version;            // gptq's version
  std::string git_commit;
  std::string torch_version;      // torch version the library was compiled against
  std::string torch_cuda_version; // CUDA version of that torch ("" for a CPU build)
  bool cxx11_abi = true;          // _GLIBCXX_USE_CXX11_ABI used for the build
  bool with_cuda = false;         // whether CUDA kernels are compiled in
  std::string nvcc_version;       // "" without CUDA
  std::string cuda_status;        // why CUDA is on or off, in one line
  std::vector<KernelFamily> kernel_families;
};

// Facts fixed at build time.
BuildInfo build_info();

// The CUDA driver's version as "major.minor", or "" when there is no driver (or no CUDA build).
std::string cuda_driver_version();

// Compiled kernel families usable on a GPU of compute capability major.minor: a family is usable
// when one of its archs is runnable there (same major and minor <= device's; "a" archs need an
// exact match).
std::vector<std::string> usable_kernel_families(int major, int minor);

}  // namespace gptq
