# CUTLASS's Hopper mixed-input GEMM: wgmma, TMA and warp specialization, so sm_90a only. It needs the
# CUTLASS headers, a build-time dependency taken from PyPI (nvidia-cutlass, which ships them under
# cutlass_library/source), or from -DGPTQ_CUTLASS_DIR=<folder holding include/cutlass>. Without them
# the family is left out and large batches keep the other kernels.
set(GPTQ_FAMILY_MIN_ARCH 90)
set(GPTQ_CUTLASS_DIR "" CACHE PATH "CUTLASS source folder (holding include/cutlass and tools/util/include)")
set(_cutlass_dir "${GPTQ_CUTLASS_DIR}")
if(NOT _cutlass_dir)
  execute_process(
    COMMAND "${Python_EXECUTABLE}" -c
      "import importlib.util, os; s = importlib.util.find_spec('cutlass_library'); print(os.path.join(os.path.dirname(s.origin), 'source') if s else '')"
    OUTPUT_VARIABLE _cutlass_dir OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
endif()
if(_cutlass_dir AND EXISTS "${_cutlass_dir}/include/cutlass/version.h"
   AND EXISTS "${_cutlass_dir}/tools/util/include/cutlass/util/mixed_dtype_utils.hpp")
  file(STRINGS "${_cutlass_dir}/include/cutlass/version.h" _cutlass_major REGEX "#define CUTLASS_MAJOR [0-9]+")
  string(REGEX MATCH "[0-9]+$" _cutlass_major "${_cutlass_major}")
  if(_cutlass_major LESS 4)
    set(GPTQ_FAMILY_SKIP "CUTLASS in ${_cutlass_dir} is version ${_cutlass_major}.x; 4.x is needed")
  else()
    message(STATUS "gptq: CUTLASS headers from ${_cutlass_dir}")
    set(GPTQ_FAMILY_INCLUDE_DIRS "${_cutlass_dir}/include;${_cutlass_dir}/tools/util/include")
    # 20012: CUTLASS's util header annotates a defaulted constructor __host__ __device__.
    set(GPTQ_FAMILY_CUDA_FLAGS "-diag-suppress=20012")
    set(GPTQ_FAMILY_DEFINITIONS GPTQ_WITH_CUTLASS_MIXED=1)
  endif()
else()
  set(GPTQ_FAMILY_SKIP
    "CUTLASS headers not found (pip install nvidia-cutlass==4.2.0.0, or pass -DGPTQ_CUTLASS_DIR=<folder holding include/cutlass>)")
endif()
