// gptq._C: the pybind11 module. It carries configs and objects; tensor math is reached through
// torch.ops.gptq.*, which loading this module (and so libgptq) registers.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "gptq/build.h"

namespace py = pybind11;

void bind_quantize(py::module_& m);  // src/python/quantize.cpp

PYBIND11_MODULE(_C, m) {
  m.doc() = "gptq native module (configs and objects; ops live in torch.ops.gptq)";

  m.def(
      "build_info",
      [] {
        const auto info = gptq::build_info();
        py::dict d;
        d["version"] = info.version;
        d["git_commit"] = info.git_commit;
        d["torch_version"] = info.torch_version;
        d["torch_cuda_version"] = info.torch_cuda_version;
        d["cxx11_abi"] = info.cxx11_abi;
        d["with_cuda"] = info.with_cuda;
        d["nvcc_version"] = info.nvcc_version;
        d["cuda_status"] = info.cuda_status;
        py::dict families;
        for (const auto& f : info.kernel_families) families[py::str(f.name)] = f.archs;
        d["kernel_families"] = families;
        return d;
      },
      "Facts fixed when libgptq was built: versions, CUDA, kernel families and their archs.");
  m.def("cuda_driver_version", &gptq::cuda_driver_version,
        "The CUDA driver version as 'major.minor', or '' when there is none.");
  m.def("usable_kernel_families", &gptq::usable_kernel_families, py::arg("major"), py::arg("minor"),
        "Compiled kernel families that run on a GPU of compute capability major.minor.");
  bind_quantize(m);
}
