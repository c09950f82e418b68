# Per-family CUDA architecture selection.
#
# Every folder csrc/kernels/<family>/ is a kernel family. Its .cu files are compiled for each entry of
# GPTQ_CUDA_ARCHS that the family supports:
#   - a family may hold a file `family.cmake` that sets GPTQ_FAMILY_MIN_ARCH (default 80: every family
#     uses cp.async, bf16 arithmetic or mma.sync, which start at sm_80);
#   - .cpp files in a family folder are its torch adapters: host code compiled by the C++ compiler,
#     built only with the kernels;
#   - a file whose name ends in `_sm90a.cu` uses Hopper-only instructions (wgmma, setmaxnreg) and is
#     compiled for 90a alone; when one is built, the target gets GPTQ_WITH_SM90A=1. Arch-suffixed code
#     is not forward compatible, hence its own files;
#   - family.cmake may also set GPTQ_FAMILY_INCLUDE_DIRS and GPTQ_FAMILY_CUDA_FLAGS (for the family's .cu
#     files only), GPTQ_FAMILY_DEFINITIONS (added to the target when one of its .cu files is built), or
#     GPTQ_FAMILY_SKIP (a reason: the family is left out with that message, e.g. a missing dependency).
# A family left with no architecture is skipped with a message, not an error.
#
# Sets GPTQ_KERNEL_FAMILIES (cache, for build_info): "family:arch,arch;family:arch".

if(NOT DEFINED ENV{NVCC_THREADS})
  set(GPTQ_NVCC_THREADS 1)
else()
  set(GPTQ_NVCC_THREADS $ENV{NVCC_THREADS})
endif()

# "90a" -> 90, "80" -> 80
function(_gptq_arch_number arch out)
  string(REGEX MATCH "^[0-9]+" _n "${arch}")
  set(${out} "${_n}" PARENT_SCOPE)
endfunction()

function(_gptq_gencode_flags archs out)
  set(_flags "")
  foreach(_a IN LISTS archs)
    list(APPEND _flags "-gencode=arch=compute_${_a},code=sm_${_a}")
  endforeach()
  set(${out} "${_flags}" PARENT_SCOPE)
endfunction()

function(gptq_add_kernel_families target kernels_dir)
  file(GLOB _families LIST_DIRECTORIES true RELATIVE "${kernels_dir}" "${kernels_dir}/*")
  list(SORT _families)
  set(_summary "")
  foreach(_family IN LISTS _families)
    if(NOT IS_DIRECTORY "${kernels_dir}/${_family}")
      continue()
    endif()
    set(GPTQ_FAMILY_MIN_ARCH 80)
    set(GPTQ_FAMILY_INCLUDE_DIRS "")
    set(GPTQ_FAMILY_CUDA_FLAGS "")
    set(GPTQ_FAMILY_DEFINITIONS "")
    set(GPTQ_FAMILY_SKIP "")
    if(EXISTS "${kernels_dir}/${_family}/family.cmake")
      include("${kernels_dir}/${_family}/family.cmake")
    endif()
    if(GPTQ_FAMILY_SKIP)
      message(STATUS "gptq: not building the ${_family} kernels: ${GPTQ_FAMILY_SKIP}")
      continue()
    endif()
    set(_archs "")
    foreach(_a IN LISTS GPTQ_CUDA_ARCHS)
      _gptq_arch_number("${_a}" _n)
      if(_n GREATER_EQUAL GPTQ_FAMILY_MIN_ARCH)
        list(APPEND _archs "${_a}")
      endif()
    endforeach()
    file(GLOB _cu CONFIGURE_DEPENDS "${kernels_dir}/${_family}/*.cu")
    if(NOT _archs OR NOT _cu)
      message(STATUS "gptq: not building the ${_family} kernels: no requested arch in GPTQ_CUDA_ARCHS='${GPTQ_CUDA_ARCHS}' is >= sm_${GPTQ_FAMILY_MIN_ARCH}")
      continue()
    endif()
    file(GLOB _adapters CONFIGURE_DEPENDS "${kernels_dir}/${_family}/*.cpp")
    target_sources(${target} PRIVATE ${_adapters})
    _gptq_gencode_flags("${_archs}" _family_flags)
    set(_built_archs "${_archs}")
    set(_built_any FALSE)
    foreach(_src IN LISTS _cu)
      if(_src MATCHES "_sm90a\\.cu$")
        if("90a" IN_LIST _archs)
          _gptq_gencode_flags("90a" _flags)
          set_source_files_properties("${_src}" PROPERTIES COMPILE_OPTIONS "${_flags};${GPTQ_FAMILY_CUDA_FLAGS}")
          target_sources(${target} PRIVATE "${_src}")
          # Host code calls what these files define only when they are built.
          target_compile_definitions(${target} PRIVATE GPTQ_WITH_SM90A=1)
          set(_built_any TRUE)
        else()
          message(STATUS "gptq: skipping ${_src}: 90a is not in GPTQ_CUDA_ARCHS")
          continue()
        endif()
      else()
        set_source_files_properties("${_src}" PROPERTIES COMPILE_OPTIONS "${_family_flags};${GPTQ_FAMILY_CUDA_FLAGS}")
        target_sources(${target} PRIVATE "${_src}")
        set(_built_any TRUE)
      endif()
      if(GPTQ_FAMILY_INCLUDE_DIRS)
        set_property(SOURCE "${_src}" APPEND PROPERTY INCLUDE_DIRECTORIES ${GPTQ_FAMILY_INCLUDE_DIRS})
      endif()
    endforeach()
    if(_built_any AND GPTQ_FAMILY_DEFINITIONS)
      target_compile_definitions(${target} PRIVATE ${GPTQ_FAMILY_DEFINITIONS})
    endif()
    string(REPLACE ";" "," _archs_csv "${_built_archs}")
    list(APPEND _summary "${_family}:${_archs_csv}")
    message(STATUS "gptq: ${_family} kernels for sm_${_archs_csv}")
  endforeach()
  set(GPTQ_KERNEL_FAMILIES "${_summary}" CACHE INTERNAL "kernel families and the archs each was built for")

  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr --threads=${GPTQ_NVCC_THREADS} -lineinfo
      -D_GLIBCXX_USE_CXX11_ABI=${GPTQ_CXX11_ABI} -Xcompiler=-fPIC>)
  set_target_properties(${target} PROPERTIES CUDA_ARCHITECTURES OFF CUDA_SEPARABLE_COMPILATION OFF)
endfunction()
