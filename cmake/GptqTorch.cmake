# Finds torch through the Python interpreter that will import gptq, and decides whether the CUDA
# kernels are built.
#
# Sets: GPTQ_TORCH_VERSION, GPTQ_TORCH_CUDA_VERSION ("" for a CPU build of torch), GPTQ_CXX11_ABI,
#       GPTQ_WITH_CUDA (ON/OFF), GPTQ_CUDA_STATUS (one line saying why), GPTQ_NVCC_VERSION,
#       and an imported target named `torch`.
#
# Why not always find_package(Torch)? A CUDA build of torch makes its CMake package look for the CUDA
# toolkit and stop with an error when there is none. gptq must still build its full CPU functionality
# on such a machine, so without the kernels we describe torch's CPU libraries ourselves
# (GptqTorchTarget.cmake, also shipped with the installed package).

set(_gptq_py_components Interpreter)
if(GPTQ_PYTHON)
  list(APPEND _gptq_py_components Development.Module)
endif()
find_package(Python REQUIRED COMPONENTS ${_gptq_py_components})

execute_process(
  COMMAND "${Python_EXECUTABLE}" -c
    "import os, torch, torch.utils; print(torch.__version__); print(torch.version.cuda or ''); print(int(torch._C._GLIBCXX_USE_CXX11_ABI)); print(torch.utils.cmake_prefix_path); print(os.path.dirname(torch.__file__))"
  OUTPUT_VARIABLE _gptq_torch_info RESULT_VARIABLE _gptq_torch_rc ERROR_VARIABLE _gptq_torch_err
  OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT _gptq_torch_rc EQUAL 0)
  message(FATAL_ERROR
    "gptq: could not import torch with ${Python_EXECUTABLE}:\n${_gptq_torch_err}\n"
    "Install torch into that interpreter first (pip install torch==2.11.0), and build with "
    "`pip install --no-build-isolation .` so the build sees the torch you will import.")
endif()
string(REPLACE "\n" ";" _gptq_torch_info "${_gptq_torch_info}")
list(GET _gptq_torch_info 0 GPTQ_TORCH_VERSION)
list(GET _gptq_torch_info 1 GPTQ_TORCH_CUDA_VERSION)
list(GET _gptq_torch_info 2 GPTQ_CXX11_ABI)
list(GET _gptq_torch_info 3 _gptq_torch_cmake_prefix)
list(GET _gptq_torch_info 4 GPTQ_TORCH_ROOT)
list(APPEND CMAKE_PREFIX_PATH "${_gptq_torch_cmake_prefix}")
message(STATUS "gptq: torch ${GPTQ_TORCH_VERSION} (CUDA '${GPTQ_TORCH_CUDA_VERSION}', cxx11 ABI ${GPTQ_CXX11_ABI}) at ${GPTQ_TORCH_ROOT}")

# ---- CUDA decision --------------------------------------------------------------------------------
set(GPTQ_WITH_CUDA OFF)
set(GPTQ_NVCC_VERSION "")
if(GPTQ_CUDA STREQUAL "OFF")
  set(GPTQ_CUDA_STATUS "disabled by GPTQ_CUDA=OFF")
elseif(GPTQ_TORCH_CUDA_VERSION STREQUAL "")
  set(GPTQ_CUDA_STATUS "torch ${GPTQ_TORCH_VERSION} is a CPU-only build")
else()
  include(CheckLanguage)
  check_language(CUDA)
  if(NOT CMAKE_CUDA_COMPILER)
    set(GPTQ_CUDA_STATUS "nvcc not found (set CUDACXX or put nvcc on PATH)")
  else()
    execute_process(COMMAND "${CMAKE_CUDA_COMPILER}" --version OUTPUT_VARIABLE _gptq_nvcc_out)
    string(REGEX MATCH "release ([0-9]+)\\.([0-9]+)" _gptq_m "${_gptq_nvcc_out}")
    set(GPTQ_NVCC_VERSION "${CMAKE_MATCH_1}.${CMAKE_MATCH_2}")
    set(_gptq_nvcc_major "${CMAKE_MATCH_1}")
    string(REGEX MATCH "^([0-9]+)" _gptq_torch_cuda_major "${GPTQ_TORCH_CUDA_VERSION}")
    if(NOT _gptq_nvcc_major STREQUAL _gptq_torch_cuda_major)
      set(GPTQ_CUDA_STATUS
        "nvcc ${GPTQ_NVCC_VERSION} does not match torch's CUDA ${GPTQ_TORCH_CUDA_VERSION}; install a matching "
        "nvcc (pip install nvidia-cuda-nvcc==${GPTQ_TORCH_CUDA_VERSION}.*) and point CUDACXX at it")
    else()
      set(GPTQ_WITH_CUDA ON)
      set(GPTQ_CUDA_STATUS "nvcc ${GPTQ_NVCC_VERSION}, torch CUDA ${GPTQ_TORCH_CUDA_VERSION}")
    endif()
  endif()
endif()
if(GPTQ_CUDA STREQUAL "ON" AND NOT GPTQ_WITH_CUDA)
  message(FATAL_ERROR "gptq: GPTQ_CUDA=ON but the kernels cannot be built: ${GPTQ_CUDA_STATUS}")
endif()
message(STATUS "gptq: CUDA kernels ${GPTQ_WITH_CUDA} (${GPTQ_CUDA_STATUS})")

# ---- the torch target -----------------------------------------------------------------------------
if(GPTQ_WITH_CUDA)
  # Architectures are chosen per kernel family (GptqCuda.cmake), so keep CMake's and torch's own
  # arch flags out of the way: torch's CMake appends -gencode flags for TORCH_CUDA_ARCH_LIST (or for a
  # detected GPU) to CMAKE_CUDA_FLAGS and overwrites CMAKE_CUDA_ARCHITECTURES.
  set(CMAKE_CUDA_ARCHITECTURES OFF)
  enable_language(CUDA)
  set(CMAKE_CUDA_STANDARD 17)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  if(NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
    set(ENV{TORCH_CUDA_ARCH_LIST} "8.0")   # silences torch's GPU auto-detection; flags are stripped below
  endif()
  unset(CMAKE_CUDA_ARCHITECTURES)
  find_package(Torch REQUIRED CONFIG)
  string(REGEX REPLACE "-gencode[= ]+arch=[^ ]+" "" CMAKE_CUDA_FLAGS "${CMAKE_CUDA_FLAGS}")
  string(REGEX REPLACE "--generate-code=[^ ]+" "" CMAKE_CUDA_FLAGS "${CMAKE_CUDA_FLAGS}")
  set(CMAKE_CUDA_ARCHITECTURES OFF)
  set(GPTQ_TORCH_MODE "package")
else()
  set(GPTQ_TORCH_MODE "cpu-libraries")
  include(GptqTorchTarget)
  gptq_define_torch_cpu_target("${GPTQ_TORCH_ROOT}" "${GPTQ_CXX11_ABI}")
endif()
