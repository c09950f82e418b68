# Defines an imported target `torch` from a torch installation's CPU libraries alone.
#
# Used when gptq is built (or consumed) without its CUDA kernels: a CUDA build of torch makes
# find_package(Torch) demand a CUDA toolkit, which a CPU-only machine does not have. libtorch_cpu and
# libc10 hold everything the host code needs; libtorch.so pulls in the rest at run time.
function(gptq_define_torch_cpu_target torch_root cxx11_abi)
  if(TARGET torch)
    return()
  endif()
  foreach(_lib torch torch_cpu c10)
    if(NOT EXISTS "${torch_root}/lib/lib${_lib}.so")
      message(FATAL_ERROR "gptq: ${torch_root}/lib/lib${_lib}.so not found; is ${torch_root} a torch installation?")
    endif()
  endforeach()
  add_library(torch INTERFACE IMPORTED GLOBAL)
  set_target_properties(torch PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${torch_root}/include;${torch_root}/include/torch/csrc/api/include"
    INTERFACE_LINK_LIBRARIES "${torch_root}/lib/libtorch.so;${torch_root}/lib/libtorch_cpu.so;${torch_root}/lib/libc10.so"
    INTERFACE_COMPILE_DEFINITIONS "_GLIBCXX_USE_CXX11_ABI=${cxx11_abi}")
  set(TORCH_INSTALL_PREFIX "${torch_root}" PARENT_SCOPE)
endfunction()
